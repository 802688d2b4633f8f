"""Elimination rules (MODEL §3): the registry of rules, and read-only views of their state.

A built-in rule is a module with ``NAME``, ``DESCRIPTION``, ``match_sql()`` returning a SQL condition on an in-scope request
``s`` (a row of ``scoped``) that is true when the rule explains it, and
optionally ``prepare(db)`` to build temporary helper tables and ``WHOLE_PAIRS =
True`` when the condition reads ``s.sig_id`` and ``s.org_id`` only (it explains
every request of a pair or none, so its counts come from ``sig_org``); :func:`load_rules`
gives it, like a custom rule, with ``BIT``: the bit of ``scoped.explained`` it was
given on first sight (:mod:`.bits`). An applied rule sets its bit; a request is unexplained while that mask
is 0. Applied rules are re-evaluated whenever scope changes, so they explain
later batches and record updates too.

This package holds the definitions only. Applying, undoing, creating and
deleting rules are changes of the ``rules`` table (:mod:`.actions`); what follows
from them in ``scoped`` and the aggregates is kept by :mod:`datasette_forensics.derived`.

``scoped`` is keyed (sig_id, org_id, request_id), so a condition that names
(signature, org) pairs with ``IN`` reads and rewrites whole key ranges in order:
most rules explain every request of a pair, or test its time within the pair.
"""

from __future__ import annotations

import json

import sqlite_utils

from ..errors import ForensicsError
from . import bits, custom, member_current, member_historical, partner, post_patch_valid, staff, token_owner, verdict

BUILTINS = [staff, member_current, member_historical, partner, post_patch_valid, token_owner]
# Rules that are not applied or undone by name: the verdict rule follows the verdicts.
SYSTEM = [verdict]
REGISTRY = {rule.NAME: rule for rule in BUILTINS + SYSTEM}


class UnknownRule(ForensicsError, LookupError):
    """A rule name that is neither built in nor saved as a custom rule."""


class BuiltinRule:
    """A built-in rule module with the bit this database gave it."""

    builtin = True

    def __init__(self, module, bit: int):
        self.module = module
        self.NAME = module.NAME
        self.DESCRIPTION = module.DESCRIPTION
        self.BIT = bit
        self.PARAMS = getattr(module, "PARAMS", None)
        self.WHOLE_PAIRS = getattr(module, "WHOLE_PAIRS", False)

    def prepare(self, db: sqlite_utils.Database) -> None:
        """Build the module's helper tables, if it has any."""
        prepare = getattr(self.module, "prepare", None)
        if prepare is not None:
            prepare(db)

    def match_sql(self) -> str:
        """The module's SQL condition on an in-scope request ``s``."""
        return self.module.match_sql()


def ensure_rules(db: sqlite_utils.Database) -> None:
    """Make sure every built-in rule has its row in the rules table, with a bit of its own."""
    known = {row[0] for row in db.execute("select name from rules where builtin = 1")}
    for rule in BUILTINS + SYSTEM:
        if rule.NAME not in known:
            db.execute(
                "insert into rules (name, bit, builtin, description) values (?, ?, 1, ?)",
                [rule.NAME, bits.allocate(db, rule.NAME), rule.DESCRIPTION],
            )


def bit_of(db: sqlite_utils.Database, name: str) -> int | None:
    """The bit a rule holds in this database (None: a rule it never saw)."""
    return bits.bit_of(db, name)


def load_rules(db: sqlite_utils.Database) -> dict:
    """Every rule, built-in and custom, by name, in registry then creation order."""
    ensure_rules(db)
    stored = dict(db.execute("select name, bit from rules where builtin = 1"))
    rules = {rule.NAME: BuiltinRule(rule, stored[rule.NAME]) for rule in BUILTINS + SYSTEM}
    for row in db.execute(
        "select name, bit, description, definition from rules where builtin = 0 order by bit"
    ):
        rules[row[0]] = custom.CustomRule(row[0], row[1], row[2], json.loads(row[3]))
    return rules


def applied_names(db: sqlite_utils.Database) -> list[str]:
    """Names of the applied rules, in the order they were applied."""
    return [r[0] for r in db.execute("select name from rules where applied = 1 order by applied_seq")]


def applied_bits(db: sqlite_utils.Database) -> list[tuple[str, int]]:
    """(name, bit) of the applied rules, in the order they were applied."""
    return [tuple(r) for r in db.execute("select name, bit from rules where applied = 1 order by applied_seq")]


def get_rule(db: sqlite_utils.Database, name: str):
    """The rule called ``name``.

    Raises:
        UnknownRule: naming the rules there are.
    """
    rules = load_rules(db)
    if name not in rules:
        raise UnknownRule(f"Unknown rule {name!r}; the rules are: {', '.join(rules)}.")
    return rules[name]


def resolve_names(db: sqlite_utils.Database, spec: str) -> list[str]:
    """'all' (every built-in), or a comma-separated list of rule names, validated."""
    rules = load_rules(db)
    if spec.strip() == "all":
        return [r.NAME for r in BUILTINS]
    names = [n.strip() for n in spec.split(",") if n.strip()]
    system = [n for n in names if n in {r.NAME for r in SYSTEM}]
    if system:
        raise UnknownRule(f"{system[0]} is not applied or undone by name: use the {system[0]} command.")
    unknown = [n for n in names if n not in rules]
    if unknown or not names:
        raise UnknownRule(
            f"Unknown rule {', '.join(repr(n) for n in unknown) or repr(spec)}; "
            f"the rules are: {', '.join(rules)}."
        )
    return names


def list_rules(db: sqlite_utils.Database) -> list[dict]:
    """Every rule with its state, built-ins first then custom rules by bit (read-only).

    Returns:
        dicts with name, description, builtin, applied, applied_seq, bit,
        definition (custom rules), created_by and created_at.
    """
    rows = {
        row[0]: row
        for row in db.execute(
            """select name, bit, builtin, description, definition, applied, applied_seq,
            created_by, created_at from rules"""
        )
    }
    result = []
    for rule in BUILTINS:
        row = rows.get(rule.NAME)
        result.append(
            {
                "name": rule.NAME,
                "description": rule.DESCRIPTION,
                "builtin": True,
                "applied": bool(row and row[5]),
                "applied_seq": row[6] if row else None,
                "bit": row[1] if row else None,
                "definition": None,
                "created_by": None,
                "created_at": None,
            }
        )
    for row in sorted((r for r in rows.values() if not r[2]), key=lambda r: r[1]):
        result.append(
            {
                "name": row[0],
                "description": row[3],
                "builtin": False,
                "applied": bool(row[5]),
                "applied_seq": row[6],
                "bit": row[1],
                "definition": json.loads(row[4]) if row[4] else None,
                "created_by": row[7],
                "created_at": row[8],
            }
        )
    return result

