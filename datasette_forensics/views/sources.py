"""The relations a filtered page groups: per signature and per (signature, org).

Unfiltered pages read the pre-grouped aggregates (see ``aggregates.py``). With an
``?org=`` or a ``?from=``/``?to=`` window they group one of these instead: the org
narrows to that org's (signature, org) rows; a window reads the requests in it
through the ``requests_ts`` index (exact, and as slow as the window is wide).

With ``?org=`` every figure counts that org's in-scope requests only.
"""

from __future__ import annotations

from .common import State

# (signature, org) pairs: sig_id, org_id, requests (in scope), unexplained, first_ts, last_ts.
PAIRS = """
select sig_id, org_id, requests, unexplained, first_ts, last_ts from sig_org
where (:org is null or org_id = :org)
"""
PAIRS_WINDOW = """
select sig_id, org_id, count(*) as requests, sum(explained = 0) as unexplained,
    min(ts) as first_ts, max(ts) as last_ts
from scoped
where ts >= :w_from and ts < :w_to and (:org is null or org_id = :org)
group by sig_id, org_id
"""

# Signatures: sig_id, ip_id, ua_id, requests, in_scope, unexplained, first_ts, last_ts, last_uri_id.
SIGS = """
select sig_id, ip_id, ua_id, requests, in_scope, unexplained, first_ts, last_ts, last_uri_id
from sig_stats
"""
SIGS_WINDOW = """
select r.sig_id, st.ip_id, st.ua_id, count(*) as requests, count(s.request_id) as in_scope,
    coalesce(sum(s.explained = 0), 0) as unexplained, min(r.ts) as first_ts, max(r.ts) as last_ts,
    st.last_uri_id
from requests r
join sig_stats st on st.sig_id = r.sig_id
left join scoped s on s.request_id = r.id
where r.ts >= :w_from and r.ts < :w_to
group by r.sig_id
"""
SIGS_OF_ORG = """
select p.sig_id, st.ip_id, st.ua_id, p.requests, p.requests as in_scope, p.unexplained,
    p.first_ts, p.last_ts, st.last_uri_id
from ({pairs}) p
join sig_stats st on st.sig_id = p.sig_id
"""


def pairs_sql(state: State) -> tuple[str, dict]:
    """The (signature, org) relation for this state, with its parameters."""
    params = {"org": state.org}
    if state.window:
        params.update(state.window_params())
        return PAIRS_WINDOW, params
    return PAIRS, params


def sigs_sql(state: State) -> tuple[str, dict]:
    """The per-signature relation for this state, with its parameters."""
    if state.org is not None:
        pairs, params = pairs_sql(state)
        return SIGS_OF_ORG.format(pairs=pairs), params
    if state.window:
        return SIGS_WINDOW, state.window_params()
    return SIGS, {}
