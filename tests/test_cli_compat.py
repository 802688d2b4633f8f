"""Rough edges of the command line: an optional dependency that is missing, `rules DB`
with no option, and help examples under sqlite-utils."""

from __future__ import annotations

import sys

from click.testing import CliRunner
from sqlite_utils.cli import cli as sqlite_utils_cli

from datasette_forensics import rules, schema
from datasette_forensics.rules import actions
from datasette_forensics.cli import cli


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
