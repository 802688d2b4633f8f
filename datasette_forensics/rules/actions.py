"""Changes of the rules table: apply, undo, create and delete, each recorded in the ledger.

Each runs in one transaction with what follows from it in ``scoped`` and the
aggregates (:mod:`datasette_forensics.derived`).
"""

from __future__ import annotations

import json

import sqlite_utils

from .. import derived
from ..transaction import write_transaction
from ..timeparse import utcnow
from . import REGISTRY, UnknownRule, applied_names, bits, custom, ensure_rules, get_rule, list_rules


def record(
    db, rule: str, action: str, actor: str | None, count: int | None, changes: list, detail: str | None = None
) -> None:
    """Add a row to the rule ledger."""
    db.execute(
        """insert into rule_ledger (rule, action, actor, at, requests_explained, orgs_changed, detail)
        values (?, ?, ?, ?, ?, ?, ?)""",
        [rule, action, actor, utcnow(), count, json.dumps(changes), detail],
    )


def apply(db: sqlite_utils.Database, name: str, actor: str | None = None) -> dict:
    """Apply one rule; returns {rule, requests_explained, orgs_changed, already}."""
    with write_transaction(db):
        rule = get_rule(db, name)
        applied = applied_names(db)
        if name in applied:
            return {"rule": name, "requests_explained": 0, "orgs_changed": [], "already": True}
        seq = db.execute("select coalesce(max(applied_seq), 0) + 1 from rules").fetchone()[0]
        db.execute("update rules set applied = 1, applied_seq = ? where name = ?", [seq, name])
        explained, changes = derived.after_rule_applied(db, rule, applied)
        record(db, name, "apply", actor, explained, changes)
    return {"rule": name, "requests_explained": explained, "orgs_changed": changes, "already": False}


def undo(db: sqlite_utils.Database, name: str, actor: str | None = None) -> dict:
    """Undo one applied rule; returns {rule, requests_unexplained, orgs_changed, already}."""
    with write_transaction(db):
        rule = get_rule(db, name)
        applied = applied_names(db)
        if name not in applied:
            return {"rule": name, "requests_unexplained": 0, "orgs_changed": [], "already": True}
        db.execute("update rules set applied = 0, applied_seq = null where name = ?", [name])
        unexplained, changes = derived.after_rule_undone(db, rule, applied)
        record(db, name, "undo", actor, unexplained, changes)
    return {"rule": name, "requests_unexplained": unexplained, "orgs_changed": changes, "already": False}


def apply_all(db: sqlite_utils.Database, names: list[str], actor: str | None = None) -> list[dict]:
    """Apply rules in order, in one transaction: all of them or none."""
    with write_transaction(db):
        return [apply(db, name, actor) for name in names]


def undo_all(db: sqlite_utils.Database, names: list[str], actor: str | None = None) -> list[dict]:
    """Undo rules in order, in one transaction: all of them or none."""
    with write_transaction(db):
        return [undo(db, name, actor) for name in names]


def create_custom_rule(
    db: sqlite_utils.Database, name: str, definition, actor: str | None = None, description: str | None = None
) -> dict:
    """Validate and save a custom rule (not applied yet), and record it in the ledger.

    Args:
        name: ``^[a-z][a-z0-9_]{0,40}$``, not a built-in or existing rule.
        definition: ``{"filter": {...}}`` or ``{"sql": "..."}`` (a dict, or its JSON text).
        actor: who creates it.
        description: shown on the rules page; a summary of the definition if empty.

    Returns:
        the rule as :func:`datasette_forensics.rules.list_rules` gives it.

    Raises:
        custom.InvalidRule: the reason, in one sentence; nothing is written then.
    """
    if not isinstance(name, str) or not custom.NAME_PATTERN.match(name):
        raise custom.InvalidRule(
            f"The rule name {name!r} is not valid: use a lowercase letter then up to 40 lowercase letters, digits or _."
        )
    if name in REGISTRY:
        raise custom.InvalidRule(f"{name!r} is a built-in rule: choose another name.")
    if isinstance(definition, str):
        try:
            definition = json.loads(definition)
        except json.JSONDecodeError as exc:
            raise custom.InvalidRule(f"The rule definition is not valid JSON ({exc.msg}).") from None
    predicate, params = custom.compile_definition(definition)
    if "sql" in definition:
        definition = {"sql": custom.check_predicate(db.conn, predicate)}
    else:
        custom.register_functions(db.conn)
    description = (description or "").strip()
    if len(description) > custom.MAX_DESCRIPTION:
        raise custom.InvalidRule(f"The description is longer than {custom.MAX_DESCRIPTION} characters.")
    if not description:
        description = "Custom: " + custom.summary(definition)
    with write_transaction(db):
        ensure_rules(db)
        if db.execute("select 1 from rules where name = ?", [name]).fetchone():
            raise custom.InvalidRule(f"A rule named {name!r} already exists: delete it first or choose another name.")
        bit = bits.allocate(db, name)
        text = json.dumps(definition, ensure_ascii=False, sort_keys=True)
        db.execute(
            """insert into rules (name, bit, builtin, description, definition, applied, created_by, created_at)
            values (?, ?, 0, ?, ?, 0, ?, ?)""",
            [name, bit, description, text, actor, utcnow()],
        )
        record(db, name, "create", actor, None, [], text)
    return next(r for r in list_rules(db) if r["name"] == name)


def delete_custom_rule(db: sqlite_utils.Database, name: str, actor: str | None = None) -> dict:
    """Delete a custom rule, undoing it first if it is applied; both are recorded in the ledger.

    Returns:
        {"rule", "undo"}: undo is the result of :func:`undo`, or None.

    Raises:
        custom.InvalidRule: a built-in rule; UnknownRule: no such rule.
    """
    if name in REGISTRY:
        raise custom.InvalidRule(f"{name!r} is a built-in rule and cannot be deleted (undo it instead).")
    with write_transaction(db):
        row = db.execute("select applied, definition from rules where name = ? and builtin = 0", [name]).fetchone()
        if row is None:
            raise UnknownRule(f"There is no custom rule named {name!r}.")
        undone = undo(db, name, actor) if row[0] else None
        db.execute("delete from rules where name = ? and builtin = 0", [name])
        record(db, name, "delete", actor, None, [], row[1])
    return {"rule": name, "undo": undone}
