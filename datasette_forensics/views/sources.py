"""The relations a filtered page groups: per signature and per (signature, org).

Unfiltered pages read the pre-grouped aggregates (see ``aggregates.py``). With an
``?org=`` or a ``?from=``/``?to=`` window they group one of these instead: the org
narrows to that org's (signature, org) rows; a window reads the requests in it
through the ``requests_ts`` index (exact, and as slow as the window is wide).

With ``?org=`` every figure counts that org's in-scope requests only.
"""

from __future__ import annotations

from .common import DAY_MS, State

# (signature, org) pairs: sig_id, org_id, requests (in scope), unexplained, first_ts, last_ts.
PAIRS = """
select sig_id, org_id, requests, unexplained, first_ts, last_ts from sig_org
where (:org is null or org_id = :org)
"""
# A window's (day, signature, org) cells: the whole days it covers from window_days,
# the requests of its partial edge days from requests (requests_ts); org_id '' is out of scope.
WINDOW_CELLS = """
select sig_id, org_id, requests, unexplained, first_ts, last_ts from window_days
where day >= :w_day_from and day < :w_day_to {cell_org}
union all
select r.sig_id, coalesce(s.org_id, ''), count(*), coalesce(sum(s.explained = 0), 0), min(r.ts), max(r.ts)
from requests r left join scoped s on s.request_id = r.id
where ((r.ts >= :w_from and r.ts < :w_edge_from) or (r.ts >= :w_edge_to and r.ts < :w_to)) {raw_org}
group by r.sig_id, s.org_id
"""
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
from sig_stats
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
SIGS_OF_ORG = """
select p.sig_id, st.ip_id, st.ua_id, p.requests, p.requests as in_scope, p.unexplained,
    p.first_ts, p.last_ts, st.last_uri_id
from ({pairs}) p
join sig_stats st on st.sig_id = p.sig_id
"""


def window_cells(state: State, org: str | None = None) -> tuple[str, dict]:
    """The window's (day, signature, org) cells (of one org's requests when given)."""
    params = state.window_params()
    lo, hi = params["w_from"], params["w_to"]
    day_from = -(2**40) if state.from_ms is None else -(-lo // DAY_MS)  # the first whole day
    day_to = 2**40 if state.to_ms is None else hi // DAY_MS  # after the last whole day
    if day_from >= day_to:  # no whole day: every request of the window is raw
        day_from = day_to = 0
        edge_from = edge_to = hi
    else:
        edge_from = lo if state.from_ms is None else day_from * DAY_MS
        edge_to = hi if state.to_ms is None else day_to * DAY_MS
    params.update(w_day_from=day_from, w_day_to=day_to, w_edge_from=edge_from, w_edge_to=edge_to)
    sql = WINDOW_CELLS.format(
        cell_org="" if org is None else "and org_id = :org",
        raw_org="" if org is None else "and s.org_id = :org",
    )
    if org is not None:
        params["org"] = org
    return sql, params


def pairs_sql(state: State) -> tuple[str, dict]:
    """The (signature, org) relation for this state, with its parameters."""
    params = {"org": state.org}
    if state.window:
        cells, cell_params = window_cells(state, state.org)
        return PAIRS_WINDOW.format(cells=cells), dict(params, **cell_params)
    return PAIRS, params


def sigs_sql(state: State) -> tuple[str, dict]:
    """The per-signature relation for this state, with its parameters."""
    if state.org is not None:
        pairs, params = pairs_sql(state)
        return SIGS_OF_ORG.format(pairs=pairs), params
    if state.window:
        cells, params = window_cells(state)
        return SIGS_WINDOW.format(cells=cells), params
    return SIGS, {}
