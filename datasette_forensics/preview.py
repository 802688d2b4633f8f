"""Dry runs (MODEL §6.2): what applying a rule would do, with nothing changed.

The rule is applied for real inside a transaction that is then rolled back, so the
preview is exactly what the application would do: the requests it would newly
explain and the orgs whose status would change (from, to).
"""

from __future__ import annotations

import sqlite_utils

from .rules import actions


def preview_apply(db: sqlite_utils.Database, name: str) -> dict:
    """{rule, requests_explained, orgs_changed, already} of applying ``name``; nothing is kept.

    Inside a caller's transaction (Datasette 1.0 runs write functions in one) the
    application is rolled back to a savepoint; otherwise the whole transaction is.
    """
    conn = db.conn
    if conn.in_transaction:
        conn.execute("savepoint forensics_preview")
        try:
            return actions.apply(db, name, None)
        finally:
            conn.execute("rollback to forensics_preview")
            conn.execute("release forensics_preview")
    conn.execute("begin immediate")
    try:
        return actions.apply(db, name, None)
    finally:
        conn.execute("rollback")
