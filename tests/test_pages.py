"""The workbench pages: figures worked out by hand from a small incident, drill-down
links followed to the rows behind them, URL state, permissions and escaping.

The incident (window 2020-07-01T00:00Z to the patch 2020-07-10T00:00Z, scope
``^/api/``, org route ``^/api/orgs/(?P<org>[^/]+)/``, integration required):

orgs 1 acme, 2 bravo, 3 charlie (live integrations), 4 delta (none).

| sig | address | user agent | requests (UTC) |
| --- | --- | --- | --- |
| S1 attacker | 198.51.100.66 | ``<script>alert(1)</script>`` (kind unknown) | 07-02 10:00 acme, 07-02 11:00 bravo, 07-03 10:00 acme, 07-03 12:00 acme (hostile path), 07-12 ``/"><img src=x onerror=alert(1)>`` 404 |
| S2 alice | 10.0.0.5 | Chrome 84 (browser) | 07-02 09:00 bravo, 07-04 09:00 bravo, 07-11 09:00 bravo 200 (after the patch) |
| S3 sam (staff) | 10.0.0.9 | Firefox 78 (browser) | 07-05 12:00 acme, 07-05 12:05 charlie |
| S4 partner | 203.0.113.10 | ``Apache-HttpClient/4.5.13 (Java/11.0.9)`` (library) | 07-03 08:00, 07-06 08:00, 07-07 08:00 charlie |
| S5 acme's bot | 198.51.100.7 | python-requests/2.24.0 (library), token t1 of acme | 06-30 23:59:59 acme (before the window), 07-01 00:00 acme, 07-08 00:00 acme |
| S6 noise | 198.51.100.8 | curl/7.68.0 (library) | 07-02 ``/health``, 07-03 delta (no integration) |

So: 18 requests; in scope 13: acme 6 (S1 3, S3 1, S5 2), bravo 3 (S1 1, S2 2),
charlie 4 (S3 1, S4 3). S1 (acme, bravo) and S3 (acme, charlie) are cross-tenant.
With every rule applied (staff, member_current, member_historical, partner,
post_patch_valid, token_owner): staff explains S3 (2), the member rules and
post_patch_valid S2 (2), partner S4 (3), token_owner S5 (2); S1's 4 stay
unexplained. acme and bravo are exposed (S1), charlie cleared.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from urllib.parse import parse_qsl, urlsplit

import pytest
from datasette.app import Datasette
from conftest import csrf_cookies

from datasette_forensics import incident, ingest, records, report, schema
from datasette_forensics.rules import actions

UA_ATTACKER = "<script>alert(1)</script>"
UA_CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/84.0.4147.89 Safari/537.36"
UA_FIREFOX = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:78.0) Gecko/20100101 Firefox/78.0"
UA_PARTNER = "Apache-HttpClient/4.5.13 (Java/11.0.9)"
UA_BOT = "python-requests/2.24.0"
UA_CURL = "curl/7.68.0"
HOSTILE_PATH = '/"><img src=x onerror=alert(1)>'
HOSTILE_API_PATH = '/api/orgs/acme/"><img src=x onerror=alert(1)>'

INCIDENT = """
name = "Pages test incident"
introduced_at = "2020-07-01T00:00:00Z"
patched_at = "2020-07-10T00:00:00Z"
scope_paths = ['^/api/']
org_routes = ['^/api/orgs/(?P<org>[^/]+)/']
"""
RECORDS = {
    "orgs": "id,slug,name,contact_email\n1,acme,Acme,sec@acme.example\n2,bravo,Bravo,\n3,charlie,Charlie,c@charlie.example\n4,delta,Delta,\n",
    "integrations": "id,org_id,created_at\ni1,1,2020-01-01T00:00:00Z\ni2,2,2020-01-01T00:00:00Z\ni3,3,2020-01-01T00:00:00Z\n",
    "tokens": "id,org_id,integration_id\nt1,1,i1\n",
    "users": "id,email,name,is_staff\nu1,alice@bravo.example,Alice,false\nu9,sam@vendor.example,Sam,true\n",
    "memberships": "user_id,org_id,role,joined_at,left_at\nu1,2,admin,2019-01-01T00:00:00Z,\n",
    "sessions": (
        "user_id,ip,user_agent,first_seen,last_seen\n"
        f'u1,10.0.0.5,"{UA_CHROME}",2020-06-01T00:00:00Z,2020-07-20T00:00:00Z\n'
        f'u9,10.0.0.9,"{UA_FIREFOX}",2020-06-01T00:00:00Z,2020-07-20T00:00:00Z\n'
    ),
    "partners": "name,cidr,user_agent_pattern\nclubhouse,203.0.113.0/26,^Apache-HttpClient/\n",
    "partner_orgs": "partner,org_id,authorized_at\nclubhouse,3,\n",
    "ip_info": (
        "cidr,asn,provider,rdns\n"
        "198.51.100.0/24,AS64501,ExampleCloud,\n"
        "198.51.100.66/32,AS64501,ExampleCloud,vps-66.examplecloud.example\n"
        "10.0.0.0/8,AS64500,CorpNet,\n"
        "203.0.113.0/24,AS64502,PartnerNet,\n"
    ),
}


def line(time, ip, ua, uri, status=200, token=None):
    fields = {
        "time_iso8601": time, "remote_addr": ip, "http_user_agent": ua, "request_method": "GET",
        "request_uri": uri, "status": status, "body_bytes_sent": 100,
    }
    if token:
        fields["token_id"] = token
    return json.dumps(fields)


LOG = [
    line("2020-07-02T10:00:00Z", "198.51.100.66", UA_ATTACKER, "/api/orgs/acme/issues/"),
    line("2020-07-02T11:00:00Z", "198.51.100.66", UA_ATTACKER, "/api/orgs/bravo/issues/"),
    line("2020-07-03T10:00:00Z", "198.51.100.66", UA_ATTACKER, "/api/orgs/acme/issues/?page=2"),
    line("2020-07-03T12:00:00Z", "198.51.100.66", UA_ATTACKER, HOSTILE_API_PATH),
    line("2020-07-12T00:00:00Z", "198.51.100.66", UA_ATTACKER, HOSTILE_PATH, 404),
    line("2020-07-02T09:00:00Z", "10.0.0.5", UA_CHROME, "/api/orgs/bravo/projects/"),
    line("2020-07-04T09:00:00Z", "10.0.0.5", UA_CHROME, "/api/orgs/bravo/projects/"),
    line("2020-07-11T09:00:00Z", "10.0.0.5", UA_CHROME, "/api/orgs/bravo/projects/"),
    line("2020-07-05T12:00:00Z", "10.0.0.9", UA_FIREFOX, "/api/orgs/acme/settings/"),
    line("2020-07-05T12:05:00Z", "10.0.0.9", UA_FIREFOX, "/api/orgs/charlie/settings/"),
    line("2020-07-03T08:00:00Z", "203.0.113.10", UA_PARTNER, "/api/orgs/charlie/data/"),
    line("2020-07-06T08:00:00Z", "203.0.113.10", UA_PARTNER, "/api/orgs/charlie/data/"),
    line("2020-07-07T08:00:00Z", "203.0.113.10", UA_PARTNER, "/api/orgs/charlie/data/"),
    line("2020-06-30T23:59:59Z", "198.51.100.7", UA_BOT, "/api/orgs/acme/events/", token="t1"),
    line("2020-07-01T00:00:00Z", "198.51.100.7", UA_BOT, "/api/orgs/acme/events/", token="t1"),
    line("2020-07-08T00:00:00Z", "198.51.100.7", UA_BOT, "/api/orgs/acme/events/", token="t1"),
    line("2020-07-02T00:00:00Z", "198.51.100.8", UA_CURL, "/health"),
    line("2020-07-03T00:00:00Z", "198.51.100.8", UA_CURL, "/api/orgs/delta/x/"),
]
ALL_RULES = ["staff", "member_current", "member_historical", "partner", "post_patch_valid", "token_owner"]


def build(path, tmp, apply_rules=True, log_lines=LOG, rules=ALL_RULES):
    """Records, the incident, the log, then ip_info (so it applies to the logged
    addresses) and the rules: the real import functions, as the CLI runs them."""
    db = schema.connect(str(path))
    for kind in ("orgs", "integrations", "tokens", "users", "memberships", "sessions", "partners", "partner_orgs"):
        f = tmp / f"{kind}.csv"
        f.write_text(RECORDS[kind])
        records.import_records(db, kind, str(f))
    toml = tmp / "incident.toml"
    toml.write_text(INCIDENT)
    incident.set_incident(db, str(toml))
    log = tmp / "access.jsonl"
    log.write_text("\n".join(log_lines) + "\n")
    ingest.import_logs(db, [str(log)])
    f = tmp / "ip_info.csv"
    f.write_text(RECORDS["ip_info"])
    records.import_records(db, "ip_info", str(f))
    if apply_rules:
        for name in rules:
            actions.apply(db, name, actor="test")
    db.conn.close()


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pages")
    path = tmp / "ws.db"
    build(path, tmp)
    return path


@pytest.fixture
def db_path(template, tmp_path):
    path = tmp_path / "ws.db"
    shutil.copy(template, path)
    return path


@pytest.fixture
def ds(db_path):
    return Datasette([str(db_path)])


@pytest.fixture(scope="module")
def ds_shared(template):
    """A read-only view of the module's database, for the many read-only tests."""
    return Datasette([str(template)])


async def get_json(ds, url):
    response = await ds.client.get(url)
    assert response.status_code == 200, (url, response.text[:500])
    return response.json()


def json_url(url: str) -> str:
    """The JSON form of a workbench or Datasette table URL, every row on one page."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if "/-/forensics" in parts.path:
        return f"{parts.path}.json" + ("?" + parts.query if parts.query else "")
    query += [("_shape", "objects"), ("_size", "max"), ("_extra", "count")]  # _extra: Datasette 1.0's count
    from urllib.parse import urlencode

    return f"{parts.path}.json?{urlencode(query)}"


async def rows_behind(ds, url: str) -> int:
    """How many rows the page a link leads to shows: Datasette's filtered count, or a workbench total."""
    data = await get_json(ds, json_url(url))
    if "/-/forensics/requests" in url:
        assert data["count_exact"], url
        return data["count"]
    if "/-/forensics" in url:
        return data["total"]
    count = data["filtered_table_rows_count"] if "filtered_table_rows_count" in data else data.get("count")
    if count is None:  # ?_nocount=1: every row is on the one page
        return len(data["rows"])
    return count


def read(path, sql):
    conn = sqlite3.connect(str(path))
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def by_key(data, key="key"):
    return {row[key]: row for row in data["rows"]}


# --- pages and figures ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_overview_figures(ds_shared, template):
    data = await get_json(ds_shared, "/ws/-/forensics.json")
    assert data["incident"]["name"] == "Pages test incident"
    assert data["incident"]["patched_at"] == "2020-07-10T00:00:00.000Z"
    assert data["funnel"] == {
        "lines_rejected": 0, "requests": 18, "in_scope": 13, "unexplained": 4,
        "out_of_scope": {"outside_window": 3, "path_not_in_scope": 1, "no_org": 0, "unknown_org": 0, "no_live_integration": 1},
    }
    db = schema.connect(str(template))
    assert data["funnel"] == report.funnel(db)
    assert {s["status"]: s["orgs"] for s in data["statuses"]} == {"exposed": 2, "review": 0, "cleared": 1}
    assert [(s["rule"], s["remaining"]) for s in data["waterfall"]] == [
        (None, 13), ("staff", 11), ("member_current", 9), ("member_historical", 9),
        ("partner", 6), ("post_patch_valid", 6), ("token_owner", 4),
    ]
    assert [(t["day"], t["in_scope"], t["unexplained"]) for t in data["timeline"]] == [
        ("2020-07-01", 1, 0), ("2020-07-02", 3, 2), ("2020-07-03", 3, 2), ("2020-07-04", 1, 0),
        ("2020-07-05", 2, 0), ("2020-07-06", 1, 0), ("2020-07-07", 1, 0), ("2020-07-08", 1, 0),
    ]
    (top,) = data["top_unexplained_signatures"]
    assert (top["ip"], top["user_agent"], top["unexplained"], top["orgs"], top["cross_tenant"], top["last_path"]) == (
        "198.51.100.66", UA_ATTACKER, 4, 2, True, HOSTILE_PATH,
    )
    assert {p["name"] for p in data["pivots"]} == {"IP clusters", "User-agent groups", "Orgs", "Signatures", "Rules"}


@pytest.mark.asyncio
async def test_ip_clusters(ds_shared):
    data = await get_json(ds_shared, "/ws/-/forensics/ips.json")
    assert data["by"] == "ip" and data["total"] == 6
    rows = by_key(data)
    figures = lambda r: (r["requests"], r["in_scope"], r["unexplained"], r["orgs"], r["signatures"], r["user_agents"])  # noqa: E731
    assert figures(rows["198.51.100.66"]) == (5, 4, 4, 2, 1, 1)
    assert figures(rows["10.0.0.5"]) == (3, 2, 0, 1, 1, 1)
    assert figures(rows["10.0.0.9"]) == (2, 2, 0, 2, 1, 1)
    assert figures(rows["203.0.113.10"]) == (3, 3, 0, 1, 1, 1)
    assert figures(rows["198.51.100.7"]) == (3, 2, 0, 1, 1, 1)
    assert figures(rows["198.51.100.8"]) == (2, 0, 0, 0, 1, 1)
    s1 = rows["198.51.100.66"]
    assert s1["kinds"] == {"browser": 0, "library": 0, "bot": 0, "unknown": 5}
    assert (s1["first_seen"], s1["last_seen"]) == ("2020-07-02T10:00:00.000Z", "2020-07-12T00:00:00.000Z")
    assert (s1["top_user_agent"], s1["last_path"]) == (UA_ATTACKER, HOSTILE_PATH)
    # Default order: most unexplained first.
    assert data["rows"][0]["key"] == "198.51.100.66"

    data = await get_json(ds_shared, "/ws/-/forensics/ips.json?by=cidr24")
    rows = by_key(data)
    assert set(rows) == {"198.51.100.0/24", "10.0.0.0/24", "203.0.113.0/24"}
    assert figures(rows["198.51.100.0/24"]) == (10, 6, 4, 2, 3, 3)
    assert rows["198.51.100.0/24"]["kinds"] == {"browser": 0, "library": 5, "bot": 0, "unknown": 5}
    assert figures(rows["10.0.0.0/24"]) == (5, 4, 0, 3, 2, 2)
    assert rows["10.0.0.0/24"]["kinds"]["browser"] == 5
    assert figures(rows["203.0.113.0/24"]) == (3, 3, 0, 1, 1, 1)

    data = await get_json(ds_shared, "/ws/-/forensics/ips.json?by=cidr16")
    assert {k: r["requests"] for k, r in by_key(data).items()} == {
        "198.51.0.0/16": 10, "10.0.0.0/16": 5, "203.0.0.0/16": 3,
    }
    data = await get_json(ds_shared, "/ws/-/forensics/ips.json?by=asn")
    assert {k: r["requests"] for k, r in by_key(data).items()} == {"AS64501": 10, "AS64500": 5, "AS64502": 3}
    data = await get_json(ds_shared, "/ws/-/forensics/ips.json?by=provider")
    assert {k: r["in_scope"] for k, r in by_key(data).items()} == {"ExampleCloud": 6, "CorpNet": 4, "PartnerNet": 3}
    data = await get_json(ds_shared, "/ws/-/forensics/ips.json?by=rdns")
    assert {k: (r["requests"], r["unexplained"]) for k, r in by_key(data).items()} == {
        "vps-66.examplecloud.example": (5, 4), None: (13, 0),
    }


@pytest.mark.asyncio
async def test_user_agent_groups(ds_shared):
    data = await get_json(ds_shared, "/ws/-/forensics/user-agents.json")
    assert data["by"] == "raw"
    rows = by_key(data)
    figures = lambda r: (r["requests"], r["in_scope"], r["unexplained"], r["orgs"], r["signatures"], r["ips"])  # noqa: E731
    assert figures(rows[UA_ATTACKER]) == (5, 4, 4, 2, 1, 1)
    assert figures(rows[UA_CHROME]) == (3, 2, 0, 1, 1, 1)
    assert figures(rows[UA_FIREFOX]) == (2, 2, 0, 2, 1, 1)
    assert figures(rows[UA_PARTNER]) == (3, 3, 0, 1, 1, 1)
    assert figures(rows[UA_BOT]) == (3, 2, 0, 1, 1, 1)
    assert figures(rows[UA_CURL]) == (2, 0, 0, 0, 1, 1)
    # The partner's rare Java client is its own group, a library.
    assert rows[UA_PARTNER]["kinds"] == {"browser": 0, "library": 3, "bot": 0, "unknown": 0}

    data = await get_json(ds_shared, "/ws/-/forensics/user-agents.json?by=kind")
    rows = by_key(data)
    assert {k: figures(r)[:4] for k, r in rows.items()} == {
        "unknown": (5, 4, 4, 2), "browser": (5, 4, 0, 3), "library": (8, 5, 0, 2),
    }
    data = await get_json(ds_shared, "/ws/-/forensics/user-agents.json?by=family_major")
    rows = {(r["values"]["family"], r["values"]["major"]): r for r in data["rows"]}
    assert rows[("Apache-HttpClient", "4")]["requests"] == 3
    assert rows[("Firefox", "78")]["in_scope"] == 2
    data = await get_json(ds_shared, "/ws/-/forensics/user-agents.json?by=family")
    assert by_key(data)["Chrome"]["requests"] == 3
    data = await get_json(ds_shared, "/ws/-/forensics/user-agents.json?by=os")
    assert sum(r["requests"] for r in data["rows"]) == 18


@pytest.mark.asyncio
async def test_orgs(ds_shared):
    data = await get_json(ds_shared, "/ws/-/forensics/orgs.json")
    assert [r["org_id"] for r in data["rows"]] == ["1", "2", "3"]  # exposed by unexplained, then cleared
    rows = by_key(data, "org_id")
    figures = lambda r: (r["slug"], r["status"], r["in_scope"], r["unexplained"], r["unexplained_signatures"], r["cross_tenant_signatures"])  # noqa: E731
    assert figures(rows["1"]) == ("acme", "exposed", 6, 3, 1, 2)
    assert figures(rows["2"]) == ("bravo", "exposed", 3, 1, 1, 1)
    assert figures(rows["3"]) == ("charlie", "cleared", 4, 0, 0, 1)
    assert rows["1"]["top_signature"] == {"ip": "198.51.100.66", "user_agent": UA_ATTACKER, "last_path": HOSTILE_PATH}
    assert rows["1"]["contact_email"] == "sec@acme.example"
    exposed = await get_json(ds_shared, "/ws/-/forensics/orgs.json?status=exposed")
    assert [r["org_id"] for r in exposed["rows"]] == ["1", "2"]
    cleared = await get_json(ds_shared, "/ws/-/forensics/orgs.json?status=cleared")
    assert [r["org_id"] for r in cleared["rows"]] == ["3"]
    review = await get_json(ds_shared, "/ws/-/forensics/orgs.json?status=review")
    assert review["rows"] == [] and review["total"] == 0


@pytest.mark.asyncio
async def test_one_org(ds_shared):
    data = await get_json(ds_shared, "/ws/-/forensics/orgs/1.json")
    org = data["org"]
    assert (org["slug"], org["status"], org["in_scope"], org["unexplained"], org["cross_tenant_signatures"]) == (
        "acme", "exposed", 6, 3, 2,
    )
    sigs = {s["ip"]: s for s in data["signatures"]}
    assert set(sigs) == {"198.51.100.66", "10.0.0.9", "198.51.100.7"}
    assert [s["ip"] for s in data["signatures"]][:2] == ["198.51.100.66", "10.0.0.9"]  # cross-tenant first
    assert (sigs["198.51.100.66"]["in_scope"], sigs["198.51.100.66"]["unexplained"], sigs["198.51.100.66"]["cross_tenant"]) == (3, 3, True)
    assert sigs["198.51.100.7"]["cross_tenant"] is False
    assert {r["rule"]: r["requests"] for r in data["rules"]} == {
        "staff": 1, "member_current": 0, "member_historical": 0, "partner": 0, "post_patch_valid": 0, "token_owner": 2,
    }
    assert [(t["day"], t["in_scope"], t["unexplained"]) for t in data["timeline"]] == [
        ("2020-07-01", 1, 0), ("2020-07-02", 1, 1), ("2020-07-03", 2, 2), ("2020-07-05", 1, 0), ("2020-07-08", 1, 0),
    ]
    assert data["members"] == []
    assert [i["id"] for i in data["integrations"]] == ["i1"] and data["integrations"][0]["tokens"] == 1
    assert data["latest_requests"][0]["time"] == "2020-07-08T00:00:00.000Z"
    assert HOSTILE_API_PATH in [r["path"] for r in data["latest_requests"]]

    bravo = await get_json(ds_shared, "/ws/-/forensics/orgs/2.json")
    assert [(m["user_id"], m["email"], m["role"], m["left_at"]) for m in bravo["members"]] == [
        ("u1", "alice@bravo.example", "admin", None)
    ]
    assert {r["rule"]: r["requests"] for r in bravo["rules"]}["member_current"] == 2
    # An org of the records without in-scope requests has a page; an unknown one is a 404.
    delta = await get_json(ds_shared, "/ws/-/forensics/orgs/4.json")
    assert delta["org"]["status"] is None and delta["signatures"] == []


@pytest.mark.asyncio
async def test_signatures(ds_shared):
    data = await get_json(ds_shared, "/ws/-/forensics/signatures.json")
    assert data["total"] == 6
    order = [(r["ip"], r["cross_tenant"]) for r in data["rows"]]
    assert order[:3] == [("198.51.100.66", True), ("10.0.0.9", True), ("203.0.113.10", False)]
    rows = by_key(data, "ip")
    s1 = rows["198.51.100.66"]
    assert (s1["requests"], s1["in_scope"], s1["unexplained"], s1["orgs"]) == (5, 4, 4, 2)
    assert sorted((o["slug"], o["in_scope"], o["unexplained"]) for o in s1["reached"]) == [("acme", 3, 3), ("bravo", 1, 1)]
    # The attacker was refused after the patch; alice kept succeeding; sam stopped.
    assert (s1["after_patch"], s1["after_patch_ok"], s1["after_patch_verdict"]) == (1, 0, "refused after the patch")
    s2 = rows["10.0.0.5"]
    assert (s2["after_patch"], s2["after_patch_ok"], s2["after_patch_verdict"]) == (1, 1, "kept succeeding after the patch")
    assert s2["post_patch_valid"] == [{"org_id": "2", "requests_2xx": 1}]
    assert rows["10.0.0.9"]["after_patch_verdict"] == "stopped at the patch"
    assert rows["198.51.100.7"]["after_patch"] == 0

    cross = await get_json(ds_shared, "/ws/-/forensics/signatures.json?cross_tenant=1")
    assert [r["ip"] for r in cross["rows"]] == ["198.51.100.66", "10.0.0.9"]
    unexplained = await get_json(ds_shared, "/ws/-/forensics/signatures.json?status=unexplained")
    assert [r["ip"] for r in unexplained["rows"]] == ["198.51.100.66"]
    acme = await get_json(ds_shared, "/ws/-/forensics/signatures.json?org=1")
    assert {r["ip"]: (r["in_scope"], r["unexplained"]) for r in acme["rows"]} == {
        "198.51.100.66": (3, 3), "10.0.0.9": (1, 0), "198.51.100.7": (2, 0),
    }


@pytest.mark.asyncio
async def test_before_any_rule(tmp_path):
    path = tmp_path / "norules.db"
    build(path, tmp_path, apply_rules=False)
    ds = Datasette([str(path)])
    data = await get_json(ds, "/norules/-/forensics.json")
    assert data["funnel"]["unexplained"] == 13
    assert {s["status"]: s["orgs"] for s in data["statuses"]} == {"exposed": 3, "review": 0, "cleared": 0}
    assert [(s["rule"], s["remaining"]) for s in data["waterfall"]] == [(None, 13)]
    orgs = await get_json(ds, "/norules/-/forensics/orgs.json")
    assert {r["org_id"]: (r["status"], r["unexplained"]) for r in orgs["rows"]} == {
        "1": ("exposed", 6), "2": ("exposed", 3), "3": ("exposed", 4),
    }


# --- URL state: filters, sort, paging -----------------------------------------------------


@pytest.mark.asyncio
async def test_filters(ds_shared):
    get = lambda q: get_json(ds_shared, "/ws/-/forensics/ips.json" + q)  # noqa: E731
    unexplained = await get("?status=unexplained")
    assert [r["key"] for r in unexplained["rows"]] == ["198.51.100.66"]
    explained = await get("?status=explained")
    assert {r["key"] for r in explained["rows"]} == {"10.0.0.5", "10.0.0.9", "203.0.113.10", "198.51.100.7"}
    # ?org=: that org's in-scope requests only.
    acme = by_key(await get("?org=1"))
    assert {k: (r["requests"], r["in_scope"], r["unexplained"], r["orgs"]) for k, r in acme.items()} == {
        "198.51.100.66": (3, 3, 3, 1), "10.0.0.9": (1, 1, 0, 1), "198.51.100.7": (2, 2, 0, 1),
    }
    # A time window counts the requests inside it: 2020-07-03 (UTC).
    day = by_key(await get("?from=2020-07-03&to=2020-07-04"))
    assert {k: (r["requests"], r["in_scope"], r["unexplained"]) for k, r in day.items()} == {
        "198.51.100.66": (2, 2, 2), "203.0.113.10": (1, 1, 0), "198.51.100.8": (1, 0, 0),
    }
    library = await get("?kind=library")
    assert {r["key"] for r in library["rows"]} == {"203.0.113.10", "198.51.100.7", "198.51.100.8"}
    network = await get("?cidr=198.51.100.0/24")
    assert {r["key"] for r in network["rows"]} == {"198.51.100.66", "198.51.100.7", "198.51.100.8"}
    partner_range = await get("?cidr=203.0.113.0/26")
    assert [r["key"] for r in partner_range["rows"]] == ["203.0.113.10"]
    assert "cidr=203.0.113.0%2F26" in partner_range["rows"][0]["links"]["requests"]
    ua = await get_json(ds_shared, "/ws/-/forensics/ips.json?" + _q(ua=UA_PARTNER))
    assert [r["key"] for r in ua["rows"]] == ["203.0.113.10"]
    both = await get("?org=1&from=2020-07-03&to=2020-07-09")
    assert {k: r["in_scope"] for k, r in by_key(both).items()} == {"198.51.100.66": 2, "10.0.0.9": 1, "198.51.100.7": 1}
    # Orgs filtered by a signature: the figures of that signature only, the org's own status.
    orgs = await get_json(ds_shared, "/ws/-/forensics/orgs.json?ip=10.0.0.9")
    assert {r["org_id"]: (r["status"], r["in_scope"], r["unexplained"]) for r in orgs["rows"]} == {
        "1": ("exposed", 1, 0), "3": ("cleared", 1, 0),
    }
    assert orgs["filters"] == [["ip", "10.0.0.9"]]


def _q(**params):
    from urllib.parse import urlencode

    return urlencode(params)


@pytest.mark.asyncio
async def test_filtered_and_aggregate_figures_agree(ds_shared):
    """A window wider than the log reads the requests; no filter reads the aggregates."""
    wide = "from=2000-01-01&to=2100-01-01"
    for page, groupings in (("ips", ("ip", "cidr24", "cidr16", "asn", "provider", "rdns")),
                            ("user-agents", ("raw", "family", "family_major", "os", "kind"))):
        for by in groupings:
            plain = await get_json(ds_shared, f"/ws/-/forensics/{page}.json?by={by}")
            windowed = await get_json(ds_shared, f"/ws/-/forensics/{page}.json?by={by}&{wide}")
            assert plain["source"] == "pivot_groups" and windowed["source"] == "window_engine"
            strip = lambda rows: [{k: v for k, v in r.items() if k != "links"} for r in rows]  # noqa: E731
            assert strip(plain["rows"]) == strip(windowed["rows"]), (page, by)
    plain = await get_json(ds_shared, "/ws/-/forensics/orgs.json")
    windowed = await get_json(ds_shared, f"/ws/-/forensics/orgs.json?{wide}")
    assert [{k: v for k, v in r.items() if k != "links"} for r in plain["rows"]] == [
        {k: v for k, v in r.items() if k != "links"} for r in windowed["rows"]
    ]


@pytest.mark.asyncio
async def test_sort_and_paging(ds_shared):
    asc = await get_json(ds_shared, "/ws/-/forensics/ips.json?sort=requests")
    assert [r["requests"] for r in asc["rows"]] == sorted(r["requests"] for r in asc["rows"])
    desc = await get_json(ds_shared, "/ws/-/forensics/ips.json?sort=-requests")
    assert [r["requests"] for r in desc["rows"]] == [5, 3, 3, 3, 2, 2]
    by_key_sort = await get_json(ds_shared, "/ws/-/forensics/ips.json?sort=key")
    assert [r["key"] for r in by_key_sort["rows"]] == sorted(r["key"] for r in by_key_sort["rows"])
    first = await get_json(ds_shared, "/ws/-/forensics/ips.json?sort=-requests&size=4")
    assert (first["total"], first["pages"], len(first["rows"])) == (6, 2, 4)
    second = await get_json(ds_shared, first["next_url"])
    assert len(second["rows"]) == 2 and second["previous_url"]
    assert {r["key"] for r in first["rows"]} | {r["key"] for r in second["rows"]} == {r["key"] for r in desc["rows"]}
    orgs = await get_json(ds_shared, "/ws/-/forensics/orgs.json?sort=-in_scope")
    assert [r["org_id"] for r in orgs["rows"]] == ["1", "3", "2"]
    sigs = await get_json(ds_shared, "/ws/-/forensics/signatures.json?sort=-after_patch_ok")
    assert sigs["rows"][0]["ip"] == "10.0.0.5"


@pytest.mark.asyncio
async def test_url_state_is_kept(ds_shared):
    """Links to other groupings and pages keep the filters; a pasted URL shows the same view."""
    response = await ds_shared.client.get("/ws/-/forensics/ips?by=cidr24&org=1&status=unexplained&sort=-requests")
    assert response.status_code == 200
    html = response.text
    assert 'href="/ws/-/forensics/ips?by=cidr16&amp;org=1&amp;status=unexplained"' in html
    data = await get_json(ds_shared, "/ws/-/forensics/ips.json?by=cidr24&org=1&status=unexplained&sort=-requests")
    assert (data["by"], data["status"], data["sort"], data["filters"]) == ("cidr24", "unexplained", "-requests", [["org", "1"]])
    assert [r["key"] for r in data["rows"]] == ["198.51.100.0/24"]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "url",
    [
        "/ws/-/forensics/ips.json?by=nope",
        "/ws/-/forensics/ips.json?sort=bogus",
        "/ws/-/forensics/user-agents.json?by=cidr24",
        "/ws/-/forensics/ips.json?from=yesterday",
        "/ws/-/forensics/ips.json?cidr=not-a-network",
        "/ws/-/forensics/ips.json?kind=robot",
        "/ws/-/forensics/orgs.json?status=unexplained",
        "/ws/-/forensics/ips.json?page=x",
    ],
)
async def test_bad_parameters_are_400(ds_shared, url):
    response = await ds_shared.client.get(url)
    assert response.status_code == 400, response.text


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "url",
    [
        "/nope/-/forensics", "/nope/-/forensics/ips.json", "/nope/-/forensics/orgs/1",
        "/ws/-/forensics/orgs/999", "/ws/-/forensics/orgs/999.json",
    ],
)
async def test_not_found(ds_shared, url):
    response = await ds_shared.client.get(url)
    assert response.status_code == 404


@pytest.mark.asyncio
async def test_not_a_forensics_database(tmp_path):
    import sqlite_utils

    other = tmp_path / "other.db"
    sqlite_utils.Database(str(other))["t"].insert({"a": 1})
    ds = Datasette([str(other)])
    assert (await ds.client.get("/other/-/forensics")).status_code == 404


# --- drill-down -------------------------------------------------------------------------


def links_with_figures(row: dict, figures: dict | None = None):
    """(figure, url) pairs of a row: each link next to the count it stands for."""
    figures = row if figures is None else figures
    for name, url in row.get("links", {}).items():
        if isinstance(url, dict):
            for sub, sub_url in url.items():
                if isinstance(figures.get(name), dict) and sub_url:
                    yield f"{name}.{sub}", figures[name][sub], sub_url
        elif url and isinstance(figures.get(name), int) and not isinstance(figures.get(name), bool):
            yield name, figures[name], url


DRILL_PAGES = [
    "/ws/-/forensics/ips.json",
    "/ws/-/forensics/ips.json?by=cidr24",
    "/ws/-/forensics/ips.json?by=rdns",
    "/ws/-/forensics/ips.json?by=asn&org=1",
    "/ws/-/forensics/ips.json?from=2020-07-03&to=2020-07-06",
    "/ws/-/forensics/ips.json?cidr=203.0.113.0/26",
    "/ws/-/forensics/user-agents.json",
    "/ws/-/forensics/user-agents.json?by=family_major",
    "/ws/-/forensics/user-agents.json?by=kind&kind=library",
    "/ws/-/forensics/orgs.json",
    "/ws/-/forensics/orgs.json?ip=10.0.0.9",
    "/ws/-/forensics/signatures.json",
    "/ws/-/forensics/signatures.json?org=1",
]


@pytest.mark.asyncio
@pytest.mark.parametrize("page", DRILL_PAGES)
async def test_every_count_links_to_its_rows(ds_shared, page):
    data = await get_json(ds_shared, page)
    checked = 0
    for row in data["rows"]:
        for name, figure, url in links_with_figures(row):
            if "/requests_view" in url:
                assert "_nosuggest=1" in url
            assert await rows_behind(ds_shared, url) == figure, (page, row.get("key") or row.get("org_id") or row.get("ip"), name, url)
            checked += 1
    assert checked >= len(data["rows"])


@pytest.mark.asyncio
async def test_overview_and_org_links(ds_shared):
    data = await get_json(ds_shared, "/ws/-/forensics.json")
    for name, url in data["funnel_links"].items():
        if isinstance(url, dict):  # the out-of-scope breakdown, reason by reason
            for reason, reason_url in url.items():
                assert await rows_behind(ds_shared, reason_url) == data["funnel"][name][reason], reason
            continue
        assert await rows_behind(ds_shared, url) == data["funnel"][name], name
    for status in data["statuses"]:
        assert await rows_behind(ds_shared, status["url"]) == status["orgs"]
    for step in data["waterfall"]:
        assert await rows_behind(ds_shared, step["url"]) == step["remaining"], step["rule"]
    for day in data["timeline"]:
        for name, figure, url in links_with_figures(day):
            assert await rows_behind(ds_shared, url) == figure, (day["day"], name)
    for sig in data["top_unexplained_signatures"]:
        for name, figure, url in links_with_figures(sig):
            assert await rows_behind(ds_shared, url) == figure, name

    org = await get_json(ds_shared, "/ws/-/forensics/orgs/1.json")
    info = org["org"]
    for name in ("in_scope", "unexplained", "signatures", "unexplained_signatures", "cross_tenant_signatures"):
        assert await rows_behind(ds_shared, info["links"][name]) == info[name], name
    assert await rows_behind(ds_shared, info["links"]["ips"]) == 3
    for sig in org["signatures"]:
        for name, figure, url in links_with_figures(sig):
            assert await rows_behind(ds_shared, url) == figure, (sig["ip"], name)
    for rule in org["rules"]:
        assert await rows_behind(ds_shared, rule["url"]) == rule["requests"], rule["rule"]
    for day in org["timeline"]:
        for name, figure, url in links_with_figures(day):
            assert await rows_behind(ds_shared, url) == figure, (day["day"], name)
    assert await rows_behind(ds_shared, org["latest_requests_url"]) == 6


@pytest.mark.asyncio
async def test_signature_after_patch_links(ds_shared):
    data = await get_json(ds_shared, "/ws/-/forensics/signatures.json")
    for row in data["rows"]:
        for name in ("after_patch", "after_patch_ok"):
            assert await rows_behind(ds_shared, row["links"][name]) == row[name], (row["ip"], name)


# --- charts -----------------------------------------------------------------------------


# The charts' specs, links and frame: tests/test_pages_ui.py.


# --- escaping ---------------------------------------------------------------------------

PAGES = ["", "/ips", "/user-agents", "/orgs", "/orgs/1", "/signatures"]
RAW_MARKUP = [UA_ATTACKER, '"><img src=x onerror=alert(1)>', "<img src=x"]


@pytest.mark.asyncio
@pytest.mark.parametrize("page", PAGES)
async def test_log_strings_are_escaped_in_html(ds_shared, page):
    response = await ds_shared.client.get(f"/ws/-/forensics{page}")
    assert response.status_code == 200
    html = response.text
    for raw in RAW_MARKUP:
        assert raw not in html, raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "/&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in html


@pytest.mark.asyncio
@pytest.mark.parametrize("page", PAGES)
async def test_log_strings_are_escaped_in_json(ds_shared, page):
    response = await ds_shared.client.get(f"/ws/-/forensics{page}.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    for raw in RAW_MARKUP:
        assert raw not in response.text, raw
    assert "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in response.text
    # ...and the values are intact once parsed.
    text = json.dumps(response.json(), ensure_ascii=False)
    assert UA_ATTACKER in text and HOSTILE_PATH.replace('"', '\\"') in text


# --- permissions and saved views -----------------------------------------------------------


@pytest.mark.asyncio
async def test_view_permission_is_checked_first(template):
    ds = Datasette([str(template)], metadata={"databases": {"ws": {"allow": {"id": "root"}}}})
    for url in ("/ws/-/forensics", "/ws/-/forensics/ips.json", "/ws/-/forensics/orgs/1"):
        assert (await ds.client.get(url)).status_code == 403, url
    cookies = {"ds_actor": ds.sign({"a": {"id": "root"}}, "actor")}
    assert (await ds.client.get("/ws/-/forensics/ips.json", cookies=cookies)).status_code == 200


async def _post(ds, url, data, actor=None):
    """POST with a valid CSRF token (taken from a signed-in page), as actor or anonymously."""
    signed_in = {"ds_actor": ds.sign({"a": {"id": "alice"}}, "actor")}
    cookies, token = await csrf_cookies(ds, signed_in, "/ws/-/forensics")
    cookies.pop("ds_actor")
    if actor:
        cookies["ds_actor"] = ds.sign({"a": {"id": actor}}, "actor")
    return await ds.client.post(url, data=dict(data, csrftoken=token), cookies=cookies)


@pytest.mark.asyncio
async def test_saved_views(ds, db_path):
    view_url = "/ws/-/forensics/ips?by=cidr24&status=unexplained"
    anonymous = await _post(ds, "/ws/-/forensics", {"name": "attackers", "url": view_url})
    assert anonymous.status_code == 403
    reader = await _post(ds, "/ws/-/forensics", {"name": "attackers", "url": view_url}, actor="alice")
    assert reader.status_code == 403
    assert read(db_path, "select count(*) from saved_views") == [(0,)]

    saved = await _post(ds, "/ws/-/forensics", {"name": "attackers' /24s", "url": view_url}, actor="root")
    assert saved.status_code == 303
    refused = await _post(ds, "/ws/-/forensics", {"name": "evil", "url": "javascript:alert(1)"}, actor="root")
    assert refused.status_code == 303
    elsewhere = await _post(ds, "/ws/-/forensics", {"name": "evil", "url": "https://evil.example/x"}, actor="root")
    assert elsewhere.status_code == 303
    assert read(db_path, "select name, url, created_by from saved_views") == [("attackers' /24s", view_url, "root")]
    # Everyone who can read sees it.
    data = await get_json(ds, "/ws/-/forensics.json")
    assert [(v["name"], v["url"]) for v in data["saved_views"]] == [("attackers' /24s", view_url)]
    html = (await ds.client.get("/ws/-/forensics")).text
    assert 'href="/ws/-/forensics/ips?by=cidr24&amp;status=unexplained"' in html
    assert "javascript:" not in html


@pytest.mark.asyncio
async def test_save_forms_only_for_writers(ds_shared):
    html = (await ds_shared.client.get("/ws/-/forensics/ips")).text
    assert "Save view" not in html
    cookies = {"ds_actor": ds_shared.sign({"a": {"id": "root"}}, "actor")}
    html = (await ds_shared.client.get("/ws/-/forensics/ips?by=cidr24", cookies=cookies)).text
    assert "Save view" in html and 'name="csrftoken"' in html
    assert 'name="url" value="/ws/-/forensics/ips?by=cidr24"' in html


# --- hooks --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_links_into_the_workbench(ds_shared):
    html = (await ds_shared.client.get("/ws")).text
    assert 'href="/ws/-/forensics"' in html
    html = (await ds_shared.client.get("/")).text
    assert "/ws/-/forensics" in html
    nav = (await ds_shared.client.get("/ws/-/forensics/orgs")).text
    for href in ("/ws/-/forensics", "/ws/-/forensics/ips", "/ws/-/forensics/user-agents",
                 "/ws/-/forensics/orgs", "/ws/-/forensics/signatures", "/ws/-/forensics/rules"):
        assert f'href="{href}"' in nav, href
