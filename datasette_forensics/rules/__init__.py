"""Elimination rules (MODEL §3): a registry of rules and the engine that applies them.

A rule is a module (or, for custom rules, an object) with ``NAME``, ``BIT``,
``DESCRIPTION``, ``select_sql(restrict)`` returning a select of the ids of the
in-scope requests it explains, and optionally ``prepare(db)`` to build temporary
helper tables. An applied rule sets its bit in ``scoped.explained``; a request
is unexplained while that mask is 0. Applied rules are re-evaluated whenever
scope changes, so they explain later batches and record updates too.
"""

from __future__ import annotations

import datetime
import json

import sqlite_utils

from ..timeparse import parse_time

# Sessions matched to signatures on (ip, exact user agent): one row per (sig, user).
SESSION_SIGNATURES = """
select g.id as sig_id, se.user_id
from sessions se
join ips i on i.ip = se.ip
join user_agents a on a.ua = se.user_agent
join signatures g on g.ip_id = i.id and g.ua_id = a.id"""


def ms_rows(db: sqlite_utils.Database, sql: str, time_columns: tuple[int, ...]) -> list[tuple]:
    """Rows of a records query with the given columns turned into epoch milliseconds."""
    rows = []
    for row in db.execute(sql):
        row = list(row)
        for i in time_columns:
            row[i] = None if row[i] in (None, "") else parse_time(row[i])
        rows.append(tuple(row))
    return rows


from . import member_current, member_historical, partner, post_patch_valid, staff, token_owner  # noqa: E402

BUILTINS = [staff, member_current, member_historical, partner, post_patch_valid, token_owner]
REGISTRY = {rule.NAME: rule for rule in BUILTINS}


class UnknownRule(LookupError):
    pass


def utcnow() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ensure_rules(db: sqlite_utils.Database) -> None:
    """Make sure every built-in rule has its row in the rules table."""
    db.conn.executemany(
        "insert or ignore into rules (name, bit, builtin, description) values (?, ?, 1, ?)",
        [(r.NAME, r.BIT, r.DESCRIPTION) for r in BUILTINS],
    )


def load_rules(db: sqlite_utils.Database) -> dict:
    """Every rule, built-in and custom, by name, in registry then creation order."""
    ensure_rules(db)
    rules = dict(REGISTRY)
    for row in db.execute(
        "select name, bit, description, definition from rules where builtin = 0 order by bit"
    ):
        from . import custom

        rules[row[0]] = custom.CustomRule(row[0], row[1], row[2], json.loads(row[3]))
    return rules


def applied_names(db: sqlite_utils.Database) -> list[str]:
    """Names of the applied rules, in the order they were applied."""
    return [r[0] for r in db.execute("select name from rules where applied = 1 order by applied_seq")]


def _set_bits(db: sqlite_utils.Database, rule, restrict: str = "") -> None:
    prepare = getattr(rule, "prepare", None)
    if prepare is not None:
        prepare(db)
    db.execute(
        f"update scoped set explained = explained | ? where request_id in ({rule.select_sql(restrict)})",
        [rule.BIT],
    )


def refresh_unexplained(db: sqlite_utils.Database, sigs: str | None = None) -> None:
    """Recount unexplained requests in the (signature, org) aggregates."""
    where = f"where sig_id in ({sigs})" if sigs else ""
    db.execute(
        f"""update sig_org set unexplained = (
            select count(*) from scoped s
            where s.sig_id = sig_org.sig_id and s.org_id = sig_org.org_id and s.explained = 0
        ) {where}"""
    )


def reevaluate(db: sqlite_utils.Database, sigs: str | None = None) -> None:
    """Recompute the explanations of every applied rule.

    Args:
        sigs: a SQL select of sig_ids to limit the work to (after a new batch).
    """
    rules = load_rules(db)
    restrict = f"and s.sig_id in ({sigs})" if sigs else ""
    with db.atomic():
        if sigs:
            db.execute(f"update scoped set explained = 0 where sig_id in ({sigs}) and explained != 0")
        else:
            db.execute("update scoped set explained = 0 where explained != 0")
        for name in applied_names(db):
            if name in rules:
                _set_bits(db, rules[name], restrict)
        refresh_unexplained(db, sigs)


def _unexplained_total(db) -> int:
    return db.execute("select coalesce(sum(unexplained), 0) from sig_org").fetchone()[0]


def _record(db, rule: str, action: str, actor: str | None, count: int | None, changes: list) -> None:
    db.execute(
        """insert into rule_ledger (rule, action, actor, at, requests_explained, orgs_changed)
        values (?, ?, ?, ?, ?, ?)""",
        [rule, action, actor, utcnow(), count, json.dumps(changes)],
    )


def _changes(before: dict, after: dict) -> list[dict]:
    return [
        {"org_id": org, "from": before.get(org), "to": status}
        for org, status in sorted(after.items())
        if before.get(org) != status
    ]


def resolve_names(db: sqlite_utils.Database, spec: str) -> list[str]:
    """'all' (every built-in), or a comma-separated list of rule names, validated."""
    rules = load_rules(db)
    if spec.strip() == "all":
        return [r.NAME for r in BUILTINS]
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in rules]
    if unknown or not names:
        raise UnknownRule(
            f"Unknown rule {', '.join(repr(n) for n in unknown) or repr(spec)}; "
            f"the rules are: {', '.join(rules)}."
        )
    return names


def apply(db: sqlite_utils.Database, name: str, actor: str | None = None) -> dict:
    """Apply one rule; returns {rule, requests_explained, orgs_changed, already}."""
    from ..status import org_statuses

    rules = load_rules(db)
    if name not in rules:
        raise UnknownRule(f"Unknown rule {name!r}; the rules are: {', '.join(rules)}.")
    with db.atomic():
        if name in applied_names(db):
            return {"rule": name, "requests_explained": 0, "orgs_changed": [], "already": True}
        before, total = org_statuses(db), _unexplained_total(db)
        _set_bits(db, rules[name])
        refresh_unexplained(db)
        seq = db.execute("select coalesce(max(applied_seq), 0) + 1 from rules").fetchone()[0]
        db.execute("update rules set applied = 1, applied_seq = ? where name = ?", [seq, name])
        explained = total - _unexplained_total(db)
        changes = _changes(before, org_statuses(db))
        _record(db, name, "apply", actor, explained, changes)
    return {"rule": name, "requests_explained": explained, "orgs_changed": changes, "already": False}


def undo(db: sqlite_utils.Database, name: str, actor: str | None = None) -> dict:
    """Undo one applied rule; returns {rule, requests_unexplained, orgs_changed, already}."""
    from ..status import org_statuses

    rules = load_rules(db)
    if name not in rules:
        raise UnknownRule(f"Unknown rule {name!r}; the rules are: {', '.join(rules)}.")
    with db.atomic():
        if name not in applied_names(db):
            return {"rule": name, "requests_unexplained": 0, "orgs_changed": [], "already": True}
        before, total = org_statuses(db), _unexplained_total(db)
        bit = rules[name].BIT
        db.execute("update scoped set explained = explained & ~? where explained & ? != 0", [bit, bit])
        refresh_unexplained(db)
        db.execute("update rules set applied = 0, applied_seq = null where name = ?", [name])
        unexplained = _unexplained_total(db) - total
        changes = _changes(before, org_statuses(db))
        _record(db, name, "undo", actor, unexplained, changes)
    return {"rule": name, "requests_unexplained": unexplained, "orgs_changed": changes, "already": False}
