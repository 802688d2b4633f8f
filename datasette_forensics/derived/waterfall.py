"""The waterfall (``rule_waterfall``): in-scope requests, then those still unexplained
after each applied rule and all before it, so the rules page never scans ``scoped``.

Applying a rule appends its step and undoing the last one drops it; any other
change recomputes the table in one scan of ``scoped``.
"""

from __future__ import annotations

import sqlite_utils

from ..rules import applied_bits, applied_names
from ..timeparse import utcnow


def compute(db: sqlite_utils.Database, restrict: str = "1", restrict_params: dict | None = None) -> list[dict]:
    """In scope, then the requests still unexplained after each applied rule and all before it.

    Args:
        restrict: a condition on scoped ``s`` limiting the count to some of its key ranges.

    Returns:
        one dict per step (rule None for the in-scope step) with remaining (requests
        still unexplained) and explained (requests that step removed); one scan of scoped.
    """
    applied = applied_bits(db)
    params, mask, columns = dict(restrict_params or {}), 0, ["count(*)"]
    for i, (_, bit) in enumerate(applied):
        mask |= bit
        params[f"m{i}"] = mask
        columns.append(f"coalesce(sum((explained & :m{i}) = 0), 0)")
    counts = db.execute(f"select {', '.join(columns)} from scoped s where {restrict}", params).fetchone()
    steps = [{"rule": None, "remaining": counts[0], "explained": None}]
    for (name, _), remaining in zip(applied, counts[1:]):
        steps.append({"rule": name, "remaining": remaining, "explained": steps[-1]["remaining"] - remaining})
    return steps


def _has_table(db: sqlite_utils.Database) -> bool:
    return bool(db.execute("select 1 from sqlite_master where type = 'table' and name = 'rule_waterfall'").fetchone())


def refresh(db: sqlite_utils.Database) -> None:
    """Store the waterfall in rule_waterfall."""
    if not _has_table(db):
        return
    now = utcnow()
    db.execute("delete from rule_waterfall")
    db.conn.executemany(
        "insert into rule_waterfall (position, rule, remaining, explained, computed_at) values (?, ?, ?, ?, ?)",
        [(i, s["rule"], s["remaining"], s["explained"], now) for i, s in enumerate(compute(db))],
    )


def is_current(db: sqlite_utils.Database, applied: list[str]) -> bool:
    """The stored waterfall has one step per rule of ``applied``, in that order."""
    return _stored_is_current(db, applied)


def _stored_is_current(db: sqlite_utils.Database, applied: list[str]) -> bool:
    if not _has_table(db):
        return False
    stored = [r[0] for r in db.execute("select rule from rule_waterfall order by position")]
    return stored == [None] + applied


def after_apply(db: sqlite_utils.Database, name: str, applied_before: list[str], explained: int) -> None:
    """A rule was applied after ``applied_before`` and explained ``explained`` more requests."""
    if _stored_is_current(db, applied_before):
        last = db.execute("select max(position), remaining from rule_waterfall").fetchone()
        db.execute(
            "insert into rule_waterfall (position, rule, remaining, explained, computed_at) values (?, ?, ?, ?, ?)",
            [last[0] + 1, name, last[1] - explained, explained, utcnow()],
        )
    else:
        refresh(db)


def adjust(db: sqlite_utils.Database, before: list[dict], restrict: str, restrict_params: dict) -> None:
    """Move the stored waterfall by what changed within some key ranges of scoped:
    ``before`` is compute() of those ranges before the change."""
    after = compute(db, restrict, restrict_params)
    stored = [list(r) for r in db.execute("select position, remaining from rule_waterfall order by position")]
    for row, b, a in zip(stored, before, after):
        row[1] += a["remaining"] - b["remaining"]
    now = utcnow()
    db.conn.executemany(
        "update rule_waterfall set remaining = ?, explained = ?, computed_at = ? where position = ?",
        [
            (remaining, None if i == 0 else stored[i - 1][1] - remaining, now, position)
            for i, (position, remaining) in enumerate(stored)
        ],
    )


def after_undo(db: sqlite_utils.Database, name: str, applied_before: list[str]) -> None:
    """A rule of ``applied_before`` was undone."""
    if applied_before[-1] == name and _stored_is_current(db, applied_before):
        db.execute("delete from rule_waterfall where position = (select max(position) from rule_waterfall)")
    else:
        refresh(db)


def read(db: sqlite_utils.Database) -> list[dict]:
    """The stored waterfall when it matches the current state (read-only), else computed now."""
    if _has_table(db):
        stored = [
            {"rule": rule, "remaining": remaining, "explained": explained}
            for rule, remaining, explained in db.execute(
                "select rule, remaining, explained from rule_waterfall order by position"
            )
        ]
        in_scope, unexplained = db.execute(
            """select (select coalesce(sum(requests), 0) from signature_scope),
            (select coalesce(sum(unexplained), 0) from sig_org)"""
        ).fetchone()
        if (
            stored
            and [s["rule"] for s in stored[1:]] == applied_names(db)
            and stored[0]["remaining"] == in_scope
            and stored[-1]["remaining"] == unexplained
        ):
            return stored
    return compute(db)
