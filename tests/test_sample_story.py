"""The demo incident of sample_data/: statuses written by hand from its story (README)."""

from __future__ import annotations

import csv
import io
import json

from click.testing import CliRunner

from datasette_forensics import schema
from datasette_forensics.rules import actions
from datasette_forensics.cli import cli
from datasette_forensics.report import build_report

# sample_data/README.md, "Per org": (status, in scope, unexplained, unexplained signatures)
BEFORE_RULES = {
    "101": ("exposed", 11, 11, 3),
    "102": ("review", 20, 20, 1),
    "103": ("review", 5, 5, 1),
    "104": ("review", 9, 9, 1),
    "106": ("exposed", 26, 26, 4),
    "107": ("exposed", 5, 5, 2),
    "108": ("exposed", 23, 23, 3),
    "109": ("review", 3, 3, 1),
    "110": ("review", 2, 2, 1),
    "111": ("review", 5, 5, 3),
    "112": ("review", 10, 10, 1),
    "113": ("exposed", 2, 2, 1),
    "114": ("review", 2, 2, 1),
}
AFTER_ALL_RULES = {
    "101": ("exposed", 11, 5, 1),
    "102": ("cleared", 20, 0, 0),
    "103": ("review", 5, 5, 1),
    "104": ("review", 9, 9, 1),
    "106": ("cleared", 26, 0, 0),
    "107": ("exposed", 5, 2, 1),
    "108": ("exposed", 23, 2, 1),
    "109": ("cleared", 3, 0, 0),
    "110": ("cleared", 2, 0, 0),
    "111": ("review", 5, 3, 2),
    "112": ("cleared", 10, 0, 0),
    "113": ("cleared", 2, 0, 0),
    "114": ("cleared", 2, 0, 0),
}
ORDER_BEFORE = ["106", "108", "101", "107", "113", "102", "112", "104", "103", "111", "109", "110", "114"]
ORDER_AFTER = ["101", "107", "108", "104", "103", "111", "102", "106", "109", "110", "112", "113", "114"]
# "Rules": newly explained in apply-all order
NEWLY_EXPLAINED = {
    "staff": 3, "member_current": 8, "member_historical": 3,
    "partner": 9, "post_patch_valid": 62, "token_owner": 12,
}
CROSS_TENANT_AFTER = {
    ("192.0.2.66", "curl/7.68.0"): (["101", "108", "113"], 9, 7),
    ("203.0.113.10", "Apache-HttpClient/4.5.13 (Java/11.0.9)"): (["106", "107", "108"], 7, 2),
    ("2001:db8:c1ab::15", "Apache-HttpClient/4.5.13 (Java/11.0.9)"): (["106", "107"], 2, 0),
    (
        "198.51.100.7",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:78.0) Gecko/20100101 Firefox/78.0",
    ): (["101", "106"], 3, 0),
}


# MODEL §6.1: 166 - 123 = 43 requests out of scope, each for the first test it fails.
OUT_OF_SCOPE = {"outside_window": 18, "path_not_in_scope": 7, "no_org": 1, "unknown_org": 1, "no_live_integration": 16}


def org_table(report):
    return {
        o["org_id"]: (o["status"], o["in_scope_requests"], o["unexplained_requests"], o["unexplained_signatures"])
        for o in report["orgs"]
    }


def test_funnel_and_statuses_before_rules(sample_db_path):
    report = build_report(schema.connect(str(sample_db_path)))
    assert report["incident"] == {
        "name": report["incident"]["name"],
        "introduced_at": "2020-07-01T00:00:00.000Z",
        "patched_at": "2020-07-20T14:04:00.000Z",
    }
    assert report["funnel"] == {
        "lines_rejected": 3, "requests": 166, "in_scope": 123, "unexplained": 123,
        "out_of_scope": OUT_OF_SCOPE,
    }
    assert org_table(report) == BEFORE_RULES
    assert [o["org_id"] for o in report["orgs"]] == ORDER_BEFORE
    assert report["rules_applied"] == []
    # umbrella (105) has no integration and cyberdyne (115) no in-scope request
    assert "105" not in org_table(report) and "115" not in org_table(report)


def test_apply_all_from_the_cli_then_report(sample_db_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["rules", str(sample_db_path), "--apply", "all"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["report", str(sample_db_path), "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["funnel"] == {
        "lines_rejected": 3, "requests": 166, "in_scope": 123, "unexplained": 26, "out_of_scope": OUT_OF_SCOPE,
    }
    assert org_table(report) == AFTER_ALL_RULES
    assert [o["org_id"] for o in report["orgs"]] == ORDER_AFTER
    assert report["rules_applied"] == list(NEWLY_EXPLAINED)
    oscorp = next(o for o in report["orgs"] if o["org_id"] == "114")
    assert oscorp["contact_email"] is None and oscorp["slug"] == "oscorp"
    signatures = {
        (s["ip"], s["user_agent"]): (s["org_ids"], s["requests"], s["unexplained_requests"])
        for s in report["cross_tenant_signatures"]
    }
    assert signatures == CROSS_TENANT_AFTER


def test_each_rule_newly_explains_what_the_story_says(sample_db_path):
    db = schema.connect(str(sample_db_path))
    for name, expected in NEWLY_EXPLAINED.items():
        assert actions.apply(db, name, actor="test")["requests_explained"] == expected, name
    ledger = db.execute("select rule, action, actor, requests_explained from rule_ledger order by id").fetchall()
    assert ledger == [(name, "apply", "test", n) for name, n in NEWLY_EXPLAINED.items()]


def test_notification_csv_lists_exposed_then_review(sample_db_path, tmp_path):
    runner = CliRunner()
    assert runner.invoke(cli, ["rules", str(sample_db_path), "--apply", "all"]).exit_code == 0
    out = tmp_path / "notify.csv"
    result = runner.invoke(cli, ["report", str(sample_db_path), "--format", "csv", "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["org_id"] for r in rows] == ["101", "107", "108", "104", "103", "111"]
    assert [r["status"] for r in rows] == ["exposed"] * 3 + ["review"] * 3
    assert rows[0]["slug"] == "acme" and "@" in rows[0]["contact_email"]
