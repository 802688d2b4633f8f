"""Rule counts (``rule_counts``): the in-scope requests each applied rule explains,
per (signature, org), so that the report's per-rule breakdown (``explained_by``)
and an org's evidence never scan ``scoped``.

One row per (rule bit, signature, org) whose requests carry that bit of
``scoped.explained`` (none with 0 requests). A request explained by several rules
counts for each of them, as in the report.

The rows of a rule change only when its own bit does:

- applied: :func:`add` takes the requests it matched per pair: for a rule that
  explains whole (signature, org) pairs (``WHOLE_PAIRS``), their sizes in
  ``sig_org``; for any other, a count in the scan that finds its newly explained
  requests (``explanations.explain``), so no request is read twice;
- undone: :func:`drop` deletes its rows (one key range);
- its data changed within some key ranges (a verdict): :func:`recount_within`;
- scope or batches re-evaluated the rules: :func:`refresh` recounts the
  signatures given, or all.
"""

from __future__ import annotations

import sqlite_utils

from ..rules import applied_bits

def _fill(db: sqlite_utils.Database, where: str = "") -> None:
    """Count every applied rule's requests per pair from scoped ({where} on s): one
    pass along scoped's key, a sum per rule, so no sort."""
    applied = applied_bits(db)
    if not applied:  # no request carries a bit
        return
    sums = ", ".join(f"sum((s.explained & {int(bit)}) != 0) as n{i}" for i, (_, bit) in enumerate(applied))
    arms = " union all ".join(
        f"select {int(bit)}, sig_id, org_id, n{i} from pairs where n{i} > 0" for i, (_, bit) in enumerate(applied)
    )
    db.execute(
        f"""with pairs as materialized (
            select s.sig_id, s.org_id, {sums} from scoped s
            where s.explained != 0 {where} group by s.sig_id, s.org_id
        )
        insert into rule_counts (rule_bit, sig_id, org_id, requests) {arms}"""
    )


def refresh(db: sqlite_utils.Database, sigs_sql: str | None = None) -> None:
    """Recount the rows of some signatures (a trusted SQL select of sig_ids), or all."""
    if sigs_sql is None:
        db.execute("delete from rule_counts")
        _fill(db)
        return
    db.execute("drop table if exists temp.rule_count_sigs")
    db.execute("create temp table rule_count_sigs (sig_id integer primary key)")
    db.execute(f"insert or ignore into temp.rule_count_sigs select * from ({sigs_sql})")
    only = "sig_id in (select sig_id from temp.rule_count_sigs)"
    db.execute(f"delete from rule_counts where {only}")
    _fill(db, f"and s.{only}")
    db.execute("drop table temp.rule_count_sigs")


def add(db: sqlite_utils.Database, bit: int, matched_sql: str, params: dict | None = None) -> None:
    """A rule was applied: its bit is set on the requests a select of
    (sig_id, org_id, n) counts per pair, and on no other."""
    db.execute(
        f"""insert into rule_counts (rule_bit, sig_id, org_id, requests)
        select :rc_bit, sig_id, org_id, n from ({matched_sql}) where n > 0""",
        dict(params or {}, rc_bit=bit),
    )


def drop(db: sqlite_utils.Database, bit: int) -> None:
    """A rule was undone: no request carries its bit any more."""
    db.execute("delete from rule_counts where rule_bit = ?", [bit])


def recount_within(db: sqlite_utils.Database, bit: int, restrict: str, restrict_params: dict) -> None:
    """A rule's bit changed within some key ranges of scoped only.

    Args:
        restrict: a condition on ``s`` naming whole (signature[, org]) key ranges
            through ``s.sig_id`` and ``s.org_id`` only.
    """
    params = dict(restrict_params, bit=bit)
    db.execute(f"delete from rule_counts as s where s.rule_bit = :bit and ({restrict})", params)
    db.execute(
        f"""insert into rule_counts (rule_bit, sig_id, org_id, requests)
        select :bit, s.sig_id, s.org_id, count(*) from scoped s
        where ({restrict}) and (s.explained & :bit) != 0
        group by s.sig_id, s.org_id""",
        params,
    )


def breakdown(db: sqlite_utils.Database, org_id: str | None = None) -> dict[str, dict[str, int]]:
    """In-scope requests each applied rule explains, per org (the report's ``explained_by``).

    Args:
        org_id: one org only (its sig_org pairs first, then each pair's rows); None for every org.

    Returns:
        {org_id: {rule_name: requests}} with the rules in the order they were
        applied; rules explaining nothing, and orgs with nothing explained, are left out.
    """
    applied = applied_bits(db)
    if not applied:
        return {}
    bits = ", ".join(str(int(bit)) for _, bit in applied)
    if org_id is None:
        rows = db.execute(
            f"""select org_id, rule_bit, sum(requests) from rule_counts
            where rule_bit in ({bits}) group by org_id, rule_bit"""
        )
    else:
        rows = db.execute(
            f"""select so.org_id, rc.rule_bit, sum(rc.requests)
            from sig_org so cross join rule_counts rc on rc.sig_id = so.sig_id and rc.org_id = so.org_id
            where so.org_id = :org and rc.rule_bit in ({bits})
            group by so.org_id, rc.rule_bit""",
            {"org": str(org_id)},
        )
    counts: dict[str, dict[int, int]] = {}
    for org, bit, n in rows:
        counts.setdefault(org, {})[bit] = n
    result = {}
    for org, by_bit in counts.items():
        explained = {name: by_bit[bit] for name, bit in applied if by_bit.get(bit)}
        if explained:
            result[org] = explained
    return result
