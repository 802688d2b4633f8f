"""Rough edges of the command line: an optional dependency that is missing, `rules DB`
with no option, and help examples under sqlite-utils."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from sqlite_utils.cli import cli as sqlite_utils_cli

from datasette_forensics import rules, schema
from datasette_forensics.rules import actions
from datasette_forensics.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def test_missing_clickhouse_driver_is_one_sentence_with_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "clickhouse_driver", None)  # what `import` sees when it is absent
    db = tmp_path / "ch.db"
    result = CliRunner().invoke(
        cli, ["import-logs", str(db), "--from-clickhouse", "clickhouse://127.0.0.1:9/logs", "--table", "access"]
    )
    assert result.exit_code == 1
    assert result.output == (
        "Error: --from-clickhouse needs clickhouse-driver, which is not installed: "
        "pip install 'datasette-forensics[clickhouse]'.\n"
    )
    assert not isinstance(result.exception, ImportError)
    assert not db.exists()


def test_rules_with_no_option_lists_them(sample_db_path):
    db = schema.connect(str(sample_db_path))
    try:
        actions.apply(db, "staff", "setup")
        names = [r["name"] for r in rules.list_rules(db)]
    finally:
        db.conn.close()
    listed = CliRunner().invoke(cli, ["rules", str(sample_db_path)])
    assert listed.exit_code == 0, listed.output
    assert listed.output == CliRunner().invoke(cli, ["rules", str(sample_db_path), "--list"]).output
    lines = listed.output.splitlines()
    assert [line.split()[0] for line in lines] == names
    assert any(line.split()[:2] == ["staff", "applied"] for line in lines)
    # Options that need --add still say so.
    refused = CliRunner().invoke(cli, ["rules", str(sample_db_path), "--sql", "status = 200"])
    assert refused.exit_code == 1 and "--add" in refused.output


def test_sqlite_utils_help_examples_name_sqlite_utils():
    for command in ("import-logs", "import-records"):
        shown = CliRunner().invoke(sqlite_utils_cli, [command, "--help"])
        assert shown.exit_code == 0, shown.output
        assert f"sqlite-utils {command} incident.db" in shown.output
        assert "datasette-forensics" not in shown.output
        # Our own CLI keeps its own name.
        own = CliRunner().invoke(cli, [command, "--help"]).output
        assert f"datasette-forensics {command} incident.db" in own and "sqlite-utils" not in own


def _pytest(args, tmp_path, env_changes):
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env.update(env_changes)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )


def test_missing_tools_skip_locally_and_fail_under_ci(tmp_path):
    """A missing clickhouse-driver or Chromium skips with a reason, and fails under CI=true."""
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "clickhouse_driver.py").write_text('raise ImportError("not installed here")\n')
    no_driver = {"PYTHONPATH": str(blocked)}
    no_chromium = {"PATH": str(tmp_path)}  # shutil.which finds no chromium
    cases = [(["tests/test_clickhouse.py"], no_driver), (["-m", "browser", "tests/test_pages_browser.py"], no_chromium)]
    for args, env in cases:
        local = _pytest(args, tmp_path, env)
        assert local.returncode in (0, 5) and "skipped" in local.stdout, local.stdout[-2000:]  # 5: nothing ran
        ci = _pytest(args, tmp_path, dict(env, CI="true"))
        assert ci.returncode != 0, ci.stdout[-2000:]
        assert "CI=true: it must be installed" in ci.stdout, ci.stdout[-2000:]
