"""The timelines (the overview's log timeline and in-scope days, an org page's timeline)
read the hour cells and the raw requests of a window's partial edge hours: for every
window of test_windows (cut hours, inside one hour, whole days, open at one end, empty)
and for none, each bucket's figures equal a direct SQL count over requests_view for that
bucket cut to the window, through the window engine and through the SQL path; and each
bucket's links lead to requests pages whose counts are those figures.
"""

from __future__ import annotations

import sqlite3

import pytest

from datasette_forensics.views import chart

from test_pages import rows_behind
from test_windows import WINDOWS, bounds, ds, direct, get_json, query, template  # noqa: F401 (fixtures)

DAY_MS = chart.DAY_MS
HOUR_MS = chart.HOUR_MS
CASES = [None] + WINDOWS
IDS = ["none"] + [query(w) for w in WINDOWS]


def expected_unit(template, window) -> int:
    """Hours for up to three days of the window (cut to the log's span), else days."""
    first, last = direct(template, "select min(ts), max(ts) from requests", window or (None, None))[0]
    if window is not None:
        w_from, w_to = bounds(window)
        first, last = max(first, w_from), min(last, w_to - 1)
    return HOUR_MS if last - first <= 3 * DAY_MS else DAY_MS


def per_bucket(template, window, unit, where="1", **params) -> dict:
    rows = direct(
        template,
        f"""select ts / :unit, count(*), coalesce(sum(in_scope), 0), coalesce(sum(unexplained), 0) from requests_view
        where ts >= :w_from and ts < :w_to and {where} group by 1""",
        window or (None, None),
        unit=unit,
        **params,
    )
    return {b * unit: (n, s, u) for b, n, s, u in rows}


def url(path: str, window, extra: str = "") -> str:
    q = "&".join(p for p in (query(window) if window else "", extra) if p)
    return path + ("?" + q if q else "")


@pytest.mark.asyncio
@pytest.mark.parametrize("window", CASES, ids=IDS)
async def test_overview_timelines_equal_direct_counts(ds, template, window):
    await assert_overview_exact(ds, template, window)


async def assert_overview_exact(ds, template, window, links=None):
    data = await get_json(ds, url("/win/-/forensics.json", window))
    assert data["timeline_source"] == ds.expected_source
    assert (data["timeline_window"] is None) == (window is None)
    unit = expected_unit(template, window)
    expected = per_bucket(template, window, unit)
    shown = {b["start_ms"]: (b["requests"], b["requests"] - b["out_of_scope"], b["unexplained"]) for b in data["log_timeline"]}
    assert shown == expected
    assert all(b["explained"] + b["unexplained"] + b["out_of_scope"] == b["requests"] for b in data["log_timeline"])
    days = per_bucket(template, window, DAY_MS, "in_scope = 1")
    assert {parse_day(t["day"]): (t["in_scope"], t["unexplained"]) for t in data["timeline"]} == {
        d: (s, u) for d, (_, s, u) in days.items()
    }
    if links if links is not None else (window is None or window in WINDOWS[:4]):
        for bucket in data["log_timeline"]:
            for name in ("requests", "unexplained", "explained", "out_of_scope"):
                assert await rows_behind(ds, bucket["links"][name]) == bucket[name], (bucket["start"], name)


@pytest.mark.asyncio
@pytest.mark.parametrize("window", CASES, ids=IDS)
async def test_org_timelines_equal_direct_counts(ds, template, window):
    await assert_org_exact(ds, template, window)


async def assert_org_exact(ds, template, window, links=None):
    conn = sqlite3.connect(str(template))
    ip = conn.execute("select ip from requests_view where org_id = '1' and in_scope = 1 group by ip order by count(*) desc").fetchone()[0]
    conn.close()
    filters = {"": "1", "kind=browser": "ua_kind = 'browser'", f"ip={ip}": f"ip = '{ip}'"}
    statuses = {"all": "1", "unexplained": "unexplained = 1", "explained": "unexplained = 0"}
    unit = DAY_MS if window is None else expected_unit(template, window)
    for org in ("1", "3"):
        for extra, where in filters.items():
            for status, status_where in statuses.items():
                data = await get_json(ds, url(f"/win/-/forensics/orgs/{org}.json", window, f"{extra}&status={status}".lstrip("&")))
                assert data["timeline_source"] == ds.expected_source
                assert data["timeline_unit"] == ("day" if unit == DAY_MS else "hour")
                expected = per_bucket(
                    template, window, unit, f"in_scope = 1 and org_id = :org and {where} and {status_where}", org=org
                )
                shown = {t["start_ms"]: (t["in_scope"], t["unexplained"]) for t in data["timeline"]}
                assert shown == {b: (s, u) for b, (_, s, u) in expected.items()}, (org, extra, status)
                if status == "all" and org == "1" and (links if links is not None else (window is None or window in WINDOWS[:4])):
                    for t in data["timeline"]:
                        for name in ("in_scope", "unexplained", "explained"):
                            assert await rows_behind(ds, t["links"][name]) == t[name], (t["start"], name, extra)


@pytest.mark.asyncio
async def test_windows_cut_inside_hours_holding_requests(ds, template):
    """Windows whose first and last hours are cut at an in-scope request (so both edge
    hours hold requests on each side of the cut): two days (hours), five days (days)."""
    conn = sqlite3.connect(str(template))
    times = [t for (t,) in conn.execute(
        "select ts from requests_view where in_scope = 1 and org_id = '1' and ts % 3600000 > 60000 order by ts")]
    conn.close()
    for days in (2, 5):
        start = times[len(times) // 4]
        end = next(t for t in times if t > start + (days - 1) * DAY_MS)
        window = (iso(start), iso(end + 1))
        for lo, hi in ((start // HOUR_MS * HOUR_MS, start), (end + 1, (end // HOUR_MS + 1) * HOUR_MS)):
            assert direct(template, "select count(*) from requests where ts >= :lo and ts < :hi", window, lo=lo, hi=hi)
        await assert_overview_exact(ds, template, window, links=True)
        await assert_org_exact(ds, template, window, links=True)


def iso(ms: int) -> str:
    from datasette_forensics.timeparse import format_ms

    return format_ms(ms)


@pytest.mark.asyncio
async def test_the_pages_say_the_timeline_shows_the_window(ds):
    windowed = (await ds.client.get(url("/win/-/forensics", WINDOWS[3]))).text
    assert "This timeline shows the window from" in windowed and "are the whole log" in windowed
    assert "This timeline shows the window" not in (await ds.client.get("/win/-/forensics")).text
    org = (await ds.client.get(url("/win/-/forensics/orgs/1", WINDOWS[3]))).text
    assert "In-scope requests per hour (UTC): unexplained and explained (the window only)" in org


def parse_day(day: str) -> int:
    from datasette_forensics.timeparse import parse_time

    return parse_time(day + "T00:00:00Z")
