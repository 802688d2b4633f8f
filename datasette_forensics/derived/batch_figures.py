"""A first import's signature figures, counted while the import waits for its parser.

When a batch is the only one with requests, its close computes ``sig_stats`` from
every request (:func:`.aggregates.refresh`): a GROUP BY over the whole table, on one
core, after the parse process has finished (0.67 s of a 1M-line close). A
:class:`Tally` instead counts each chunk's requests as soon as they are stored, in
the moments the store waits for the next chunk, into a temporary table of the
import's own connection: readers never see it, and a kill leaves nothing behind.
The close then takes the figures from there, but only when they add up to exactly
the batch's requests, counted with the same incident patch time; otherwise (a
resumed batch, an incident set meanwhile, anything unexpected) it counts them from
the requests as before.
"""

from __future__ import annotations

import sqlite3

from .aggregates import SIG_FIGURES

TABLE = "temp.batch_sig_figures"
COLUMNS = "sig_id, requests, ok, first_ts, last_ts, after_patch, after_patch_ok"

# One chunk's requests (a range of ids only its batch wrote) added to the tally.
ADD_RANGE = f"""
insert into {TABLE} ({COLUMNS})
select * from ({SIG_FIGURES.format(requests="requests r where r.id between :first and :last")}) where true
on conflict (sig_id) do update set
    requests = requests + excluded.requests, ok = ok + excluded.ok,
    first_ts = min(first_ts, excluded.first_ts), last_ts = max(last_ts, excluded.last_ts),
    after_patch = after_patch + excluded.after_patch, after_patch_ok = after_patch_ok + excluded.after_patch_ok
"""


def _patched(conn: sqlite3.Connection) -> int | None:
    row = conn.execute("select patched_ms from incident where id = 1").fetchone()
    return row[0] if row else None


class Tally:
    """The signature figures of the requests one import stored, chunk by chunk."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.pending: list[tuple[int, int]] = []  # id ranges stored, not counted yet
        self.patched = _patched(conn)
        conn.execute(
            f"""create temp table if not exists batch_sig_figures (sig_id integer primary key,
            requests integer, ok integer, first_ts integer, last_ts integer,
            after_patch integer, after_patch_ok integer)"""
        )
        conn.execute(f"delete from {TABLE}")

    def stored(self, first_id: int, last_id: int) -> None:
        """A chunk's requests were stored (committed or about to be) under ids first_id..last_id."""
        self.pending.append((first_id, last_id))

    def step(self) -> bool:
        """Count one stored chunk's requests. Returns True when there was one."""
        if not self.pending:
            return False
        first, last = self.pending.pop(0)
        self.conn.execute(ADD_RANGE, {"first": first, "last": last, "patched": self.patched})
        return True

    def figures(self, conn: sqlite3.Connection, batch_requests: int) -> str | None:
        """A select of the figures (SIG_FIGURES' columns) when they are those of exactly
        ``batch_requests`` requests under today's patch time; else None."""
        if conn is not self.conn or _patched(conn) != self.patched:
            return None
        while self.step():
            pass
        counted = conn.execute(f"select coalesce(sum(requests), 0) from {TABLE}").fetchone()[0]
        if counted != batch_requests:
            return None
        return f"select {COLUMNS} from {TABLE}"

    def drop(self) -> None:
        """Free the table (the import ended, however it ended: a failure here must not
        hide the import's own error)."""
        self.pending = []
        try:
            self.conn.execute(f"drop table if exists {TABLE}")
        except sqlite3.Error:
            pass
