"""Verdicts (MODEL §6.3): made and withdrawn, an org cleared and exposed again, the
ledger, the waterfall, the report, a later batch, bad input; against hand-derived
expectations on the rules world of test_rules.py."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest import dump
from test_pages_aggregates import assert_current
from test_rules import BOT1, BOT2, BOT3, P2, USER, db, db_path, line, state, world_template  # noqa: F401 (fixtures)

from datasette_forensics import ingest, report, rules, verdicts
from datasette_forensics.cli import cli
from datasette_forensics.rules import verdict as verdict_rule
from datasette_forensics.derived import explanations, waterfall
from datasette_forensics.derived.status import org_statuses
from datasette_forensics.rules import actions

EPS, ZETA = "5", "6"


def explained_by_verdict(db) -> set[str]:
    return {
        n for (n,) in db.execute(
            """select json_extract(r.extra, '$.n') from scoped s join requests r on r.id = s.request_id
            where s.explained & ? != 0""",
            [rules.bit_of(db, verdict_rule.NAME)],
        )
    }


def assert_consistent(db) -> None:
    """What a verdict changed in place equals a full re-evaluation, aggregates included."""
    kept = state(db), waterfall.read(db)
    explanations.reevaluate(db)
    assert (state(db), waterfall.compute(db)) == kept
    assert_current(db)


def test_verdicts_clear_an_org_and_are_withdrawn(db):
    # No rule: eps has p2 x2, bot1, bot3 (cross-tenant) unexplained: exposed; zeta too (bot3).
    assert org_statuses(db)[EPS] == "exposed" and org_statuses(db)[ZETA] == "exposed"

    made = verdicts.make(db, *BOT3, EPS, "  customer confirmed: their CI runners ", "alice")
    assert made["requests_explained"] == 1  # bot3_eps
    assert made["orgs_changed"] == [{"org_id": EPS, "from": "exposed", "to": "review"}]
    assert explained_by_verdict(db) == {"bot3_eps"}
    assert_consistent(db)

    made = verdicts.make(db, *BOT3, None, "shared monitoring probe", "alice")
    assert made["requests_explained"] == 1  # bot3_zeta; bot3_eps already was
    assert made["orgs_changed"] == []  # zeta stays exposed: user_zeta's signature also reached alpha
    verdicts.make(db, *BOT1, EPS, "their uptime bot", "bob")
    made = verdicts.make(db, *P2, EPS, "their partner", "bob")
    assert made["requests_explained"] == 2
    assert made["orgs_changed"] == [{"org_id": EPS, "from": "review", "to": "cleared"}]
    assert explained_by_verdict(db) == {"bot3_eps", "bot3_zeta", "bot1_eps", "p2_eps_before_auth", "p2_eps_at_auth"}
    assert_consistent(db)

    built = report.build_report(db)
    eps = next(o for o in built["orgs"] if o["org_id"] == EPS)
    assert eps["status"] == "cleared" and eps["explained_by"] == {"verdict": 4}
    assert built["rules_applied"] == []
    assert [(v["ip"], v["org_id"], v["reason"], v["actor"]) for v in built["verdicts"]] == [
        (BOT3[0], EPS, "customer confirmed: their CI runners", "alice"),
        (BOT3[0], None, "shared monitoring probe", "alice"),
        (BOT1[0], EPS, "their uptime bot", "bob"),
        (P2[0], EPS, "their partner", "bob"),
    ]
    assert [s["rule"] for s in waterfall.read(db)] == [None, "verdict"]

    # Withdraw the every-org verdict: bot3_zeta is unexplained again, bot3_eps stays (its own verdict).
    withdrawn = verdicts.withdraw(db, *BOT3, None, "carol")
    assert withdrawn["requests_explained"] == -1 and withdrawn["orgs_changed"] == []
    assert "bot3_zeta" not in explained_by_verdict(db) and "bot3_eps" in explained_by_verdict(db)
    withdrawn = verdicts.withdraw(db, *P2, EPS, "carol")
    assert withdrawn["requests_explained"] == -2
    assert withdrawn["orgs_changed"] == [{"org_id": EPS, "from": "cleared", "to": "review"}]
    assert_consistent(db)
    assert len(report.build_report(db)["verdicts"]) == 2

    ledger = db.execute("select rule, action, actor, requests_explained, orgs_changed from rule_ledger order by id").fetchall()
    assert [(r[0], r[1], r[2], r[3]) for r in ledger] == [
        ("verdict", "verdict", "alice", 1), ("verdict", "verdict", "alice", 1),
        ("verdict", "verdict", "bob", 1), ("verdict", "verdict", "bob", 2),
        ("verdict", "withdraw", "carol", 1), ("verdict", "withdraw", "carol", 2),
    ]
    assert json.loads(ledger[-1][4]) == [{"org_id": EPS, "from": "cleared", "to": "review"}]


def test_verdicts_with_rules_before_and_after_keep_the_waterfall(db):
    actions.apply(db, "member_current")
    verdicts.make(db, *USER, None, "known user", "a")  # user_zeta: already explained by member_current
    actions.apply(db, "post_patch_valid")
    verdicts.make(db, *BOT1, EPS, "their bot", "a")  # bot1_eps: post_patch_valid explained it too
    verdicts.make(db, *BOT3, None, "probe", "a")
    assert_consistent(db)
    verdicts.withdraw(db, *BOT1, EPS, "a")
    assert_consistent(db)
    assert [s["rule"] for s in waterfall.read(db)] == [None, "member_current", "verdict", "post_patch_valid"]


def test_a_verdict_explains_a_later_batch(db, tmp_path):
    verdicts.make(db, *BOT3, None, "probe", "a")
    log = tmp_path / "later.jsonl"
    log.write_text(json.dumps(line("bot3_eps_later", "2020-07-09T00:00:00Z", "eps", BOT3)) + "\n")
    ingest.import_logs(db, [str(log)])
    assert {"bot3_eps", "bot3_zeta", "bot3_eps_later"} == explained_by_verdict(db)
    assert_current(db)


def test_a_verdict_on_a_signature_without_in_scope_requests_is_stored_and_says_so(db):
    result = verdicts.make(db, *BOT2, EPS, "not theirs", "a")  # BOT2 reached zeta and alpha, never eps
    assert result["requests_explained"] == 0 and result["in_scope"] == 0
    assert "made no in-scope request" in verdicts.summary(result)
    assert len(verdicts.listed(db)) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (("10.9.9.9", "nobody", None, "x"), "No request was made from address 10.9.9.9"),
        ((BOT3[0], BOT3[1], "999", "x"), "Unknown org '999'"),
        ((BOT3[0], BOT3[1], EPS, "   "), "needs a reason"),
    ],
)
def test_bad_verdicts_change_nothing(db, db_path, args, message):
    before = dump(db_path)
    with pytest.raises(Exception, match=message):
        verdicts.make(db, *args, "a")
    assert dump(db_path) == before


def test_cli_single_file_withdraw_list_and_errors(db_path, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["verdict", str(db_path), "--ip", BOT3[0], "--user-agent", BOT3[1], "--org", EPS,
                                 "--reason", "confirmed", "--actor", "alice"])
    assert result.exit_code == 0, result.output
    assert "1 requests newly explained" in result.output and "org 5: exposed → review" in result.output

    csv_file = tmp_path / "v.csv"
    csv_file.write_text(f"ip,user_agent,org_id,reason\n{BOT1[0]},{BOT1[1]},{EPS},bot\n{P2[0]},{P2[1]},{EPS},partner\n")
    result = runner.invoke(cli, ["verdict", str(db_path), "--file", str(csv_file), "--actor", "bob"])
    assert result.exit_code == 0, result.output
    assert "org 5: review → cleared" in result.output

    before = dump(db_path)
    bad = tmp_path / "bad.csv"
    bad.write_text(f"ip,user_agent,org_id,reason\n{BOT3[0]},{BOT3[1]},{ZETA},ok\n10.9.9.9,x,,missing signature\n")
    for args, message in [
        (["--file", str(bad)], "No request was made from address 10.9.9.9"),
        (["--ip", BOT3[0], "--user-agent", BOT3[1], "--org", ZETA, "--reason", " "], "needs a reason"),
        (["--ip", BOT3[0], "--user-agent", BOT3[1], "--org", "nope", "--reason", "x"], "Unknown org 'nope'"),
        (["--withdraw", "--ip", BOT3[0], "--user-agent", BOT3[1]], "No verdict on"),
        (["--ip", BOT3[0], "--reason", "x"], "both --ip and --user-agent"),
    ]:
        result = runner.invoke(cli, ["verdict", str(db_path), *args])
        assert result.exit_code == 1 and message in result.output, result.output
        assert "Traceback" not in result.output
    assert dump(db_path) == before

    result = runner.invoke(cli, ["verdict", str(db_path), "--withdraw", "--ip", BOT3[0], "--user-agent", BOT3[1], "--org", EPS])
    assert result.exit_code == 0 and "1 requests no longer explained" in result.output
    result = runner.invoke(cli, ["verdict", str(db_path), "--list"])
    lines = result.output.splitlines()
    assert len(lines) == 3 and "withdrawn" in lines[0] and "standing" in lines[1]
    result = runner.invoke(cli, ["rules", str(db_path), "--undo", "verdict"])
    assert result.exit_code == 1 and "use the verdict command" in result.output
