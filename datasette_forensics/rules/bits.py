"""Rule identity: the bit of ``scoped.explained`` each rule owns, given on first sight.

``rule_bits`` binds a bit to a rule name when the rule is first seen (a built-in
when a database first meets it, a custom rule when it is created) and keeps the
binding when a custom rule is deleted, so a rule recreated under its name gets its
bit back and no two rules ever share one. A built-in added by a later version takes
a bit no rule ever held. Only when every bit has been given out does a new rule
take the bit of a deleted custom rule (deleting undoes it first, so no request
carries that bit any more).
"""

from __future__ import annotations

import sqlite_utils

from ..timeparse import utcnow
from .custom import InvalidRule

# Bits 0 to 62 of scoped.explained (bit 63 would make the mask negative).
BITS = 63


class NoFreeBit(InvalidRule):
    """Every bit is held by a rule."""


def bit_of(db: sqlite_utils.Database, name: str) -> int | None:
    """The bit a rule holds, or None for a rule never seen."""
    row = db.execute("select bit from rule_bits where name = ?", [name]).fetchone()
    return None if row is None else 1 << row[0]


def allocate(db: sqlite_utils.Database, name: str) -> int:
    """The bit (as a mask) for a rule about to get its row in ``rules``.

    Raises:
        NoFreeBit: all 63 bits are held by existing rules.
    """
    row = db.execute(
        """select bit from rule_bits b where name = ?
        and not exists (select 1 from rules r where r.bit = 1 << b.bit and r.name != b.name)""",
        [name],
    ).fetchone()
    if row is not None:
        return 1 << row[0]
    held = {r[0] for r in db.execute("select bit from rule_bits")}
    free = [b for b in range(BITS) if b not in held]
    if free:
        db.execute("insert into rule_bits (bit, name, allocated_at) values (?, ?, ?)", [free[0], name, utcnow()])
        return 1 << free[0]
    # Every bit was given out once: take back the oldest of a rule that no longer exists.
    row = db.execute(
        """select bit from rule_bits b where not exists (select 1 from rules r where r.name = b.name)
        order by allocated_at, bit limit 1"""
    ).fetchone()
    if row is None:
        raise NoFreeBit(f"There is no free bit for another rule ({BITS} rules at most): delete a custom rule first.")
    db.execute("update rule_bits set name = ?, allocated_at = ? where bit = ?", [name, utcnow(), row[0]])
    return 1 << row[0]
