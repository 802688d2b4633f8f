"""Rule identity: every rule keeps the bit it was given on first sight, so a built-in
added in a later version cannot take a custom rule's bit."""

from __future__ import annotations

import shutil
import types

import pytest

from datasette_forensics import report, rules, schema
from datasette_forensics.derived import rule_counts, waterfall
from datasette_forensics.rules import actions

# A seventh built-in, as a later version might register it: the requests of one address.
SEVENTH_IP = "192.0.2.66"


def seventh_rule() -> types.ModuleType:
    module = types.ModuleType("seventh")
    module.NAME = "seventh"
    module.DESCRIPTION = "A seventh built-in rule (test)."
    module.match_sql = lambda: f"""s.sig_id in (
        select g.id from signatures g join ips i on i.id = g.ip_id where i.ip = '{SEVENTH_IP}')"""
    return module


def explained_by(db, name: str) -> int:
    """In-scope requests that carry the rule's bit."""
    bit = rules.bit_of(db, name)
    return db.execute("select count(*) from scoped where explained & ? != 0", [bit]).fetchone()[0]


def ledger(db) -> list[tuple]:
    return db.execute("select rule, action, requests_explained from rule_ledger order by id").fetchall()


@pytest.fixture
def db(sample_db_path):
    database = schema.connect(str(sample_db_path))
    yield database
    database.conn.close()


def test_new_builtin_does_not_take_a_custom_rules_bit(db, monkeypatch, tmp_path, sample_db_template):
    db_ip = db.execute("select count(*) from ips where ip = ?", [SEVENTH_IP]).fetchone()[0]
    assert db_ip, "the sample logs should hold the seventh rule's address"
    # A custom rule over the same address, applied while six built-ins exist.
    actions.create_custom_rule(db, "attacker", {"filter": {"ip": SEVENTH_IP}}, "ann")
    custom_bit = rules.bit_of(db, "attacker")
    actions.apply(db, "attacker", "ann")
    actions.apply(db, "staff", "ann")
    custom_count = explained_by(db, "attacker")
    assert custom_count > 0
    before_ledger = ledger(db)
    before_breakdown = rule_counts.breakdown(db)

    # A later version registers a seventh built-in.
    seventh = seventh_rule()
    monkeypatch.setattr(rules, "BUILTINS", rules.BUILTINS + [seventh])
    monkeypatch.setitem(rules.REGISTRY, "seventh", seventh)
    result = actions.apply(db, "seventh", "bob")
    seventh_bit = rules.bit_of(db, "seventh")
    builtin_bits = {rules.bit_of(db, r.NAME) for r in rules.BUILTINS}
    assert seventh_bit != custom_bit and custom_bit not in builtin_bits
    assert len(builtin_bits) == 7

    # The custom rule still explains exactly what it did; the new rule explains the
    # same requests (it names the same address) under its own bit, and newly none.
    assert explained_by(db, "attacker") == custom_count
    assert explained_by(db, "seventh") == custom_count
    assert result["requests_explained"] == 0
    assert ledger(db) == before_ledger + [("seventh", "apply", 0)]
    breakdown = rule_counts.breakdown(db)
    for org, counts in before_breakdown.items():
        assert {k: v for k, v in breakdown[org].items() if k != "seventh"} == counts
    assert waterfall.read(db) == waterfall.compute(db)

    # Undoing the custom rule leaves the seventh's explanations, and undoing it too
    # gives back the report of staff alone.
    undone = actions.undo(db, "attacker", "ann")
    assert undone["requests_unexplained"] == 0
    assert explained_by(db, "seventh") == custom_count
    actions.undo(db, "seventh", "bob")
    alone = tmp_path / "alone.db"
    shutil.copy(sample_db_template, alone)
    other = schema.connect(str(alone))
    actions.apply(other, "staff", "ann")
    assert report.build_report(db) == report.build_report(other)
    other.conn.close()


def test_bits_survive_and_are_given_on_first_sight(db):
    first = {r.NAME: rules.bit_of(db, r.NAME) for r in rules.BUILTINS}
    assert sorted(first.values()) == [1 << n for n in range(len(rules.BUILTINS))]
    actions.create_custom_rule(db, "one", {"filter": {"ip": "192.0.2.1"}})
    one = rules.bit_of(db, "one")
    assert one not in first.values()
    # A deleted custom rule that comes back under its name gets its own bit back,
    # and a new rule never takes a bit another rule held while another is free.
    actions.delete_custom_rule(db, "one")
    actions.create_custom_rule(db, "two", {"filter": {"ip": "192.0.2.2"}})
    assert rules.bit_of(db, "two") not in (one, *first.values())
    actions.create_custom_rule(db, "one", {"filter": {"ip": "192.0.2.1"}})
    assert rules.bit_of(db, "one") == one


def test_an_older_database_keeps_every_rules_bit(sample_db_path):
    """Before rule_bits, the rules table held the bits: migrating keeps them all."""
    db = schema.connect(str(sample_db_path))
    actions.create_custom_rule(db, "attacker", {"filter": {"ip": SEVENTH_IP}}, "ann")
    actions.apply(db, "attacker", "ann")
    held = dict(db.execute("select name, bit from rules"))
    explained = explained_by(db, "attacker")
    db.execute("drop table rule_bits")
    db.execute("drop index rules_bit")
    db.execute("delete from _sqlite_migrations where name = 'm013_owner_rule_bits'")
    db.conn.close()
    db = schema.connect(str(sample_db_path))
    assert {name: rules.bit_of(db, name) for name in held} == held
    assert explained_by(db, "attacker") == explained
    actions.create_custom_rule(db, "next", {"filter": {"ip": "192.0.2.1"}}, "ann")
    assert rules.bit_of(db, "next") not in held.values()
    db.conn.close()
