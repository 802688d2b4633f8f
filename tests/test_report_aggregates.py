"""The report reads kept aggregates only, and says byte for byte what a direct count
of the stored and in-scope rows says, whatever happened before: rules applied and
undone in any order, verdicts for one org and for every org, a custom rule, a later
log batch, records changed, the incident replaced, an old database migrated.

The oracle below is the report as it was computed before it read aggregates: by
SQL over ``requests`` and ``scoped`` themselves."""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3

import pytest

from datasette_forensics import evidence, incident, ingest, notes, notifications, records, report, schema, verdicts
from datasette_forensics.derived import out_of_scope, rule_counts
from datasette_forensics.rules import actions, applied_bits

from test_pages import ALL_RULES, INCIDENT, UA_ATTACKER, UA_CHROME, UA_CURL, line
from test_pages_aggregates import db, template  # noqa: F401 (fixtures: the pages incident, no rule applied)

# --- the oracle: every figure counted from the rows ----------------------------------

ORACLE_ORGS = """
select s.org_id, count(*) as in_scope, sum(s.explained = 0) as unexplained,
    count(distinct case when s.explained = 0 then s.sig_id end) as unexplained_signatures,
    sum(s.explained = 0 and s.sig_id in (select sig_id from cross_sigs)) as cross_unexplained
from scoped s group by s.org_id
"""
CROSS_SIGS = "select sig_id from scoped group by sig_id having count(distinct org_id) > 1"


def oracle_report(db) -> dict:
    """build_report's dict, every figure of it counted from requests and scoped."""
    built = report.build_report(db)  # the parts that are not figures (incident, verdicts...)
    cross = f"with cross_sigs as ({CROSS_SIGS}) "
    orgs = []
    for org, in_scope, unexplained, signatures, cross_unexplained in db.execute(cross + ORACLE_ORGS):
        slug, email = db.execute("select slug, contact_email from orgs where id = ?", [org]).fetchone() or (None, None)
        status = "exposed" if cross_unexplained else "review" if unexplained else "cleared"
        orgs.append(
            {
                "org_id": org, "slug": slug, "status": status, "in_scope_requests": in_scope,
                "unexplained_requests": unexplained, "unexplained_signatures": signatures,
                "contact_email": email or None,
            }
        )
    orgs.sort(key=lambda o: (("exposed", "review", "cleared").index(o["status"]), -o["unexplained_requests"], o["org_id"]))
    applied = applied_bits(db)
    tags = notes.org_tags(db)
    for org in orgs:
        explained = {}
        for name, bit in applied:
            (n,) = db.execute(
                "select count(*) from scoped where org_id = ? and explained & ? != 0", [org["org_id"], bit]
            ).fetchone()
            if n:
                explained[name] = n
        org["explained_by"] = explained
        org["tags"] = tags.get(org["org_id"], [])
    notifications.add_state(orgs, notifications.latest_notifications(db))
    signatures = []
    for sig, ip, ua, requests, unexplained in db.execute(
        cross
        + """select s.sig_id, i.ip, a.ua, count(*), sum(s.explained = 0) from scoped s
        join signatures g on g.id = s.sig_id join ips i on i.id = g.ip_id join user_agents a on a.id = g.ua_id
        where s.sig_id in (select sig_id from cross_sigs) group by s.sig_id
        order by 5 desc, 4 desc, i.ip, a.ua"""
    ):
        org_ids = [o for (o,) in db.execute("select distinct org_id from scoped where sig_id = ? order by org_id", [sig])]
        signatures.append(
            {"ip": ip, "user_agent": ua, "org_ids": org_ids, "requests": requests, "unexplained_requests": unexplained}
        )
    (requests,) = db.execute("select count(*) from requests").fetchone()
    in_scope, unexplained = db.execute("select count(*), coalesce(sum(explained = 0), 0) from scoped").fetchone()
    reasons = None
    if built["incident"] is not None:
        found = dict(
            db.execute(
                "select out_of_scope, count(*) from requests_view where out_of_scope is not null group by 1"
            )
        )
        reasons = {reason: found.get(reason, 0) for reason in out_of_scope.REASONS}
    funnel = {
        "lines_rejected": db.execute("select count(*) from rejected_lines").fetchone()[0],
        "requests": requests, "in_scope": in_scope, "unexplained": unexplained, "out_of_scope": reasons,
    }
    return dict(built, funnel=funnel, orgs=orgs, cross_tenant_signatures=signatures)


def oracle_csv(orgs: list[dict], db) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(report.CSV_COLUMNS)
    for org in orgs:
        if org["status"] != "cleared":
            (name,) = db.execute("select name from orgs where id = ?", [org["org_id"]]).fetchone() or (None,)
            row = dict(org, name=name)
            writer.writerow([report.neutralise(row[c]) if row[c] is not None else "" for c in report.CSV_COLUMNS])
    return out.getvalue()


def text(built: dict) -> str:
    """The report as the command prints it."""
    return json.dumps(built, indent=2, ensure_ascii=False)


def without_row_reads(db, fn):
    """Run fn(db) with every read of requests and scoped refused by SQLite itself."""

    def authorizer(action, table, column, db_name, trigger):
        if action == sqlite3.SQLITE_READ and table in ("requests", "scoped"):
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    db.conn.set_authorizer(authorizer)
    try:
        return fn(db)
    finally:
        db.conn.set_authorizer(None)


def assert_report_exact(db) -> dict:
    """The report and the CSV from the aggregates (reading no request or in-scope row)
    equal the oracle's, byte for byte; so does each org's evidence breakdown."""
    built = without_row_reads(db, report.build_report)
    csv_text = without_row_reads(db, report.notification_csv)
    expected = oracle_report(db)
    assert text(built) == text(expected)
    assert csv_text == oracle_csv(expected["orgs"], db)
    for org in expected["orgs"]:
        found = without_row_reads(db, lambda d: rule_counts.breakdown(d, org["org_id"]))
        assert found == ({org["org_id"]: org["explained_by"]} if org["explained_by"] else {})
    assert rule_counts.breakdown(db, "no such org") == {}
    # rule_counts itself: no stale row of an undone rule, equal to a recount.
    kept = db.execute("select * from rule_counts order by 1, 2, 3").fetchall()
    db.conn.execute("savepoint recount")
    rule_counts.refresh(db)
    assert db.execute("select * from rule_counts order by 1, 2, 3").fetchall() == kept
    db.conn.execute("rollback to recount")
    db.conn.execute("release recount")
    assert not db.execute(
        "select 1 from rule_counts where rule_bit not in (select bit from rules where applied = 1) or requests <= 0"
    ).fetchone()
    return built


# --- the database ---------------------------------------------------------------------


def later_batch(db, path) -> None:
    """More requests: the attacker again (acme and charlie), alice, a new cross-tenant
    signature, and some out of scope."""
    path.write_text(
        "\n".join(
            [
                line("2020-07-04T10:00:00Z", "198.51.100.66", UA_ATTACKER, "/api/orgs/charlie/issues/"),
                line("2020-07-05T09:00:00Z", "10.0.0.5", UA_CHROME, "/api/orgs/bravo/projects/"),
                line("2020-07-06T09:00:00Z", "10.0.0.5", UA_CHROME, "/api/orgs/acme/projects/"),
                line("2020-07-06T10:00:00Z", "192.0.2.77", UA_CURL, "/api/orgs/acme/x/"),
                line("2020-07-06T11:00:00Z", "192.0.2.77", UA_CURL, "/api/orgs/charlie/x/"),
                line("2020-07-06T12:00:00Z", "192.0.2.77", UA_CURL, "/api/orgs/nope/x/"),
                line("2020-07-15T12:00:00Z", "192.0.2.77", UA_CURL, "/api/orgs/acme/x/"),
                "not a log line",
            ]
        )
        + "\n"
    )
    ingest.import_logs(db, [str(path)])


def test_empty_and_log_only_databases(tmp_path):
    db = schema.connect(str(tmp_path / "empty.db"))
    built = assert_report_exact(db)
    assert built["incident"] is None and built["orgs"] == [] and built["funnel"]["out_of_scope"] is None
    later_batch(db, tmp_path / "log.jsonl")
    built = assert_report_exact(db)
    assert built["funnel"]["requests"] == 7 and built["funnel"]["lines_rejected"] == 1


def test_every_change_keeps_the_report_exact(db, tmp_path):
    with pytest.raises(sqlite3.DatabaseError):  # the guard bites
        without_row_reads(db, lambda d: d.execute("select count(*) from scoped").fetchone())
    built = assert_report_exact(db)
    assert built["funnel"]["in_scope"] == 13 and sum(built["funnel"]["out_of_scope"].values()) == 5
    notes.add_note(db, notes.resolve_target(db, "org", "1"), "notified", None, "alice")
    for name in ALL_RULES:
        actions.apply(db, name, actor="test")
        assert_report_exact(db)
    made = verdicts.make(db, "198.51.100.66", UA_ATTACKER, "2", "customer confirmed", "alice")
    assert made["requests_explained"] == 1
    assert_report_exact(db)
    verdicts.make(db, "198.51.100.66", UA_ATTACKER, None, "our own scanner", "alice")
    built = assert_report_exact(db)
    assert built["orgs"][0]["explained_by"]["verdict"] >= 1
    later_batch(db, tmp_path / "more.jsonl")
    built = assert_report_exact(db)
    assert any(len(s["org_ids"]) == 2 for s in built["cross_tenant_signatures"])
    verdicts.withdraw(db, "198.51.100.66", UA_ATTACKER, None, "alice")
    assert_report_exact(db)
    for name in ("member_current", "token_owner", "staff"):  # not last-applied first
        actions.undo(db, name, actor="test")
        assert_report_exact(db)
    actions.create_custom_rule(db, "curl_probe", {"sql": "user_agent like 'curl/%'"}, "alice")
    actions.apply(db, "curl_probe", actor="alice")
    actions.apply(db, "staff", actor="alice")  # again, after the custom rule: the order moves
    built = assert_report_exact(db)
    assert built["rules_applied"][-2:] == ["curl_probe", "staff"]
    f = tmp_path / "memberships.csv"
    f.write_text("user_id,org_id,role,joined_at,left_at\nu1,2,admin,2019-01-01T00:00:00Z,2020-07-03T00:00:00Z\n")
    records.import_records(db, "memberships", str(f))  # the member rules re-evaluated
    assert_report_exact(db)
    actions.delete_custom_rule(db, "curl_probe", "alice")
    assert_report_exact(db)
    toml = tmp_path / "incident.toml"
    toml.write_text(INCIDENT.replace("2020-07-10T00:00:00Z", "2020-07-05T00:00:00Z"))
    incident.set_incident(db, str(toml))  # the whole scope recomputed
    built = assert_report_exact(db)
    assert built["incident"]["patched_at"].startswith("2020-07-05")


def test_explained_by_follows_the_order_rules_were_applied(db):
    for name in ("token_owner", "staff", "post_patch_valid", "member_current"):
        actions.apply(db, name)
    verdicts.make(db, "10.0.0.5", UA_CHROME, None, "alice's laptop", "alice")
    built = assert_report_exact(db)
    bravo = next(o for o in built["orgs"] if o["org_id"] == "2")
    # alice's two bravo requests: post_patch_valid, member_current and the verdict each count them.
    assert list(bravo["explained_by"].items()) == [("post_patch_valid", 2), ("member_current", 2), ("verdict", 2)]


def test_an_old_database_gets_its_rule_counts(db):
    """m023_report_rule_counts fills the table for a database that had rules applied."""
    for name in ALL_RULES:
        actions.apply(db, name)
    verdicts.make(db, "198.51.100.66", UA_ATTACKER, "1", "known", "alice")
    kept = db.execute("select * from rule_counts order by 1, 2, 3").fetchall()
    assert len(kept) >= 5
    db.execute("drop table rule_counts")
    db.execute("delete from _sqlite_migrations where name = 'm023_report_rule_counts'")
    db.conn.commit()
    schema.ensure_schema(db)
    assert db.execute("select * from rule_counts order by 1, 2, 3").fetchall() == kept
    assert_report_exact(db)


def test_evidence_reads_the_same_breakdown(db):
    for name in ALL_RULES:
        actions.apply(db, name)
    org = next(o for o in report.build_report(db)["orgs"] if o["org_id"] == "3")
    assert org["status"] == "cleared" and org["explained_by"] == {"staff": 1, "partner": 3}
    assert evidence.org_summary(db, "3")["status"] == "cleared"
    html = evidence.render(db, "3")
    assert [(m, int(n)) for m, n in re.findall(r"<td>(staff|partner)</td>\s*<td[^>]*>(\d+)</td>", html)] == [
        ("staff", 1), ("partner", 3)
    ]
