"""Custom rules: filters and restricted SQL predicates, validated, applied like the built-ins."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import dump
from test_rules import STAFF, db_path, line, state, world_template  # noqa: F401 (fixtures)

from datasette_forensics import ingest, rules, schema
from datasette_forensics.derived import waterfall
from datasette_forensics.cli import cli
from datasette_forensics.errors import ForensicsError
from datasette_forensics.rules import actions, custom


@pytest.fixture
def db(db_path):
    return schema.connect(str(db_path))


def explained(db, name) -> set[str]:
    bit = db.execute("select bit from rules where name = ?", [name]).fetchone()[0]
    return {
        n for (n,) in db.execute(
            """select json_extract(r.extra, '$.n') from scoped s join requests r on r.id = s.request_id
            where s.explained & ? != 0""",
            [bit],
        )
    }


FILTERS = [
    ({"cidr": "10.0.2.0/24"}, {"bot1_eps", "bot2_zeta", "bot3_eps", "bot3_zeta", "bot4_eta", "bot5_eta"}),
    ({"cidr": "10.0.2.0/24", "from": "2020-07-06T12:00:00Z"}, {"bot5_eta"}),
    ({"cidr": "10.0.2.0/24", "to": "2020-07-06T12:00:00Z", "org_id": ["6", "7"]}, {"bot2_zeta", "bot3_zeta", "bot4_eta"}),
    ({"cidr": ["2001:db8:aa::/48", "10.0.1.2/32"]}, {"p6_delta", "joiner_before", "joiner_at_join"}),
    ({"ip": "203.0.113.5", "path_regex": "^/api/orgs/g"}, {"pbot_gamma_before_revoke", "pbot_gamma_at_revoke"}),
    ({"user_agent": "PartnerBot/1.0"}, {"pbot_gamma_before_revoke", "pbot_gamma_at_revoke", "pbot_delta", "p_wrong_row_delta"}),
    ({"path_prefix": "/api/orgs/eta/"}, {"bot4_eta", "bot5_eta"}),
    ({"path_prefix": "/api/orgs/et"}, {"bot4_eta", "bot5_eta"}),
    ({"status": "4xx"}, set()),
    ({"status": [200], "org_id": "7"}, {"bot4_eta", "bot5_eta"}),
    ({"ua_kind": "library", "org_id": "4"}, {"pcurl_delta"}),
    # values are bound, never SQL: this matches no user agent
    ({"user_agent": "x' or 1=1 or '"}, set()),
]


@pytest.mark.parametrize("spec,expected", FILTERS)
def test_filter_explains_exactly(db, spec, expected):
    actions.create_custom_rule(db, "f", {"filter": spec}, "ann")
    result = actions.apply(db, "f", "ann")
    assert explained(db, "f") == expected
    assert result["requests_explained"] == len(expected)


def test_sql_predicate_rule_and_functions(db):
    actions.create_custom_rule(db, "zeta_bots", {"sql": "ip like '10.0.2.%' and org_id = '6'"}, "ann")
    actions.create_custom_rule(
        db, "v6", {"sql": "cidr_contains('2001:db8::/32', ip) and user_agent regexp '^Staff'"}, "ann"
    )
    actions.apply(db, "zeta_bots", "ann")
    actions.apply(db, "v6", "ann")
    assert explained(db, "zeta_bots") == {"bot2_zeta", "bot3_zeta"}
    assert explained(db, "v6") == {"staff6_gamma"}
    listed = {r["name"]: r for r in rules.list_rules(db)}
    assert listed["zeta_bots"]["builtin"] is False and listed["zeta_bots"]["applied"] is True
    assert listed["zeta_bots"]["bit"] == 1 << 7 and listed["v6"]["bit"] == 1 << 8  # 0-6: the built-ins and verdict
    assert listed["zeta_bots"]["created_by"] == "ann"


ESCAPES = [
    "1); DROP TABLE x; --",
    "1); DROP TABLE orgs; --",
    "ATTACH DATABASE 'x' AS y",
    "load_extension('x')",
    "(select count(*) from orgs) > 0",
    "id in (select id from requests)",
    "id in orgs",
    "exists (select 1 from sqlite_master)",
    "id in (with recursive c(x) as (select 1 union all select x + 1 from c) select x from c)",
    "1) union select 1 where (1",
    "ip = '1' ; delete from orgs",
    "ip = '1' -- comment",
    "ip = '1' /* comment */",
    "explained = 0",
    "unexplained = 1",
    "randomblob(8) is not null",
    "ip = ?",
    "ip = :bit",
    "writefile('x', 'y')",
    "",
    "ip = 'unterminated",
    "(ip = '1'",
]


@pytest.mark.parametrize("predicate", ESCAPES)
def test_escaping_predicates_are_refused_and_nothing_changes(db_path, predicate):
    before = dump(db_path)
    db = schema.connect(str(db_path))
    with pytest.raises(custom.InvalidRule) as info:
        actions.create_custom_rule(db, "evil", {"sql": predicate}, "mallory")
    message = str(info.value)
    assert message.endswith(".") and "\n" not in message
    assert isinstance(info.value, ForensicsError) and isinstance(info.value, ValueError)
    db.conn.close()
    assert dump(db_path) == before


def test_a_hand_edited_definition_is_rechecked_before_it_runs(db_path):
    db = schema.connect(str(db_path))
    rules.ensure_rules(db)
    db.execute(
        "insert into rules (name, bit, builtin, description, definition) values ('evil', 128, 0, 'x', ?)",
        [json.dumps({"sql": "(select count(*) from orgs) > 0"})],
    )
    before = dump(db_path)
    with pytest.raises(custom.InvalidRule, match="subqueries"):
        actions.apply(db, "evil", "mallory")
    assert dump(db_path) == before


@pytest.mark.parametrize(
    "name,definition,reason",
    [
        ("Bad", {"filter": {"ip": "1.2.3.4"}}, "not valid"),
        ("9lives", {"filter": {"ip": "1.2.3.4"}}, "not valid"),
        ("a" * 42, {"filter": {"ip": "1.2.3.4"}}, "not valid"),
        ("staff", {"filter": {"ip": "1.2.3.4"}}, "built-in"),
        ("ok", {"filter": {}}, "at least one"),
        ("ok", {"filter": {"nope": 1}}, "Unknown filter field 'nope'"),
        ("ok", {"filter": {"cidr": "10.0.0.0/99"}}, "not a network"),
        ("ok", {"filter": {"path_regex": "("}}, "not a valid regular expression"),
        ("ok", {"filter": {"status": "6xx"}}, "not an HTTP status"),
        ("ok", {"filter": {"from": "yesterday"}}, "not a time"),
        ("ok", {"filter": {"ua_kind": "robot"}}, "not one of"),
        ("ok", {"filter": {"ip": []}}, "empty list"),
        ("ok", {"filter": {"ip": "1"}, "sql": "1"}, "is {"),
        ("ok", "{not json", "not valid JSON"),
        ("ok", {"sql": "no_such_column = 1"}, "not a valid expression"),
    ],
)
def test_invalid_rules_are_refused_with_a_reason(db, name, definition, reason):
    with pytest.raises(custom.InvalidRule, match=reason):
        actions.create_custom_rule(db, name, definition, "ann")
    assert db.execute("select count(*) from rules where builtin = 0").fetchone()[0] == 0


def test_names_are_unique_and_bits_run_out_at_62(db):  # 0-6: the six built-ins and verdict
    actions.create_custom_rule(db, "dup", {"filter": {"ip": "1.2.3.4"}})
    with pytest.raises(custom.InvalidRule, match="already exists"):
        actions.create_custom_rule(db, "dup", {"filter": {"ip": "1.2.3.5"}})
    for i in range(55):  # bits 1<<8 .. 1<<62
        actions.create_custom_rule(db, f"r{i}", {"filter": {"ip": f"1.2.3.{i}"}})
    bits = sorted(r["bit"] for r in rules.list_rules(db) if not r["builtin"])
    assert bits == [1 << n for n in range(7, 63)]
    with pytest.raises(custom.InvalidRule, match="no free bit"):
        actions.create_custom_rule(db, "one_too_many", {"filter": {"ip": "9.9.9.9"}})
    # a deleted rule's bit is free again; the highest bit works like any other
    actions.delete_custom_rule(db, "dup")
    actions.create_custom_rule(db, "reused", {"filter": {"ip": "9.9.9.9"}})
    assert next(r for r in rules.list_rules(db) if r["name"] == "reused")["bit"] == 1 << 7
    actions.delete_custom_rule(db, "r54")  # bit 1 << 62
    actions.create_custom_rule(db, "top", {"filter": {"cidr": "10.0.2.0/24", "org_id": "7"}})
    assert next(r for r in rules.list_rules(db) if r["name"] == "top")["bit"] == 1 << 62
    before = state(db)
    actions.apply(db, "top")
    assert explained(db, "top") == {"bot4_eta", "bot5_eta"}
    actions.undo(db, "top")
    assert state(db) == before


def test_applied_custom_rule_explains_a_later_batch(db, tmp_path):
    actions.create_custom_rule(db, "staffnet", {"filter": {"ip": STAFF[0], "org_id": ["1", "4"]}}, "ann")
    actions.apply(db, "staffnet", "ann")
    assert explained(db, "staffnet") == {"staff_alpha"}
    batch = tmp_path / "batch2.jsonl"
    batch.write_text(
        json.dumps(line("late_delta", "2020-07-19T00:00:00Z", "delta", STAFF)) + "\n"
        + json.dumps(line("late_beta", "2020-07-19T00:00:01Z", "beta", STAFF)) + "\n"
    )
    ingest.import_logs(db, [str(batch)])
    assert explained(db, "staffnet") == {"staff_alpha", "late_delta"}
    assert waterfall.read(db) == waterfall.compute(db)


def test_undo_restores_exactly_and_delete_is_audited(db):
    actions.apply(db, "staff", "ann")
    before = state(db)
    actions.create_custom_rule(db, "bots", {"sql": "ip like '10.0.2.%'"}, "ann")
    actions.apply(db, "bots", "ann")
    assert state(db) != before
    result = actions.delete_custom_rule(db, "bots", "bob")
    assert result["undo"]["requests_unexplained"] == 6
    assert state(db) == before
    assert "bots" not in rules.load_rules(db)
    ledger = db.execute("select rule, action, actor, detail from rule_ledger order by id").fetchall()
    assert [(r, a, who) for r, a, who, _ in ledger] == [
        ("staff", "apply", "ann"), ("bots", "create", "ann"), ("bots", "apply", "ann"),
        ("bots", "undo", "bob"), ("bots", "delete", "bob"),
    ]
    assert json.loads(ledger[1][3]) == {"sql": "ip like '10.0.2.%'"}
    with pytest.raises(custom.InvalidRule, match="built-in"):
        actions.delete_custom_rule(db, "staff")
    with pytest.raises(rules.UnknownRule):
        actions.delete_custom_rule(db, "bots")


def test_cli_add_apply_delete(db_path):
    runner = CliRunner()
    path = str(db_path)
    result = runner.invoke(
        cli, ["rules", path, "--add", "eta_bots", "--filter", '{"org_id": "7"}', "--description", "eta's bots", "--actor", "ann"]
    )
    assert result.exit_code == 0, result.output
    assert "Saved custom rule eta_bots" in result.output
    result = runner.invoke(cli, ["rules", path, "--apply", "eta_bots", "--actor", "ann"])
    assert result.output.splitlines() == ["eta_bots: 2 requests newly explained", "  org 7 (eta): review -> cleared"]
    result = runner.invoke(cli, ["rules", path, "--list"])
    assert any(l.split()[:3] == ["eta_bots", "applied", "custom"] and "eta's bots" in l for l in result.output.splitlines())
    before = dump(db_path)
    result = runner.invoke(cli, ["rules", path, "--add", "evil", "--sql", "1); DROP TABLE x; --"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert result.output.startswith("Error: The SQL predicate") and len(result.output.strip().splitlines()) == 1
    assert dump(db_path) == before
    result = runner.invoke(cli, ["rules", path, "--add", "x", "--filter", "{bad"])
    assert result.exit_code != 0 and "not valid JSON" in result.output
    result = runner.invoke(cli, ["rules", path, "--delete", "eta_bots", "--actor", "ann"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "eta_bots: undone, 2 requests no longer explained",
        "  org 7 (eta): cleared -> review",
        "Deleted custom rule eta_bots.",
    ]
    assert runner.invoke(cli, ["rules", path, "--delete", "eta_bots"]).exit_code != 0
