"""The hour cells of one database in numpy arrays, loaded once per ``window_generation``.

``window_hours`` (every request per hour and signature) and ``window_scoped_hours``
(in-scope requests per hour, signature and org) are read one column at a time as a
single ``group_concat`` string parsed by numpy (much faster than fetching rows);
both tables are clustered by their primary key, so every column comes in the same
(hour, ...) order and the arrays stay sorted by hour: a window's whole hours are one
slice found by binary search.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from functools import cached_property

import numpy as np

SEP = "\x1f"
KEYS = {"window_hours": "hour, sig_id", "window_scoped_hours": "hour, sig_id, org_id"}


def per_hour(hours: np.ndarray, *weights: np.ndarray) -> dict[int, list[int]]:
    """Per hour present in ``hours``: the sum of each weight over its cells."""
    if not len(hours):
        return {}
    base = int(hours.min())
    sums = [np.bincount(hours - base, weights=w).astype(np.int64) for w in weights]
    present = np.flatnonzero(np.bincount(hours - base))
    return {int(h) + base: [int(s[h]) for s in sums] for h in present}


@dataclass
class Cells:
    generation: int
    # window_hours, sorted by (hour, sig_id)
    hour: np.ndarray
    sig: np.ndarray
    requests: np.ndarray
    first_ts: np.ndarray
    last_ts: np.ndarray
    # window_scoped_hours, sorted by (hour, sig_id, org_id); org: index into orgs
    s_hour: np.ndarray
    s_sig: np.ndarray
    s_org: np.ndarray
    s_requests: np.ndarray
    s_unexplained: np.ndarray
    s_first_ts: np.ndarray
    s_last_ts: np.ndarray
    orgs: np.ndarray  # org ids (str), sorted

    @cached_property
    def by_org(self) -> tuple[np.ndarray, np.ndarray]:
        """The scoped cells' positions sorted by org (stable: hour order within each org),
        and their org indexes in that order: an org's cells are one slice."""
        order = np.argsort(self.s_org, kind="stable")
        return order, self.s_org[order]

    @cached_property
    def all_hours(self) -> dict[int, list[int]]:
        """Per hour with requests: [requests, in_scope, unexplained] over every cell, once
        per loaded generation: the overview's timelines read slices of it, not millions of
        cells a request."""
        out = per_hour(self.hour.astype(np.int64), self.requests)
        for hour, (n, u) in per_hour(self.s_hour.astype(np.int64), self.s_requests, self.s_unexplained).items():
            out.setdefault(hour, [0])[1:] = [n, u]
        return {h: v if len(v) == 3 else [v[0], 0, 0] for h, v in out.items()}

    @property
    def nbytes(self) -> int:
        return sum(v.nbytes for v in vars(self).values() if isinstance(v, np.ndarray))


def generation(conn: sqlite3.Connection) -> int:
    row = conn.execute("select generation from window_generation where id = 1").fetchone()
    return row[0] if row else 0


def _column(conn: sqlite3.Connection, table: str, column: str, dtype) -> np.ndarray:
    # In primary key order, even where a smaller index covers the column (m026): no sort, a scan of the table.
    (text,) = conn.execute(f"select group_concat({column}) from (select {column} from {table} order by {KEYS[table]})").fetchone()  # trusted names
    if not text:
        return np.zeros(0, dtype=dtype)
    return np.fromstring(text, dtype=np.int64, sep=",").astype(dtype, copy=False)


def load(conn: sqlite3.Connection) -> Cells:
    """Read both cell tables in one read transaction (so they agree with the generation)."""
    in_tx = conn.in_transaction
    if not in_tx:
        conn.execute("begin")
    try:
        gen = generation(conn)
        col = lambda t, c, d: _column(conn, t, c, d)  # noqa: E731
        hours = "window_hours"
        scoped = "window_scoped_hours"
        (org_text,) = conn.execute(
            f"select group_concat(org_id, '{SEP}') from (select org_id from {scoped} order by {KEYS[scoped]})"
        ).fetchone()
        orgs, s_org = np.unique(np.array(org_text.split(SEP) if org_text else [], dtype=object).astype(str),
                                return_inverse=True)
        cells = Cells(
            generation=gen,
            hour=col(hours, "hour", np.int32), sig=col(hours, "sig_id", np.int32),
            requests=col(hours, "requests", np.int32),
            first_ts=col(hours, "first_ts", np.int64), last_ts=col(hours, "last_ts", np.int64),
            s_hour=col(scoped, "hour", np.int32), s_sig=col(scoped, "sig_id", np.int32),
            s_org=s_org.astype(np.int32),
            s_requests=col(scoped, "requests", np.int32), s_unexplained=col(scoped, "unexplained", np.int32),
            s_first_ts=col(scoped, "first_ts", np.int64), s_last_ts=col(scoped, "last_ts", np.int64),
            orgs=orgs,
        )
    finally:
        if not in_tx:
            conn.execute("rollback")
    return cells


_cache: dict[str, Cells] = {}
_lock = threading.Lock()


def current(conn: sqlite3.Connection, key: str) -> bool:
    """Whether the cells of database ``key`` are loaded for its generation now."""
    cells = _cache.get(key)
    return cells is not None and cells.generation == generation(conn)


def cached(conn: sqlite3.Connection, key: str) -> Cells:
    """The cells of database ``key`` (its path), reloaded only when its generation changed."""
    gen = generation(conn)
    with _lock:
        cells = _cache.get(key)
        if cells is None or cells.generation != gen:
            cells = _cache[key] = load(conn)
        return cells
