"""Explanations: the bits of ``scoped.explained`` that the applied rules set, and the
unexplained counts they move in ``sig_org`` and every page aggregate.

A rule change moves exact deltas: the requests it newly explains (or stops
explaining) are counted per (signature, org, hour), moved in the timeline and in
:func:`aggregates.move_unexplained`, and only the orgs they touch can change status.
A change of scope re-evaluates every applied rule over the signatures it touched.
"""

from __future__ import annotations

import contextlib

import sqlite_utils

from ..rules import applied_names, load_rules
from . import aggregates, rule_counts, waterfall, window_hours
from .status import statuses_of

# Page cache for the bulk writes of apply, undo and reevaluate (KiB, negative as in
# PRAGMA cache_size): at millions of in-scope requests, scoped and its indexes must
# stay in memory while a rule rewrites them; the connection's own size is restored.
BULK_CACHE_KIB = 512 * 1024


@contextlib.contextmanager
def bulk_cache(db: sqlite_utils.Database):
    """A page cache of at least BULK_CACHE_KIB while rules rewrite scoped."""
    previous = db.execute("pragma cache_size").fetchone()[0]
    if previous >= 0 or -previous < BULK_CACHE_KIB:
        db.execute(f"pragma cache_size = {-BULK_CACHE_KIB}")
    try:
        yield
    finally:
        db.execute(f"pragma cache_size = {int(previous)}")


def _prepare(db: sqlite_utils.Database, rule) -> dict:
    """Build the rule's helper tables; returns the parameters its condition binds."""
    prepare = getattr(rule, "prepare", None)
    if prepare is not None:
        prepare(db)
    return dict(getattr(rule, "PARAMS", None) or {})


def _set_bits(db: sqlite_utils.Database, rule, restrict: str = "") -> None:
    params = dict(_prepare(db, rule), rule_bit=rule.BIT)
    db.execute(
        f"update scoped as s set explained = explained | :rule_bit where ({rule.match_sql()}) {restrict}",
        params,
    )


def refresh_unexplained(db: sqlite_utils.Database, sigs: str | None = None) -> None:
    """Recount unexplained requests per (signature, org) and move the differences
    into the aggregates."""
    only = f"and sig_id in ({sigs})" if sigs else ""
    aggregates.move_unexplained(
        db,
        f"""select so.sig_id, so.org_id, coalesce(c.n, 0) - so.unexplained as n
        from (select * from sig_org where 1 {only}) so
        left join (
            select sig_id, org_id, count(*) as n from scoped where explained = 0 {only}
            group by sig_id, org_id
        ) c on c.sig_id = so.sig_id and c.org_id = so.org_id""",
    )


def reevaluate(db: sqlite_utils.Database, sigs: str | None = None) -> None:
    """Recompute the explanations of every applied rule.

    Args:
        sigs: a SQL select of sig_ids to limit the work to (after a new batch).
    """
    rules = load_rules(db)
    restrict = f"and s.sig_id in ({sigs})" if sigs else ""
    with bulk_cache(db), db.atomic():
        if sigs:
            db.execute(f"update scoped set explained = 0 where sig_id in ({sigs}) and explained != 0")
        else:
            db.execute("update scoped set explained = 0 where explained != 0")
        for name in applied_names(db):
            if name in rules:
                _set_bits(db, rules[name], restrict)
        refresh_unexplained(db, sigs)
        rule_counts.refresh(db, sigs)
        waterfall.refresh(db)


def _changes(before: dict, after: dict) -> list[dict]:
    return [
        {"org_id": org, "from": before.get(org), "to": status}
        for org, status in sorted(after.items())
        if before.get(org) != status
    ]


def _move(db: sqlite_utils.Database, sign: int, applied_bit: int | None = None) -> tuple[int, list[dict]]:
    """Move the counts of temp.rule_new, the requests a rule change (un)explains per
    (signature, org, hour), into the timeline and every aggregate (sign -1: explained).

    Args:
        applied_bit: the bit of a rule just applied, whose rule_new also counts
            every request it ``matched``: they go to rule_counts.

    Returns:
        the requests moved, and the orgs whose status changed.
    """
    matched = ", sum(matched) as matched" if applied_bit is not None else ""
    db.execute("drop table if exists temp.rule_delta")
    db.execute(
        f"""create temp table rule_delta as
        select sig_id, org_id, sum(n) as n{matched} from temp.rule_new group by sig_id, org_id"""
    )
    if applied_bit is not None:
        rule_counts.add(db, applied_bit, "select sig_id, org_id, matched as n from temp.rule_delta")
    touched = "select distinct org_id from temp.rule_delta where n != 0"
    before = statuses_of(db, touched)
    aggregates.move_days(
        db, "select org_id, hour / 24 as day, sum(n) as n from temp.rule_new where n != 0 group by 1, 2", sign
    )
    window_hours.move(db, "select sig_id, org_id, hour, n from temp.rule_new where n != 0", sign)
    moved = sign * aggregates.move_unexplained(
        db, f"select sig_id, org_id, {'' if sign > 0 else '-'}n as n from temp.rule_delta"
    )
    changes = _changes(before, statuses_of(db, touched))
    db.execute("drop table temp.rule_delta")
    db.execute("drop table temp.rule_new")
    return moved, changes


def explain(db: sqlite_utils.Database, rule) -> tuple[int, list[dict]]:
    """Set a newly applied rule's bit; returns (requests newly explained, status changes).

    The requests it matches are counted per (signature, org, hour) first, those it
    newly explains apart: enough to move sig_org, the timeline, the statuses and
    rule_counts without a second look; the bit is then set over the rule's key
    ranges of scoped, in order.
    """
    params = _prepare(db, rule)
    db.execute("drop table if exists temp.rule_new")
    if getattr(rule, "WHOLE_PAIRS", False):
        # It explains every request of the pairs it names: rule_counts takes their
        # sizes from sig_org, and only the newly explained requests are counted here.
        rule_counts.add(db, rule.BIT, f"select s.sig_id, s.org_id, s.requests as n from sig_org s where ({rule.match_sql()})", params)
        counted, matched = None, ""
        newly = "and s.explained = 0"
    else:
        # n: the requests newly explained; matched: all it explains (for rule_counts).
        counted, matched = rule.BIT, ", count(*) as matched"
        newly = ""
    db.execute(
        f"""create temp table rule_new as
        select s.sig_id, s.org_id, s.ts / 3600000 as hour, sum(s.explained = 0) as n{matched}
        from scoped s where ({rule.match_sql()}) {newly}
        group by 1, 2, 3""",
        params,
    )
    db.execute(
        f"update scoped as s set explained = explained | :rule_bit where ({rule.match_sql()})",
        dict(params, rule_bit=rule.BIT),
    )
    return _move(db, -1, applied_bit=counted)


def unexplain(db: sqlite_utils.Database, bit: int) -> tuple[int, list[dict]]:
    """Clear an undone rule's bit; returns (requests no longer explained, status changes).

    The requests this rule alone explains become unexplained: counted per
    (signature, org, hour) in one scan, then the bit goes in a second.
    """
    db.execute("drop table if exists temp.rule_new")
    db.execute(
        """create temp table rule_new as
        select sig_id, org_id, ts / 3600000 as hour, count(*) as n
        from scoped where explained = :bit group by 1, 2, 3""",
        {"bit": bit},
    )
    db.execute("update scoped set explained = explained & ~:bit where explained & :bit != 0", {"bit": bit})
    return _move(db, +1)


def rematch_within(db: sqlite_utils.Database, rule, restrict: str, restrict_params: dict) -> tuple[int, list[dict]]:
    """Bring an applied rule's bit up to date within some key ranges of scoped, after
    the rule's own data changed there (a verdict made or withdrawn).

    Args:
        restrict: a condition on scoped ``s`` naming whole (signature[, org]) key ranges.

    Returns:
        (requests newly explained, negative when fewer are; status changes).
    """
    params = dict(_prepare(db, rule), **restrict_params, rule_bit=rule.BIT)
    match = f"({rule.match_sql()})"
    # Newly explained (no rule explained them: -1), newly unexplained (this rule alone did: +1).
    db.execute("drop table if exists temp.rule_new")
    db.execute(
        f"""create temp table rule_new as
        select s.sig_id, s.org_id, s.ts / 3600000 as hour,
            sum(case when s.explained = 0 then -1 else 1 end) as n
        from scoped s
        where ({restrict}) and ((s.explained = 0 and {match}) or (s.explained = :rule_bit and not {match}))
        group by 1, 2, 3""",
        params,
    )
    db.execute(
        f"""update scoped as s set explained = case when {match}
            then explained | :rule_bit else explained & ~:rule_bit end
        where ({restrict}) and ((explained & :rule_bit) = 0) = {match}""",
        params,
    )
    moved, changes = _move(db, +1)
    return -moved, changes
