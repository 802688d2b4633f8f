"""Everything derived from the base tables, kept in one place.

The base tables are what an analyst brings or decides: requests and their
dictionaries (log batches), account records, the incident, and the rules table
(which rules are applied). Everything else is derived from them and kept here:

- :mod:`.scope`: ``scoped``, ``post_patch_valid``, ``signature_scope``, ``sig_org``,
  the paths' scope columns and the records' time windows.
- :mod:`.explanations`: the applied rules' bits in ``scoped.explained`` and the
  unexplained counts they move.
- :mod:`.aggregates`: the page aggregates ``sig_stats``, ``pivot_groups``,
  ``org_stats`` and ``scope_days``, and ``derived_upto``, the last request a full
  refresh counted (a closing batch adds its requests only when none is counted yet).
- :mod:`.window_hours`: ``window_hours`` and ``window_scoped_hours``, requests per (hour,
  signature[, org]) for time windows.
- :mod:`.waterfall`: ``rule_waterfall``.
- :mod:`.rule_counts`: ``rule_counts``, the requests each applied rule explains per
  (signature, org): the report's per-rule breakdown.
- :mod:`.out_of_scope`: ``out_of_scope_counts``, why the other requests are out (MODEL §6.1).
- :mod:`.status`: the one rule that turns an org's figures into its status.
- the owner columns of ``ips`` (``network``, ``country``, ``as_name``, ``asn``,
  ``provider``, ``rdns``), from the shipped data and the ``ip_info`` records
  (:mod:`datasette_forensics.ipinfo`).
- :mod:`.line_counts`: ``line_counts``, ``line_counts_staged``, ``line_counts_batch``
  and ``line_counts_suspended``, the duplicate-line counts an import keeps per chunk.
- :mod:`.line_filter`: ``line_filter``, the Bloom filter of ``line_counts``' hashes
  a later batch reads first (rewritten or dropped by every writer of ``line_counts``).
- :mod:`.batch_figures`: a first import's signature figures, counted beside the store
  as its chunks commit, which its close reads ``sig_stats`` from.
- :mod:`.indexes`: the ``requests`` indexes a first import defers
  (``deferred_indexes``) and builds by a sort when its batch closes.

A writer of base tables calls one of the functions below inside its own
transaction, so that the base change and everything derived from it commit
together. Work that cannot be done at once (after a migration) is marked in the
``derived_state`` table; :func:`finish` does it before anything reads, and
:func:`datasette_forensics.schema.ensure_schema` calls it for every command and at
Datasette's startup. Dependencies point one way: writers import this package;
this package imports only the rule registry, ipinfo and the helpers below them.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import sqlite_utils

from .. import ipinfo
from ..timeparse import utcnow
from ..transaction import write_transaction
from . import aggregates, batch_figures, explanations, out_of_scope, rule_counts, scope, waterfall, window_hours

# Record kinds the scope itself is computed from; other kinds only change explanations.
SCOPE_KINDS = ("orgs", "org_slugs", "integrations")


def recompute(db: sqlite_utils.Database) -> None:
    """Recompute everything derived from the base tables, from scratch."""
    with db.atomic():
        if scope.rebuild(db):
            explanations.reevaluate(db)
        else:
            rule_counts.refresh(db)  # nothing is in scope
        aggregates.refresh(db)
        window_hours.refresh(db)
        out_of_scope.refresh(db)


def mark_stale(db: sqlite_utils.Database, reason: str) -> None:
    """Record that everything derived must be recomputed before the next reading."""
    db.execute(
        "insert or replace into derived_state (work, reason, since) values ('all', ?, ?)", [reason, utcnow()]
    )


def is_stale(db: sqlite_utils.Database) -> bool:
    """Whether derived work is unfinished (the derived tables must not be read yet)."""
    try:
        return db.execute("select exists (select 1 from derived_state)").fetchone()[0] == 1
    except sqlite3.OperationalError:  # before the migration that makes the table
        return False


def finish(db: sqlite_utils.Database) -> bool:
    """Do any unfinished derived work, in one transaction with clearing its mark.

    Returns:
        True when there was work to do.
    """
    if not is_stale(db):
        return False
    with write_transaction(db):
        works = {row[0] for row in db.execute("select work from derived_state")}
        if "ip_owners" in works:  # before the aggregates read them
            ipinfo.apply_ip_info(db)
        if "all" in works:
            recompute(db)
        elif works & {"ip_owners", "ip_groups"}:
            aggregates.refresh_ip_owner_groups(db)
        if works & {"window_days", "window_hours"} and "all" not in works:
            window_hours.refresh(db)
        db.execute("delete from derived_state")
    return True


def after_ptr_names(db: sqlite_utils.Database) -> None:
    """enrich-rdns stored PTR names (ipinfo.py makes them rdns where ip_info gives none):
    mark the owner groups stale in the same transaction; :func:`finish` regroups them
    when the look-ups end (or before the next reading, after an interruption)."""
    db.execute(
        "insert or ignore into derived_state (work, reason, since) values ('ip_groups', ?, ?)",
        ["reverse DNS names to group", utcnow()],
    )


def after_incident(db: sqlite_utils.Database) -> None:
    """The incident was set or replaced: the whole scope changes."""
    recompute(db)


@dataclass
class Head:
    """What an import did ahead for its batch's close, beside the store (see after_batch)."""

    tally: batch_figures.Tally | None = None  # its signature figures, counted as chunks committed
    located: ipinfo.Located | None = None  # its new addresses' shipped owner data


def after_batch(db: sqlite_utils.Database, batch_id: int, min_ip_id: int | None = None, head: Head | None = None) -> None:
    """A log batch closed: bring ip_info, the scope, the explanations and the aggregates
    up to date for its requests only (everything, when a recompute already counted
    some of them while the batch was unfinished).

    Args:
        min_ip_id: the ``ips`` ids above this one are new (None: look at every address).
        head: what the import did ahead (:class:`Head`), or None.
    """
    with db.atomic():
        ipinfo.apply_ip_info(db, min_ip_id=min_ip_id, located=head.located if head else None)
        if aggregates.counted_already(db, batch_id):
            # A recompute ran while the batch was unfinished and counted its requests
            # so far: adding the batch now would count those twice.
            recompute(db)
            return
        touched = scope.after_batch(db, batch_id)
        if touched:
            explanations.reevaluate(db, sigs=scope.TOUCHED_SIGS)
            window_hours.refresh_scoped(db, scope.TOUCHED_SIGS)
        aggregates.refresh_batch(db, batch_id, scope.TOUCHED_SIGS if touched else None, head.tally if head else None)
        if touched:
            db.execute("drop table temp.touched_sigs")
        window_hours.catch_up(db.conn)  # what the import's idle moments left
        window_hours.bump(db)
        out_of_scope.add_batch(db, batch_id)


def while_idle(db: sqlite_utils.Database) -> bool:
    """An import waits for its parser: count the requests stored so far into the hour
    cells, in a transaction of their own (a batch's close counts whatever is left).

    Returns:
        True when there was work to do.
    """
    with write_transaction(db):
        return window_hours.catch_up(db.conn)


def after_records(db: sqlite_utils.Database, kind: str) -> None:
    """Account records of ``kind`` were added or changed."""
    with db.atomic():
        aggregates.after_records(db, kind)
        if not scope.has_incident(db):
            return
        if kind in SCOPE_KINDS:
            recompute(db)
        else:
            explanations.reevaluate(db)
            aggregates.refresh_days(db)
            window_hours.refresh_unexplained(db)


def after_rule_applied(db: sqlite_utils.Database, rule, applied_before: list[str]) -> tuple[int, list[dict]]:
    """A rule was applied after the rules ``applied_before``.

    Returns:
        (requests newly explained, [{org_id, from, to}] of the orgs whose status changed).
    """
    with explanations.bulk_cache(db), db.atomic():
        explained, changes = explanations.explain(db, rule)
        waterfall.after_apply(db, rule.NAME, applied_before, explained)
    return explained, changes


def after_rule_undone(db: sqlite_utils.Database, rule, applied_before: list[str]) -> tuple[int, list[dict]]:
    """A rule of ``applied_before`` was undone.

    Returns:
        (requests no longer explained, [{org_id, from, to}] of the orgs whose status changed).
    """
    with explanations.bulk_cache(db), db.atomic():
        unexplained, changes = explanations.unexplain(db, rule.BIT)
        rule_counts.drop(db, rule.BIT)
        waterfall.after_undo(db, rule.NAME, applied_before)
    return unexplained, changes


def after_rule_data_changed(
    db: sqlite_utils.Database, rule, applied_before: list[str], restrict: str, restrict_params: dict
) -> tuple[int, list[dict]]:
    """A rule's own data changed within some key ranges of scoped (a verdict made or
    withdrawn); the rule is applied (``applied_before`` lists the rules applied before
    this change, the rule itself included when it already was).

    Args:
        restrict: a condition on scoped ``s`` naming whole (signature[, org]) key ranges.

    Returns:
        (requests newly explained, negative when fewer are; [{org_id, from, to}]).
    """
    with db.atomic():
        in_place = rule.NAME in applied_before and waterfall.is_current(db, applied_before)
        before = waterfall.compute(db, restrict, restrict_params) if in_place else None
        explained, changes = explanations.rematch_within(db, rule, restrict, restrict_params)
        rule_counts.recount_within(db, rule.BIT, restrict, restrict_params)
        if in_place:
            waterfall.adjust(db, before, restrict, restrict_params)
        elif rule.NAME not in applied_before:
            waterfall.after_apply(db, rule.NAME, applied_before, explained)
        else:
            waterfall.refresh(db)
    return explained, changes


def after_explanations_changed(db: sqlite_utils.Database, sigs_sql: str | None = None) -> None:
    """``scoped.explained`` was changed by something other than a rule (a verdict, say):
    recount the unexplained requests of the signatures given (None: all) and move them
    into every aggregate, the timeline and the waterfall."""
    with db.atomic():
        explanations.refresh_unexplained(db, sigs_sql)
        rule_counts.refresh(db, sigs_sql)
        aggregates.refresh_days(db)
        window_hours.refresh_unexplained(db)
        waterfall.refresh(db)
