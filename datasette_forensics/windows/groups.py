"""A window pivot's groups in numpy: the same rows, figures and order as the SQL of
``views/pivot.py`` (FILTERED, REACH, FILTERED_TOP_UA, FILTERED_LAST_PATH), in one pass.

Per signature: the window's figures (:mod:`.relations`, cached per window and cells
generation), its address, agent and latest URI (``sig_stats``, cached per generation).
Per address or agent: its group, read from the small ``ips`` or ``user_agents`` table
on each request (so enrichment shows at once). The groups' sums, distinct counts, kinds
split, status filter, sort with the pages' tiebreaks, paging, top agent and latest path
are array operations; SQL only reads the page's strings.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict

import numpy as np

from . import cells as cells_module
from . import relations

KINDS = ("browser", "library", "bot", "unknown")
_lru: OrderedDict = OrderedDict()
_lru_lock = threading.Lock()
LRU_SIZE = 16


def _cached(key, compute):
    with _lru_lock:
        if key in _lru:
            _lru.move_to_end(key)
            return _lru[key]
    value = compute()
    with _lru_lock:
        _lru[key] = value
        while len(_lru) > LRU_SIZE:
            _lru.popitem(last=False)
    return value


def _dense(ids: np.ndarray, values: np.ndarray, n: int, fill=0) -> np.ndarray:
    out = np.full(n, fill, dtype=np.int64)
    out[ids] = values
    return out


def sig_attributes(conn, db_key: str, gen: int) -> dict:
    """sig_id -> ip_id, ua_id, last_uri_id (dense arrays; -1 where no signature)."""

    def load():
        rows = np.array(conn.execute("select sig_id, ip_id, ua_id, coalesce(last_uri_id, -1) from sig_stats").fetchall(),
                        dtype=np.int64).reshape(-1, 4)
        n = int(rows[:, 0].max(initial=-1)) + 1
        return {
            "n": n,
            "ip": _dense(rows[:, 0], rows[:, 1], n, -1),
            "ua": _dense(rows[:, 0], rows[:, 2], n, -1),
            "uri": _dense(rows[:, 0], rows[:, 3], n, -1),
        }

    return _cached(("attrs", db_key, gen), load)


def window_figures(conn, cells, db_key: str, lo: int, hi: int, org: str | None) -> dict:
    """Per signature in the window (or that org's in-scope part): dense arrays by sig_id."""

    def compute():
        if org is None:
            f = window_sigs(conn, cells, db_key, lo, hi)
            ids, in_scope = f["sig_id"], f["in_scope"]
        else:
            p = window_pairs(conn, cells, db_key, lo, hi)
            keep = p["org_id"] == org
            f = {k: v[keep] for k, v in p.items()}
            ids, in_scope = f["sig_id"], f["requests"]
        return {"ids": ids.astype(np.int64), "requests": f["requests"], "in_scope": in_scope,
                "unexplained": f["unexplained"], "first_ts": f["first_ts"], "last_ts": f["last_ts"]}

    return _cached(("sigs", db_key, cells.generation, lo, hi, org), compute)


def window_sigs(conn, cells, db_key: str, lo: int, hi: int) -> dict:
    """relations.sig_figures, cached per window and generation (shared by every connection)."""
    return _cached(("sig_figures", db_key, cells.generation, lo, hi),
                   lambda: relations.sig_figures(conn, cells, lo, hi))


def window_pairs(conn, cells, db_key: str, lo: int, hi: int) -> dict:
    """relations.pair_figures, cached per window and generation (shared by every connection)."""
    return _cached(("pairs", db_key, cells.generation, lo, hi),
                   lambda: relations.pair_figures(conn, cells, lo, hi))


def groups(conn, db_key: str, lo: int, hi: int, *, table: str, alias: str, group_by: str, keys: tuple,
           conds: list[str], cond_params: dict, org: str | None, status: str, sort: str, descending: bool,
           limit: int, offset: int) -> tuple[list[dict], int]:
    """The page's groups (dicts with FILTERED's columns plus orgs, top_user_agent and
    last_path) and the number of groups passing the status filter."""
    cells = cells_module.cached(conn, db_key)
    attrs = sig_attributes(conn, db_key, cells.generation)
    f = window_figures(conn, cells, db_key, lo, hi, org)
    sig = f["ids"]
    keep = sig < attrs["n"]
    if conds:
        masked = np.array([r[0] for r in conn.execute(
            f"""select st.sig_id from sig_stats st join ips i on i.id = st.ip_id
            join user_agents a on a.id = st.ua_id where {' and '.join(conds)}""", cond_params)], dtype=np.int64)
        keep &= np.isin(sig, masked)
    keep[keep] = attrs["ip"][sig[keep]] >= 0  # a signature without its sig_stats row yet
    sel = np.flatnonzero(keep)
    sig = sig[sel]
    ip, ua = attrs["ip"][sig], attrs["ua"][sig]
    # Each address (or agent) -> its group code; the groups' key values. Read in SQLite's
    # order of the keys, so a group's code is its rank by (k1, k2); k1_rank ranks k1 alone.
    member = ip if alias == "i" else ua
    codes: dict = {}
    group_keys: list[tuple] = []
    k1_rank: list[int] = []
    width = group_by.count(",") + 1
    lookup = np.full(int(member.max(initial=-1)) + 1, -1, dtype=np.int64)
    order_by = ", ".join(keys)
    for row in conn.execute(f"select {alias}.id, {group_by}, {order_by} from {table} {alias} order by {order_by}, {group_by}"):
        if row[0] >= len(lookup):
            continue
        ident = row[1:1 + width]
        code = codes.get(ident)
        if code is None:
            code = codes[ident] = len(group_keys)
            values = tuple(row[1 + width:])
            k1_rank.append(0 if not group_keys else k1_rank[-1] + (values[0] != group_keys[-1][0]))
            group_keys.append(values)
        lookup[row[0]] = code
    g = lookup[member]
    ok = g >= 0  # members whose group row exists (always, unless a row vanished)
    sig, ip, ua, g, sel = sig[ok], ip[ok], ua[ok], g[ok], sel[ok]
    n = len(group_keys)
    w = lambda name: f[name][sel]  # noqa: E731
    requests, in_scope, unexplained = w("requests"), w("in_scope"), w("unexplained")
    first_ts, last_ts = w("first_ts"), w("last_ts")
    figures = {
        "requests": np.bincount(g, weights=requests, minlength=n).astype(np.int64),
        "in_scope": np.bincount(g, weights=in_scope, minlength=n).astype(np.int64),
        "unexplained": np.bincount(g, weights=unexplained, minlength=n).astype(np.int64),
        "signatures": np.bincount(g, minlength=n),
        "ips": _distinct(g, ip, n),
        "user_agents": _distinct(g, ua, n),
    }
    first = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    last = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    np.minimum.at(first, g, first_ts)
    np.maximum.at(last, g, last_ts)
    figures["first_ts"], figures["last_ts"] = first, last
    kind_of = np.full(int(ua.max(initial=-1)) + 1, -1, dtype=np.int64)  # agent id -> index in KINDS
    for ua_id, kind in conn.execute("select id, kind from user_agents"):
        if ua_id < len(kind_of) and kind in KINDS:
            kind_of[ua_id] = KINDS.index(kind)
    kinds = kind_of[ua]
    for i, kind in enumerate(KINDS):
        figures[kind] = np.bincount(g, weights=np.where(kinds == i, requests, 0), minlength=n)
    # Distinct orgs of each group's signatures (in the window; of one org with ?org=).
    p = window_pairs(conn, cells, db_key, lo, hi)
    p_sig = p["sig_id"].astype(np.int64)
    sig_group = np.full(attrs["n"], -1, dtype=np.int64)
    sig_group[sig] = g
    p_ok = p_sig < attrs["n"]
    p_group = np.where(p_ok, sig_group[np.where(p_ok, p_sig, 0)], -1)
    p_keep = p_group >= 0
    if org is not None:
        p_keep &= p["org_id"] == org
    _, p_org = np.unique(p["org_id"], return_inverse=True)
    figures["orgs"] = _distinct(p_group[p_keep], p_org.reshape(-1)[p_keep].astype(np.int64), n)

    present = figures["signatures"] > 0
    status_ok = {
        "all": present,
        "unexplained": present & (figures["unexplained"] > 0),
        "explained": present & (figures["in_scope"] > 0) & (figures["unexplained"] == 0),
    }[status]
    chosen = np.flatnonzero(status_ok)
    total = len(chosen)
    # Order: the sort column, then unexplained desc, in_scope desc, requests desc, k1, k2
    # (the group code: its rank by the keys).
    k1 = np.array(k1_rank, dtype=np.int64)[chosen]
    columns = {"k1": k1, **{name: figures[name][chosen] for name in
               ("requests", "in_scope", "unexplained", "orgs", "signatures", "ips", "user_agents", "first_ts", "last_ts")}}
    primary = columns[sort]
    order = np.lexsort((chosen, -columns["requests"], -columns["in_scope"], -columns["unexplained"],
                        -primary if descending else primary))
    shown = chosen[order[offset:offset + limit]]
    top = _top_agents(g, ua, requests, shown)
    last_uri = _last_uris(g, last_ts, sig, attrs["uri"], shown)
    agents = _strings(conn, "select id, ua from user_agents where id in (select value from json_each(?))", top.values())
    paths = _strings(conn, """select u.id, p.path from uris u left join paths p on p.id = u.path_id
        where u.id in (select value from json_each(?))""", last_uri.values())
    rows = []
    for code in shown.tolist():
        values = group_keys[code]
        row = {"k1": values[0], "k2": values[1] if len(values) > 1 else None}
        row.update({name: int(figures[name][code]) for name in
                    ("requests", "in_scope", "unexplained", "orgs", "signatures", "ips", "user_agents", "first_ts", "last_ts")})
        row.update({kind: float(figures[kind][code]) for kind in KINDS})
        row["top_user_agent"] = agents.get(top.get(code))
        row["last_path"] = paths.get(last_uri.get(code))
        row["total"] = total
        rows.append(row)
    return rows, total


def _distinct(group: np.ndarray, member: np.ndarray, n: int) -> np.ndarray:
    """Distinct members per group."""
    if len(group) == 0:
        return np.zeros(n, dtype=np.int64)
    width = int(member.max()) + 1
    pairs = np.unique(group * width + member)
    return np.bincount(pairs // width, minlength=n)


def _top_agents(g, ua, requests, shown) -> dict:
    """Each shown group's agent with the most requests (ties: the lowest agent id)."""
    on_page = np.isin(g, shown)
    if not on_page.any():
        return {}
    gg, uu, rr = g[on_page], ua[on_page], requests[on_page]
    width = int(uu.max()) + 1
    keys, inv = np.unique(gg * width + uu, return_inverse=True)
    sums = np.bincount(inv.reshape(-1), weights=rr)
    kg, ku = keys // width, keys % width
    order = np.lexsort((ku, -sums, kg))
    first = np.ones(len(order), dtype=bool)
    first[1:] = kg[order][1:] != kg[order][:-1]
    return dict(zip(kg[order][first].tolist(), ku[order][first].tolist()))


def _last_uris(g, last_ts, sig, uri, shown) -> dict:
    """Each shown group's latest URI: that of its signature seen last (ties: the lowest sig_id)."""
    on_page = np.isin(g, shown)
    if not on_page.any():
        return {}
    gg, tt, ss = g[on_page], last_ts[on_page], sig[on_page]
    order = np.lexsort((ss, -tt, gg))
    first = np.ones(len(order), dtype=bool)
    first[1:] = gg[order][1:] != gg[order][:-1]
    return {int(k): int(uri[s]) for k, s in zip(gg[order][first].tolist(), ss[order][first].tolist()) if uri[s] >= 0}


def _strings(conn, sql: str, ids) -> dict:
    ids = sorted({int(i) for i in ids if i is not None})
    return dict(conn.execute(sql, [json.dumps(ids)])) if ids else {}
