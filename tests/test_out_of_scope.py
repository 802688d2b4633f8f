"""Why a request is out of scope (MODEL §6.1): each reason counted, first failed test
first, per org and in the report, kept through later batches and record changes;
explained_by on requests_view (§6.2)."""

from __future__ import annotations

import json

from test_rules import STAFF, TOK, db, db_path, line, world_template  # noqa: F401 (fixtures)

from datasette_forensics import ingest, records, report
from datasette_forensics.derived import out_of_scope
from datasette_forensics.rules import actions

# The rules world holds 8 requests after the patch (the bot*_post lines and
# bot5_eta_at_patch) and nothing else out of scope.
WORLD = {"outside_window": 8, "path_not_in_scope": 0, "no_org": 0, "unknown_org": 0, "no_live_integration": 0}

LATER = [
    # outside_window: before introduced_at, exactly at patched_at, and outside the
    # window on a path outside scope too (the window is tested first).
    (line("early", "2020-06-30T23:59:59.999Z", "alpha", TOK), "outside_window", "1"),
    (line("at_patch", "2020-07-20T00:00:00Z", "beta", TOK), "outside_window", "2"),
    (line("early_offpath", "2020-06-01T00:00:00Z", None, TOK, path="/health"), "outside_window", ""),
    # path_not_in_scope: in the window, no scope_paths match (routed or not).
    (line("health", "2020-07-05T00:00:00Z", None, TOK, path="/health"), "path_not_in_scope", ""),
    (line("web", "2020-07-05T00:00:01Z", None, TOK, path="/web/orgs/alpha/"), "path_not_in_scope", ""),
    # no_org: in scope by path, no org_id and no org route.
    (line("no_route", "2020-07-05T00:00:02Z", None, TOK, path="/api/status"), "no_org", ""),
    # unknown_org: an unknown slug, and a log org_id that is not in orgs.
    (line("bad_slug", "2020-07-05T00:00:03Z", "nosuch", TOK), "unknown_org", "nosuch"),
    (line("bad_id", "2020-07-05T00:00:04Z", None, TOK, path="/api/status", org_id="42"), "unknown_org", "42"),
]


def counts_of(db, org=None):
    return out_of_scope.counts(db, org)


def test_each_reason_counted_per_org_and_in_the_report(db, tmp_path):
    assert counts_of(db) == WORLD
    log = tmp_path / "later.jsonl"
    log.write_text("".join(json.dumps(l) + "\n" for l, _, _ in LATER))
    ingest.import_logs(db, [str(log)])
    expected = dict(WORLD)
    for _, reason, _ in LATER:
        expected[reason] += 1
    assert counts_of(db) == expected
    funnel = report.build_report(db)["funnel"]
    assert funnel["out_of_scope"] == expected
    assert list(funnel["out_of_scope"]) == list(out_of_scope.REASONS)
    assert sum(expected.values()) == funnel["requests"] - funnel["in_scope"]
    # Per org: alpha (1) has bot2_alpha_post_200 and early; an unknown slug resolves to
    # no org ('') like the requests that name none; a log's own org_id 42 is kept.
    none = dict.fromkeys(out_of_scope.REASONS, 0)
    assert counts_of(db, "1") == none | {"outside_window": 2}
    assert counts_of(db, "") == none | {"outside_window": 1, "path_not_in_scope": 2, "no_org": 1, "unknown_org": 1}
    assert counts_of(db, "42") == none | {"unknown_org": 1}
    # Each request's reason on requests_view, as counted.
    by_case = dict(db.execute(
        "select json_extract(r.extra, '$.n'), v.out_of_scope from requests_view v join requests r on r.id = v.id"
    ))
    assert {n: by_case[n] for _, _, n in [(0, 0, l["n"]) for l, _, _ in LATER]} == {l["n"]: reason for l, reason, _ in LATER}

    # Integrations change: gamma's (3) is deleted at 2020-07-03, so its later requests
    # lose their live integration; the counts follow the records.
    f = tmp_path / "integrations.csv"
    f.write_text("id,org_id,created_at,deleted_at\ni3,3,2020-01-01T00:00:00Z,2020-07-03T00:00:00Z\n")
    records.import_records(db, "integrations", str(f))
    after = counts_of(db)
    in_gamma_after = db.execute(
        "select count(*) from requests_view where named_org_id = '3' and out_of_scope = 'no_live_integration'"
    ).fetchone()[0]
    assert in_gamma_after == 3  # staff6_gamma (3 Jul 11:00), pbot_gamma_before_revoke, pbot_gamma_at_revoke
    assert after["no_live_integration"] == 3
    funnel = report.build_report(db)["funnel"]
    assert sum(after.values()) == funnel["requests"] - funnel["in_scope"]


def test_no_breakdown_before_an_incident(tmp_path):
    from datasette_forensics import schema

    db = schema.connect(str(tmp_path / "empty.db"))
    assert report.build_report(db)["funnel"]["out_of_scope"] is None


def test_explained_by_names_rules_in_applied_order(db):
    actions.apply(db, "token_owner")
    actions.apply(db, "staff")
    rows = dict(db.execute(
        """select json_extract(r.extra, '$.n'), v.explained_by from requests_view v join requests r on r.id = v.id"""
    ))
    assert rows["tok_alpha_t1"] == "token_owner"
    assert rows["staff_alpha"] == "staff"
    assert rows["user_alpha"] == ""  # in scope, unexplained
    assert rows["bot1_eps_post"] is None  # out of scope


def test_dry_run_changes_nothing_and_says_what_apply_would(db_path):
    from click.testing import CliRunner

    from conftest import dump
    from datasette_forensics.cli import cli

    before = dump(db_path)
    runner = CliRunner()
    result = runner.invoke(cli, ["rules", str(db_path), "--apply", "partner", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "partner (dry run, nothing changed): would explain 5 requests" in result.output
    assert "org 4 (delta): exposed -> review" in result.output
    assert dump(db_path) == before
    applied = runner.invoke(cli, ["rules", str(db_path), "--apply", "partner"])
    assert "partner: 5 requests newly explained" in applied.output and "org 4 (delta): exposed -> review" in applied.output
    bad = runner.invoke(cli, ["rules", str(db_path), "--undo", "partner", "--dry-run"])
    assert bad.exit_code == 1 and "--dry-run goes with --apply" in bad.output
