"""Read-only connections to a database file, for an import's helpers (its parse process, its tally)."""

from __future__ import annotations

import sqlite3
from urllib.parse import quote


def connect(db_file: str, **kwargs) -> sqlite3.Connection:
    """A read-only connection to ``db_file`` (keyword arguments go to sqlite3.connect).

    The path is quoted into SQLite's URI form, so that a ``?``, ``#`` or ``%`` in a
    directory or file name stays part of the name.
    """
    return sqlite3.connect(f"file:{quote(db_file)}?mode=ro", uri=True, **kwargs)
