"""The relations a filtered page groups: per signature and per (signature, org).

Unfiltered pages read the pre-grouped aggregates (see ``aggregates.py``). With an
``?org=`` or a ``?from=``/``?to=`` window they group one of these instead: the org
narrows to that org's (signature, org) rows; a window reads the requests in it
through the ``requests_ts`` index (exact, and as slow as the window is wide).

With ``?org=`` every figure counts that org's in-scope requests only.
"""

from __future__ import annotations

import json

from ..derived.window_hours import HOUR_MS, hour_range
from ..windows import cells as cells_module
from ..windows import database as window_database
from ..windows import relations
from . import chart
from .common import State

# (signature, org) pairs: sig_id, org_id, requests (in scope), unexplained, first_ts, last_ts.
PAIRS = """
select sig_id, org_id, requests, unexplained, first_ts, last_ts from sig_org
where (:org is null or org_id = :org) and {where}
"""
# A window's (hour, signature, org) cells: the whole hours it covers from window_scoped_hours
# (in scope) and window_hours (all requests: out of scope, org_id '', is all minus in scope),
# the requests of its partial edge hours from requests (requests_ts).
WINDOW_CELLS = """
select sig_id, org_id, requests, unexplained, first_ts, last_ts from (
    select sig_id, org_id, requests, unexplained, first_ts, last_ts from window_scoped_hours
    where hour >= :w_hour_from and hour < :w_hour_to
    union all
    select sig_id, '', requests, 0, first_ts, last_ts from window_hours
    where hour >= :w_hour_from and hour < :w_hour_to
    union all
    select sig_id, '', -requests, 0, null, null from window_scoped_hours
    where hour >= :w_hour_from and hour < :w_hour_to
)
where {where}
union all
select sig_id, org_id, count(*), coalesce(sum(explained = 0), 0), min(ts), max(ts)
from (
    select r.sig_id, coalesce(s.org_id, '') as org_id, r.ts, s.explained
    from requests r left join scoped s on s.request_id = r.id
    where (r.ts >= :w_from and r.ts < :w_edge_from) or (r.ts >= :w_edge_to and r.ts < :w_to)
)
where {where}
group by sig_id, org_id
"""
# Conditions (on sig_id and org_id) that narrow a relation to the rows a page shows.
# "sigs" probes each given signature's rows through an index; "many_sigs" (for more
# than ONLY_PROBES of them) filters the window's rows as they are read (unary + keeps the
# planner off the per-signature probes, which would visit most of the table at random).
ONLY_PROBES = 2_000
ONLY = {
    "sigs": "sig_id in (select value from json_each(:only_sigs))",
    "many_sigs": "+sig_id in (select value from json_each(:only_sigs))",
    "orgs": "org_id in (select value from json_each(:only_orgs))",
}
PAIRS_WINDOW = """
select sig_id, org_id, sum(requests) as requests, sum(unexplained) as unexplained,
    min(first_ts) as first_ts, max(last_ts) as last_ts
from ({cells}) c
where org_id != ''
group by sig_id, org_id
"""
# Signatures: sig_id, ip_id, ua_id, requests, in_scope, unexplained, first_ts, last_ts, last_uri_id.
SIGS = """
select sig_id, ip_id, ua_id, requests, in_scope, unexplained, first_ts, last_ts, last_uri_id
from sig_stats where {where}
"""
SIGS_WINDOW = """
select c.sig_id, st.ip_id, st.ua_id, c.requests, c.in_scope, c.unexplained, c.first_ts, c.last_ts,
    st.last_uri_id
from (
    select sig_id, sum(requests) as requests, sum(case when org_id != '' then requests else 0 end) as in_scope,
        sum(unexplained) as unexplained, min(first_ts) as first_ts, max(last_ts) as last_ts
    from ({cells}) group by sig_id
) c
join sig_stats st on st.sig_id = c.sig_id
"""
# The same figures from the window engine's temp tables (windows/database.py).
PAIRS_ENGINE = """
select sig_id, org_id, requests, unexplained, first_ts, last_ts from temp.window_pairs
where (:org is null or org_id = :org) and {where}
"""
SIGS_ENGINE = """
select w.sig_id, st.ip_id, st.ua_id, w.requests, w.in_scope, w.unexplained, w.first_ts, w.last_ts,
    st.last_uri_id
from temp.window_sigs w
join sig_stats st on st.sig_id = w.sig_id
where {where}
"""
SIGS_OF_ORG = """
select p.sig_id, st.ip_id, st.ua_id, p.requests, p.requests as in_scope, p.unexplained,
    p.first_ts, p.last_ts, st.last_uri_id
from ({pairs}) p
join sig_stats st on st.sig_id = p.sig_id
"""


def window_source(state: State) -> str:
    """What a window's figures come from, for the pages' ``source`` field."""
    return "window_engine" if state.engine else "window_hours"


def window_cells(state: State, org: str | None = None, only: str | None = None) -> tuple[str, dict]:
    """The window's (hour, signature, org) cells (of one org's requests when given;
    ``only``: a key of ONLY)."""
    params = state.window_params()
    hour_from, hour_to, edge_from, edge_to = hour_range(params["w_from"], params["w_to"])
    params.update(w_hour_from=hour_from, w_hour_to=hour_to, w_edge_from=edge_from, w_edge_to=edge_to)
    where = ["1"]
    if org is not None:
        where.append("org_id = :org")
        params["org"] = org
    if only is not None:
        where.append(ONLY[only])
    return WINDOW_CELLS.format(where=" and ".join(where)), params


def pairs_sql(state: State, only: str | None = None) -> tuple[str, dict]:
    """The (signature, org) relation for this state, with its parameters; ``only``
    (a key of ONLY) narrows it to the signatures or orgs given as :only_sigs or :only_orgs."""
    params = {"org": state.org}
    if state.window and state.engine:
        return PAIRS_ENGINE.format(where=ONLY[only] if only else "1"), params
    if state.window:
        cells, cell_params = window_cells(state, state.org, only)
        return PAIRS_WINDOW.format(cells=cells), dict(params, **cell_params)
    return PAIRS.format(where=ONLY[only] if only else "1"), params


def sigs_sql(state: State, only: str | None = None) -> tuple[str, dict]:
    """The per-signature relation for this state, with its parameters (``only``: as pairs_sql)."""
    if state.org is not None:
        pairs, params = pairs_sql(state, only)
        return SIGS_OF_ORG.format(pairs=pairs), params
    if state.window and state.engine:
        return SIGS_ENGINE.format(where=ONLY[only].replace("sig_id", "w.sig_id") if only else "1"), {}
    if state.window:
        cells, params = window_cells(state, only=only)
        return SIGS_WINDOW.format(cells=cells), params
    return SIGS.format(where=ONLY[only] if only else "1"), {}


# --- the timelines: figures per UTC hour ------------------------------------------------
# The SQL path's whole hours (the engine's are windows/relations.whole_hours): every
# request from window_hours, in scope and unexplained from window_scoped_hours.
HOURS_ALL = "select hour, sum(requests) from window_hours where hour >= :h_from and hour < :h_to group by hour"
HOURS_SCOPED = """
select hour, sum(requests), sum(unexplained) from window_scoped_hours
where hour >= :h_from and hour < :h_to and {where} group by hour
"""
# One org's cells through window_scoped_hours_org (m026), not a scan of every cell.
ORG_CELLS = "org_id = :org"
SIG_CELLS = "+sig_id in (select value from json_each(:sigs))"


def _whole_hours_sql(conn, h_from: int, h_to: int, org: str | None, sigs) -> dict[int, list[int]]:
    params = {"h_from": h_from, "h_to": h_to, "org": org, "sigs": json.dumps(list(sigs or []))}
    where = [c for c, on in ((ORG_CELLS, org is not None), (SIG_CELLS, sigs is not None)) if on] or ["1"]
    scoped = {h: [n, u] for h, n, u in conn.execute(HOURS_SCOPED.format(where=" and ".join(where)), params)}
    if org is not None or sigs is not None:
        return {h: [n, n, u] for h, (n, u) in scoped.items()}
    return {h: [n, *scoped.get(h, [0, 0])] for h, n in conn.execute(HOURS_ALL, params)}


async def hour_figures(page, lo: int | None, hi: int | None, org: str | None = None, sigs=None) -> tuple[dict, str]:
    """Per UTC hour with requests in [lo, hi) (None: open): {hour: [requests, in_scope,
    unexplained]} (of one org's in-scope requests, of the signatures ``sigs``, when given),
    exact: the whole hours from the cells (through the window engine when it serves the
    database, else in SQL), the partial edge hours from their raw requests. Also
    returns the source's name (as window_source)."""
    key = window_database.key_of(page.db)
    engine = await window_database.serves(page, wait=False)

    def run(conn):
        if engine:
            cells = cells_module.cached(conn, key)
            whole = lambda f, t, o, s: relations.whole_hours(cells, f, t, o, s)  # noqa: E731
        else:
            whole = lambda f, t, o, s: _whole_hours_sql(conn, f, t, o, s)  # noqa: E731
        figures = relations.hour_figures(conn, lo, hi, whole, org, sigs)
        return figures, "window_engine" if engine else "window_hours"

    return await page.db.execute_fn(run)


# The log's first and last request: two reads of the requests_ts index (min and max in
# one select would walk the whole index).
LOG_SPAN = "select (select min(ts) from requests), (select max(ts) from requests)"


def timeline_unit(state: State, first: int | None, last: int | None) -> int:
    """The timeline's bucket: hours for up to three days, else days, of the window
    (clamped to the log's first and last request) when one is given."""
    if state.from_ms is not None and first is not None:
        first = max(first, state.from_ms)
    if state.to_ms is not None and last is not None:
        last = min(last, state.to_ms - 1)
    return chart.time_unit(first, last)


def timeline_buckets(figures: dict, unit: int) -> list[tuple[int, int, int, int]]:
    """Per-hour figures summed per bucket of ``unit`` ms: (bucket, requests, in_scope,
    unexplained), in time order."""
    per = unit // HOUR_MS
    out: dict[int, list[int]] = {}
    for hour, values in figures.items():
        sums = out.setdefault(hour // per, [0, 0, 0])
        for i, v in enumerate(values):
            sums[i] += v
    return [(b, *out[b]) for b in sorted(out)]


def bucket_span(state: State, bucket: int, unit: int) -> list[tuple[str, str]]:
    """The requests_view ts bounds of a bucket, clamped to the window."""
    start, end = bucket * unit, (bucket + 1) * unit
    if state.from_ms is not None:
        start = max(start, state.from_ms)
    if state.to_ms is not None:
        end = min(end, state.to_ms)
    return [("ts__gte", str(start)), ("ts__lt", str(end))]
