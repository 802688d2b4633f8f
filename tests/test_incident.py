"""The incident file (MODEL §1.3): validation, storage, the `incident` command."""

from __future__ import annotations

import json
import sqlite3

import pytest
from click.testing import CliRunner

from datasette_forensics import incident, schema
from datasette_forensics.cli import cli
from datasette_forensics.errors import ForensicsError

GOOD = """\
name = "Integration token auth bypass"
introduced_at = "2020-07-01 02:00:00+02:00"
patched_at = "20/Jul/2020:14:04:00 +0000"
scope_paths = ['^/api/0/']                      # regexes on the path
org_routes = ['^/api/0/organizations/(?P<org>[^/]+)/',
              '^/api/0/projects/(?P<org>[^/]+)/']
"""


@pytest.fixture
def db_path(tmp_path):
    path = tmp_path / "forensics.db"
    schema.connect(str(path)).conn.close()
    return str(path)


def write(tmp_path, text, name="incident.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def run(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def incident_rows(db_path):
    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("select * from incident")]
    finally:
        conn.close()


def dump(db_path):
    conn = sqlite3.connect(db_path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def test_set_incident(db_path, tmp_path):
    result = run("incident", db_path, write(tmp_path, GOOD))
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "Incident 'Integration token auth bypass': 2020-07-01T00:00:00.000Z to "
        "2020-07-20T14:04:00.000Z, 1 scope path, 2 org routes, integration required.\n"
    )
    [row] = incident_rows(db_path)
    assert row["id"] == 1
    assert row["name"] == "Integration token auth bypass"
    assert row["introduced_at"] == "2020-07-01T00:00:00.000Z"
    assert row["patched_at"] == "2020-07-20T14:04:00.000Z"
    assert row["introduced_ms"] == 1593561600000
    assert row["patched_ms"] == 1595253840000
    assert json.loads(row["scope_paths"]) == ["^/api/0/"]
    assert json.loads(row["org_routes"]) == [
        "^/api/0/organizations/(?P<org>[^/]+)/",
        "^/api/0/projects/(?P<org>[^/]+)/",
    ]
    assert row["require_integration"] == 1
    assert row["source"] == GOOD
    assert row["set_at"].endswith("Z")


def test_replacing_the_incident(db_path, tmp_path):
    run("incident", db_path, write(tmp_path, GOOD))
    second = GOOD.replace("Integration token", "Second") + "require_integration = false\n"
    result = run("incident", db_path, "-", input=second)
    assert result.exit_code == 0, result.output
    assert "integration not required" in result.stdout
    rows = incident_rows(db_path)
    assert len(rows) == 1
    assert rows[0]["name"] == "Second auth bypass"
    assert rows[0]["require_integration"] == 0


def test_toml_datetimes_and_epoch_seconds(tmp_path):
    text = (
        GOOD.replace('"2020-07-01 02:00:00+02:00"', "2020-07-01T02:00:00+02:00")
        .replace('"20/Jul/2020:14:04:00 +0000"', "1595253840")
    )
    loaded = incident.load_incident(write(tmp_path, text))
    assert (loaded["introduced_at"], loaded["patched_at"]) == (
        "2020-07-01T00:00:00.000Z", "2020-07-20T14:04:00.000Z"
    )
    naive = GOOD.replace('"2020-07-01 02:00:00+02:00"', "2020-07-01T00:00:00")
    assert incident.load_incident(write(tmp_path, naive))["introduced_ms"] == 1593561600000


def test_library_set_incident(tmp_path):
    db = schema.connect(str(tmp_path / "lib.db"))
    result = incident.set_incident(db, write(tmp_path, GOOD))
    assert result["require_integration"] is True
    assert db.execute("select name from incident").fetchone()[0] == "Integration token auth bypass"
    with pytest.raises(ForensicsError, match="unknown key 'scope'"):
        incident.set_incident(db, write(tmp_path, GOOD + "scope = 1\n"))


BAD = [
    pytest.param(GOOD.replace("'^/api/0/']", "'^/api/(0/']"),
                 ["the scope_paths regex '^/api/(0/' is not valid", "missing )"], id="bad-scope-regex"),
    pytest.param(GOOD.replace("'^/api/0/projects/(?P<org>[^/]+)/'", "'^/api/0/projects/([^/]+)/'"),
                 ["the org_routes regex '^/api/0/projects/([^/]+)/' has no group named org"], id="route-no-org"),
    pytest.param(GOOD.replace("'^/api/0/organizations/(?P<org>[^/]+)/'", "'^/api/0/organizations/(?P<org>[^/]+/'"),
                 ["the org_routes regex '^/api/0/organizations/(?P<org>[^/]+/' is not valid"], id="bad-route-regex"),
    pytest.param(GOOD.replace('patched_at = "20/Jul/2020:14:04:00 +0000"\n', ""),
                 ["the required key 'patched_at' is missing."], id="missing-patched"),
    pytest.param(GOOD.replace('name = "Integration token auth bypass"\n', ""),
                 ["the required key 'name' is missing."], id="missing-name"),
    pytest.param(GOOD.replace('"2020-07-01 02:00:00+02:00"', '"2020-07-20T14:04:00Z"'),
                 ["introduced_at (2020-07-20T14:04:00.000Z) must be before patched_at (2020-07-20T14:04:00.000Z)."],
                 id="introduced-equals-patched"),
    pytest.param(GOOD.replace('"2020-07-01 02:00:00+02:00"', '"2020-08-01T00:00:00Z"'),
                 ["introduced_at (2020-08-01T00:00:00.000Z) must be before patched_at"], id="introduced-after-patched"),
    pytest.param(GOOD.replace('"2020-07-01 02:00:00+02:00"', '"last tuesday"'),
                 ["introduced_at = 'last tuesday' is not a time"], id="bad-time"),
    pytest.param(GOOD + 'severity = "high"\nowner = "me"\n',
                 ["unknown keys 'severity', 'owner'"], id="unknown-keys"),
    pytest.param(GOOD.replace("scope_paths = ['^/api/0/']", "scope_paths = []"),
                 ["scope_paths must be a non-empty list of regular expressions."], id="empty-scope"),
    pytest.param(GOOD.replace("scope_paths = ['^/api/0/']", "scope_paths = '^/api/0/'"),
                 ["scope_paths must be a non-empty list"], id="scope-not-list"),
    pytest.param(GOOD + 'require_integration = "yes"\n',
                 ["require_integration must be true or false."], id="bad-bool"),
    pytest.param(GOOD + "name = 'again'\n",
                 ["is not valid TOML", "line 7"], id="bad-toml"),
    pytest.param('name = "x\n', ["is not valid TOML", "line 1"], id="unterminated-string"),
    pytest.param(GOOD + "n = " + "9" * 5000 + "\n",
                 ["could not be read: Exceeds the limit (4300 digits) for integer string conversion"], id="huge-number"),
]


@pytest.mark.parametrize("text, expected", BAD)
def test_refusals(db_path, tmp_path, text, expected):
    assert run("incident", db_path, write(tmp_path, GOOD, "first.toml")).exit_code == 0
    before = dump(db_path)
    result = run("incident", db_path, write(tmp_path, text))
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.stderr
    for part in expected:
        assert part in lines[0]
    assert dump(db_path) == before


def test_refusal_does_not_create_database(tmp_path):
    target = tmp_path / "new.db"
    result = run("incident", target, write(tmp_path, "name = 1\n"))
    assert result.exit_code == 1
    assert not target.exists()


def test_missing_file(db_path, tmp_path):
    result = run("incident", db_path, tmp_path / "nope.toml")
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: No such file: {tmp_path / 'nope.toml'}"
