"""A window's per-signature and per-(signature, org) figures from the cells.

Whole hours: the slice of the hour-sorted arrays in [first whole hour, hour after the
last); the partial edge hours: raw requests (``requests_ts``) left join ``scoped``.
"""

from __future__ import annotations

import sqlite3

import numpy as np

from ..derived.window_hours import hour_range
from .cells import Cells, per_hour

BIG = 2**62
EDGES = """
select r.sig_id, coalesce(s.org_id, ''), count(*), coalesce(sum(s.explained = 0), 0), min(r.ts), max(r.ts)
from requests r left join scoped s on s.request_id = r.id
where (r.ts >= :lo and r.ts < :edge_lo) or (r.ts >= :edge_hi and r.ts < :hi)
group by 1, 2
"""


def _slice(hours: np.ndarray, h_from: int, h_to: int) -> slice:
    return slice(int(np.searchsorted(hours, h_from, "left")), int(np.searchsorted(hours, h_to, "left")))


def _edges(conn: sqlite3.Connection, lo: int, hi: int, edge_lo: int, edge_hi: int) -> list[tuple]:
    return conn.execute(EDGES, {"lo": lo, "hi": hi, "edge_lo": edge_lo, "edge_hi": edge_hi}).fetchall()


# The timelines' figures per UTC hour: (hour, requests, in_scope, unexplained).
HOUR_EDGES = """
select r.ts / 3600000, r.sig_id, coalesce(s.org_id, ''), count(*), coalesce(sum(s.explained = 0), 0)
from requests r left join scoped s on s.request_id = r.id
where (r.ts >= :lo and r.ts < :edge_lo) or (r.ts >= :edge_hi and r.ts < :hi)
group by 1, 2, 3
"""


def org_rows(cells: Cells, org: str) -> np.ndarray:
    """The positions of one org's scoped cells, in hour order: a slice of the cells sorted
    by org (computed once per loaded generation), never a scan of every cell."""
    order, keys = cells.by_org
    i = int(np.searchsorted(cells.orgs, org))
    if i >= len(cells.orgs) or cells.orgs[i] != org:
        return order[:0]
    return order[int(np.searchsorted(keys, i, "left")):int(np.searchsorted(keys, i, "right"))]


def whole_hours(cells: Cells, h_from: int, h_to: int, org: str | None = None, sigs=None) -> dict[int, list[int]]:
    """From the engine's arrays, per whole hour in [h_from, h_to): [requests, in_scope,
    unexplained]; of one org's in-scope requests (requests = in_scope) when given, of the
    signatures ``sigs`` (ids) when given."""
    if org is None and sigs is None:  # every cell: slices of the per-hour sums kept per loaded generation
        return {h: list(v) for h, v in cells.all_hours.items() if h_from <= h < h_to}
    rows = org_rows(cells, org) if org is not None else np.arange(len(cells.s_hour))
    rows = rows[_slice(cells.s_hour[rows], h_from, h_to)]
    if sigs is not None:
        rows = rows[np.isin(cells.s_sig[rows], np.asarray(list(sigs), dtype=np.int64))]
    return {h: [n, n, u] for h, (n, u) in per_hour(cells.s_hour[rows].astype(np.int64), cells.s_requests[rows],
                                                   cells.s_unexplained[rows]).items()}


def hour_figures(conn: sqlite3.Connection, lo: int | None, hi: int | None, whole, org: str | None = None,
                 sigs=None) -> dict[int, list[int]]:
    """Per UTC hour with requests in [lo, hi): [requests, in_scope, unexplained]. The whole
    hours come from ``whole(h_from, h_to, org, sigs)`` (the engine's :func:`whole_hours` or
    the SQL path's), the partial edge hours from their raw requests."""
    lo = -BIG if lo is None else lo
    hi = BIG if hi is None else hi
    h_from, h_to, edge_lo, edge_hi = hour_range(lo, hi)
    out = whole(h_from, h_to, org, sigs)
    wanted = None if sigs is None else set(sigs)
    params = {"lo": lo, "hi": hi, "edge_lo": edge_lo, "edge_hi": edge_hi}
    for hour, sig, row_org, n, u in conn.execute(HOUR_EDGES, params):
        if (org is not None and row_org != org) or (wanted is not None and sig not in wanted):
            continue
        figures = out.setdefault(hour, [0, 0, 0])
        figures[0] += n
        if row_org != "":
            figures[1] += n
            figures[2] += u
    return {h: v for h, v in out.items() if v[0]}


def sig_figures(conn: sqlite3.Connection, cells: Cells, lo: int | None, hi: int | None) -> dict[str, np.ndarray]:
    """Per signature with requests in [lo, hi): sig_id, requests, in_scope, unexplained,
    first_ts, last_ts (arrays sorted by sig_id)."""
    lo = -BIG if lo is None else lo
    hi = BIG if hi is None else hi
    h_from, h_to, edge_lo, edge_hi = hour_range(lo, hi)
    a, b = _slice(cells.hour, h_from, h_to), _slice(cells.s_hour, h_from, h_to)
    edges = _edges(conn, lo, hi, edge_lo, edge_hi)
    e = np.array([(s, r, r if o != "" else 0, u, f, l) for s, o, r, u, f, l in edges], dtype=np.int64).reshape(-1, 6)
    # Dense per-signature arrays (sig ids are small integers): bincount, no sort.
    n = int(max(cells.sig.max(initial=-1), e[:, 0].max(initial=-1))) + 1
    s_all, s_sc, s_e = cells.sig[a], cells.s_sig[b], e[:, 0]
    requests = np.bincount(s_all, weights=cells.requests[a], minlength=n) + np.bincount(s_e, weights=e[:, 1], minlength=n)
    in_scope = np.bincount(s_sc, weights=cells.s_requests[b], minlength=n) + np.bincount(s_e, weights=e[:, 2], minlength=n)
    unexplained = np.bincount(s_sc, weights=cells.s_unexplained[b], minlength=n) + np.bincount(s_e, weights=e[:, 3], minlength=n)
    first = np.full(n, BIG, np.int64)
    last = np.full(n, -BIG, np.int64)
    np.minimum.at(first, s_all, cells.first_ts[a])
    np.maximum.at(last, s_all, cells.last_ts[a])
    np.minimum.at(first, s_e, e[:, 4])
    np.maximum.at(last, s_e, e[:, 5])
    ids = np.flatnonzero(requests > 0)
    return {
        "sig_id": ids,
        "requests": requests[ids].astype(np.int64),
        "in_scope": in_scope[ids].astype(np.int64),
        "unexplained": unexplained[ids].astype(np.int64),
        "first_ts": first[ids],
        "last_ts": last[ids],
    }


def pair_figures(conn: sqlite3.Connection, cells: Cells, lo: int | None, hi: int | None) -> dict[str, np.ndarray]:
    """Per in-scope (signature, org) in [lo, hi): sig_id, org_id (str), requests, unexplained,
    first_ts, last_ts (sorted by sig_id, org_id)."""
    lo = -BIG if lo is None else lo
    hi = BIG if hi is None else hi
    h_from, h_to, edge_lo, edge_hi = hour_range(lo, hi)
    b = _slice(cells.s_hour, h_from, h_to)
    edges = [row for row in _edges(conn, lo, hi, edge_lo, edge_hi) if row[1] != ""]
    orgs = np.union1d(cells.orgs, np.array([row[1] for row in edges], dtype=str))
    remap = np.searchsorted(orgs, cells.orgs)
    e_org = np.searchsorted(orgs, np.array([row[1] for row in edges], dtype=str)).astype(np.int64)
    e = np.array([(s, r, u, f, l) for s, _o, r, u, f, l in edges], dtype=np.int64).reshape(-1, 5)
    sig = np.concatenate([cells.s_sig[b].astype(np.int64), e[:, 0]])
    org = np.concatenate([remap[cells.s_org[b]].astype(np.int64), e_org])
    key = sig * max(len(orgs), 1) + org
    keys, inv = np.unique(key, return_inverse=True)
    n = len(keys)
    first = np.full(n, BIG, np.int64)
    last = np.full(n, -BIG, np.int64)
    np.minimum.at(first, inv, np.concatenate([cells.s_first_ts[b], e[:, 3]]))
    np.maximum.at(last, inv, np.concatenate([cells.s_last_ts[b], e[:, 4]]))
    width = max(len(orgs), 1)
    return {
        "sig_id": keys // width,
        "org_id": orgs[keys % width] if n else np.array([], dtype=str),
        "requests": np.bincount(inv, weights=np.concatenate([cells.s_requests[b], e[:, 1]]), minlength=n).astype(np.int64),
        "unexplained": np.bincount(inv, weights=np.concatenate([cells.s_unexplained[b], e[:, 2]]), minlength=n).astype(np.int64),
        "first_ts": first,
        "last_ts": last,
    }
