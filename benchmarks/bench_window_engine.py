"""The window engine alone at scale: load time, memory, and a window's figures.

    python benchmarks/bench_window_engine.py COPY_OF_pages-5000000-v2.db

Builds window_hours / window_scoped_hours / window_generation by hand when absent
(until the cells branch keeps them), on the database given: use a copy.
"""
import resource, sqlite3, sys, time, statistics
import numpy as np
BUILD = """
create table if not exists window_hours(hour integer not null, sig_id integer not null, requests integer not null, first_ts integer not null, last_ts integer not null, primary key(hour, sig_id)) without rowid;
create table if not exists window_scoped_hours(hour integer not null, sig_id integer not null, org_id text not null, requests integer not null, unexplained integer not null, first_ts integer not null, last_ts integer not null, primary key(hour, sig_id, org_id)) without rowid;
create table if not exists window_generation(id integer primary key check (id = 1), generation integer not null);
insert or ignore into window_generation values (1, 1);
insert into window_hours select ts/3600000, sig_id, count(*), min(ts), max(ts) from requests where not exists (select 1 from window_hours) group by 1,2 order by 1,2;
insert into window_scoped_hours select r.ts/3600000, r.sig_id, s.org_id, count(*), sum(s.explained = 0), min(r.ts), max(r.ts) from scoped s join requests r on r.id = s.request_id where not exists (select 1 from window_scoped_hours) group by 1,2,3 order by 1,2,3;
"""
from datasette_forensics.windows import cells as wcells, relations
from datasette_forensics.timeparse import parse_time
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.executescript(BUILD)
lo_ts, hi_ts = conn.execute("select min(ts), max(ts) from requests").fetchone()
print("log span", lo_ts, hi_ts)
r0 = rss(); t = time.perf_counter(); c = wcells.load(conn); t_load = time.perf_counter() - t
print(f"load {t_load:.2f} s, arrays {c.nbytes/2**20:.1f} MiB, RSS delta {rss()-r0:.1f} MiB, rows {len(c.hour)} + {len(c.s_hour)}")
day = 86_400_000
first_day = lo_ts // day * day
from datasette_forensics.timeparse import parse_time as P
windows = {"one day 07-05": (P("2020-07-05T00:00:00Z"), P("2020-07-06T00:00:00Z")), "incident (whole)": (None, None),
           "07-05 10:17..07-06 13:42": (P("2020-07-05T10:17:00Z"), P("2020-07-06T13:42:00Z"))}
for name, (lo, hi) in windows.items():
    for fn in (relations.sig_figures, relations.pair_figures):
        ts = []
        for i in range(6):
            t = time.perf_counter(); f = fn(conn, c, lo, hi); ts.append(time.perf_counter() - t)
        print(f"{name:26s} {fn.__name__:12s} first {ts[0]*1000:.0f} ms, warm median {statistics.median(ts[1:])*1000:.0f} max {max(ts[1:])*1000:.0f} ms, rows {len(f['sig_id'])}")
# The same per-signature sums in SQL over the same cells (the whole log), for the ratio.
SQL_SIGS = """select sig_id, sum(requests), sum(in_scope), sum(unexplained), min(first_ts), max(last_ts) from (
 select sig_id, requests, 0 as in_scope, 0 as unexplained, first_ts, last_ts from window_hours
 union all select sig_id, 0, requests, unexplained, first_ts, last_ts from window_scoped_hours) group by sig_id"""
ts = []
for i in range(4):
    t = time.perf_counter(); n = len(conn.execute(SQL_SIGS).fetchall()); ts.append(time.perf_counter() - t)
print(f"SQL per-sig figures, whole log: first {ts[0]*1000:.0f} ms, warm median {statistics.median(ts[1:])*1000:.0f} ms, rows {n}")
