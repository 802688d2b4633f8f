"""The page aggregates stay equal to a fresh recomputation whatever happens: rules
applied and undone (through the triggers), later log batches, records changes."""

from __future__ import annotations

import shutil

import pytest

from datasette_forensics import derived, ingest, records, schema
from datasette_forensics.derived import aggregates, explanations, status
from datasette_forensics.rules import actions

from test_pages import ALL_RULES, LOG, UA_ATTACKER, UA_CHROME, build, line

TABLES = {
    "sig_stats": "sig_id",
    "pivot_groups": "grouping, gkey",
    "org_stats": "org_id",
    "scope_days": "org_id, day",
}


def snapshot(db) -> dict:
    return {t: db.execute(f"select * from {t} order by {key}").fetchall() for t, key in TABLES.items()}


def assert_current(db) -> None:
    """The maintained aggregates equal a full refresh, and org_stats gives status.py's statuses."""
    kept = snapshot(db)
    aggregates.refresh(db)
    fresh = snapshot(db)
    for table in TABLES:
        assert kept[table] == fresh[table], table
    derived = {
        org: "exposed" if cross else "review" if unexplained else "cleared"
        for org, cross, unexplained in db.execute("select org_id, unexplained_cross_tenant, unexplained from org_stats")
    }
    assert derived == status.org_statuses(db)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("agg")
    build(tmp / "agg.db", tmp, apply_rules=False)
    return tmp / "agg.db"


@pytest.fixture
def db(template, tmp_path):
    shutil.copy(template, tmp_path / "agg.db")
    return schema.connect(str(tmp_path / "agg.db"))


def test_built_database_is_current(db):
    assert db.execute("select count(*) from pivot_groups").fetchone()[0] > 0
    assert_current(db)


def test_rules_applied_and_undone(db):
    for name in ALL_RULES:
        actions.apply(db, name)
        assert_current(db)
    for name in ("partner", "staff", "token_owner"):
        actions.undo(db, name)
        assert_current(db)
    explanations.reevaluate(db)
    assert_current(db)
    assert db.execute("select sum(unexplained) from scope_days").fetchone()[0] == db.execute(
        "select count(*) from scoped where explained = 0"
    ).fetchone()[0]


def test_a_later_batch_after_rules(db, tmp_path):
    for name in ALL_RULES:
        actions.apply(db, name)
    more = tmp_path / "more.jsonl"
    more.write_text(
        "\n".join(
            [
                # The attacker reaches charlie too; alice and a new address appear.
                line("2020-07-09T10:00:00Z", "198.51.100.66", UA_ATTACKER, "/api/orgs/charlie/x/"),
                line("2020-07-09T11:00:00Z", "10.0.0.5", UA_CHROME, "/api/orgs/bravo/projects/"),
                line("2020-07-09T12:00:00Z", "192.0.2.1", "zgrab/0.x", "/api/orgs/acme/"),
            ]
        )
        + "\n"
    )
    ingest.import_logs(db, [str(more)])
    assert_current(db)
    assert db.execute("select requests, in_scope from pivot_groups where grouping = 'kind' and k1 = 'bot'").fetchone() == (1, 1)
    assert db.execute("select orgs from sig_stats st join ips i on i.id = st.ip_id where i.ip = '198.51.100.66'").fetchone() == (3,)


def test_logs_without_an_incident(tmp_path):
    db = schema.connect(str(tmp_path / "bare.db"))
    log = tmp_path / "a.jsonl"
    log.write_text("\n".join(LOG) + "\n")
    ingest.import_logs(db, [str(log)])
    assert db.execute("select sum(requests), sum(in_scope) from sig_stats").fetchone() == (18, 0)
    assert db.execute("select count(*) from pivot_groups where grouping = 'ip'").fetchone() == (6,)
    assert_current(db)


def test_records_changes(db, tmp_path):
    actions.apply(db, "partner")
    # ip_info moves addresses between provider groups; a new integration widens the scope.
    info = tmp_path / "ip_info.csv"
    info.write_text("cidr,asn,provider,rdns\n203.0.113.0/24,AS64999,OtherNet,\n")
    records.import_records(db, "ip_info", str(info))
    assert db.execute("select requests from pivot_groups where grouping = 'provider' and k1 = 'OtherNet'").fetchone() == (3,)
    assert db.execute("select 1 from pivot_groups where grouping = 'provider' and k1 = 'PartnerNet'").fetchone() is None
    assert_current(db)
    integrations = tmp_path / "integrations.csv"
    integrations.write_text("id,org_id,created_at\ni4,4,2020-01-01T00:00:00Z\n")
    records.import_records(db, "integrations", str(integrations))
    assert db.execute("select in_scope from org_stats where org_id = '4'").fetchone() == (1,)
    assert_current(db)


def test_incident_cleared(db):
    db.execute("delete from incident")
    derived.recompute(db)
    assert db.execute("select sum(in_scope), sum(unexplained), sum(after_patch) from sig_stats").fetchone() == (0, 0, 0)
    assert db.execute("select count(*) from org_stats").fetchone() == (0,)
    assert_current(db)


def test_last_uri_is_the_latest_request_ties_going_to_the_last_stored(tmp_path):
    """A signature's latest URI: its latest time; at the same second, the later line."""
    log = tmp_path / "t.log"
    stamp = "01/Jul/2020:02:00:{:02d} +0000"
    log.write_text(
        "".join(
            f'192.0.2.7 - - [{stamp.format(sec)}] "GET /api/0/{name}/ HTTP/1.1" 200 1 "-" "curl/7.68.0"\n'
            for sec, name in ((5, "a"), (9, "b"), (9, "c"), (7, "d"))
        )
    )
    db = schema.connect(str(tmp_path / "t.db"))
    ingest.import_logs(db, [str(log)])
    for refresh in (lambda: None, lambda: aggregates.refresh(db)):  # kept, then rebuilt
        refresh()
        (uri,) = db.execute(
            "select u.uri from sig_stats s join uris u on u.id = s.last_uri_id"
        ).fetchone()
        assert uri == "/api/0/c/"
