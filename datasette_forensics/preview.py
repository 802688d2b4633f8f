"""Dry runs (MODEL §6.2): what applying a rule would do, with nothing changed.

The rule is applied for real inside a transaction that is then rolled back, so the
preview is exactly what the application would do: the requests it would newly
explain and the orgs whose status would change (from, to).
"""

from __future__ import annotations

import sqlite_utils

from .errors import ForensicsError
from .rules import actions


def preview_apply(db: sqlite_utils.Database, name: str) -> dict:
    """{rule, requests_explained, orgs_changed, already} of applying ``name``; nothing is kept."""
    conn = db.conn
    if conn.in_transaction:
        raise ForensicsError("A dry run needs a connection with no transaction open.")
    conn.execute("begin immediate")
    try:
        return actions.apply(db, name, None)
    finally:
        conn.execute("rollback")
