"""The rules page: reading, applying and undoing from the web, custom rules, permissions, CSRF."""

from __future__ import annotations

import html
import json
import re
import sqlite3

import pytest
import pytest_asyncio
from datasette.app import Datasette
from conftest import CROSS_SITE, HEADER_CSRF, dump
from test_rules import db_path, world_template  # noqa: F401 (fixtures)

from datasette_forensics import schema
from datasette_forensics.derived.status import org_statuses

PAGE = "/w/-/forensics/rules"


@pytest_asyncio.fixture
async def ds(db_path):
    datasette = Datasette([str(db_path)])
    await datasette.invoke_startup()
    return datasette




def read(path, sql, params=()):
    conn = sqlite3.connect(str(path))
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def statuses(path):
    db = schema.connect(str(path))
    try:
        return org_statuses(db)
    finally:
        db.conn.close()


def actor_cookie(ds, actor_id="root") -> dict:
    return {"ds_actor": ds.sign({"a": {"id": actor_id}}, "actor")}


async def signed_in(ds, actor_id="root", page=PAGE) -> tuple[dict, str]:
    """Cookies and a CSRF token for an actor, from a GET of a page with a form."""
    cookies = actor_cookie(ds, actor_id) if actor_id else {}
    response = await ds.client.get(page, cookies=cookies)
    assert response.status_code == 200
    if HEADER_CSRF:  # Datasette 1.0: no token, a header check
        return cookies, "unused"
    token = response.cookies.get("ds_csrftoken")
    assert token
    return dict(cookies, ds_csrftoken=token), token


def messages(ds, response) -> list[str]:
    cookie = response.cookies.get("ds_messages")
    return [m for m, _ in ds.unsign(cookie, "messages")] if cookie else []


@pytest.mark.asyncio
async def test_anonymous_get_shows_rules_waterfall_and_no_buttons(ds):
    response = await ds.client.get(PAGE)
    assert response.status_code == 200
    text = response.text
    for name in ("staff", "member_current", "member_historical", "partner", "post_patch_valid", "token_owner"):
        assert f"<code>{name}</code>" in text
    assert "A staff user has a session with this signature" in text
    assert 'value="apply"' not in text and 'value="undo"' not in text and 'value="create"' not in text
    assert "<form" not in text.split("<h2>Rules</h2>")[1]
    assert "forensics-write" in text
    in_scope = re.search(r"<td>in scope</td>\s*<td><a href=\"[^\"]*\">(\d+)</a>", text)
    assert in_scope and int(in_scope.group(1)) > 0


@pytest.mark.asyncio
async def test_root_sees_buttons(ds):
    response = await ds.client.get(PAGE, cookies=actor_cookie(ds))
    assert response.text.count('name="action" value="apply"') == 6
    assert 'value="create"' in response.text and "csrftoken" in response.text


@pytest.mark.asyncio
async def test_apply_and_undo_through_the_web(ds, db_path):
    cookies, token = await signed_in(ds)
    before = statuses(db_path)
    before_dump = dump(db_path)
    response = await ds.client.post(
        PAGE, data={"action": "apply", "rule": "partner", "csrftoken": token}, cookies=cookies
    )
    assert response.status_code == 303
    assert response.headers["location"] == PAGE
    assert messages(ds, response) == [
        "Applied partner: 5 requests newly explained; org 4: exposed → review."
    ]
    after = statuses(db_path)
    assert after == dict(before, **{"4": "review"})
    assert read(db_path, "select rule, action, actor, requests_explained from rule_ledger") == [
        ("partner", "apply", "root", 5)
    ]
    page = await ds.client.get(PAGE, cookies=cookies)
    assert 'name="action" value="undo"' in page.text
    assert re.search(r"<td>root</td>\s*<td>5</td>\s*<td>4 \(delta\): exposed → review", page.text)
    data = (await ds.client.get(PAGE + ".json")).json()
    assert [r["name"] for r in data["rules"] if r["applied"]] == ["partner"]
    assert [s["rule"] for s in data["waterfall"]] == [None, "partner"]
    assert data["waterfall"][1]["explained"] == 5
    assert data["waterfall"][0]["remaining"] - 5 == data["unexplained"]
    assert data["ledger"][0]["actor"] == "root" and data["ledger"][0]["orgs_changed"][0]["slug"] == "delta"
    response = await ds.client.post(
        PAGE, data={"action": "undo", "rule": "partner", "csrftoken": token}, cookies=cookies
    )
    assert response.status_code == 303
    assert statuses(db_path) == before
    assert read(db_path, "select rule, action, actor from rule_ledger order by id") == [
        ("partner", "apply", "root"), ("partner", "undo", "root")
    ]
    # apart from the ledger and the waterfall's time stamps, the database is as before
    assert read(db_path, "select request_id, explained from scoped where explained != 0") == []
    assert len(dump(db_path)) > len(before_dump)


async def _forbidden_post(ds, db_path, cookies, data):
    before = dump(db_path)
    response = await ds.client.post(PAGE, data=data, cookies=cookies)
    assert response.status_code == 403
    assert dump(db_path) == before
    return response


@pytest.mark.asyncio
async def test_anonymous_post_is_forbidden(ds, db_path):
    cookies, token = await signed_in(ds, actor_id=None, page="/-/messages")
    response = await _forbidden_post(ds, db_path, cookies, {"action": "apply", "rule": "staff", "csrftoken": token})
    assert "forensics-write" in response.text


@pytest.mark.asyncio
async def test_non_root_post_is_forbidden(ds, db_path):
    cookies, token = await signed_in(ds, actor_id="alice")
    for data in (
        {"action": "apply", "rule": "staff"},
        {"action": "create", "rule": "mine", "kind": "sql", "sql": "1 = 1"},
        {"action": "delete", "rule": "mine"},
    ):
        await _forbidden_post(ds, db_path, cookies, dict(data, csrftoken=token))


@pytest.mark.asyncio
async def test_post_without_or_with_forged_csrf_token_is_refused(ds, db_path):
    cookies, token = await signed_in(ds)
    if HEADER_CSRF:  # Datasette 1.0: what a browser sends for a cross-site form
        for headers in (CROSS_SITE, {"origin": "http://evil.example"}, {"sec-fetch-site": "same-site"}):
            before = dump(db_path)
            response = await ds.client.post(PAGE, data={"action": "apply", "rule": "staff"}, cookies=cookies, headers=headers)
            assert response.status_code == 403 and dump(db_path) == before
        return
    await _forbidden_post(ds, db_path, cookies, {"action": "apply", "rule": "staff"})
    await _forbidden_post(ds, db_path, cookies, {"action": "apply", "rule": "staff", "csrftoken": "forged"})
    forged = dict(cookies, ds_csrftoken="forged")
    await _forbidden_post(ds, db_path, forged, {"action": "apply", "rule": "staff", "csrftoken": "forged"})


@pytest.mark.asyncio
async def test_custom_rule_from_the_web(ds, db_path):
    cookies, token = await signed_in(ds)
    response = await ds.client.post(
        PAGE,
        data={
            "action": "create", "rule": "eta_bots", "kind": "filter", "f_cidr": "10.0.2.0/24",
            "f_org_id": "7, 6", "f_status": "2xx", "description": "<script>alert(1)</script>",
            "csrftoken": token,
        },
        cookies=cookies,
    )
    assert response.status_code == 303
    assert messages(ds, response) == ["Saved custom rule eta_bots (not applied yet)."]
    (definition,) = read(db_path, "select definition from rules where name = 'eta_bots'")[0]
    assert json.loads(definition) == {"filter": {"cidr": "10.0.2.0/24", "org_id": ["7", "6"], "status": "2xx"}}
    page = await ds.client.get(PAGE, cookies=cookies)
    assert "<script>alert(1)</script>" not in page.text
    assert html.escape("<script>alert(1)</script>") in page.text
    response = await ds.client.post(
        PAGE, data={"action": "apply", "rule": "eta_bots", "csrftoken": token}, cookies=cookies
    )
    assert messages(ds, response)[0].startswith("Applied eta_bots: 4 requests newly explained")
    assert statuses(db_path)["7"] == "cleared"
    response = await ds.client.post(
        PAGE, data={"action": "delete", "rule": "eta_bots", "csrftoken": token}, cookies=cookies
    )
    assert messages(ds, response)[0].startswith("Undid and deleted custom rule eta_bots")
    assert statuses(db_path)["7"] == "review"
    assert read(db_path, "select action from rule_ledger where rule = 'eta_bots' order by id") == [
        ("create",), ("apply",), ("undo",), ("delete",)
    ]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "predicate",
    [
        "1); DROP TABLE x; --",
        "ATTACH DATABASE 'x' AS y",
        "load_extension('x')",
        "(select count(*) from orgs) > 0",
        "id in (select id from requests)",
    ],
)
async def test_escaping_predicates_from_the_web_change_nothing(ds, db_path, predicate):
    cookies, token = await signed_in(ds)
    before = dump(db_path)
    response = await ds.client.post(
        PAGE,
        data={"action": "create", "rule": "evil", "kind": "sql", "sql": predicate, "csrftoken": token},
        cookies=cookies,
    )
    assert response.status_code == 303
    (message,) = messages(ds, response)
    assert message.startswith("The SQL predicate")
    assert dump(db_path) == before


@pytest.mark.asyncio
async def test_unknown_rule_and_action_give_a_message(ds, db_path):
    cookies, token = await signed_in(ds)
    before = dump(db_path)
    response = await ds.client.post(PAGE, data={"action": "apply", "rule": "nope", "csrftoken": token}, cookies=cookies)
    assert messages(ds, response)[0].startswith("Unknown rule 'nope'")
    response = await ds.client.post(PAGE, data={"action": "drop", "rule": "staff", "csrftoken": token}, cookies=cookies)
    assert messages(ds, response) == ["Unknown action 'drop': use apply, undo, create or delete."]
    assert dump(db_path) == before


@pytest.mark.asyncio
async def test_unknown_database_is_404(ds):
    assert (await ds.client.get("/nope/-/forensics/rules")).status_code == 404
    assert (await ds.client.get("/nope/-/forensics/rules.json")).status_code == 404


@pytest.mark.asyncio
async def test_reading_follows_view_permissions(db_path):
    ds = Datasette([str(db_path)], metadata={"databases": {"w": {"allow": {"id": "root"}}}})
    await ds.invoke_startup()
    assert (await ds.client.get(PAGE)).status_code == 403
    assert (await ds.client.get(PAGE + ".json")).status_code == 403
    assert (await ds.client.get(PAGE, cookies=actor_cookie(ds))).status_code == 200


@pytest.mark.asyncio
async def test_write_permission_can_be_granted_in_plugin_config(db_path):
    ds = Datasette(
        [str(db_path)], metadata={"plugins": {"datasette-forensics": {"write": {"id": "alice"}}}}
    )
    await ds.invoke_startup()
    cookies, token = await signed_in(ds, actor_id="alice")
    response = await ds.client.post(PAGE, data={"action": "apply", "rule": "staff", "csrftoken": token}, cookies=cookies)
    assert response.status_code == 303
    assert read(db_path, "select rule, actor from rule_ledger") == [("staff", "alice")]
