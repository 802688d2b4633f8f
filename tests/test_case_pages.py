"""Case work from the web (MODEL §6, §5's write rules): verdicts and notes by POST with
the CSRF token and forensics-write (anonymous, non-root and root), what the org and
signature pages show, the evidence download, ?tag= on the pivots."""

from __future__ import annotations

import html

import pytest
import pytest_asyncio
from datasette.app import Datasette

from conftest import CROSS_SITE, HEADER_CSRF, dump
from test_rules import BOT1, BOT3, P2, db_path, world_template  # noqa: F401 (fixtures)
from test_rules_page import messages, read, signed_in, statuses

BASE = "/w/-/forensics"
ORG = BASE + "/orgs/5"


@pytest_asyncio.fixture
async def ds(db_path):
    datasette = Datasette([str(db_path)])
    await datasette.invoke_startup()
    return datasette


def verdict(sig, org="5", reason="customer confirmed: their CI runners", action="make"):
    return {"action": action, "ip": sig[0], "user_agent": sig[1], "org_id": org, "reason": reason, "next": ORG}


@pytest.mark.asyncio
async def test_root_makes_and_withdraws_verdicts_from_the_org_page(ds, db_path):
    cookies, token = await signed_in(ds, page=ORG)
    page = await ds.client.get(ORG, cookies=cookies)
    assert page.text.count('class="forensics-verdict-form"') == 3  # eps: p2, bot1, bot3
    for sig in (BOT3, BOT1, P2):
        response = await ds.client.post(BASE + "/verdicts", data=dict(verdict(sig), csrftoken=token), cookies=cookies)
        assert response.status_code == 303 and response.headers["location"] == ORG
    assert messages(ds, response) == [
        "Verdict on 192.0.2.50 'p2-client' for org 5: 2 requests newly explained; org 5: review → cleared."
    ]
    assert statuses(db_path)["5"] == "cleared"
    data = (await ds.client.get(ORG + ".json")).json()
    assert [v["reason"] for v in data["case"]["verdicts"]] == ["customer confirmed: their CI runners"] * 3
    assert {e["ip"]: e["explained_by"] for e in data["case"]["explanations"]}[BOT3[0]] == {"verdict": 1}
    assert read(db_path, "select actor, action from rule_ledger") == [("root", "verdict")] * 3
    response = await ds.client.post(
        BASE + "/verdicts", data=dict(verdict(P2, action="withdraw"), csrftoken=token), cookies=cookies
    )
    assert messages(ds, response) == [
        "Withdrew the verdict on 192.0.2.50 'p2-client' for org 5: 2 requests no longer explained; org 5: cleared → review."
    ]
    # A blank reason: a message, nothing changed.
    before = dump(db_path)
    response = await ds.client.post(BASE + "/verdicts", data=dict(verdict(P2, reason="  "), csrftoken=token), cookies=cookies)
    assert response.status_code == 303 and "needs a reason" in messages(ds, response)[0]
    assert dump(db_path) == before


@pytest.mark.asyncio
async def test_root_writes_edits_and_deletes_notes_shown_as_text(ds, db_path):
    cookies, token = await signed_in(ds, page=ORG)
    hostile = "<script>alert(1)</script>"
    for data in (
        {"kind": "org", "target": "5", "tag": "notified", "text": hostile},
        {"kind": "signature", "ip": BOT3[0], "user_agent": BOT3[1], "tag": "suspicious"},
    ):
        response = await ds.client.post(
            BASE + "/notes", data=dict(data, action="write", next=ORG, csrftoken=token), cookies=cookies
        )
        assert response.status_code == 303
    page = await ds.client.get(ORG, cookies=cookies)
    assert hostile not in page.text and html.escape(hostile) in page.text
    assert '<span class="forensics-tag">suspicious</span>' in page.text
    response = await ds.client.post(
        BASE + "/notes", data={"action": "edit", "note_id": "1", "tag": "called", "text": "phoned", "next": ORG, "csrftoken": token},
        cookies=cookies,
    )
    assert messages(ds, response) == ["Note 1 edited; the earlier version is kept."]
    data = (await ds.client.get(ORG + ".json")).json()
    assert data["case"]["tags"] == ["called"]
    assert [v["action"] for v in data["case"]["note_history"]["1"]] == ["write", "edit"]
    report = (await ds.client.get(BASE + "/report.json")).json()
    assert next(o for o in report["orgs"] if o["org_id"] == "5")["tags"] == ["called"]
    # Signatures page and pivots: tags shown, ?tag= filters.
    sigs = (await ds.client.get(BASE + "/signatures.json?tag=suspicious")).json()
    assert [(r["ip"], r["tags"]) for r in sigs["rows"]] == [(BOT3[0], ["suspicious"])]
    ips = (await ds.client.get(BASE + "/ips.json?tag=suspicious")).json()
    assert [r["key"] for r in ips["rows"]] == [BOT3[0]]
    uas = (await ds.client.get(BASE + "/user-agents.json?tag=suspicious")).json()
    assert [r["key"] for r in uas["rows"]] == [BOT3[1]]
    orgs = (await ds.client.get(BASE + "/orgs.json?tag=called")).json()
    assert [r["org_id"] for r in orgs["rows"]] == ["5"]


ACTIONS = [
    ("/verdicts", verdict(BOT3)),
    ("/notes", {"action": "write", "kind": "org", "target": "5", "tag": "x", "next": ORG}),
]


@pytest.mark.asyncio
@pytest.mark.parametrize("path, data", ACTIONS)
@pytest.mark.parametrize("actor", [None, "alice"])
async def test_anonymous_and_non_root_are_forbidden(ds, db_path, path, data, actor):
    cookies, token = await signed_in(ds, actor_id=actor, page="/-/messages")  # a page with a form
    page = await ds.client.get(ORG, cookies=cookies)
    assert "forensics-verdict-form" not in page.text and "forensics-note-form" not in page.text
    before = dump(db_path)
    response = await ds.client.post(BASE + path, data=dict(data, csrftoken=token), cookies=cookies)
    assert response.status_code == 403 and "forensics-write" in response.text
    assert dump(db_path) == before


@pytest.mark.asyncio
@pytest.mark.parametrize("path, data", ACTIONS)
async def test_root_without_a_valid_csrf_token_is_refused(ds, db_path, path, data):
    cookies, token = await signed_in(ds, page=ORG)
    before = dump(db_path)
    if HEADER_CSRF:  # Datasette 1.0: no token, a check of the headers a browser sends cross-site
        for headers in (CROSS_SITE, {"origin": "http://evil.example"}, {"sec-fetch-site": "same-site"}):
            response = await ds.client.post(BASE + path, data=data, cookies=cookies, headers=headers)
            assert response.status_code == 403
    else:
        for post_data, post_cookies in ((data, cookies), (dict(data, csrftoken="forged"), cookies)):
            response = await ds.client.post(BASE + path, data=post_data, cookies=post_cookies)
            assert response.status_code == 403
    assert dump(db_path) == before


@pytest.mark.asyncio
async def test_evidence_download(ds):
    response = await ds.client.get(ORG + "/evidence.html")
    assert response.status_code == 200
    assert response.headers["content-disposition"] == 'attachment; filename="evidence-5.html"'
    assert "also seen on 1 other organisation" in response.text and "zeta" not in response.text
    assert (await ds.client.get(BASE + "/orgs/999/evidence.html")).status_code == 404


@pytest.mark.asyncio
async def test_case_record_pages_list_notes_with_history_and_verdicts(ds):
    cookies, token = await signed_in(ds, page=ORG)
    await ds.client.post(BASE + "/notes", data={"action": "write", "kind": "ip", "target": BOT1[0], "text": "<i>hi</i>", "next": ORG, "csrftoken": token}, cookies=cookies)
    await ds.client.post(BASE + "/notes", data={"action": "delete", "note_id": "1", "next": ORG, "csrftoken": token}, cookies=cookies)
    await ds.client.post(BASE + "/verdicts", data=dict(verdict(BOT1), csrftoken=token), cookies=cookies)
    notes_page = (await ds.client.get(BASE + "/notes")).text
    assert "ip 10.0.2.1" in notes_page and "(deleted)" in notes_page and html.escape("<i>hi</i>") in notes_page
    assert notes_page.count("<li>") >= 2  # write and delete
    verdicts_page = (await ds.client.get(BASE + "/verdicts")).text
    assert "customer confirmed: their CI runners" in verdicts_page and "Bot1" in verdicts_page


@pytest.mark.asyncio
async def test_rules_page_preview_changes_nothing(ds, db_path):
    cookies, _ = await signed_in(ds, page=ORG)
    before = dump(db_path)
    data = (await ds.client.get(BASE + "/rules.json?preview=partner", cookies=cookies)).json()
    assert data["preview"]["requests_explained"] == 5
    assert data["preview"]["orgs_changed"] == [{"org_id": "4", "from": "exposed", "to": "review"}]
    page = await ds.client.get(BASE + "/rules?preview=partner", cookies=cookies)
    assert "Applying partner would explain 5 more requests." in page.text
    assert dump(db_path) == before
    anonymous = await ds.client.get(BASE + "/rules?preview=partner")
    assert anonymous.status_code == 403
