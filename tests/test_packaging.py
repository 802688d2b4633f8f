"""The plugin, its templates, its sample data and its commands in three install modes.

(a) ``python -m pytest`` from the repo root, (b) the editable install seen from
outside the repo, (c) a wheel installed into a fresh virtualenv (no system
site-packages; dependencies from the package registry).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
import urllib.request
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest
from datasette.app import Datasette

import datasette_forensics
from datasette_forensics import permissions

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_TEMPLATES = ROOT / "datasette_forensics" / "templates"
DATASETTE_VERSION = version("datasette")

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
        template = (ds.get_jinja_environment() if hasattr(ds, "get_jinja_environment") else ds.jinja_env).get_template("forensics_base.html")
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
    permission_hooks = {"register_actions", "permission_resources_sql"} if permissions.ACTIONS else {"permission_allowed"}
    assert {"startup", "register_routes"} | permission_hooks <= set(plugin["hooks"])
    template = (ds.get_jinja_environment() if hasattr(ds, "get_jinja_environment") else ds.jinja_env).get_template("forensics_base.html")
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
    # sqlite-utils through its module: its script may belong to a base interpreter.
    commands = (
        [sys.executable, "-m", "sqlite_utils", "import-records", "--help"],
        [str(Path(sys.executable).parent / "datasette-forensics"), "--help"],
    )
    outputs = []
    for command in commands:
        ran = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert ran.returncode == 0, ran.stderr
        assert "Usage:" in ran.stdout
        outputs.append(ran.stdout)
    # Help examples name the command they are shown under.
    assert "sqlite-utils import-records incident.db users users.csv" in outputs[0]
    assert "datasette-forensics" not in outputs[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fetch(url: str, timeout: float = 60) -> str:
    """The page at url once the server answers (polling), else an AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer from {url} within {timeout} s")
            time.sleep(0.2)


def test_wheel_install_in_a_fresh_venv(tmp_path):
    """The wheel in a venv without system site-packages: its dependencies come from the
    package registry (pip's cache makes a re-run quick), Datasette at the version under
    test. Then the plugin, its templates, the demo (built from the package's own sample
    data and served) and one import."""
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
    assert not any(n.startswith(("templates/", "sample_data/")) for n in names)
    packaged = {n.split("datasette_forensics/sample_data/", 1)[1] for n in names if "/sample_data/" in n}
    assert {"incident.toml", "orgs.csv", "logs/access-combined.log"} <= packaged

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    bin_dir = venv / "bin"
    installed = subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "--disable-pip-version-check",
         f"{wheel}", f"datasette=={DATASETTE_VERSION}"],
        capture_output=True, text=True, timeout=900,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    probe = subprocess.run(
        [str(bin_dir / "python"), "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert Path(found["prefix"]).resolve() == venv.resolve()
    assert Path(found["module"]).resolve().is_relative_to(venv.resolve())
    assert forensics_plugin(found["plugins"])["templates"] is True
    template = Path(found["template"]).resolve()
    assert template.is_relative_to(venv.resolve()) and template.name == "forensics_base.html"
    assert "<title>Forensics: &lt;probe&gt;</title>" in found["html"]
    versions = subprocess.run(
        [str(bin_dir / "python"), "-c", "import datasette.version as v; print(v.__version__)"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert versions.stdout.strip() == DATASETTE_VERSION

    # The commands, through the venv's own interpreter and scripts.
    sqlite_utils_help = subprocess.run(
        [str(bin_dir / "python"), "-m", "sqlite_utils", "import-logs", "--help"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert sqlite_utils_help.returncode == 0, sqlite_utils_help.stderr
    assert "Usage: python -m sqlite_utils import-logs" in sqlite_utils_help.stdout
    assert "sqlite-utils import-logs incident.db" in sqlite_utils_help.stdout
    assert "datasette-forensics" not in sqlite_utils_help.stdout
    script = bin_dir / "datasette-forensics"
    script_head = script.read_text().splitlines()[0]
    assert script_head == f"#!{bin_dir / 'python'}" or script_head.startswith(f"#!{venv}")

    # The demo: built from the installed package's sample data, served, one page fetched.
    port = _free_port()
    demo_db = tmp_path / "demo.db"
    server = subprocess.Popen(
        [str(script), "demo", "--port", str(port), "--db", str(demo_db)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        page = _fetch(f"http://127.0.0.1:{port}/demo/-/forensics/orgs.json", timeout=120)
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert "Traceback" not in output, output
    assert f"Built {demo_db} from {venv}" in output.replace(str(venv.resolve()), str(venv)), output
    orgs = {o["org_id"]: o for o in json.loads(page)["rows"]}
    assert orgs["101"]["slug"] == "acme" and orgs["101"]["status"] in ("exposed", "review", "cleared")

    # One import, of a log the package ships.
    log = next(venv.glob("lib/python*/site-packages/datasette_forensics/sample_data/logs/access-combined.log"))
    imported = subprocess.run(
        [str(script), "import-logs", str(tmp_path / "one.db"), str(log)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert imported.returncode == 0, imported.stdout + imported.stderr
    stored = sqlite3.connect(str(tmp_path / "one.db")).execute("select count(*) from requests").fetchone()[0]
    lines = sum(1 for line in log.read_text().splitlines() if line.strip())
    assert 0 < stored <= lines
    assert f"= {stored:,} imported" in imported.stdout


def _demo_orgs(path) -> dict:
    conn = sqlite3.connect(str(path))
    try:
        return dict(conn.execute("select id, slug from orgs"))
    finally:
        conn.close()


def test_demo_builds_from_the_repo_root(tmp_path):
    """(a): the demo's sample data, found through the package (sample_data/ links to it)."""
    from click.testing import CliRunner

    from datasette_forensics.cli import cli

    assert (ROOT / "sample_data" / "incident.toml").samefile(ROOT / "datasette_forensics" / "sample_data" / "incident.toml")
    result = CliRunner().invoke(cli, ["demo", "--build-only", "--db", str(tmp_path / "demo.db")])
    assert result.exit_code == 0, result.output
    assert str(ROOT / "datasette_forensics" / "sample_data") in result.output
    assert _demo_orgs(tmp_path / "demo.db")["101"] == "acme"


def test_demo_builds_from_the_editable_install(tmp_path):
    """(b): the installed command, run from outside the repo."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    ran = subprocess.run(
        [str(Path(sys.executable).parent / "datasette-forensics"), "demo", "--build-only", "--db", "demo.db"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "Traceback" not in ran.stderr
    assert _demo_orgs(tmp_path / "demo.db")["101"] == "acme"


def test_the_package_under_test_is_the_repo():
    """(a) and (b) are only meaningful if pytest imports the repo's package."""
    assert Path(datasette_forensics.__file__).resolve().is_relative_to(ROOT)
