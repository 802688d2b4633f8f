"""A first import's signature figures, counted beside the store as its chunks commit.

When a batch is the only one with requests, its close computes ``sig_stats`` from
every request (:func:`.aggregates.refresh`): a GROUP BY over the whole table, on one
core, after the parse process has finished (0.67 s of a 1M-line close). A
:class:`Tally` instead counts each chunk's requests as soon as they are committed,
in a thread of the importing process with a read-only connection of its own, into
a temporary table of that connection: readers never see it, a kill leaves nothing
behind, and SQLite lets go of the interpreter lock while it counts, so the count
runs on whichever core the parse process and the store leave idle. The close then
takes the figures, but only when they add up to exactly the batch's requests,
counted with the same incident patch time; otherwise (a resumed batch, an incident
set meanwhile, a failed count) it counts them from the requests as before.
"""

from __future__ import annotations

import queue
import sqlite3
import threading

from .. import readonly
from ..processes import FORK_LOCK
from .aggregates import SIG_FIGURES, patched_ms

TABLE = "temp.batch_sig_figures"
COLUMNS = "sig_id, requests, ok, first_ts, last_ts, after_patch, after_patch_ok"
CREATE = f"""create temp table if not exists batch_sig_figures (sig_id integer primary key,
    requests integer, ok integer, first_ts integer, last_ts integer, after_patch integer, after_patch_ok integer)"""

# One chunk's requests (a range of ids only its batch wrote) added to the tally.
ADD_RANGE = f"""
insert into {TABLE} ({COLUMNS})
select * from ({SIG_FIGURES.format(requests="requests r where r.id between :first and :last")}) where true
on conflict (sig_id) do update set
    requests = requests + excluded.requests, ok = ok + excluded.ok,
    first_ts = min(first_ts, excluded.first_ts), last_ts = max(last_ts, excluded.last_ts),
    after_patch = after_patch + excluded.after_patch, after_patch_ok = after_patch_ok + excluded.after_patch_ok
"""


class Tally:
    """The signature figures of the requests one import stored, chunk by chunk.

    Args:
        db_file: the database's file (the tally reads it through its own connection).
    """

    def __init__(self, db_file: str):
        # Autocommit: each count reads the chunks committed by then, and holds no snapshot after.
        self.reader = readonly.connect(db_file, isolation_level=None, check_same_thread=False)
        self.reader.execute("pragma busy_timeout = 30000")
        self.reader.execute(CREATE)
        self.patched = patched_ms(self.reader)
        self.failed = False
        self._ranges: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._count, name="forensics-tally", daemon=True)
        self._thread.start()

    def _count(self) -> None:
        while True:
            ids = self._ranges.get()
            try:
                if ids is None:
                    return
                if not self.failed:
                    first, last = ids
                    with FORK_LOCK:
                        self.reader.execute(ADD_RANGE, {"first": first, "last": last, "patched": self.patched})
            except Exception:  # noqa: BLE001 - the close counts from the requests instead
                self.failed = True
            finally:
                self._ranges.task_done()

    def stored(self, first_id: int, last_id: int) -> None:
        """A chunk's requests were committed under ids first_id..last_id (only its batch's)."""
        self._ranges.put((first_id, last_id))

    def figures(self, conn: sqlite3.Connection, batch_requests: int) -> str | None:
        """A select, on ``conn``, of the figures (SIG_FIGURES' columns) when they are those
        of exactly ``batch_requests`` requests under today's patch time; else None."""
        self._ranges.join()
        if self.failed or patched_ms(conn) != self.patched:
            return None
        rows = self.reader.execute(f"select {COLUMNS} from {TABLE}").fetchall()
        if sum(row[1] for row in rows) != batch_requests:
            return None
        conn.execute(CREATE)
        conn.execute(f"delete from {TABLE}")
        conn.executemany(f"insert into {TABLE} ({COLUMNS}) values (?, ?, ?, ?, ?, ?, ?)", rows)
        return f"select {COLUMNS} from {TABLE}"

    def drop(self, conn: sqlite3.Connection) -> None:
        """Stop counting and free both tables (the import ended, however it ended: a
        failure here must not hide the import's own error)."""
        self._ranges.put(None)
        self._thread.join()
        self.reader.close()
        try:
            conn.execute(f"drop table if exists {TABLE}")
        except sqlite3.Error:
            pass
