"""The workbench pages on the demo incident of sample_data/, against the figures its
README works out by hand (cross-tenant signatures, statuses after every rule)."""

from __future__ import annotations

import pytest
from datasette.app import Datasette

from datasette_forensics import schema
from datasette_forensics.rules import actions
from test_sample_story import OUT_OF_SCOPE

ALL = ["staff", "member_current", "member_historical", "partner", "post_patch_valid", "token_owner"]
PARTNER_UA = "Apache-HttpClient/4.5.13 (Java/11.0.9)"
# README "Cross-tenant signatures": ip -> (user agent, org ids, requests, unexplained after all rules)
CROSS_TENANT = {
    "192.0.2.66": ("curl/7.68.0", ["101", "108", "113"], 9, 7),
    "203.0.113.10": (PARTNER_UA, ["106", "107", "108"], 7, 2),
    "2001:db8:c1ab::15": (PARTNER_UA, ["106", "107"], 2, 0),
    "198.51.100.7": ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:78.0) Gecko/20100101 Firefox/78.0", ["101", "106"], 3, 0),
}
# README "Per org", all six rules: org -> (status, in scope, unexplained, unexplained signatures)
AFTER_ALL_RULES = {
    "101": ("exposed", 11, 5, 1), "102": ("cleared", 20, 0, 0), "103": ("review", 5, 5, 1),
    "104": ("review", 9, 9, 1), "106": ("cleared", 26, 0, 0), "107": ("exposed", 5, 2, 1),
    "108": ("exposed", 23, 2, 1), "109": ("cleared", 3, 0, 0), "110": ("cleared", 2, 0, 0),
    "111": ("review", 5, 3, 2), "112": ("cleared", 10, 0, 0), "113": ("cleared", 2, 0, 0),
    "114": ("cleared", 2, 0, 0),
}


@pytest.fixture
def ds(sample_db_path):
    db = schema.connect(str(sample_db_path))
    for name in ALL:
        actions.apply(db, name)
    db.conn.close()
    return Datasette([str(sample_db_path)])


async def get_json(ds, url):
    response = await ds.client.get(url)
    assert response.status_code == 200, response.text[:300]
    return response.json()


@pytest.mark.asyncio
async def test_sample_cross_tenant_signatures(ds):
    data = await get_json(ds, "/sample/-/forensics/signatures.json?cross_tenant=1&size=100")
    got = {
        r["ip"]: (r["user_agent"], sorted(o["org_id"] for o in r["reached"]), r["in_scope"], r["unexplained"])
        for r in data["rows"]
    }
    assert got == {ip: (ua, orgs, n, u) for ip, (ua, orgs, n, u) in CROSS_TENANT.items()}
    # Mallory kept getting 200s from wayne after the patch; Sam stopped.
    rows = {r["ip"]: r for r in data["rows"]}
    assert rows["192.0.2.66"]["after_patch_verdict"] == "kept succeeding after the patch"
    assert rows["198.51.100.7"]["after_patch_verdict"] == "stopped at the patch"


@pytest.mark.asyncio
async def test_sample_statuses(ds):
    data = await get_json(ds, "/sample/-/forensics/orgs.json?size=100")
    assert {
        r["org_id"]: (r["status"], r["in_scope"], r["unexplained"], r["unexplained_signatures"]) for r in data["rows"]
    } == AFTER_ALL_RULES
    overview = await get_json(ds, "/sample/-/forensics.json")
    assert overview["funnel"] == {
        "lines_rejected": 3, "requests": 166, "in_scope": 123, "unexplained": 26, "out_of_scope": OUT_OF_SCOPE,
    }
    assert {s["status"]: s["orgs"] for s in overview["statuses"]} == {"exposed": 3, "review": 3, "cleared": 7}


@pytest.mark.asyncio
async def test_sample_partner_client_stands_out(ds):
    """The partner's rare Java client: one user-agent group, a library, two addresses, three orgs."""
    data = await get_json(ds, "/sample/-/forensics/user-agents.json?size=100")
    partner = next(r for r in data["rows"] if r["key"] == PARTNER_UA)
    assert (partner["in_scope"], partner["unexplained"], partner["orgs"], partner["signatures"], partner["ips"]) == (9, 2, 3, 2, 2)
    assert partner["kinds"]["library"] == partner["requests"]
    families = await get_json(ds, "/sample/-/forensics/user-agents.json?by=family")
    assert any(r["key"] == "Apache-HttpClient" and r["in_scope"] == 9 for r in families["rows"])


@pytest.mark.asyncio
@pytest.mark.parametrize("page", ["", "/ips", "/user-agents", "/orgs", "/orgs/101", "/orgs/111", "/signatures"])
async def test_sample_pages_escape(ds, page):
    for fmt in ("", ".json"):
        response = await ds.client.get(f"/sample/-/forensics{page}{fmt}")
        assert response.status_code == 200
        assert "<script>alert(1)</script>" not in response.text
        assert "<img src=x" not in response.text
