"""Time windows: ``?from=``/``?to=`` on the IP and user-agent pivots, the orgs and
the signatures pages read whole hours from ``window_hours`` and ``window_scoped_hours``
(derived/window_hours.py) and the requests of the partial edge hours; each figure
equals a direct SQL count over requests_view with the same ts bounds. And the hour
cells, kept by every writer, equal a recount from scratch after every kind of change.

The log: 240 requests spread over 2020-06-30 to 2020-07-12 at random minutes and
seconds (so windows cut hours and days), from eight addresses and five user agents,
to the four orgs of test_pages (and a path out of scope), with some rules applied.
"""

from __future__ import annotations

import json
import random
import shutil
from datetime import datetime, timezone

import pytest

from datasette_forensics import ingest, records, schema, verdicts
from datasette_forensics.derived import window_hours
from datasette_forensics.rules import actions
from datasette_forensics.timeparse import parse_time
from datasette_forensics.views import sources
from datasette_forensics.views.pivot import GROUPING_KEYS, PIVOTS

from conftest import make_datasette
from test_pages import UA_CHROME, UA_FIREFOX, UA_PARTNER, UA_BOT, UA_CURL, build, line

ADDRESSES = ["10.0.0.5", "10.0.0.9", "203.0.113.10", "198.51.100.7", "198.51.100.8", "198.51.100.66", "192.0.2.1", "192.0.2.2"]
AGENTS = [UA_CHROME, UA_FIREFOX, UA_PARTNER, UA_BOT, UA_CURL]
PATHS = ["/api/orgs/acme/issues/", "/api/orgs/bravo/x/", "/api/orgs/charlie/data/", "/api/orgs/delta/x/", "/health"]
START = parse_time("2020-06-30T00:00:00Z")

# Windows: whole hours within days, days and hours cut at both ends, inside one hour,
# whole days, wider than the log, open at one end, empty (before the log).
WINDOWS = [
    ("2020-07-03T10:00:00Z", "2020-07-04T13:00:00Z"),
    ("2020-07-03T10:17:00Z", "2020-07-05T08:43:30.250Z"),
    ("2020-07-03T10:05:00Z", "2020-07-03T10:50:00Z"),
    ("2020-07-03T10:17:03.250Z", "2020-07-03T13:42:00Z"),
    ("2020-07-01T00:00:00Z", "2020-07-10T00:00:00Z"),
    ("2020-07-02T00:00:00Z", "2020-07-03T00:00:00Z"),
    ("2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z"),
    ("2020-07-06T07:30:00Z", None),
    (None, "2020-07-02T19:59:59.999Z"),
    ("2019-01-01T00:00:00Z", "2019-01-05T00:00:00Z"),
]


def log_lines(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ms = START + rng.randrange(13 * 86_400_000)
        iso = datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
        ip = rng.choice(ADDRESSES)
        ua = AGENTS[ADDRESSES.index(ip) % len(AGENTS)] if rng.random() < 0.8 else rng.choice(AGENTS)
        out.append(line(iso, ip, ua, rng.choice(PATHS), token="t1" if ip == "198.51.100.7" else None))
    return out


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("windows")
    build(tmp / "win.db", tmp, log_lines=log_lines(1, 240), rules=("staff", "partner"))
    return tmp / "win.db"


# Each window test runs twice: through the window engine (windows/database.py) and with
# the engine off (window_engine_mb: 0), through the SQL over the cells (views/sources.py).
SOURCES = {"engine": ("window_engine", None), "sql": ("window_hours", 0)}


@pytest.fixture(scope="module", params=list(SOURCES))
def ds(template, request):
    source, mb = SOURCES[request.param]
    config = None if mb is None else {"plugins": {"datasette-forensics": {"window_engine_mb": mb}}}
    ds = make_datasette([template], config=config)
    ds.expected_source = source
    return ds


def bounds(window) -> tuple[int, int]:
    start, end = window
    return (-(2**62) if start is None else parse_time(start), 2**62 if end is None else parse_time(end))


def query(window) -> str:
    start, end = window
    return "&".join(f"{k}={v}" for k, v in (("from", start), ("to", end)) if v is not None)


def direct(template, sql: str, window, **params) -> list:
    conn = schema.connect(str(template)).conn
    try:
        w_from, w_to = bounds(window)
        return conn.execute(sql, {"w_from": w_from, "w_to": w_to, **params}).fetchall()
    finally:
        conn.close()


FIGURES = """count(*), sum(in_scope), coalesce(sum(unexplained), 0),
    count(distinct case when in_scope = 1 then org_id end), count(distinct sig_id), min(ts), max(ts)"""
# The filter bar's status toggle as a condition on the groups (pivot.STATUS).
STATUS_HAVING = {"all": "1", "unexplained": "sum(unexplained) > 0", "explained": "sum(in_scope) > 0 and coalesce(sum(unexplained), 0) = 0"}


def ms(text):
    return None if text is None else parse_time(text)


async def get_json(ds, url):
    response = await ds.client.get(url)
    assert response.status_code == 200, (url, response.text[:500])
    return response.json()


@pytest.mark.asyncio
@pytest.mark.parametrize("window", WINDOWS, ids=[query(w) for w in WINDOWS])
async def test_pivots_in_a_window_equal_direct_counts(ds, template, window):
    await assert_pivots_exact(ds, template, window)


@pytest.mark.asyncio
async def test_pivots_of_many_signatures_per_page(ds, template, monkeypatch):
    """Past ONLY_PROBES signatures on a page, its figures are read by a filtered scan: same counts."""
    monkeypatch.setattr(sources, "ONLY_PROBES", 0)
    for window in WINDOWS[:4]:
        await assert_pivots_exact(ds, template, window)


async def assert_pivots_exact(ds, template, window):
    for page, (_, groupings, _) in PIVOTS.items():
        for by in groupings:
            _, _, columns, _ = GROUPING_KEYS[by]
            for status, having in STATUS_HAVING.items():
                got = await get_json(ds, f"/win/-/forensics/{page}.json?by={by}&status={status}&size=1000&{query(window)}")
                if status == "all":
                    plain = got
                assert got["source"] == ds.expected_source
                shown = {
                    tuple(r["values"].values()): (
                        r["requests"], r["in_scope"], r["unexplained"], r["orgs"], r["signatures"],
                        ms(r["first_seen"]), ms(r["last_seen"]),
                    )
                    for r in got["rows"]
                }
                expected = {
                    tuple(row[: len(columns)]): tuple(row[len(columns):])
                    for row in direct(
                        template,
                        f"""select {', '.join(columns)}, {FIGURES} from requests_view
                        where ts >= :w_from and ts < :w_to group by {', '.join(columns)} having {having}""",
                        window,
                    )
                }
                assert shown == expected, (page, by, status, window)
                assert got["total"] == len(expected)
            # Sorted by distinct orgs (counted for every group, not only the shown ones): same figures.
            by_orgs = await get_json(ds, f"/win/-/forensics/{page}.json?by={by}&sort=-orgs&size=1000&{query(window)}")
            orgs = [r["orgs"] for r in by_orgs["rows"]]
            assert orgs == sorted(orgs, reverse=True)
            assert {tuple(r["values"].values()): (r["orgs"], r["requests"], r["top_user_agent"]) for r in by_orgs["rows"]} == {
                tuple(r["values"].values()): (r["orgs"], r["requests"], r["top_user_agent"]) for r in plain["rows"]
            }


@pytest.mark.asyncio
@pytest.mark.parametrize("window", WINDOWS, ids=[query(w) for w in WINDOWS])
async def test_an_orgs_pivot_in_a_window_equals_direct_counts(ds, template, window):
    """?org= with a window: that org's in-scope requests of the window only."""
    for org in ("1", "3"):
        got = await get_json(ds, f"/win/-/forensics/ips.json?by=cidr24&org={org}&size=1000&{query(window)}")
        shown = {r["key"]: (r["requests"], r["unexplained"], r["signatures"]) for r in got["rows"]}
        expected = {
            key: (n, u, s)
            for key, n, u, s in direct(
                template,
                """select cidr24, count(*), coalesce(sum(unexplained), 0), count(distinct sig_id) from requests_view
                where in_scope = 1 and org_id = :org and ts >= :w_from and ts < :w_to group by cidr24""",
                window,
                org=org,
            )
        }
        assert shown == expected, (org, window)


@pytest.mark.asyncio
@pytest.mark.parametrize("window", WINDOWS, ids=[query(w) for w in WINDOWS])
async def test_orgs_and_signatures_in_a_window_equal_direct_counts(ds, template, window):
    await assert_orgs_and_signatures_exact(ds, template, window)


async def assert_orgs_and_signatures_exact(ds, template, window):
    orgs = await get_json(ds, f"/win/-/forensics/orgs.json?size=1000&{query(window)}")
    assert orgs["source"] == ds.expected_source
    expected = {
        org: (n, u, s)
        for org, n, u, s in direct(
            template,
            """select org_id, count(*), sum(unexplained), count(distinct case when unexplained = 1 then sig_id end)
            from requests_view where in_scope = 1 and ts >= :w_from and ts < :w_to group by org_id""",
            window,
        )
    }
    assert {r["org_id"]: (r["in_scope"], r["unexplained"], r["unexplained_signatures"]) for r in orgs["rows"]} == expected

    sigs = await get_json(ds, f"/win/-/forensics/signatures.json?size=1000&{query(window)}")
    assert sigs["source"] == ds.expected_source
    shown = {
        (r["ip"], r["user_agent"]): (r["requests"], r["in_scope"], r["unexplained"], ms(r["first_seen"]), ms(r["last_seen"]))
        for r in sigs["rows"]
    }
    expected = {
        (ip, ua): rest
        for ip, ua, *rest in direct(
            template,
            """select ip, user_agent, count(*), sum(in_scope), coalesce(sum(unexplained), 0), min(ts), max(ts)
            from requests_view where ts >= :w_from and ts < :w_to group by sig_id""",
            window,
        )
    }
    assert shown == {k: tuple(v) for k, v in expected.items()}


# --- upkeep -----------------------------------------------------------------------------

HOUR_CELLS = ("select * from window_hours order by hour, sig_id",
              "select * from window_scoped_hours order by hour, sig_id, org_id")


def assert_cells_current(db) -> None:
    """The kept cells equal a recount from scratch, and sum to the requests."""
    kept = [db.execute(sql).fetchall() for sql in HOUR_CELLS]
    db.conn.execute("savepoint fresh")
    window_hours.refresh(db)
    fresh = [db.execute(sql).fetchall() for sql in HOUR_CELLS]
    db.conn.execute("rollback to fresh")
    db.conn.execute("release fresh")
    assert kept == fresh
    assert db.execute(
        """select (select sum(requests) from window_hours), (select sum(requests) from window_scoped_hours),
        (select sum(unexplained) from window_scoped_hours)"""
    ).fetchone() == db.execute(
        """select (select count(*) from requests), (select count(*) from scoped),
        (select count(*) from scoped where explained = 0)"""
    ).fetchone()


def test_incremental_upkeep_equals_a_recount(template, tmp_path):
    path = tmp_path / "win.db"
    shutil.copy(template, path)
    db = schema.connect(str(path))
    assert db.execute("select count(*) from window_scoped_hours").fetchone()[0] > 20
    assert not db["window_days"].exists()
    assert_cells_current(db)
    generation = db.execute("select generation from window_generation").fetchone()[0]
    for name in ("member_current", "token_owner", "post_patch_valid"):  # rules applied
        actions.apply(db, name, actor="test")
        assert_cells_current(db)
    actions.undo(db, "staff", actor="test")  # a rule undone
    assert_cells_current(db)
    verdicts.make(db, "198.51.100.66", UA_CURL, None, "a verdict", "test")  # verdicts
    verdicts.make(db, "192.0.2.1", AGENTS[ADDRESSES.index("192.0.2.1") % len(AGENTS)], "1", "one org", "test")
    assert_cells_current(db)
    verdicts.withdraw(db, "198.51.100.66", UA_CURL, None, "test")
    assert_cells_current(db)
    log = tmp_path / "later.jsonl"  # a later batch, after rules
    log.write_text("\n".join(log_lines(2, 60)) + "\n")
    ingest.import_logs(db, [str(log)])
    assert_cells_current(db)
    sessions = tmp_path / "sessions.jsonl"  # records that change explanations only
    sessions.write_text(json.dumps({"user_id": "u9", "ip": "192.0.2.2", "user_agent": UA_CURL,
                                    "first_seen": "2020-06-01T00:00:00Z", "last_seen": "2020-08-01T00:00:00Z"}) + "\n")
    records.import_records(db, "sessions", str(sessions))
    assert_cells_current(db)
    integrations = tmp_path / "integrations.csv"  # records that change the scope
    integrations.write_text("id,org_id,name,created_at,deleted_at\ni4,4,delta,2020-07-02T00:00:00Z,\n")
    records.import_records(db, "integrations", str(integrations))
    assert_cells_current(db)
    actions.apply(db, "staff", actor="test")
    assert_cells_current(db)
    assert db.execute("select generation from window_generation").fetchone()[0] > generation
    db.conn.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("window", WINDOWS[:3], ids=[query(w) for w in WINDOWS[:3]])
async def test_the_engine_and_the_sql_show_the_same_pages(template, window):
    """Every pivot, sort (both ways), status and page: the window engine's rows, figures,
    order, totals, top agents and latest paths are the SQL path's."""
    from datasette_forensics.views.pivot import SORTS

    engine = make_datasette([template])
    sql = make_datasette([template], config={"plugins": {"datasette-forensics": {"window_engine_mb": 0}}})
    checked = 0
    for page, (_, groupings, _) in PIVOTS.items():
        for by in groupings:
            for sort in SORTS:
                for direction in ("", "-"):
                    for extra in ("", "&status=unexplained", "&size=2&page=2", "&org=1", "&kind=browser"):
                        url = f"/win/-/forensics/{page}.json?by={by}&sort={direction}{sort}{extra}&{query(window)}"
                        got, want = await get_json(engine, url), await get_json(sql, url)
                        assert got["source"] == "window_engine" and want["source"] == "window_hours"
                        keep = ("key", "requests", "in_scope", "unexplained", "orgs", "signatures", "ips",
                                "user_agents", "first_seen", "last_seen", "kinds", "top_user_agent", "last_path")
                        assert [{k: r[k] for k in keep} for r in got["rows"]] == [{k: r[k] for k in keep} for r in want["rows"]], url
                        assert got["total"] == want["total"], url
                        checked += len(got["rows"])
    assert checked > 100


@pytest.mark.asyncio
async def test_past_the_last_page_the_total_is_still_counted(ds, template):
    """A page past the last one (an old link, a hand-edited URL) has no rows, but still
    says how many there are and where the last page is: through the engine and the SQL."""
    window = WINDOWS[0]
    urls = [f"{page}.json?by={groupings[0]}" for page, (_, groupings, _) in PIVOTS.items()]
    urls += ["orgs.json?status=all", "signatures.json?status=all"]
    for url in urls:
        first = await get_json(ds, f"/win/-/forensics/{url}&size=2&{query(window)}")
        past = await get_json(ds, f"/win/-/forensics/{url}&size=2&page=999&{query(window)}")
        assert first["source"] == past["source"] == ds.expected_source, url
        assert first["total"] > 2 and first["rows"], url
        assert past["rows"] == [], url
        assert (past["total"], past["pages"]) == (first["total"], first["pages"]), url
        assert past["next_url"] is None and past["previous_url"] is not None, url


@pytest.mark.asyncio
async def test_the_engine_follows_every_change(template, tmp_path):
    """A served database changes under the engine (rules, verdicts, a later batch, records):
    each window page then shows the new figures (the cells' generation reloads them)."""
    path = tmp_path / "win.db"
    shutil.copy(template, path)
    served = make_datasette([path])
    served.expected_source = "window_engine"
    window = WINDOWS[1]
    db = schema.connect(str(path))

    seen = set()  # the window's (requests, in scope, unexplained) at each step: the steps change them

    async def check():
        seen.add(direct(path, """select count(*), sum(in_scope), coalesce(sum(unexplained), 0) from requests_view
            where ts >= :w_from and ts < :w_to""", window)[0])
        await assert_orgs_and_signatures_exact(served, path, window)
        got = await get_json(served, f"/win/-/forensics/ips.json?by=cidr24&size=1000&{query(window)}")
        assert got["source"] == "window_engine"
        assert {r["key"]: (r["requests"], r["in_scope"], r["unexplained"]) for r in got["rows"]} == {
            key: (n, s, u) for key, n, s, u in direct(
                path, """select cidr24, count(*), sum(in_scope), coalesce(sum(unexplained), 0) from requests_view
                where ts >= :w_from and ts < :w_to group by cidr24""", window)
        }

    await check()
    actions.apply(db, "member_current", actor="test")
    await check()
    actions.undo(db, "staff", actor="test")
    await check()
    verdicts.make(db, "198.51.100.66", UA_CURL, None, "a verdict", "test")
    await check()
    log = tmp_path / "later.jsonl"
    log.write_text("\n".join(log_lines(3, 60)) + "\n")
    ingest.import_logs(db, [str(log)])
    await check()
    integrations = tmp_path / "integrations.csv"
    integrations.write_text("id,org_id,name,created_at,deleted_at\ni4,4,delta,2020-07-02T00:00:00Z,\n")
    records.import_records(db, "integrations", str(integrations))
    await check()
    assert len(seen) >= 4
    db.conn.close()


@pytest.mark.asyncio
async def test_a_large_load_of_the_cells_runs_in_the_background(template, tmp_path, monkeypatch):
    """Cells above the in-place size load in the background (server start, or a batch
    just landed). Meanwhile the timelines read the SQL path, with the same figures, and
    pages without a window answer at once; a window pivot waits for the load (its SQL
    over a long window can reach the time limit at millions of requests) and then
    answers from the engine; the pages after the load use the engine."""
    import asyncio
    import threading

    from datasette_forensics.windows import cells as wcells
    from datasette_forensics.windows import database as wdb

    monkeypatch.setattr(wdb, "INLINE_LOAD_BYTES", 0)
    path = tmp_path / "win.db"
    shutil.copy(template, path)
    served = make_datasette([path])
    window = WINDOWS[1]
    pivot = f"/win/-/forensics/ips.json?by=cidr24&size=1000&{query(window)}"
    overview = f"/win/-/forensics.json?{query(window)}"

    def figures(page):
        return {r["key"]: (r["requests"], r["in_scope"], r["unexplained"]) for r in page["rows"]}

    def timeline(page):
        return json.dumps({k: v for k, v in page.items() if "timeline" in k and k != "timeline_source"}, sort_keys=True)

    # The load is held back until the gate opens.
    gate = threading.Event()
    real_load = wcells.load
    monkeypatch.setattr(wcells, "load", lambda conn: (gate.wait(10), real_load(conn))[1])

    async def while_loading():
        waiting = asyncio.ensure_future(get_json(served, pivot))
        during = await get_json(served, overview)
        assert during["timeline_source"] == "window_hours"
        assert (await served.client.get("/win/-/forensics/rules")).status_code == 200
        await asyncio.sleep(0.2)
        assert not waiting.done()  # the pivot waits for the load
        gate.set()
        got = await asyncio.wait_for(waiting, 10)
        assert got["source"] == "window_engine"
        after = await get_json(served, overview)
        assert after["timeline_source"] == "window_engine" and timeline(after) == timeline(during)
        assert sum(bucket["requests"] for bucket in during["log_timeline"]) == sum(n for n, _s, _u in figures(got).values())
        return got

    await served.invoke_startup()  # starts the background load
    before = await while_loading()
    assert len(figures(before)) > 2

    # A later batch makes the loaded cells stale: the same again, with the batch's requests.
    db = schema.connect(str(path))
    log = tmp_path / "later.jsonl"
    log.write_text("\n".join(log_lines(3, 60)) + "\n")
    ingest.import_logs(db, [str(log)])
    db.conn.close()
    gate.clear()
    stale = await while_loading()
    want = {key: (n, s, u) for key, n, s, u in direct(
        path, """select cidr24, count(*), sum(in_scope), coalesce(sum(unexplained), 0) from requests_view
        where ts >= :w_from and ts < :w_to group by cidr24""", window)}
    assert figures(stale) == want != figures(before)
