"""Copying an import's WAL back to the database file in a thread of its own.

While an import writes, SQLite appends every committed page to the write-ahead log,
and a checkpoint copies the log's pages back to the database file. Done by the
storing connection, the copy stops the store; done by a second connection in a
thread of the importing process, it runs beside it: a PASSIVE checkpoint never
waits for the writer (it copies what is committed and no reader still needs), and
SQLite lets go of the interpreter lock while it copies, so the copy runs on
whichever core the parse process and the store leave idle. The store's own
automatic checkpoint (ingest.CHECKPOINT_PAGES) still bounds the log if this one
falls behind or fails.
"""

from __future__ import annotations

import sqlite3
import threading

from .processes import FORK_LOCK


class Checkpointer:
    """A thread that checkpoints ``db_file`` (PASSIVE) each time it is asked."""

    def __init__(self, db_file: str):
        self.conn = sqlite3.connect(db_file, isolation_level=None, check_same_thread=False)
        self.checkpoints = 0  # done, and the WAL frames they copied back (for the tests)
        self.frames = 0
        self._wanted = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="forensics-checkpoint", daemon=True)
        self._thread.start()

    def request(self) -> None:
        """Copy the log back soon (requests while one runs make one more)."""
        self._wanted.set()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._stopping:
                return
            try:
                with FORK_LOCK:
                    _busy, _log, copied = self.conn.execute("pragma wal_checkpoint(passive)").fetchone()
                self.checkpoints += 1
                self.frames += max(copied, 0)
            except sqlite3.Error:
                pass  # busy or failed: the store's automatic checkpoint keeps the log bounded

    def close(self) -> None:
        """Stop the thread (after the checkpoint it is running, if any) and close its connection."""
        self._stopping = True
        self._wanted.set()
        self._thread.join()
        self.conn.close()
