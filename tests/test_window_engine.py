"""The window engine (datasette_forensics/windows): per-signature and per-(signature,
org) figures from numpy hour cells plus raw edge hours equal a direct SQL count over
requests left join scoped, in every window of test_windows (which cut hours and days)
and more windows cutting hours; a changed generation reloads the cells.

The hour cells are built here from the requests (the ``cells`` branch keeps them for
real); the comparison is against the requests themselves, not against the cells.
"""

from __future__ import annotations

import shutil
import sqlite3

import pytest

from datasette_forensics.windows import cells as wcells, relations

from test_windows import WINDOWS, bounds, template  # noqa: F401  (template: a fixture)

BUILD = """
create table if not exists window_hours(hour integer not null, sig_id integer not null, requests integer not null,
    first_ts integer not null, last_ts integer not null, primary key(hour, sig_id)) without rowid;
create table if not exists window_scoped_hours(hour integer not null, sig_id integer not null, org_id text not null,
    requests integer not null, unexplained integer not null, first_ts integer not null, last_ts integer not null,
    primary key(hour, sig_id, org_id)) without rowid;
create table if not exists window_generation(id integer primary key check (id = 1), generation integer not null);
insert or ignore into window_generation values (1, 1);
delete from window_hours; delete from window_scoped_hours;
insert into window_hours select ts/3600000, sig_id, count(*), min(ts), max(ts) from requests group by 1, 2;
insert into window_scoped_hours select r.ts/3600000, r.sig_id, s.org_id, count(*), sum(s.explained = 0),
    min(r.ts), max(r.ts) from scoped s join requests r on r.id = s.request_id group by 1, 2, 3;
"""
MORE = [
    ("2020-07-05T10:17:00Z", "2020-07-06T13:42:00Z"),
    ("2020-07-04T23:59:59.999Z", "2020-07-05T00:00:00.001Z"),
    ("2020-07-04T06:00:00Z", "2020-07-04T12:00:00Z"),
]
SIGS = """
select r.sig_id, count(*), count(s.org_id), coalesce(sum(s.explained = 0), 0), min(r.ts), max(r.ts)
from requests r left join scoped s on s.request_id = r.id
where r.ts >= ? and r.ts < ? group by 1 order by 1
"""
PAIRS = """
select r.sig_id, s.org_id, count(*), sum(s.explained = 0), min(r.ts), max(r.ts)
from requests r join scoped s on s.request_id = r.id
where r.ts >= ? and r.ts < ? group by 1, 2 order by 1, 2
"""


@pytest.fixture(scope="module")
def conn(template, tmp_path_factory):  # noqa: F811
    path = tmp_path_factory.mktemp("engine") / "engine.db"
    shutil.copy(template, path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(BUILD)
    yield conn
    conn.close()


def rows(figures: dict, names: list[str]) -> list[tuple]:
    return [tuple(v.item() for v in row) for row in zip(*(figures[n] for n in names))]


@pytest.mark.parametrize("window", WINDOWS + MORE)
def test_figures_equal_sql(conn, window):
    cells = wcells.load(conn)
    lo, hi = bounds(window)
    sigs = relations.sig_figures(conn, cells, lo, hi)
    expected = conn.execute(SIGS, (lo, hi)).fetchall()
    assert rows(sigs, ["sig_id", "requests", "in_scope", "unexplained", "first_ts", "last_ts"]) == expected
    pairs = relations.pair_figures(conn, cells, lo, hi)
    expected = conn.execute(PAIRS, (lo, hi)).fetchall()
    assert rows(pairs, ["sig_id", "org_id", "requests", "unexplained", "first_ts", "last_ts"]) == expected
    if window[0] and window[0].startswith("2020-07") and hi - lo >= 3_600_000:
        assert expected  # the window holds requests: the comparison is not of two empty lists


def test_generation_reloads(conn):
    key = "engine-test"
    first = wcells.cached(conn, key)
    assert wcells.cached(conn, key) is first  # same generation: no reload
    removed = conn.execute("select hour, sig_id, requests from window_hours order by hour limit 1").fetchone()
    conn.execute("delete from window_hours where hour = ? and sig_id = ?", removed[:2])
    conn.execute("update window_generation set generation = generation + 1")
    second = wcells.cached(conn, key)
    assert second is not first and second.generation == first.generation + 1
    assert int(second.requests.sum()) == int(first.requests.sum()) - removed[2]
    conn.executescript(BUILD)  # restore for other tests
