"""The analyst's journey through the demo incident, in a real browser.

Every figure asserted here comes from sample_data/README.md (worked out by hand
there), or is the figure the test has just clicked. The journey applies rules, so
it runs first; the other tests compare before and after, whatever state they find.

Run on their own: ``python -m pytest -q -m browser``.
"""

from __future__ import annotations

import csv
import html
import importlib.util
import io
import re
import sqlite3
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"

HOSTILE_UA = "<script>alert(1)</script>"
HOSTILE_PATH_TAIL = '"><img src=x onerror=alert(1)>'
CLUBHOUSE_UA = "Apache-HttpClient/4.5.13 (Java/11.0.9)"
BUILTIN_RULES = ("staff", "member_current", "member_historical", "partner", "post_patch_valid", "token_owner")

# sample_data/README.md, "Per org" and "Statuses with one rule applied alone".
NO_RULES = {
    "101": ("exposed", 11), "102": ("review", 20), "103": ("review", 5), "104": ("review", 9),
    "106": ("exposed", 26), "107": ("exposed", 5), "108": ("exposed", 23), "109": ("review", 3),
    "110": ("review", 2), "111": ("review", 5), "112": ("review", 10), "113": ("exposed", 2),
    "114": ("review", 2),
}
IN_SCOPE = {"101": 11, "102": 20, "103": 5, "104": 9, "106": 26, "107": 5, "108": 23, "109": 3,
            "110": 2, "111": 5, "112": 10, "113": 2, "114": 2}
PARTNER_ALONE = dict(NO_RULES, **{
    "106": ("exposed", 23), "107": ("exposed", 2), "108": ("exposed", 22), "111": ("review", 3),
})
# token_owner touches only 112 and 113, none of partner's requests: the two add up.
PARTNER_AND_TOKEN_OWNER = dict(PARTNER_ALONE, **{"112": ("cleared", 0), "113": ("cleared", 0)})


# Helpers ---------------------------------------------------------------------------


def number(text: str) -> int:
    return int(text.strip().replace(",", ""))


def group_row(page, key: str):
    """The row of a pivot table whose group (first cell) is exactly key."""
    rows = page.locator("div.forensics-scroll > table.forensics-table > tbody > tr").filter(
        has=page.locator("th", has_text=re.compile(r"^\s*" + re.escape(key) + r"\s*$"))
    )
    assert rows.count() == 1, f"no single row for {key!r} on {page.url}"
    return rows.first


def pivot_rows(page) -> dict[str, tuple[int, int, int]]:
    """Group -> (requests, in scope, unexplained) of the pivot table on the page."""
    out = {}
    for row in page.locator("div.forensics-scroll > table.forensics-table > tbody > tr").all():
        cells = row.locator("td")
        # td: unexplained, in scope, requests (the decisive column first), ...
        unexplained, in_scope, requests = (number(cells.nth(i).inner_text()) for i in range(3))
        out[row.locator("th").inner_text().strip()] = (requests, in_scope, unexplained)
    return out


def orgs_table(page) -> dict[str, tuple[str, int, int]]:
    """Org id -> (status, in scope, unexplained) of the orgs page."""
    out = {}
    for row in page.locator("div.forensics-scroll > table.forensics-table > tbody > tr").all():
        cells = row.locator("td")
        # td: status, unexplained, in scope, ...
        out[row.locator("th").inner_text().strip()] = (
            cells.nth(0).inner_text().strip(), number(cells.nth(2).inner_text()), number(cells.nth(1).inner_text())
        )
    return out


def funnel(page) -> dict[str, int]:
    out = {}
    for item in page.locator("ul.forensics-funnel li").all():
        figure = item.locator(".figure").inner_text()
        label = " ".join(item.inner_text().replace(figure, "").split())
        out[label] = number(figure)
    return out


def status_counts(page) -> dict[str, int]:
    section = page.locator("section:not(.content)", has=page.locator("h2", has_text="Funnel"))
    return {
        row.locator("th").inner_text().strip(): number(row.locator("td").inner_text())
        for row in section.locator("table:not(.forensics-out-of-scope) tbody tr").all()
    }


def datasette_rows(page) -> int:
    """The row count Datasette's table page announces, checked against the rows shown."""
    heading = page.locator(".content h3").first.inner_text()
    match = re.match(r"([\d,]+) rows?", heading)
    assert match, f"no row count on {page.url}: {heading!r}"
    count = number(match.group(1))
    if count <= 100:
        assert page.locator("table.rows-and-columns tbody tr").count() == count
    return count


def requests_rows(page) -> int:
    """The count the workbench requests page announces, checked against the rows shown."""
    count = number(page.locator("p.forensics-count strong").first.inner_text())
    if count <= 50:
        assert page.locator("table.forensics-table tbody tr td.col-time").count() == count
    return count


def column(page, name: str) -> list[str]:
    return [c.inner_text().strip() for c in page.locator(f"table tbody td.col-{name}").all()]


def click_nav(page, label: str):
    with page.expect_navigation():
        page.locator("nav.forensics-nav").get_by_role("link", name=label, exact=True).click()


def click_tab(page, label: str):
    with page.expect_navigation():
        page.locator("p.forensics-tabs").get_by_role("link", name=label, exact=True).click()


def screenshot(page, name: str):
    """A full-page screenshot, 1280 wide, once every chart on it has been drawn."""
    for frame_element in page.locator("iframe.forensics-chart-frame").all():
        frame_element.scroll_into_view_if_needed()
        marks = frame_element.content_frame.locator("svg .mark-rect path, canvas")
        marks.first.wait_for(state="attached", timeout=15_000)
    page.evaluate("window.scrollTo(0, 0)")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def rules_state(server) -> list[tuple]:
    """The rules rows and the audit log size, read from the database file itself."""
    conn = sqlite3.connect(f"file:{server.db_path}?mode=ro", uri=True)
    try:
        rules = conn.execute("select name, applied, applied_seq from rules order by name").fetchall()
        ledger = conn.execute("select count(*) from rule_ledger").fetchone()[0]
    finally:
        conn.close()
    return rules + [("ledger", ledger)]


def rules_page_state(page) -> list[tuple[str, str]]:
    return [
        (row.locator("td").nth(0).inner_text().strip(), row.locator("td").nth(2).inner_text().strip())
        for row in page.locator("table.forensics-rules tbody tr").all()
    ]


# The journey ------------------------------------------------------------------------


def test_the_journey_of_the_demo_incident(demo_server, new_page, watch):
    page = new_page()
    workbench = demo_server.workbench

    # 1. Overview: the funnel of the demo incident, nothing explained yet.
    page.goto(workbench)
    assert page.locator("h1").inner_text().startswith("Forensic workbench")
    assert funnel(page) == {"Requests": 166, "In scope": 123, "Unexplained": 123, "Lines rejected at import": 3}
    assert status_counts(page) == {"exposed": 5, "review": 8, "cleared": 0}
    screenshot(page, "overview-no-rules")

    # 2. IP clusters by /24.
    click_nav(page, "IPs")
    click_tab(page, "Network (/24, /48)")
    assert "by=cidr24" in page.url
    clusters = pivot_rows(page)
    assert sum(r[0] for r in clusters.values()) == 166
    assert sum(r[1] for r in clusters.values()) == 123
    # 203.0.113.0/24: Clubhouse's .10 (7 in scope), PagerBridge's .140 (2) and okhttp from .141 (2).
    assert clusters["203.0.113.0/24"][1:] == (11, 11)
    assert clusters["2001:db8:c1ab::/48"][1] == 2  # Clubhouse over IPv6
    screenshot(page, "ips")

    # 3. Drill down: the in-scope figure of 203.0.113.0/24 opens the workbench's requests page.
    cell = group_row(page, "203.0.113.0/24").locator("td").nth(1)
    clicked = number(cell.inner_text())
    with page.expect_navigation():
        cell.get_by_role("link").click()
    assert f"/{demo_server.name}/-/forensics/requests?" in page.url
    assert requests_rows(page) == clicked == 11
    assert "not in scope" not in " ".join(column(page, "org"))
    assert {c.splitlines()[0] for c in column(page, "ip")} == {"203.0.113.10", "203.0.113.140", "203.0.113.141"}  # then its owner

    # 4. User agents by kind: every request has exactly one kind.
    page.go_back()
    click_nav(page, "User agents")
    click_tab(page, "Kind")
    assert "by=kind" in page.url
    kinds = pivot_rows(page)
    assert set(kinds) == {"browser", "library", "bot", "unknown"}
    assert sum(r[0] for r in kinds.values()) == 166
    assert sum(r[1] for r in kinds.values()) == 123

    # 5. By raw user agent, then family: the partner's Java client (7 + 2 in scope, two addresses).
    click_tab(page, "User agent")
    assert "by=raw" in page.url
    clubhouse = group_row(page, CLUBHOUSE_UA)
    # in scope, unexplained, orgs (hooli, stark, wayne), signatures, addresses (.10 and ::15)
    assert [number(clubhouse.locator("td").nth(i).inner_text()) for i in (1, 0, 3, 4, 5)] == [9, 9, 3, 2, 2]
    screenshot(page, "user-agents")
    click_tab(page, "Family")
    assert pivot_rows(page)["Apache-HttpClient"][1] == 9

    # Before any rule: the orgs as the README's "no rules" columns have them.
    click_nav(page, "Orgs")
    assert orgs_table(page) == {o: (s, IN_SCOPE[o], n) for o, (s, n) in NO_RULES.items()}

    # 6. Sign in as root with the one-time link Datasette printed.
    page.goto(demo_server.token_url)
    assert page.locator("header .actor").inner_text().strip() == "root"

    # 7. Rules: nothing applied; apply partner.
    page.goto(workbench)
    click_nav(page, "Rules")
    assert rules_page_state(page) == [(r, "not applied") for r in BUILTIN_RULES]
    with page.expect_navigation():
        page.locator("#rule-partner").get_by_role("button", name="Apply").click()
    assert page.url.endswith(f"/{demo_server.name}/-/forensics/rules")
    # partner explains 9 in-scope requests and changes no status ("rule alone" table).
    assert "Applied partner: 9 requests newly explained; no org changed status." in page.locator(".message-info").inner_text()
    assert page.locator("#rule-partner").get_by_role("button", name="Undo").count() == 1
    assert "applied" in page.locator("#rule-partner td").nth(2).inner_text()

    # 8. Orgs: the figures of "partner alone" (hooli 26 -> 23, stark 5 -> 2, wayne 23 -> 22,
    # vandelay 5 -> 3); partner alone changes no status.
    click_nav(page, "Orgs")
    orgs = orgs_table(page)
    assert orgs == {o: (s, IN_SCOPE[o], n) for o, (s, n) in PARTNER_ALONE.items()}

    # ... and a status change: token_owner clears tyrell (112) and mallory-labs (113).
    click_nav(page, "Rules")
    with page.expect_navigation():
        page.locator("#rule-token_owner").get_by_role("button", name="Apply").click()
    message = page.locator(".message-info").inner_text()
    assert "Applied token_owner: 12 requests newly explained" in message
    assert "org 112: review → cleared" in message and "org 113: exposed → cleared" in message
    screenshot(page, "rules")
    click_nav(page, "Orgs")
    assert orgs_table(page) == {o: (s, IN_SCOPE[o], n) for o, (s, n) in PARTNER_AND_TOKEN_OWNER.items()}
    screenshot(page, "orgs")
    click_nav(page, "Overview")
    assert funnel(page)["Unexplained"] == 123 - 9 - 12
    assert status_counts(page) == {"exposed": 4, "review": 7, "cleared": 2}
    screenshot(page, "overview")

    # 9. Signatures: the attacker's curl reached acme, wayne and mallory-labs.
    click_nav(page, "Signatures")
    attacker = page.locator("div.forensics-scroll > table.forensics-table > tbody > tr").filter(
        has_text="192.0.2.66").filter(has_text="curl/7.68.0")
    assert attacker.count() == 1
    cells = attacker.locator("td")
    assert cells.nth(2).inner_text().strip() == "yes"
    reached = cells.nth(8).get_by_role("link")
    assert [a.inner_text() for a in reached.all()[:3]] == ["acme", "wayne", "mallory-labs"]
    hrefs = [a.get_attribute("href") for a in reached.all()[:3]]
    assert [h.rsplit("/", 1)[1] for h in hrefs] == ["101", "108", "113"]
    assert "3 orgs" in cells.nth(8).inner_text()
    assert number(cells.nth(4).inner_text()) == 9  # in scope
    assert number(cells.nth(3).inner_text()) == 7  # token_owner explained its 2 mallory-labs requests
    # Cross-tenant first: the four of the README lead the list.
    leading = page.locator("div.forensics-scroll > table.forensics-table > tbody > tr").all()[:4]
    assert all(r.locator("td").nth(2).inner_text().strip() == "yes" for r in leading)
    screenshot(page, "signatures")

    # 10. acme's page.
    with page.expect_navigation():
        reached.first.click()
    assert page.url.endswith("/orgs/101")
    assert page.locator("h1").inner_text().startswith("Org 101 (acme)")
    summary = {
        r.locator("th").inner_text().strip(): r.locator("td").inner_text().strip()
        for r in page.locator("section:not(.content)").first.locator("table tr").all()
    }
    assert summary["Status"] == "exposed"
    assert number(summary["In-scope requests"]) == 11
    assert number(summary["Unexplained requests"]) == 11  # neither partner nor token_owner explains acme
    assert number(summary["Cross-tenant signatures"]) == 2  # the attacker's curl and 198.51.100.7
    screenshot(page, "org-101")

    # 11. Its requests on the workbench's requests page; the hostile path is text.
    with page.expect_navigation():
        page.get_by_role("link", name="its in-scope requests", exact=True).click()
    assert requests_rows(page) == 11
    assert set(column(page, "org")) == {"101"}
    assert any(HOSTILE_PATH_TAIL in uri for uri in column(page, "uri"))
    assert page.locator("img[src='x']").count() == 0

    watch.check()


def test_notification_csv_download(demo_server, new_page, watch):
    """The notification list, if a page links to it (MODEL.md §4: `report --format csv`)."""
    page = new_page()
    links = []
    for url in (demo_server.workbench, demo_server.workbench + "/orgs"):
        page.goto(url)
        links += [
            a.get_attribute("href") for a in page.locator("a[href*='.csv']").all()
            if "report" in (a.get_attribute("href") or "")
        ]
    if not links:
        pytest.skip(
            "neither the overview nor the orgs page links to the notification CSV "
            "(it exists only as `datasette-forensics report DB --format csv`)"
        )
    page.goto(demo_server.workbench + "/orgs.json")
    orgs = page.evaluate("JSON.parse(document.body.innerText).rows")
    notify = {o["org_id"] for o in orgs if o["status"] in ("exposed", "review")}
    assert notify
    page.goto(demo_server.workbench + "/orgs")
    with page.expect_download() as download:
        page.locator(f"a[href='{links[0]}']").first.click()
    rows = list(csv.DictReader(io.StringIO(open(download.value.path(), encoding="utf-8").read())))
    assert {r["org_id"] for r in rows} == notify
    assert all(r["status"] in ("exposed", "review") for r in rows)
    watch.check()


# What a visitor must not be able to do --------------------------------------------


FORGE = """async ([url, token]) => {
    const body = new URLSearchParams({action: "apply", rule: "staff"});
    if (token !== null) body.set("csrftoken", token);
    const r = await fetch(url, {method: "POST", body, credentials: "same-origin", redirect: "manual"});
    return [r.status, await r.text()];
}"""


def test_anonymous_visitor_cannot_change_rules(demo_server, new_page, watch):
    page = new_page()
    rules_url = demo_server.workbench + "/rules"
    page.goto(rules_url)
    before_page, before_db = rules_page_state(page), rules_state(demo_server)
    assert [name for name, _ in before_page] == list(BUILTIN_RULES)
    assert page.get_by_role("button", name="Apply").count() == 0
    assert page.get_by_role("button", name="Undo").count() == 0
    assert "needs the forensics-write permission" in page.locator(".content").inner_text()

    watch.expect_console_error("status of 403 (Forbidden)")
    for token in ("bogus", None):
        status, body = page.evaluate(FORGE, [rules_url, token])
        # No cookie at all, so the CSRF check lets it through: the permission check refuses it.
        assert status == 403, body
        assert "Changing rules needs the forensics-write permission." in body, body

    page.reload()
    assert rules_page_state(page) == before_page
    assert rules_state(demo_server) == before_db
    watch.check()


# Datasette 1.0 checks CSRF by the headers the browser sends (Sec-Fetch-Site, Origin):
# there a forgery is a form on another site; 0.65 compares a token.
HEADER_CSRF = importlib.util.find_spec("datasette.csrf") is not None


def forge_from_another_site(context, url: str) -> tuple[int, str]:
    """An attacker's page (served by Playwright, not the network) posting a form to url."""
    attacker = context.new_page()  # not watched: the attacker's page
    form = (
        f'<form method="post" action="{html.escape(url)}"><input name="action" value="apply">'
        '<input name="rule" value="staff"></form><script>document.forms[0].submit()</script>'
    )
    attacker.route("http://evil.example/**", lambda route: route.fulfill(content_type="text/html", body=form))
    try:
        with attacker.expect_response(lambda r: r.url == url and r.request.method == "POST") as posted:
            attacker.goto("http://evil.example/")
        return posted.value.status, posted.value.text()
    finally:
        attacker.close()


def test_root_with_a_forged_csrf_token_changes_nothing(demo_server, chromium_browser, new_page, watch):
    context = chromium_browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        context.add_cookies([demo_server.root_cookie()])
        page = new_page(context)
        rules_url = demo_server.workbench + "/rules"
        page.goto(rules_url)
        assert page.locator("header .actor").inner_text().strip() == "root"
        # root sees the buttons: what stops the forgery below is the CSRF check alone.
        assert page.locator("#rule-staff").get_by_role("button").count() == 1
        before_page, before_db = rules_page_state(page), rules_state(demo_server)

        if HEADER_CSRF:
            status, body = forge_from_another_site(context, rules_url)
            assert status == 403, body
            assert "Sec-Fetch-Site was &#39;cross-site&#39;" in body or "Sec-Fetch-Site was 'cross-site'" in body, body
        watch.expect_console_error("status of 403 (Forbidden)")
        for token in () if HEADER_CSRF else ("bogus", None):
            status, body = page.evaluate(FORGE, [rules_url, token])
            assert status == 403, body
            assert "POST field did not match cookie" in body, body  # Datasette's CSRF check (asgi-csrf)

        page.reload()
        assert rules_page_state(page) == before_page
        assert rules_state(demo_server) == before_db
        watch.check()
    finally:
        context.close()


# URLs and hostile strings ---------------------------------------------------------------


def table_text(page) -> str:
    return page.locator("div.forensics-scroll > table.forensics-table").inner_text()


def test_a_copied_url_opens_the_same_view(demo_server, new_page, watch):
    url = demo_server.workbench + "/ips?by=cidr16&sort=-unexplained"
    first = new_page()
    first.goto(url)
    assert first.locator("p.forensics-tabs strong").first.inner_text() == "Network (/16, /32)"
    shown = table_text(first)
    assert "192.0.0.0/16" in shown and "203.0.0.0/16" in shown

    # A URL built by clicking (group by /24, sort by in scope) pasted into a fresh browser.
    click_tab(first, "Network (/24, /48)")
    with first.expect_navigation():
        first.locator("div.forensics-scroll > table.forensics-table > thead").get_by_role("link", name="In scope").click()
    clicked_url, clicked = first.url, table_text(first)
    assert "by=cidr24" in clicked_url and "sort=-in_scope" in clicked_url

    second = new_page()
    second.goto(url)
    assert table_text(second) == shown
    second.goto(clicked_url)
    assert table_text(second) == clicked
    assert "▼" in second.locator("div.forensics-scroll > table.forensics-table > thead").inner_text()
    watch.check()


def test_a_hostile_user_agent_is_shown_as_text(demo_server, new_page, watch):
    page = new_page()
    executable = """() => [...document.scripts]
        .filter(s => !s.type || /javascript|module/.test(s.type))
        .some(s => s.textContent.includes('alert(1)'))"""
    for url in (
        demo_server.workbench + "/user-agents?by=raw",
        demo_server.workbench + "/signatures?" + "ua=%3Cscript%3Ealert%281%29%3C%2Fscript%3E",
        demo_server.workbench + "/orgs/111",
    ):
        page.goto(url, wait_until="networkidle")
        shown = page.locator("code.forensics-log", has_text=HOSTILE_UA)
        assert shown.count() >= 1, url
        assert shown.first.inner_text() == HOSTILE_UA
        assert not page.evaluate(executable), url
    page.goto(demo_server.workbench + "/user-agents?by=raw", wait_until="networkidle")
    assert group_row(page, HOSTILE_UA).locator("td").nth(1).inner_text().strip() == "1"  # in scope (vandelay)
    page.wait_for_timeout(300)
    watch.check()
