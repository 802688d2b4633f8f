"""The plugin, its templates and its commands in three install modes.

(a) ``python -m pytest`` from the repo root, (b) the editable install seen from
outside the repo, (c) a wheel installed into a fresh virtualenv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from datasette.app import Datasette

import datasette_forensics

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_TEMPLATES = ROOT / "datasette_forensics" / "templates"

# Run by a Python interpreter of the install under test; prints what it found.
PROBE = textwrap.dedent(
    """
    import asyncio, json, sys
    import datasette_forensics
    from datasette.app import Datasette

    async def main():
        ds = Datasette(memory=True)
        await ds.invoke_startup()
        plugins = (await ds.client.get("/-/plugins.json")).json()
        template = ds.jinja_env.get_template("forensics_base.html")
        html = await ds.render_template("forensics_base.html", {"database": "<probe>"})
        print(json.dumps({
            "module": datasette_forensics.__file__,
            "prefix": sys.prefix,
            "plugins": plugins,
            "template": template.filename,
            "html": html,
        }))

    asyncio.run(main())
    """
)


def forensics_plugin(plugins: list[dict]) -> dict:
    (plugin,) = [p for p in plugins if p["name"] == "datasette-forensics"]
    return plugin


def test_package_holds_a_template():
    assert sorted(p.name for p in PACKAGE_TEMPLATES.glob("*.html"))
    base = (PACKAGE_TEMPLATES / "forensics_base.html").read_text()
    assert '{% extends "base.html" %}' in base and "{% block title %}" in base


@pytest.mark.asyncio
async def test_plugin_and_templates_from_the_repo_root():
    ds = Datasette(memory=True)
    await ds.invoke_startup()
    plugin = forensics_plugin((await ds.client.get("/-/plugins.json")).json())
    assert plugin["templates"] is True
    assert {"startup", "register_routes", "permission_allowed"} <= set(plugin["hooks"])
    template = ds.jinja_env.get_template("forensics_base.html")
    assert Path(template.filename) == PACKAGE_TEMPLATES / "forensics_base.html"
    html = await ds.render_template("forensics_base.html", {"database": "<probe>"})
    assert "<title>Forensics: &lt;probe&gt;</title>" in html
    assert "<probe>" not in html


def test_editable_install_from_outside_the_repo(tmp_path):
    # From another directory the repo is not on sys.path: only the install finds it.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert Path(found["module"]).resolve() == ROOT / "datasette_forensics" / "__init__.py"
    assert forensics_plugin(found["plugins"])["templates"] is True
    assert Path(found["template"]).resolve() == PACKAGE_TEMPLATES / "forensics_base.html"
    assert "<title>Forensics: &lt;probe&gt;</title>" in found["html"]
    for command in (["sqlite-utils", "import-logs", "--help"], ["datasette-forensics", "--help"]):
        script = Path(sys.executable).parent / command[0]
        ran = subprocess.run([str(script), *command[1:]], cwd=tmp_path, capture_output=True, text=True)
        assert ran.returncode == 0, ran.stderr
        assert "Usage:" in ran.stdout


def test_wheel_install_in_a_fresh_venv(tmp_path):
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(wheels), "."],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = wheels.glob("datasette_forensics-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    assert "datasette_forensics/templates/forensics_base.html" in names
    assert not any(n.startswith("templates/") for n in names)

    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300
    )
    bin_dir = venv / "bin"
    installed = subprocess.run(
        [str(bin_dir / "pip"), "install", "--no-deps", "--force-reinstall", str(wheel)],
        capture_output=True, text=True, timeout=600,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = subprocess.run(
        [str(bin_dir / "python"), "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    site_packages = Path(found["prefix"]).resolve()
    assert site_packages == venv.resolve()
    assert Path(found["module"]).resolve().is_relative_to(venv.resolve())
    assert forensics_plugin(found["plugins"])["templates"] is True
    template = Path(found["template"]).resolve()
    assert template.is_relative_to(venv.resolve()) and template.name == "forensics_base.html"
    assert "<title>Forensics: &lt;probe&gt;</title>" in found["html"]

    # The commands, through the venv's own interpreter and scripts.
    sqlite_utils_help = subprocess.run(
        [str(bin_dir / "python"), "-m", "sqlite_utils", "import-logs", "--help"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert sqlite_utils_help.returncode == 0, sqlite_utils_help.stderr
    assert "Usage: python -m sqlite_utils import-logs" in sqlite_utils_help.stdout
    cli_help = subprocess.run(
        [str(bin_dir / "datasette-forensics"), "--help"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert cli_help.returncode == 0, cli_help.stderr
    assert "import-logs" in cli_help.stdout and "report" in cli_help.stdout
    script_head = (bin_dir / "datasette-forensics").read_text().splitlines()[0]
    assert script_head == f"#!{bin_dir / 'python'}" or script_head.startswith(f"#!{venv}")


def test_the_package_under_test_is_the_repo():
    """(a) and (b) are only meaningful if pytest imports the repo's package."""
    assert Path(datasette_forensics.__file__).resolve().is_relative_to(ROOT)
