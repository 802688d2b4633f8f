"""Sort memory for the bulk statements that build or rebuild derived data from scratch.

SQLite's sorter (CREATE INDEX, GROUP BY, ORDER BY over millions of rows) sorts
runs as large as the page cache in memory, then merges them from temporary files.
Runs of a couple of MB sort faster than one run of 64 MB: a million-request batch
closed in 2.7-2.9 CPU s with 2 MiB runs against 3.5-3.6 s with the usual 64 MiB
(building the requests indexes 0.82 against 1.13-1.26 s, the signatures' figures
0.41 against 0.95 s). Helper threads for the sorter (PRAGMA threads) made the same
work slower on two cores (1.00-1.11 s against 0.82-0.98 s, and 80% more CPU), so
they are not used.
"""

from __future__ import annotations

import contextlib
import sqlite3

SORT_RUN_KIB = 2048


@contextlib.contextmanager
def small_sort_runs(conn: sqlite3.Connection):
    """Run the block with a page cache of SORT_RUN_KIB (the sorter's run size); restore it after."""
    previous = conn.execute("pragma cache_size").fetchone()[0]
    conn.execute(f"pragma cache_size = {-SORT_RUN_KIB}")
    try:
        yield
    finally:
        conn.execute(f"pragma cache_size = {int(previous)}")
