"""Who may change what: forensics-write and CSRF on every write endpoint; view permissions on reading.

Only the root actor with a valid CSRF token may write by default; every other
combination is a 403 that leaves the database byte-for-byte as it was (compared
as a full SQL dump). The plugin's ``write`` allow block grants the permission to
a team; a database's ``allow`` block hides every workbench page and export.
"""

from __future__ import annotations

import sqlite3

import pytest
import pytest_asyncio
from conftest import dump
from datasette.app import Datasette

from datasette_forensics import schema
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


async def datasette(path, metadata=None) -> Datasette:
    ds = Datasette([str(path)], metadata=metadata)
    await ds.invoke_startup()
    return ds


async def post(ds, page, data, actor, csrf):
    """POST as actor (None: anonymous) with a valid, missing or forged CSRF token."""
    cookies = {"ds_actor": ds.sign({"a": {"id": actor}}, "actor")} if actor else {}
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
    cookies = {"ds_actor": ds.sign({"a": {"id": "root"}}, "actor")}
    token = (await ds.client.get("/-/messages", cookies=cookies)).cookies["ds_csrftoken"]
    cookies["ds_csrftoken"] = token
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
