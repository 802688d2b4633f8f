"""One write transaction for a base change and everything derived from it."""

from __future__ import annotations

import contextlib

import sqlite_utils


@contextlib.contextmanager
def write_transaction(db: sqlite_utils.Database):
    """BEGIN IMMEDIATE ... COMMIT, or a savepoint inside the caller's transaction:
    what runs inside commits together or not at all."""
    conn = db.conn
    if conn.in_transaction:
        with db.atomic():
            yield db
        return
    conn.execute("begin immediate")
    try:
        yield db
    except BaseException:
        if conn.in_transaction:
            conn.execute("rollback")
        raise
    conn.execute("commit")
