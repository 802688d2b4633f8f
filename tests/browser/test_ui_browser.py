"""The analyst's pages at 1280×800 in Debian's Chromium: nothing scrolls sideways, the
filter forms put their state in the URL and the page shows the filtered figures, a
chart mark opens the requests behind it, and the empty states read as described.

Screenshots of the pages go to test-artifacts/screenshots (docs/screenshots in the
README are copies of a run of these tests and of test_journey.py).

Run on their own: ``python -m pytest -q -m browser``.
"""

from __future__ import annotations

import json
import re
import urllib.request
from urllib.parse import parse_qs, urlsplit

import pytest

from browser.conftest import serve_database
from datasette_forensics import demo, ingest, schema
from browser.test_journey import SCREENSHOTS, number, requests_rows, screenshot

pytestmark = pytest.mark.browser

VIEWPORT = {"width": 1280, "height": 800}
PAGES = [
    "", "/ips", "/ips?by=cidr24", "/ips?by=rdns", "/user-agents", "/user-agents?by=family_major",
    "/orgs", "/signatures", "/signatures?cross_tenant=1", "/orgs/101", "/orgs/111", "/rules",
    "/requests", "/requests?org=101&status=unexplained", "/requests/1",
]
WIDTHS = """() => {
    const root = document.scrollingElement;
    const wide = [...document.querySelectorAll('table')]
        .filter(t => t.getBoundingClientRect().right > root.clientWidth + 1)
        .map(t => (t.className || t.tagName) + ':' + Math.round(t.getBoundingClientRect().right));
    return {scroll: root.scrollWidth, client: root.clientWidth, wide};
}"""


def fits(page) -> dict:
    return page.evaluate(WIDTHS)


@pytest.fixture
def tab(chromium_browser, watch):
    context = chromium_browser.new_context(viewport=VIEWPORT)
    page = watch.attach(context.new_page())
    yield page
    context.close()


@pytest.mark.parametrize("path", PAGES)
def test_no_page_or_table_scrolls_sideways(demo_server, tab, watch, path):
    tab.goto(demo_server.workbench + path, wait_until="networkidle")
    widths = fits(tab)
    assert widths["scroll"] <= widths["client"], widths
    assert widths["wide"] == [], widths
    # Long agents and paths are clipped to one line, with the whole text on hover.
    for clipped in tab.locator("details.forensics-more > summary").all()[:5]:
        title = clipped.get_attribute("title")
        assert title and clipped.locator("code").inner_text() == title[: len(clipped.locator("code").inner_text())]
    # Times stay on one line.
    for time_cell in tab.locator("time.time").all()[:10]:
        box = time_cell.bounding_box()
        assert box["height"] < 24, (path, box)
    watch.check()


def test_the_filter_bar_puts_its_state_in_the_url(demo_server, tab, watch):
    tab.goto(demo_server.workbench + "/ips?by=cidr24", wait_until="networkidle")
    bar = tab.locator("form.forensics-filter-bar")
    bar.locator("input[name=q]").fill("192.0.2.66")
    bar.locator("input[name=kind][value=library]").check()
    with tab.expect_navigation():
        bar.get_by_role("button", name="Apply").click()
    query = parse_qs(urlsplit(tab.url).query)
    assert query["q"] == ["192.0.2.66"] and query["kind"] == ["library"] and query["by"] == ["cidr24"]
    # The page shows the filtered figures: the attacker's 16 requests, 9 in scope.
    (row,) = tab.locator("div.forensics-scroll > table.forensics-table > tbody > tr").all()
    assert row.locator("th").inner_text().strip() == "192.0.2.0/24"
    cells = row.locator("td")
    assert [number(cells.nth(i).inner_text()) for i in (2, 1)] == [16, 9]
    assert "ip = 192.0.2.66" in tab.locator("p.forensics-filters").inner_text()
    # The same URL in a fresh page shows the same, the form filled in.
    with urllib.request.urlopen(tab.url.replace("/ips?", "/ips.json?")) as r:
        assert [(g["key"], g["requests"]) for g in json.load(r)["rows"]] == [("192.0.2.0/24", 16)]
    assert tab.locator("input[name=q]").input_value() == "192.0.2.66"

    # A preset: the day before the patch (2020-07-19 14:04 to 2020-07-20 14:04).
    with tab.expect_navigation():
        bar.get_by_role("link", name="The day before the patch").click()
    query = parse_qs(urlsplit(tab.url).query)
    assert query["from"] == ["2020-07-19T14:04:00.000Z"] and query["to"] == ["2020-07-20T14:04:00.000Z"]
    assert query["ip"] == ["192.0.2.66"] and query["kind"] == ["library"]
    assert tab.locator("input[name=from]").input_value() == "2020-07-19T14:04:00.000Z"
    with urllib.request.urlopen(tab.url.replace("/ips?", "/ips.json?")) as r:
        expected = [(g["key"], g["requests"]) for g in json.load(r)["rows"]]
    shown = [
        (r.locator("th").inner_text().strip(), number(r.locator("td").nth(2).inner_text()))
        for r in tab.locator("div.forensics-scroll > table.forensics-table > tbody > tr").all()
        if r.locator("td").count() > 1
    ]
    assert shown == expected
    assert tab.get_by_role("link", name="The day before the patch").get_attribute("aria-current") == "true"

    # Status on the orgs page.
    tab.goto(demo_server.workbench + "/orgs", wait_until="networkidle")
    tab.locator("form.forensics-filter-bar input[name=status][value=exposed]").check()
    with tab.expect_navigation():
        tab.locator("form.forensics-filter-bar").get_by_role("button", name="Apply").click()
    assert parse_qs(urlsplit(tab.url).query)["status"] == ["exposed"]
    statuses = {c.inner_text().strip() for c in tab.locator("div.forensics-scroll > table > tbody > tr > td:nth-of-type(1)").all()}
    assert statuses == {"exposed"}
    watch.check()


@pytest.mark.parametrize("path,chart_id", [("/ips", "chart-groups"), ("", "chart-timeline"), ("", "chart-waterfall")])
def test_a_chart_mark_opens_the_requests_behind_it(demo_server, tab, watch, path, chart_id):
    tab.goto(demo_server.workbench + path, wait_until="networkidle")
    spec = json.loads(tab.locator(f"script#{chart_id}").text_content())
    frame_element = tab.locator(f"iframe[src*='data={chart_id}']")
    frame_element.scroll_into_view_if_needed()
    frame = frame_element.content_frame
    frame.locator("#forensics-chart[data-drawn]").wait_for(timeout=15_000)
    # Full width: the drawn chart spans the frame, which spans the page's content.
    assert frame_element.bounding_box()["width"] > 1100
    svg_width = frame.locator("svg").first.bounding_box()["width"]
    assert svg_width > 1000, svg_width
    # The largest mark, clicked, opens exactly its requests in the whole window.
    marks = frame.locator("g.mark-rect path")
    assert marks.count() == len(spec["data"]["values"])
    boxes = [marks.nth(i).bounding_box() for i in range(marks.count())]
    biggest = max(range(len(boxes)), key=lambda i: boxes[i]["width"] * boxes[i]["height"])
    with tab.expect_navigation():
        marks.nth(biggest).click()
    assert f"/{demo_server.name}/-/forensics/requests?" in tab.url
    hrefs = {r["href"] for r in spec["data"]["values"]}
    landed = tab.url.split(demo_server.base, 1)[1]
    assert landed in hrefs
    row = next(r for r in spec["data"]["values"] if r["href"] == landed)
    figure = (row.get("x1", 0) - row.get("x0", 0)) or (row["y1"] - row["y0"])
    assert requests_rows(tab) == figure
    watch.check()


@pytest.fixture(scope="module")
def logs_only_server(tmp_path_factory):
    """Datasette serving the demo's logs alone: no records, no incident."""
    tmp = tmp_path_factory.mktemp("logs-only")
    path = tmp / "logs.db"
    db = schema.connect(str(path))
    _, _, logs = demo.sample_files()
    ingest.import_logs(db, [str(p) for p in logs])
    db.conn.close()
    process, base = serve_database(path)
    try:
        yield base
    finally:
        process.terminate()
        process.wait(10)


def test_the_empty_states_read_as_described(logs_only_server, tab, watch):
    tab.goto(logs_only_server + "/logs/-/forensics", wait_until="networkidle")
    steps = tab.locator(".forensics-next")
    assert [s.get_attribute("data-gap") for s in steps.all()] == ["records", "incident"]
    assert steps.nth(0).locator("code").inner_text() == "datasette-forensics import-records logs.db orgs orgs.csv"
    assert steps.nth(1).locator("code").inner_text() == "datasette-forensics incident logs.db incident.toml"
    assert "No request is in scope yet, so there is nothing for rules to explain." in tab.inner_text("body")
    # The raw logs' timeline: every request, out of scope until an incident is set.
    frame = tab.locator("iframe[src*='data=chart-timeline']")
    frame.scroll_into_view_if_needed()
    frame.content_frame.locator("#forensics-chart[data-drawn]").wait_for(timeout=15_000)
    spec = json.loads(tab.locator("script#chart-timeline").text_content())
    assert sum(r["y1"] - r["y0"] for r in spec["data"]["values"]) == 166
    assert {r["part"] for r in spec["data"]["values"]} == {"out of scope"}
    assert fits(tab)["scroll"] <= 1280
    screenshot(tab, "overview-logs-only")
    tab.goto(logs_only_server + "/logs/-/forensics/orgs", wait_until="networkidle")
    text = tab.inner_text("body")
    assert "first 0" not in text and "datasette-forensics import-records logs.db orgs orgs.csv" in text
    assert tab.locator("iframe.forensics-chart-frame").count() == 0
    watch.check()


def test_screenshots_of_the_pages(demo_server, tab, watch):
    """The pages the journey does not photograph, with every chart drawn."""
    for path, name in (
        ("/ips?by=cidr24", "ips-cidr24"),
        ("/signatures", "signatures-1280"),
        ("/requests?org=101&status=unexplained", "requests"),
    ):
        tab.goto(demo_server.workbench + path, wait_until="networkidle")
        screenshot(tab, name)
    # The first request listed, on its own page: every field and the raw line as imported.
    tab.goto(demo_server.workbench + "/requests?org=101&status=unexplained", wait_until="networkidle")
    first = tab.locator("a[href*='/-/forensics/requests/']").first
    first.click()
    tab.wait_for_load_state("networkidle")
    assert re.search(r"/-/forensics/requests/\d+$", tab.url)
    assert tab.locator("p.forensics-raw").count() == 1  # the demo's import kept its raw lines
    assert "/api/" in tab.locator("p.forensics-raw").inner_text()  # the line as the server wrote it
    screenshot(tab, "request")
    assert (SCREENSHOTS / "ips-cidr24.png").exists() and (SCREENSHOTS / "request.png").exists()
    watch.check()


def test_hostile_text_has_a_visible_badge(demo_server, tab, watch):
    """Sample agents hold no control characters; a signature filter for one shows the escape."""
    tab.goto(demo_server.workbench + "/signatures?ua=" + "evil%1B%5B31m", wait_until="networkidle")
    assert re.search(r"evil\\x1b\[31m", tab.locator("p.forensics-filters").inner_text())
    assert tab.locator("p.forensics-filters .forensics-hostile").count() == 1
    watch.check()
