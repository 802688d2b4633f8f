"""The analyst's pages as a reader meets them: charts (one colour scheme, no sort
prefixes, every mark a link to its requests, a true waterfall, continuous time),
the filter bar, tables that fit, empty states, hostile text shown visibly, and
Datasette around the workbench. The browser half is tests/browser/test_ui_browser.py."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest

from datasette_forensics.views import chart
from test_pages import UA_ATTACKER, get_json, rows_behind  # noqa: F401  (fixtures below)
from test_pages import ds_shared, template  # noqa: F401

SPEC_BLOCK = re.compile(r'<script type="application/json" id="([^"]+)">(.*?)</script>', re.S)
PAGES = ["", "/ips", "/ips?by=cidr24", "/user-agents", "/orgs", "/orgs/1"]


def specs(html: str) -> dict:
    return {k: json.loads(v) for k, v in SPEC_BLOCK.findall(html)}


@pytest.mark.asyncio
async def test_overview_charts_are_ranges_with_links(ds_shared):
    html = (await ds_shared.client.get("/ws/-/forensics")).text
    charts = specs(html)
    assert set(charts) == {"chart-timeline", "chart-waterfall"}
    timeline = charts["chart-timeline"]
    day = 1593734400000  # 2020-07-03
    rows = {r["part"]: r for r in timeline["data"]["values"] if r["t0"] == day}
    # Stacked by hand: unexplained from 0, explained on top of it; one day wide.
    assert (rows["unexplained"]["y0"], rows["unexplained"]["y1"]) == (0, 2)
    assert (rows["explained"]["y0"], rows["explained"]["y1"]) == (2, 3)
    assert rows["unexplained"]["t1"] - day == chart.DAY_MS
    # A continuous UTC time axis, and every mark a link to exactly its requests.
    assert timeline["encoding"]["x"]["type"] == "temporal" and timeline["encoding"]["x"]["scale"]["type"] == "utc"
    assert timeline["encoding"]["href"]["field"] == "href"
    for part, figure in (("unexplained", 2), ("explained", 1)):
        assert await rows_behind(ds_shared, rows[part]["href"]) == figure, part
    # The table beside it holds the same figures, with the same links.
    assert '<th scope="row">2020-07-03</th>' in html
    assert rows["unexplained"]["href"].replace("&", "&amp;") in html


@pytest.mark.asyncio
async def test_waterfall_floats_each_rule_step(ds_shared):
    data = await get_json(ds_shared, "/ws/-/forensics.json")
    html = (await ds_shared.client.get("/ws/-/forensics")).text
    steps = specs(html)["chart-waterfall"]["data"]["values"]
    waterfall = data["waterfall"]
    assert [s["step"] for s in steps] == ["in scope"] + [w["rule"] for w in waterfall[1:]] + ["unexplained"]
    assert (steps[0]["y0"], steps[0]["y1"]) == (0, waterfall[0]["remaining"])
    for bar, before, after in zip(steps[1:-1], waterfall, waterfall[1:]):
        # A floating bar: from what was left after the rule up to what was left before it.
        assert (bar["y0"], bar["y1"]) == (after["remaining"], before["remaining"])
        assert await rows_behind(ds_shared, bar["href"]) == before["remaining"] - after["remaining"], bar["step"]
    assert (steps[-1]["y0"], steps[-1]["y1"]) == (0, data["funnel"]["unexplained"])
    assert await rows_behind(ds_shared, steps[-1]["href"]) == data["funnel"]["unexplained"]


@pytest.mark.asyncio
@pytest.mark.parametrize("page", PAGES)
async def test_one_colour_scheme_and_no_sort_prefixes(ds_shared, page):
    html = (await ds_shared.client.get(f"/ws/-/forensics{page}")).text
    charts = specs(html)
    assert charts, page
    for spec in charts.values():
        colour = spec["encoding"]["color"]["scale"]
        assert colour["range"] == [chart.PARTS[p] for p in colour["domain"]]
        assert spec["encoding"]["color"]["legend"]["title"] is None
        for row in spec["data"]["values"]:
            assert row["part"] in chart.PARTS
            for key in ("category", "step"):
                assert not re.match(r"^\d+\. ", str(row.get(key, ""))), row
            assert row["href"].startswith("/ws/-/forensics/requests?"), row
    assert len(set(chart.PARTS.values())) == len(chart.PARTS)


@pytest.mark.asyncio
async def test_pivot_chart_marks_lead_to_their_requests(ds_shared):
    data = await get_json(ds_shared, "/ws/-/forensics/ips.json")
    html = (await ds_shared.client.get("/ws/-/forensics/ips")).text
    values = specs(html)["chart-groups"]["data"]["values"]
    first = data["rows"][0]
    marks = {r["part"]: r for r in values if r["category"] == first["key"]}
    assert marks["unexplained"]["x1"] - marks["unexplained"]["x0"] == first["unexplained"]
    assert await rows_behind(ds_shared, marks["unexplained"]["href"]) == first["unexplained"]
    if "out of scope" in marks:
        assert await rows_behind(ds_shared, marks["out of scope"]["href"]) == first["requests"] - first["in_scope"]
    # The chart keeps the page's order (sort: null), without a rank in the label.
    order = list(dict.fromkeys(r["category"] for r in values))
    assert order == [r["key"] for r in data["rows"] if r["requests"]][: len(order)]


@pytest.mark.asyncio
async def test_chart_frame_loads_only_local_vega(ds_shared):
    html = (await ds_shared.client.get("/ws/-/forensics")).text
    (frame,) = re.findall(r'src="(/-/forensics-chart\?data=chart-timeline)"', html)
    page = await ds_shared.client.get(frame)
    assert page.status_code == 200
    scripts = re.findall(r'<script src="([^"]+)"', page.text)
    # Our script first (it notes the bundle's module loader), then datasette-vega's bundle.
    assert scripts[0].endswith("/forensics-chart.js")
    assert any(s.startswith("/-/static-plugins/datasette-vega/") for s in scripts[1:])
    for url in scripts:
        assert url.startswith("/"), url
        assert (await ds_shared.client.get(url)).status_code == 200, url
    # datasette-vega's own chart tool stays asleep: no export link for it to find.
    assert "export-links" not in page.text


# --- the filter bar -------------------------------------------------------------------

from test_pages import UA_CURL, _post, read  # noqa: E402
from test_pages import db_path, ds  # noqa: E402,F401

FILTER_PAGES = ["/ips", "/user-agents", "/orgs", "/signatures", "/orgs/1"]


@pytest.mark.asyncio
@pytest.mark.parametrize("page", FILTER_PAGES)
async def test_filter_bar_on_every_page(ds_shared, page):
    status = "review" if page == "/orgs" else "unexplained"
    response = await ds_shared.client.get(f"/ws/-/forensics{page}?kind=library&status={status}")
    assert response.status_code == 200
    html = response.text
    (form,) = re.findall(r'<form class="forensics-filter-bar" action="([^"]+)" method="get"', html)
    assert form == f"/ws/-/forensics{page}"
    for field in ('name="from"', 'name="to"', 'name="q"', 'name="status"', 'name="kind"'):
        assert field in html, field
    assert re.search(r'name="kind" value="library" checked', html)
    assert re.search(f'name="status" value="{status}" checked', html)
    # Presets from the incident: its window, the day before the patch, after the patch.
    presets = dict((label, url) for url, label in re.findall(r'<a href="([^"]+)"(?: aria-current="true")?>(Incident window|The day before the patch|After the patch)</a>', html))
    assert set(presets) == {"Incident window", "The day before the patch", "After the patch"}
    assert "from=2020-07-01T00%3A00%3A00.000Z&amp;to=2020-07-10T00%3A00%3A00.000Z" in presets["Incident window"]
    assert "from=2020-07-09T00%3A00%3A00.000Z&amp;to=2020-07-10T00%3A00%3A00.000Z" in presets["The day before the patch"]
    assert "from=2020-07-10T00%3A00%3A00.000Z" in presets["After the patch"] and "to=" not in presets["After the patch"]
    # The bar keeps the rest of the state (status, kind) in the preset links.
    assert "kind=library" in presets["After the patch"]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "search,same_as",
    [("198.51.100.7", "ip=198.51.100.7"), ("203.0.113.0/24", "cidr=203.0.113.0%2F24"), (UA_CURL, "ua=curl%2F7.68.0")],
)
async def test_one_search_field_for_address_network_or_agent(ds_shared, search, same_as):
    for page in ("ips", "orgs", "signatures"):
        searched = await get_json(ds_shared, f"/ws/-/forensics/{page}.json?q={search.replace('/', '%2F')}")
        direct = await get_json(ds_shared, f"/ws/-/forensics/{page}.json?{same_as}")
        assert searched["rows"] == direct["rows"] and searched["filters"] == direct["filters"], page
        assert searched["rows"] or (page == "orgs" and search == UA_CURL), page  # curl reached no org in scope
    html = (await ds_shared.client.get(f"/ws/-/forensics/ips?q={search.replace('/', '%2F')}")).text
    assert f'name="q" value="{search}"' in html


@pytest.mark.asyncio
async def test_empty_kind_from_the_form_means_any(ds_shared):
    plain = await get_json(ds_shared, "/ws/-/forensics/ips.json")
    blank = await get_json(ds_shared, "/ws/-/forensics/ips.json?from=&to=&q=&status=&kind=")
    assert blank["rows"] == plain["rows"]


@pytest.mark.asyncio
async def test_org_page_filters_its_signatures_timeline_and_requests(ds_shared):
    whole = await get_json(ds_shared, "/ws/-/forensics/orgs/1.json")
    target = next(s for s in whole["signatures"] if s["unexplained"])
    data = await get_json(ds_shared, f"/ws/-/forensics/orgs/1.json?q={target['ip']}&status=unexplained")
    assert {s["ip"] for s in data["signatures"]} == {target["ip"]}
    assert data["latest_requests"] and all(r["ip"] == target["ip"] and not r["explained"] for r in data["latest_requests"])
    assert sum(t["unexplained"] for t in data["timeline"]) == target["unexplained"]
    for day in data["timeline"]:
        assert await rows_behind(ds_shared, day["links"]["unexplained"]) == day["unexplained"]
    # The org's own figures stay whole.
    assert data["org"] == whole["org"]
    windowed = await get_json(ds_shared, "/ws/-/forensics/orgs/1.json?from=2020-07-05T00:00:00Z")
    assert windowed["timeline"] and all(t["day"] >= "2020-07-05" for t in windowed["timeline"])
    assert all(r["time"] >= "2020-07-05" for r in windowed["latest_requests"])


# --- saved views ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_saved_views_renamed_deleted_and_listed_where_they_apply(ds, db_path):
    view_url = "/ws/-/forensics/ips?by=cidr24"
    saved = await _post(ds, "/ws/-/forensics", {"name": "networks", "url": view_url, "next": view_url}, actor="root")
    assert saved.status_code == 303 and saved.headers["location"] == view_url
    (view_id,) = read(db_path, "select id from saved_views")[0]
    # Listed on the page it belongs to (any filters), not on others.
    root = {"ds_actor": ds.sign({"a": {"id": "root"}}, "actor")}
    html = (await ds.client.get("/ws/-/forensics/ips", cookies=root)).text
    assert "Saved views of this page" in html and ">networks</a>" in html
    assert 'name="action" value="rename"' in html and 'name="action" value="delete"' in html
    assert "Saved views of this page" not in (await ds.client.get("/ws/-/forensics/signatures")).text
    # Readers see it, without the forms.
    reader_html = (await ds.client.get("/ws/-/forensics/ips")).text
    assert ">networks</a>" in reader_html and 'value="rename"' not in reader_html

    renamed = await _post(ds, "/ws/-/forensics", {"action": "rename", "id": str(view_id), "name": "  /24s  "}, actor="root")
    assert renamed.status_code == 303
    assert read(db_path, "select name, url from saved_views") == [("/24s", view_url)]
    refused = await _post(ds, "/ws/-/forensics", {"action": "delete", "id": str(view_id)}, actor="alice")
    assert refused.status_code == 403
    assert read(db_path, "select count(*) from saved_views") == [(1,)]
    deleted = await _post(ds, "/ws/-/forensics", {"action": "delete", "id": str(view_id)}, actor="root")
    assert deleted.status_code == 303
    assert read(db_path, "select count(*) from saved_views") == [(0,)]
    # A next URL elsewhere is never followed.
    away = await _post(ds, "/ws/-/forensics", {"name": "x", "url": view_url, "next": "https://evil.example/"}, actor="root")
    assert away.headers["location"] == "/ws/-/forensics"


# --- empty and partial states, hostile text, Datasette around the workbench -------------

from conftest import make_datasette  # noqa: E402

from datasette_forensics import ingest, schema  # noqa: E402

HOSTILE_UA = "evil\x1b[31mred\u202eabc\u200bz"
SHOWN_UA = "evil\\x1b[31mred\\u202eabc\\u200bz"


@pytest.fixture(scope="module")
def logs_only(tmp_path_factory):
    """A database with two days of logs (one hostile agent, one garbage line) and nothing else."""
    tmp = tmp_path_factory.mktemp("logs-only")
    log = tmp / "access.jsonl"
    lines = [
        json.dumps({"timestamp": "2020-07-02T10:00:00Z", "remote_addr": "192.0.2.5", "http_user_agent": HOSTILE_UA,
                    "request_uri": "/api/orgs/acme/x", "status": 200}),
        json.dumps({"timestamp": "2020-07-03T11:00:00Z", "remote_addr": "192.0.2.6", "http_user_agent": "curl/7.68.0",
                    "request_uri": "/api/orgs/acme/y", "status": 200}),
        "{not json",
    ]
    log.write_text("\n".join(lines) + "\n")
    path = tmp / "logs.db"
    db = schema.connect(str(path))
    ingest.import_logs(db, [str(log)])
    db.conn.close()
    empty = tmp / "empty.db"
    schema.connect(str(empty)).conn.close()
    return path, empty


@pytest.mark.asyncio
async def test_logs_without_records_or_incident_say_what_to_do(logs_only):
    path, _ = logs_only
    ds = make_datasette([path])
    html = (await ds.client.get("/logs/-/forensics")).text
    gaps = re.findall(r'data-gap="([^"]+)"', html)
    assert gaps == ["records", "incident"]
    assert "<code>datasette-forensics import-records logs.db orgs orgs.csv</code>" in html
    assert "<code>datasette-forensics incident logs.db incident.toml</code>" in html
    assert "No request is in scope yet, so there is nothing for rules to explain." in html
    # The raw logs' timeline is there all the same: per hour for a short log.
    timeline = specs(html)["chart-timeline"]
    assert "Requests per hour" in html and timeline["encoding"]["x"]["title"] == "Hour (UTC)"
    assert {(r["t0"], r["part"], r["y1"] - r["y0"]) for r in timeline["data"]["values"]} == {
        (1593684000000, "out of scope", 1), (1593774000000, "out of scope", 1)
    }
    assert '<iframe class="forensics-chart-frame" title="Requests per hour' in html
    # Pages with nothing to list say why instead of charting "the first 0 orgs".
    orgs = (await ds.client.get("/logs/-/forensics/orgs")).text
    assert "first 0" not in orgs and 'data-gap="records"' in orgs and "forensics-chart-frame" not in orgs


@pytest.mark.asyncio
async def test_an_empty_database_asks_for_logs_first(logs_only):
    _, empty = logs_only
    html = (await make_datasette([empty]).client.get("/empty/-/forensics")).text
    assert re.findall(r'data-gap="([^"]+)"', html)[0] == "logs"
    assert "datasette-forensics import-logs empty.db access.log*" in html
    assert "No access logs are imported yet." in html


@pytest.mark.asyncio
async def test_control_and_bidi_characters_are_shown_visibly(logs_only):
    path, _ = logs_only
    ds = make_datasette([path])
    for url in ("/logs/-/forensics/ips", "/logs/-/forensics/user-agents", "/logs/-/forensics/signatures"):
        html = (await ds.client.get(url)).text
        assert SHOWN_UA in html and "⚠ escaped" in html, url
        assert "\x1b" not in html and "\u202e" not in html and "\u200b" not in html, url


class ShownText(HTMLParser):
    """The text a reader sees: text nodes outside scripts and styles, and title attributes."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        self.skip += tag in ("script", "style")
        self.parts.extend(value for name, value in attrs if name == "title" and value)

    def handle_endtag(self, tag):
        self.skip -= tag in ("script", "style") and self.skip > 0

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def shown_text(html: str) -> str:
    parser = ShownText()
    parser.feed(html)
    return "\n".join(parser.parts)


@pytest.mark.asyncio
async def test_control_and_bidi_characters_are_shown_visibly_on_datasette_table_pages(logs_only):
    path, _ = logs_only
    ds = make_datasette([path])
    html = (await ds.client.get("/logs/user_agents")).text
    text = shown_text(html)
    assert SHOWN_UA in text and "⚠ escaped" in text
    assert "\x1b" not in text and "\u202e" not in text and "\u200b" not in text
    # Datasette 1.0 also writes the row's label into a data-row-label attribute (read only
    # by its row-editing tools, never shown as text): HTML-escaped, so it cannot add markup.
    assert "<script" not in html.split("<tbody>")[1].split("</tbody>")[0]


@pytest.mark.asyncio
async def test_datasette_lists_the_analysts_tables_and_labels_ids(logs_only):
    path, _ = logs_only
    ds = make_datasette([path])
    await ds.invoke_startup()
    tables = (await get_json(ds, "/logs.json"))["tables"]
    shown = [t["name"] for t in tables if not t["hidden"]]
    hidden = {t["name"] for t in tables if t["hidden"]}
    assert {"requests", "rejected_lines", "import_batches", "orgs", "rules", "saved_views"} <= set(shown)
    assert {"pivot_groups", "scoped", "sig_stats", "line_counts", "_sqlite_migrations", "signatures"} <= hidden
    html = (await ds.client.get("/logs")).text
    assert html.index("import_batches") < html.index("hidden table")
    # requests: ids read as their values.
    html = (await ds.client.get("/logs/requests?_sort=id")).text
    assert re.search(r'<td class="col-sig_id[^>]*><a href="/logs/signatures/\d+">\d+</a>&nbsp;<span[^>]*>192\.0\.2\.5  evil\\x1b', html)
    assert re.search(r'<td class="col-uri_id[^>]*><a href="/logs/uris/\d+">\d+</a>&nbsp;<span[^>]*>/api/orgs/acme/x</span>', html)
    assert re.search(r'<td class="col-batch_id[^>]*><a href="/logs/import_batches/1">1</a>&nbsp;<span[^>]*>[^<]*access\.jsonl</span>', html)
    # rejected_lines.batch_id: its file, not "None".
    html = (await ds.client.get("/logs/rejected_lines")).text
    assert re.search(r'<td class="col-batch_id[^>]*><a href="/logs/import_batches/1">[^<]*access\.jsonl</a>', html)


@pytest.mark.asyncio
async def test_root_sign_in_lands_on_the_workbench(logs_only):
    path, _ = logs_only
    ds = make_datasette([path])
    await ds.invoke_startup()
    ds._root_token = "one-time"
    assert (await ds.client.get("/-/auth-token?token=wrong")).status_code == 403
    response = await ds.client.get("/-/auth-token?token=one-time")
    assert response.status_code == 302 and response.headers["location"] == "/logs/-/forensics"
    assert ds.unsign(response.cookies["ds_actor"], "actor") == {"a": {"id": "root"}}
    assert (await ds.client.get("/-/auth-token?token=one-time")).status_code == 403


@pytest.mark.asyncio
async def test_a_logs_timeline_is_exact_from_the_hour_cells(logs_only):
    """The log timeline reads the hour cells (exact at any size; no "at least")."""
    import sqlite3

    path, _ = logs_only
    ds = make_datasette([path])
    timeline = (await get_json(ds, "/logs/-/forensics.json"))["log_timeline"]
    conn = sqlite3.connect(str(path))
    hours = conn.execute("select ts / 3600000 * 3600000, count(*) from requests group by 1 order by 1").fetchall()
    assert [(b["start_ms"], b["requests"]) for b in timeline] == hours and all("at_least" not in b for b in timeline)
    html = (await ds.client.get("/logs/-/forensics")).text
    assert "2020-07-02 10:00" in html and "(at least)" not in html


@pytest.mark.asyncio
async def test_rules_page_waterfall_is_the_same_chart(ds_shared):
    html = (await ds_shared.client.get("/ws/-/forensics/rules")).text
    bars = specs(html)["chart-waterfall"]["data"]["values"]
    data = await get_json(ds_shared, "/ws/-/forensics/rules.json")
    assert [b["step"] for b in bars] == ["in scope"] + [s["rule"] for s in data["waterfall"][1:]] + ["unexplained"]
    for bar, step in zip(bars[1:-1], data["waterfall"][1:]):
        assert bar["y1"] - bar["y0"] == step["explained"]
        path, query = bar["href"].split("?", 1)
        assert path == "/ws/-/forensics/requests", bar["href"]
        response = await ds_shared.client.get(path + ".json?" + query + "&size=1000")
        assert response.status_code == 200, bar["href"]
        assert len(response.json()["rows"]) == response.json()["count"] == step["explained"], bar["step"]
    assert bars[-1]["y1"] == data["unexplained"]
