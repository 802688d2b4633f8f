"""Who may change what: forensics-write and CSRF on every write endpoint; view permissions on reading.

Only the root actor with a valid CSRF token may write by default; every other
combination is a 403 that leaves the database byte-for-byte as it was (compared
as a full SQL dump). The plugin's ``write`` allow block grants the permission to
a team; instance, database and table ``allow`` blocks hide what they cover on every
workbench page, JSON and export.

These run on both Datasette lines (CI runs the suite on 0.65 and on the newest 1.0
alpha): allow blocks go where the running line documents them (``make_datasette``).
On 1.0 CSRF is Datasette's header check (Sec-Fetch-Site / Origin), not a token: a
"forged" request there is one a browser marks as cross-site.
"""

from __future__ import annotations

import sqlite3

import pytest
import pytest_asyncio
from conftest import CROSS_SITE, HEADER_CSRF, csrf_cookies, dump, make_datasette

from datasette_forensics import permissions, schema
from datasette_forensics.rules import actions

DB = "sample"
BASE = f"/{DB}/-/forensics"
RULES = f"{BASE}/rules"

# Every write endpoint: (page, form fields, check that it happened).
WRITES = {
    "apply": (RULES, {"action": "apply", "rule": "partner"},
              "select 1 from rule_ledger where rule = 'partner' and action = 'apply'"),
    "undo": (RULES, {"action": "undo", "rule": "staff"},
             "select 1 from rules where name = 'staff' and applied = 0"),
    "custom_add": (RULES, {"action": "create", "rule": "mine", "kind": "filter", "f_cidr": "192.0.2.0/24"},
                   "select 1 from rules where name = 'mine'"),
    "custom_sql_add": (RULES, {"action": "create", "rule": "mine_sql", "kind": "sql", "sql": "status = 200"},
                       "select 1 from rules where name = 'mine_sql'"),
    "custom_delete": (RULES, {"action": "delete", "rule": "existing"},
                      "select not exists (select 1 from rules where name = 'existing')"),
    "saved_view": (BASE, {"name": "by ASN", "url": f"{BASE}/ips?by=asn"},
                   "select 1 from saved_views where name = 'by ASN'"),
}
ACTORS = [None, "alice", "root"]
CSRF = ["valid", "missing", "forged_field", "forged_cookie"]
READ_PAGES = ["", "/ips", "/ips?by=asn", "/user-agents", "/user-agents?by=kind", "/orgs", "/orgs/101",
              "/signatures", "/rules"]


def query(path, sql):
    conn = sqlite3.connect(str(path))
    try:
        return conn.execute(sql).fetchone()
    finally:
        conn.close()


@pytest.fixture
def db_path(sample_db_path):
    """The sample database with staff applied (to undo) and a custom rule (to delete)."""
    db = schema.connect(str(sample_db_path))
    try:
        actions.apply(db, "staff", "setup")
        actions.create_custom_rule(db, "existing", {"filter": {"ua_kind": "bot"}}, "setup", "to delete")
    finally:
        db.conn.close()
    assert query(sample_db_path, "select applied from rules where name = 'staff'") == (1,)
    return sample_db_path


async def datasette(path, config=None):
    ds = make_datasette([path], config)
    await ds.invoke_startup()
    return ds


# Datasette 1.0's CSRF check reads headers a browser sends; 0.65's compares tokens.
CSRF_HEADERS = {
    "valid": {"sec-fetch-site": "same-origin"},
    "missing": {"sec-fetch-site": "cross-site"},
    "forged_field": {"origin": "http://evil.example"},
    "forged_cookie": CROSS_SITE,
}


async def post(ds, page, data, actor, csrf):
    """POST as actor (None: anonymous) with a valid, missing or forged CSRF token."""
    cookies = {"ds_actor": ds.sign({"a": {"id": actor}}, "actor")} if actor else {}
    if HEADER_CSRF:
        return await ds.client.post(page, data=dict(data), cookies=cookies, headers=CSRF_HEADERS[csrf])
    token = (await ds.client.get("/-/messages", cookies=cookies)).cookies["ds_csrftoken"]
    data = dict(data)
    if csrf == "valid":
        cookies["ds_csrftoken"] = data["csrftoken"] = token
    elif csrf == "missing":
        cookies["ds_csrftoken"] = token
    elif csrf == "forged_field":
        cookies["ds_csrftoken"], data["csrftoken"] = token, ds.sign("forged", "csrftoken")
    elif csrf == "forged_cookie":
        cookies["ds_csrftoken"] = data["csrftoken"] = "forged"
    return await ds.client.post(page, data=data, cookies=cookies)


@pytest.mark.asyncio
@pytest.mark.parametrize("csrf", CSRF)
@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("endpoint", WRITES)
async def test_only_root_with_a_valid_token_writes(db_path, endpoint, actor, csrf):
    page, data, happened = WRITES[endpoint]
    ds = await datasette(db_path)
    before = dump(db_path)
    response = await post(ds, page, data, actor, csrf)
    if actor == "root" and csrf == "valid":
        assert response.status_code == 303, response.text
        assert response.headers["location"] == page
        assert query(db_path, happened) == (1,)
        assert dump(db_path) != before
    else:
        assert response.status_code == 403, (response.status_code, response.text[:300])
        assert dump(db_path) == before
        assert query(db_path, happened) != (1,)


@pytest.mark.asyncio
@pytest.mark.parametrize("endpoint", WRITES)
async def test_anonymous_without_any_cookie_is_refused(db_path, endpoint):
    """No cookie at all: the CSRF check is skipped, so forensics-write alone must refuse."""
    page, data, _ = WRITES[endpoint]
    ds = await datasette(db_path)
    before = dump(db_path)
    response = await ds.client.post(page, data=data)
    assert response.status_code == 403
    assert "forensics-write" in response.text
    assert dump(db_path) == before


@pytest.mark.asyncio
async def test_reads_and_other_methods_never_write(db_path):
    ds = await datasette(db_path)
    cookies, token = await csrf_cookies(ds, {"ds_actor": ds.sign({"a": {"id": "root"}}, "actor")})
    before = dump(db_path)
    assert (await ds.client.get(f"{RULES}?action=apply&rule=partner", cookies=cookies)).status_code == 200
    assert (await ds.client.get(f"{BASE}?name=x&url={BASE}/ips", cookies=cookies)).status_code == 200
    for page in READ_PAGES[1:-1] + ["/report.csv", "/report.json"]:
        response = await ds.client.post(
            BASE + page, data={"action": "apply", "rule": "partner", "name": "x", "url": BASE, "csrftoken": token},
            cookies=cookies,
        )
        assert response.status_code in (200, 405), (page, response.status_code)
    response = await ds.client.request("PUT", RULES, data={"action": "apply", "rule": "partner"}, cookies=cookies)
    assert response.status_code in (403, 405)
    assert dump(db_path) == before


@pytest.mark.asyncio
async def test_the_write_allow_block_grants_a_team(db_path):
    ds = await datasette(db_path, {"plugins": {"datasette-forensics": {"write": {"id": ["alice"]}}}})
    before = dump(db_path)
    for actor in ("bob", None):
        assert (await post(ds, RULES, WRITES["apply"][1], actor, "valid")).status_code == 403
        assert (await post(ds, BASE, WRITES["saved_view"][1], actor, "valid")).status_code == 403
    assert dump(db_path) == before
    response = await post(ds, RULES, WRITES["apply"][1], "alice", "valid")
    assert response.status_code == 303
    assert query(db_path, "select actor from rule_ledger where rule = 'partner' and action = 'apply'") == ("alice",)
    assert (await post(ds, BASE, WRITES["saved_view"][1], "alice", "valid")).status_code == 303
    assert query(db_path, "select created_by from saved_views where name = 'by ASN'") == ("alice",)
    # Still no write without a valid token, even for the team.
    after = dump(db_path)
    assert (await post(ds, RULES, WRITES["undo"][1], "alice", "forged_field")).status_code == 403
    assert dump(db_path) == after
    # The buttons follow the permission.
    alice = {"ds_actor": ds.sign({"a": {"id": "alice"}}, "actor")}
    bob = {"ds_actor": ds.sign({"a": {"id": "bob"}}, "actor")}
    assert 'value="apply"' in (await ds.client.get(RULES, cookies=alice)).text
    assert 'value="apply"' not in (await ds.client.get(RULES, cookies=bob)).text


@pytest_asyncio.fixture
async def private_ds(db_path):
    return await datasette(db_path, {"databases": {DB: {"allow": {"id": "root"}}}})


def read_urls() -> list[str]:
    urls = []
    for page in READ_PAGES:
        path, _, query_string = page.partition("?")
        suffix = "?" + query_string if query_string else ""
        urls += [BASE + path + suffix, BASE + path + ".json" + suffix]
    return urls + [f"{BASE}/report.json", f"{BASE}/report.csv"]


@pytest.mark.asyncio
async def test_a_private_database_hides_every_page_and_export(private_ds, db_path):
    ds = private_ds
    root = {"ds_actor": ds.sign({"a": {"id": "root"}}, "actor")}
    alice = {"ds_actor": ds.sign({"a": {"id": "alice"}}, "actor")}
    for url in read_urls():
        allowed = await ds.client.get(url, cookies=root)
        assert allowed.status_code == 200, url
        assert f'"database": "{DB}"' in allowed.text or "org_id" in allowed.text or BASE in allowed.text, url
        for cookies in ({}, alice):
            response = await ds.client.get(url, cookies=cookies)
            assert response.status_code == 403, (url, cookies)
            for secret in ("acme", "192.0.2.66", "A staff user"):
                assert secret not in response.text, (url, secret)
    for cookies in ({}, alice):
        menu = (await ds.client.get("/", cookies=cookies)).text
        assert "Forensics: sample" not in menu and f"{BASE}" not in menu
    assert f"{BASE}" in (await ds.client.get("/", cookies=root)).text


@pytest.mark.asyncio
async def test_a_private_database_refuses_writes_even_to_the_write_team(db_path):
    ds = await datasette(
        db_path,
        {
            "databases": {DB: {"allow": {"id": "root"}}},
            "plugins": {"datasette-forensics": {"write": {"id": ["alice"]}}},
        },
    )
    before = dump(db_path)
    for page, data, _ in WRITES.values():
        assert (await post(ds, page, data, "alice", "valid")).status_code == 403
    assert dump(db_path) == before


# --- table permissions: instance, database and table allow blocks -------------------

ROOT_ONLY = {"id": "root"}
ORG_PAGES = ["/orgs", "/orgs.json", "/orgs/101", "/orgs/101.json", "/report.csv"]
LOG_PAGES = ["", ".json", "/ips", "/ips.json", "/user-agents", "/user-agents.json", "/signatures",
             "/signatures.json", "/rules", "/rules.json", "/report.json"]
# What only orgs, users and integrations hold in the sample (contact e-mails, names, slugs).
ORG_SECRETS = ("security@acme.example", "it@globex-corp.example", "Acme Corp", "acme")
USER_SECRETS = ("alice@acme.example",)
INTEGRATION_SECRETS = ("Acme CI notifier",)


def cookies_for(ds, actor):
    return {"ds_actor": ds.sign({"a": {"id": actor}}, "actor")} if actor else {}


async def get(ds, url, actor):
    return await ds.client.get(BASE + url, cookies=cookies_for(ds, actor))


@pytest.mark.asyncio
async def test_a_private_orgs_table_hides_contacts_everywhere(db_path):
    ds = await datasette(db_path, {"databases": {DB: {"tables": {"orgs": {"allow": ROOT_ONLY}}}}})
    for actor in (None, "alice"):
        for url in ORG_PAGES:
            response = await get(ds, url, actor)
            assert response.status_code == 403, (url, actor, response.status_code)
            assert "orgs table" in response.text, url
            for secret in ORG_SECRETS:
                assert secret not in response.text, (url, secret)
        for url in LOG_PAGES:
            response = await get(ds, url, actor)
            assert response.status_code == 200, (url, actor, response.status_code)
            for secret in ORG_SECRETS[:3]:
                assert secret not in response.text, (url, secret)
            assert '"acme"' not in response.text and ">acme<" not in response.text, url
        # The parts left out say so: in the HTML and in the JSON.
        signatures = await get(ds, "/signatures", actor)
        assert "Org slugs left out: they come from the orgs table, which you may not view." in signatures.text
        report = (await get(ds, "/report.json", actor)).json()
        assert report["withheld"] == ["Org slugs and contact e-mails left out: they come from the orgs table, which you may not view."]
        assert report["orgs"] and all(o["contact_email"] is None and o["slug"] is None for o in report["orgs"])
        assert {o["org_id"] for o in report["orgs"]} >= {"101", "102"} or {o["org_id"] for o in report["orgs"]} >= {101, 102}
        # Datasette's own table page agrees.
        assert (await ds.client.get(f"/{DB}/orgs", cookies=cookies_for(ds, actor))).status_code == 403
    for url in ORG_PAGES + LOG_PAGES:
        response = await get(ds, url, "root")
        assert response.status_code == 200, url
        assert "withheld" not in response.text and "left out: they come from" not in response.text, url
    assert "security@acme.example" in (await get(ds, "/orgs/101", "root")).text
    assert "security@acme.example" in (await get(ds, "/report.csv", "root")).text
    assert "acme" in (await get(ds, "/signatures", "root")).text


@pytest.mark.asyncio
async def test_private_member_and_integration_tables_are_left_out_of_an_org(db_path):
    tables = {"users": {"allow": ROOT_ONLY}, "integrations": {"allow": {"id": ["root", "alice"]}}}
    ds = await datasette(db_path, {"databases": {DB: {"tables": tables}}})
    for actor, members, integrations in ((None, False, False), ("alice", False, True), ("root", True, True)):
        for url in ("/orgs/101", "/orgs/101.json"):
            response = await get(ds, url, actor)
            assert response.status_code == 200, (url, actor)
            text = response.text
            assert ("Members left out: they come from the users table" not in text) == members, (url, actor)
            assert all((s in text) == members for s in USER_SECRETS), (url, actor)
            assert ("Integrations left out" not in text) == integrations, (url, actor)
            assert all((s in text) == integrations for s in INTEGRATION_SECRETS), (url, actor)
            assert "security@acme.example" in text  # orgs itself stays readable
        data = (await get(ds, "/orgs/101.json", actor)).json()
        assert bool(data["members"]) == members and bool(data["integrations"]) == integrations


@pytest.mark.asyncio
async def test_a_private_log_table_hides_the_whole_workbench(db_path):
    ds = await datasette(db_path, {"databases": {DB: {"tables": {"requests": {"allow": ROOT_ONLY}}}}})
    for url in ORG_PAGES + LOG_PAGES:
        response = await get(ds, url, "alice")
        assert response.status_code == 403, url
        assert "requests table" in response.text
        assert "192.0.2.66" not in response.text
        assert (await get(ds, url, "root")).status_code == 200, url
    # No workbench link leads there.
    assert BASE not in (await ds.client.get(f"/{DB}", cookies=cookies_for(ds, "alice"))).text
    assert BASE in (await ds.client.get(f"/{DB}", cookies=cookies_for(ds, "root"))).text


@pytest.mark.asyncio
async def test_private_network_owners_hide_those_groupings(db_path):
    ds = await datasette(db_path, {"databases": {DB: {"tables": {"ip_info": {"allow": ROOT_ONLY}}}}})
    for by in ("asn", "provider", "rdns"):
        assert (await get(ds, f"/ips?by={by}", "alice")).status_code == 403
        assert (await get(ds, f"/ips.json?by={by}", "root")).status_code == 200
    assert (await get(ds, "/ips.json?by=cidr24", "alice")).status_code == 200


@pytest.mark.asyncio
@pytest.mark.parametrize("level", ["instance", "database"])
async def test_instance_and_database_allow_blocks_cover_every_page(db_path, level):
    config = {"allow": ROOT_ONLY} if level == "instance" else {"databases": {DB: {"allow": ROOT_ONLY}}}
    ds = await datasette(db_path, config)
    for url in ORG_PAGES + LOG_PAGES:
        for actor in (None, "alice"):
            response = await get(ds, url, actor)
            assert response.status_code == 403, (level, url, actor)
            for secret in ORG_SECRETS + ("192.0.2.66",):
                assert secret not in response.text, (url, secret)
        assert (await get(ds, url, "root")).status_code == 200, (level, url)
    assert (await ds.client.get("/-/forensics-chart", cookies=cookies_for(ds, "alice"))).status_code == (
        403 if level == "instance" else 200
    )


@pytest.mark.asyncio
async def test_a_table_allow_block_can_open_one_table_to_a_team(db_path):
    """Table over database, as Datasette's own table page decides on each line."""
    config = {"databases": {DB: {"tables": {"orgs": {"allow": {"id": ["root", "carol"]}}}}}}
    ds = await datasette(db_path, config)
    assert (await get(ds, "/orgs/101", "carol")).status_code == 200
    assert (await get(ds, "/orgs/101", "dave")).status_code == 403
    assert await permissions.may_view_table(ds, {"id": "carol"}, DB, "orgs")
    assert not await permissions.may_view_table(ds, {"id": "dave"}, DB, "orgs")
    assert await permissions.may_view_table(ds, {"id": "dave"}, DB, "requests")


@pytest.mark.asyncio
async def test_forensics_write_is_registered_where_the_line_supports_it(db_path):
    ds = await datasette(db_path)
    if permissions.ACTIONS:
        action = ds.get_action(permissions.WRITE)
        assert action is not None and action.description == permissions.WRITE_DESCRIPTION
    assert await permissions.may_write(ds, {"id": "root"})
    assert not await permissions.may_write(ds, {"id": "alice"})
    assert not await permissions.may_write(ds, None)
