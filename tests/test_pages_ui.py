"""The analyst's pages as a reader meets them: charts (one colour scheme, no sort
prefixes, every mark a link to its requests, a true waterfall, continuous time),
the filter bar, tables that fit, empty states, hostile text shown visibly, and
Datasette around the workbench. The browser half is tests/browser/test_ui_browser.py."""

from __future__ import annotations

import json
import re

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
            assert row["href"].startswith("/ws/requests_view?"), row
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
