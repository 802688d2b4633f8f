"""Evidence files (MODEL §6.5) and notification messages (§6.6) on the rules world of
test_rules.py: what they hold, what they never hold, records, --only-changed, bad input."""

from __future__ import annotations

import email
import email.policy
import html
import re

import pytest
from click.testing import CliRunner

from conftest import dump
from test_rules import BOT1, BOT3, P2, db, db_path, world_template  # noqa: F401 (fixtures)

from datasette_forensics import evidence, records, report, verdicts
from datasette_forensics.cli import cli

EPS, ZETA = "5", "6"


def test_evidence_for_an_org_reached_by_a_cross_tenant_signature_names_no_other_org(db, tmp_path):
    path = tmp_path / "eps.html"
    evidence.write(db, EPS, str(path))
    text = path.read_text()
    # eps: p2 x2, bot1, bot3 unexplained (no rule applied); bot3 also reached zeta.
    rows = re.findall(r"<tr><td>2020-", text)
    assert len(rows) == 4
    assert "also seen on 1 other organisation<" in text
    assert text.count("seen on this organisation only") == 3
    assert "batch1.jsonl</code>, line 17" in text or "batch1.jsonl</code>, line" in text
    for other in ("zeta", "Zeta", "alpha", "Alpha", "/api/orgs/zeta"):
        assert other not in text
    assert "<script" not in text and "src=" not in text and "href=" not in text
    assert "exposed" in text and "2020-07-01T00:00:00" in text and "2020-07-20T00:00:00" in text


def test_evidence_counts_rules_and_verdicts_and_escapes_log_strings(db, tmp_path):
    verdicts.make(db, *BOT1, EPS, "their bot", "a")
    db.execute("update user_agents set ua = ? where ua = ?", ["<b>p2</b>\x1b[2J\u202eexe", P2[1]])
    path = tmp_path / "eps.html"
    evidence.write(db, EPS, str(path))
    text = path.read_text()
    assert "an analyst&#39;s verdict</td><td class=\"num\">1<" in text
    assert "<b>p2</b>" not in text and html.escape("<b>p2</b>") + "\\x1b[2J\\u202eexe" in text
    assert "\x1b" not in text and "\u202e" not in text  # shown as visible escapes, never raw
    assert len(re.findall(r"<tr><td>2020-", text)) == 3


def test_evidence_cli_single_all_and_errors(db_path, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["evidence", str(db_path), "--all", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    built = report.build_report(__import__("datasette_forensics.schema").schema.connect(str(db_path)))
    expected = sorted(o["org_id"] for o in built["orgs"] if o["status"] != "cleared")
    assert sorted(p.stem for p in (tmp_path / "out").iterdir()) == expected
    blocker = tmp_path / "file"
    blocker.write_text("x")
    before = dump(db_path)
    for args, message in [
        (["--org", "999", "-o", str(tmp_path / "x.html")], "Unknown org '999'"),
        (["--all", "-o", str(blocker / "sub")], "Cannot create the directory"),
        (["--org", EPS, "-o", str(tmp_path / "missing" / "x.html")], "Cannot write"),
        (["-o", str(tmp_path / "x.html")], "Give one of --org"),
    ]:
        result = runner.invoke(cli, ["evidence", str(db_path), *args])
        assert result.exit_code == 1 and message in result.output, result.output
    assert dump(db_path) == before


def contacts(db, tmp_path, eps_contact="ops@eps.example"):
    f = tmp_path / "orgs.csv"
    f.write_text(
        "id,slug,name,contact_email\n"
        f"5,eps,\"Eps\r\nBcc: victim@evil.example\",{eps_contact}\n"
        "6,zeta,Zeta,\"zeta@zeta.example\nBcc: x@evil.example\"\n"
        "2,beta,Beta,beta@beta.example\n"
    )
    records.import_records(db, "orgs", str(f))


def read_messages(directory) -> dict:
    return {
        p.stem: email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
        for p in sorted(directory.glob("*.eml"))
    }


def test_notify_then_a_status_change_then_needs_update_then_only_changed(db, tmp_path):
    contacts(db, tmp_path)
    out = tmp_path / "out"
    from datasette_forensics import notify

    result = notify.notify(db, str(out), "security@example.com", "Incident", actor="a")
    statuses = {o["org_id"]: o["status"] for o in report.build_report(db)["orgs"]}
    notifiable = {o for o, s in statuses.items() if s != "cleared"}
    # zeta's contact holds a line break: skipped, named; orgs without a contact too.
    assert dict(result["skipped"])[ZETA] == "contact is not one plain address"
    assert {o for o, _ in result["written"]} == {o for o in notifiable if o in ("1", "2", EPS)}
    messages = read_messages(out)
    eps = messages[EPS]
    assert eps["To"].addresses[0].addr_spec == "ops@eps.example"
    assert eps["Bcc"] is None and "Bcc" not in eps.as_string().split("\n\n", 1)[0].replace("Bcc: victim", "")
    assert eps["Subject"] == "Incident" and eps["From"] == "security@example.com"
    body = eps.get_content()
    assert "4 requests" in body and "status: exposed" in body and BOT3[1] in body
    built = {o["org_id"]: o for o in report.build_report(db)["orgs"]}
    assert built[EPS]["notified_at"] and built[EPS]["needs_update"] is False
    assert built["7"]["notified_at"] is None and built["7"]["needs_update"] is False

    verdicts.make(db, *BOT3, None, "probe", "a")  # eps: exposed -> review, 4 -> 3
    built = {o["org_id"]: o for o in report.build_report(db)["orgs"]}
    assert built[EPS]["needs_update"] is True and built["2"]["needs_update"] is False

    again = tmp_path / "again"
    result = notify.notify(db, str(again), "security@example.com", "Update", only_changed=True, actor="a")
    assert [o for o, _ in result["written"]] == [EPS]
    assert "3 requests" in read_messages(again)[EPS].get_content()
    assert report.build_report(db)["orgs"][0]["needs_update"] is False
    assert db.execute("select count(*) from notifications where org_id = ?", [EPS]).fetchone()[0] == 2


def test_user_template_sandboxed_and_bad_input_changes_nothing(db_path, tmp_path):
    runner = CliRunner()
    good = tmp_path / "good.j2"
    good.write_text("Dear {{ org.slug }}: {{ unexplained_requests }} unexplained, {{ status }}.\n{% for r in requests %}{{ r.uri }}\n{% endfor %}")
    result = runner.invoke(cli, ["notify", str(db_path), "--template", str(good), "--from", "s@example.com",
                                 "--subject", "Hi", "-o", str(tmp_path / "ok")])
    assert result.exit_code == 0, result.output
    alpha = read_messages(tmp_path / "ok")["1"].get_content()
    assert alpha.startswith("Dear alpha: ") and "/api/orgs/alpha/" in alpha
    assert "skipped org 2: no contact" in result.output

    before = dump(db_path)
    broken = tmp_path / "broken.j2"
    broken.write_text("{% for x in %}")
    undefined = tmp_path / "undefined.j2"
    undefined.write_text("{{ secret_key }}")
    escape = tmp_path / "escape.j2"
    escape.write_text("{{ org.__class__.__mro__[1].__subclasses__() }}")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for args, message in [
        (["--template", str(broken)], "does not compile: line 1"),
        (["--template", str(undefined)], "reads a name it is not given"),
        (["--template", str(escape)], "The template failed for org"),
        (["--subject", "a\nBcc: x@evil.example"], "--subject must be one non-empty line"),
        (["--from", "a@b.example\nBcc: c@d.example"], "--from must be one plain address"),
        (["-o", str(blocker / "dir")], "Cannot create the directory"),
        (["--status", "nope"], "Unknown status 'nope'"),
    ]:
        base = {"--from": "s@example.com", "--subject": "Hi", "-o": str(tmp_path / "bad")}
        for i in range(0, len(args), 2):
            base[args[i]] = args[i + 1]
        flat = [x for kv in base.items() for x in kv]
        result = runner.invoke(cli, ["notify", str(db_path), *flat])
        assert result.exit_code == 1 and message in result.output, (args, result.output)
        assert "Traceback" not in result.output
    assert dump(db_path) == before
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").iterdir())


def test_the_demo_shows_a_verdict_notes_tags_evidence_and_a_notification_run(tmp_path):
    from datasette_forensics import demo, schema

    path = tmp_path / "demo.db"
    demo.build(str(path), with_case_work=True)
    db = schema.connect(str(path))
    built = report.build_report(db)
    assert [(v["org_id"], v["reason"]) for v in built["verdicts"]] == [("109", "customer confirmed: their office network")]
    orgs = {o["org_id"]: o for o in built["orgs"]}
    assert orgs["101"]["tags"] == ["notified"] and orgs["109"]["explained_by"].get("verdict") == 3
    assert all(o["notified_at"] for o in built["orgs"] if o["status"] != "cleared" and o["contact_email"])
    case = tmp_path / "demo-case"
    assert "also seen on" in (case / "evidence-101.html").read_text()
    assert (case / "outbox" / "101.eml").exists()
