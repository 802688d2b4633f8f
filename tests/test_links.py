"""Every link of every workbench page answers, and every count shown on a link equals
the rows behind it.

The test database is the demo's (sample records and logs, the incident, a verdict,
notes and tags) with three rules applied. The crawl starts at every workbench page,
parses each page's HTML and follows every same-origin workbench link (and the
requests_view links, which must carry ``_nocount=1``), leaving out the downloads
(report, evidence file) and forms. Each link must answer 200. Where a link's text is
a figure and the link leads to the requests page, the figure must equal a direct SQL
count over ``requests_view`` (tests/requests_oracle.py); the requests page's own
count and every row of it, page after page, must equal the same query.
"""

from __future__ import annotations

import html.parser
import re
import sqlite3
from urllib.parse import parse_qsl, urlsplit

import pytest

from conftest import make_datasette
from requests_oracle import build_story_db, every_row, generous_time, oracle

pytestmark = pytest.mark.asyncio


@pytest.fixture(autouse=True)
def _generous_time(monkeypatch):
    generous_time(monkeypatch)
MAX_PAGES = 4000
FIGURE = re.compile(r"^\d{1,3}(,\d{3})*$")
SKIP = ("/-/forensics/report", "/evidence.html", "/-/forensics/notes", "/-/forensics/verdicts")


class Links(html.parser.HTMLParser):
    """The page's <a href> links with their text (forms and iframes are not followed)."""

    def __init__(self):
        super().__init__()
        self.links: list[list[str]] = []
        self._open: list | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            href = dict(attrs).get("href")
            self._open = [href, ""] if href else None
            if self._open:
                self.links.append(self._open)

    def handle_endtag(self, tag):
        if tag == "a":
            self._open = None

    def handle_data(self, data):
        if self._open is not None:
            self._open[1] += data


@pytest.fixture(scope="module")
def links_db(tmp_path_factory):
    return build_story_db(tmp_path_factory.mktemp("links") / "links.db")


async def test_every_link_answers_and_every_count_is_its_rows(links_db):
    ds = make_datasette([links_db])
    await ds.invoke_startup()
    name = links_db.stem
    base = f"/{name}/-/forensics"
    conn = sqlite3.connect(str(links_db))
    org = conn.execute("select org_id from org_stats order by unexplained desc limit 1").fetchone()[0]
    start = [
        base, f"{base}/ips", f"{base}/ips?by=cidr24", f"{base}/user-agents", f"{base}/user-agents?by=family",
        f"{base}/user-agents?by=kind", f"{base}/orgs", f"{base}/signatures", f"{base}/rules", f"{base}/requests",
        f"{base}/orgs/{org}", f"{base}/signatures?from=2020-07-04T06:30:00Z&to=2020-07-18T09:15:00Z",
        f"{base}/ips?by=cidr16", f"{base}/user-agents?by=raw", f"{base}/requests/1",
        # Windows (the window engine: the hour cells and the raw edge hours): cut days, whole days.
        f"{base}/ips?from=2020-07-03T10:17:00Z&to=2020-07-12T08:43:30Z",
        f"{base}/user-agents?by=family&from=2020-07-02&to=2020-07-10",
        f"{base}/orgs?from=2020-07-05T12:00:00Z&to=2020-07-15",
        # Windowed timelines (hour buckets for up to three days, else days; edges cut).
        f"{base}?from=2020-07-03T10:17:00Z&to=2020-07-05T08:43:30Z", f"{base}?from=2020-07-02T06:30:00Z&to=2020-07-16T09:15:00Z",
        f"{base}/orgs/{org}?from=2020-07-04T06:30:00Z&to=2020-07-06T09:15:00Z",
        f"{base}/orgs/{org}?from=2020-07-05T12:00:00Z&to=2020-07-15",
    ]
    seen: set = set()
    queue = [(url, 0) for url in start]
    queued = set(start)
    figures = 0
    requests_urls: set = set()
    while queue and len(seen) < MAX_PAGES:
        url, depth = queue.pop(0)
        seen.add(url)
        response = await ds.client.get(url)
        assert response.status_code == 200, (url, response.status_code, response.text[:300])
        split = urlsplit(url)
        if not split.path.startswith(base) or depth < 0 or split.path.endswith((".json", ".csv")):
            continue
        # A start page's links are all opened; the pages they lead to have their
        # requests links and figures checked, and the rest opened only from a start page.
        leaf = depth >= 1
        parser = Links()
        parser.feed(response.text)
        for href, text in parser.links:
            if not href.startswith(f"/{name}") or "#" in href or any(s in href for s in SKIP):
                continue
            if "/requests_view" in href:
                assert "_nocount=1" in href and "_nosuggest=1" in href, f"{url} links requests_view with a count: {href}"
            elif not href.startswith(base):
                continue
            text = text.strip()
            href_split = urlsplit(href)
            if href_split.path == f"{base}/requests":
                requests_urls.add(href)
                if FIGURE.match(text):
                    expected = len(oracle(conn, href_split.query))
                    assert int(text.replace(",", "")) == expected, (url, href, text, expected)
                    figures += 1
            if href not in queued and href_split.path != f"{base}/requests" and not leaf:
                queued.add(href)
                queue.append((href, -1 if leaf else depth + 1))
    assert not queue, f"the crawl stopped at {MAX_PAGES} pages"
    print("pages", len(seen), "figures", figures, "requests pages", len(requests_urls))
    assert figures > 100 and len(requests_urls) > 60, (figures, len(requests_urls))
    # Each requests page: it answers, its links answer (opened, not crawled), its
    # count is exact where it says so, and its rows, page after page, are the query's.
    leaves = set()
    shapes = set()  # the filter keys of the pages whose rows were compared
    for i, link in enumerate(sorted(requests_urls)):
        split = urlsplit(link)
        shape = tuple(sorted({k for k, _ in parse_qsl(split.query)}))
        if shape not in shapes or i % 8 == 0:
            # The HTML of one page in eight (and of each new set of filters): same data as the JSON.
            response = await ds.client.get(link)
            assert response.status_code == 200, (link, response.text[:300])
            parser = Links()
            parser.feed(response.text)
            leaves |= {h for h, _ in parser.links if h.startswith(base) and h not in queued}
        response = await ds.client.get(split.path + ".json" + ("?" + split.query if split.query else ""))
        assert response.status_code == 200, (link, response.text[:300])
        if "next=" in split.query:
            continue  # a later page: its rows are compared from its first page
        expected = oracle(conn, split.query)
        page = response.json()
        if page["count_exact"]:
            assert page["count"] == len(expected), (link, page["count"], len(expected))
        else:
            assert page["count"] is None or page["count"] <= len(expected), link
        rows = [r["id"] for r in page["rows"]]
        # A page cut short by its time budget says how far it searched; its rows still come first.
        assert rows == expected[: len(rows)] and (len(rows) == len(expected[: page["size"]]) or page["searched_to"]), link
        if shape not in shapes or len(expected) > 50:
            shapes.add(shape)
            assert await every_row(ds, link) == expected, link
    for link in sorted(leaves):
        response = await ds.client.get(link)
        assert response.status_code == 200, (link, response.text[:300])


async def test_no_link_goes_to_a_datasette_query(links_db):
    """The rules page's and the overview's links lead to the requests page, not ad-hoc SQL."""
    ds = make_datasette([links_db])
    await ds.invoke_startup()
    for page in ("", "/rules", "/orgs"):
        text = (await ds.client.get(f"/{links_db.stem}/-/forensics{page}")).text
        assert "?sql=" not in text and "_where=" not in text, page
        assert f"/{links_db.stem}/-/forensics/requests?" in text, page
