"""Elimination rules (MODEL §3): a registry of rules and the engine that applies them.

A rule is a module (or, for custom rules, an object) with ``NAME``, ``BIT``,
``DESCRIPTION``, ``match_sql()`` returning a SQL condition on an in-scope request
``s`` (a row of ``scoped``) that is true when the rule explains it, and
optionally ``prepare(db)`` to build temporary helper tables. An applied rule
sets its bit in ``scoped.explained``; a request is unexplained while that mask
is 0. Applied rules are re-evaluated whenever scope changes, so they explain
later batches and record updates too.

``scoped`` is keyed (sig_id, org_id, request_id), so a condition that names
(signature, org) pairs with ``IN`` reads and rewrites whole key ranges in order:
most rules explain every request of a pair, or test its time within the pair.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json

import sqlite_utils

from .. import aggregates
from ..errors import ForensicsError
from ..timeparse import parse_time, utcnow

# Sessions matched to signatures on (ip, exact user agent): one row per (sig, user),
# built by prepare_sessions() before a session rule runs.
SESSION_SIGNATURES = "select sig_id, user_id from temp.rule_session_sigs"


def _canonical_ip(text: str) -> str:
    try:
        return ipaddress.ip_address(text.strip()).compressed
    except ValueError:
        return text


def prepare_sessions(db: sqlite_utils.Database) -> None:
    """Match sessions to signatures on (ip, exact user agent).

    Addresses compare as addresses: ``2001:DB8::1`` in the records matches
    ``2001:db8:0::1`` in a log. User agents compare exactly.
    """
    db.execute("drop table if exists temp.rule_session_sigs")
    db.execute(
        "create temp table rule_session_sigs (sig_id integer, user_id text, primary key (sig_id, user_id))"
    )
    db.execute("drop table if exists temp.rule_session_keys")
    db.execute("create temp table rule_session_keys (ip text, ua text, user_id text)")
    db.conn.executemany(
        "insert into temp.rule_session_keys values (?, ?, ?)",
        [(_canonical_ip(ip), ua, user) for user, ip, ua in db.execute("select user_id, ip, user_agent from sessions")],
    )
    # IPv6 addresses the logs wrote in a non-canonical form, by canonical form.
    db.execute("drop table if exists temp.rule_ip_canonical")
    db.execute("create temp table rule_ip_canonical (ip text, ip_id integer)")
    db.conn.executemany(
        "insert into temp.rule_ip_canonical values (?, ?)",
        [
            (canonical, ip_id)
            for ip_id, ip in db.execute("select id, ip from ips where version = 6")
            if (canonical := _canonical_ip(ip)) != ip
        ],
    )
    for addresses in ("select id, ip from ips", "select ip_id as id, ip from temp.rule_ip_canonical"):
        db.execute(
            f"""insert or ignore into temp.rule_session_sigs (sig_id, user_id)
            select g.id, k.user_id
            from temp.rule_session_keys k
            join ({addresses}) i on i.ip = k.ip
            join user_agents a on a.ua = k.ua
            join signatures g on g.ip_id = i.id and g.ua_id = a.id"""
        )


def ms_rows(db: sqlite_utils.Database, sql: str, time_columns: tuple[int, ...]) -> list[tuple]:
    """Rows of a records query with the given columns turned into epoch milliseconds."""
    rows = []
    for row in db.execute(sql):
        row = list(row)
        for i in time_columns:
            row[i] = None if row[i] in (None, "") else parse_time(row[i])
        rows.append(tuple(row))
    return rows


def build_pair_windows(db: sqlite_utils.Database, table: str, select: str) -> None:
    """temp.<table>: the time windows (from_ms, to_ms) in which a select's (sig_id, org_id) pairs are explained."""
    db.execute(f"drop table if exists temp.{table}")
    db.execute(f"create temp table {table} as select distinct sig_id, org_id, from_ms, to_ms from ({select})")
    db.execute(f"create index temp.{table}_pair on {table}(sig_id, org_id)")


def in_pair_window(table: str, open_start: bool) -> str:
    """The condition that request s falls in a window of temp.<table> for its pair
    (from_ms <= ts < to_ms; a null to_ms is open, a null from_ms too when open_start).

    The pairs narrow the scan to their key ranges of scoped; the windows then test the time.
    """
    start = "(w.from_ms is null or w.from_ms <= s.ts)" if open_start else "w.from_ms <= s.ts"
    return f"""(s.sig_id, s.org_id) in (select sig_id, org_id from temp.{table})
    and exists (
        select 1 from temp.{table} w
        where w.sig_id = s.sig_id and w.org_id = s.org_id
          and {start} and (w.to_ms is null or s.ts < w.to_ms)
    )"""


from . import member_current, member_historical, partner, post_patch_valid, staff, token_owner, verdict  # noqa: E402

BUILTINS = [staff, member_current, member_historical, partner, post_patch_valid, token_owner]
# Rules that are not applied or undone by name: the verdict rule follows the verdicts.
SYSTEM = [verdict]
REGISTRY = {rule.NAME: rule for rule in BUILTINS + SYSTEM}


class UnknownRule(ForensicsError, LookupError):
    """A rule name that is neither built in nor saved as a custom rule."""




def ensure_rules(db: sqlite_utils.Database) -> None:
    """Make sure every built-in rule has its row in the rules table."""
    db.conn.executemany(
        "insert or ignore into rules (name, bit, builtin, description) values (?, ?, 1, ?)",
        [(r.NAME, r.BIT, r.DESCRIPTION) for r in BUILTINS + SYSTEM],
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
    with _bulk_cache(db), db.atomic():
        if sigs:
            db.execute(f"update scoped set explained = 0 where sig_id in ({sigs}) and explained != 0")
        else:
            db.execute("update scoped set explained = 0 where explained != 0")
        for name in applied_names(db):
            if name in rules:
                _set_bits(db, rules[name], restrict)
        refresh_unexplained(db, sigs)
        refresh_waterfall(db)


def _unexplained_total(db) -> int:
    return db.execute("select coalesce(sum(unexplained), 0) from sig_org").fetchone()[0]


def _record(
    db, rule: str, action: str, actor: str | None, count: int | None, changes: list, detail: str | None = None
) -> None:
    db.execute(
        """insert into rule_ledger (rule, action, actor, at, requests_explained, orgs_changed, detail)
        values (?, ?, ?, ?, ?, ?, ?)""",
        [rule, action, actor, utcnow(), count, json.dumps(changes), detail],
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


def _statuses_of(db: sqlite_utils.Database, orgs_sql: str) -> dict[str, str]:
    """org_id -> status for the orgs a SQL select names (only orgs with in-scope requests),
    from org_stats, which every change of unexplained counts keeps current."""
    return dict(
        db.execute(f"select org_id, {aggregates.org_status_sql()} from org_stats where org_id in ({orgs_sql})")
    )


def _moved(db: sqlite_utils.Database, sign: int) -> tuple[str, dict]:
    """Move the timeline by temp.rule_new, the requests a rule change (un)explains
    per (signature, org, day), and sum them per pair into temp.rule_delta.

    Returns:
        a select of the orgs touched, and their statuses before the change.
    """
    db.execute("drop table if exists temp.rule_delta")
    db.execute(
        """create temp table rule_delta as
        select sig_id, org_id, sum(n) as n from temp.rule_new group by sig_id, org_id"""
    )
    touched = "select distinct org_id from temp.rule_delta"
    before = _statuses_of(db, touched)
    aggregates.move_days(db, "select org_id, day, sum(n) as n from temp.rule_new group by 1, 2", sign)
    return touched, before


def _apply_delta(db: sqlite_utils.Database, sign: int) -> int:
    """Move temp.rule_delta's counts into the aggregates; returns the requests moved."""
    return sign * aggregates.move_unexplained(
        db, f"select sig_id, org_id, {'' if sign > 0 else '-'}n as n from temp.rule_delta"
    )


def _stored_waterfall_is_current(db: sqlite_utils.Database, applied: list[str]) -> bool:
    if not _has_table(db, "rule_waterfall"):
        return False
    stored = [r[0] for r in db.execute("select rule from rule_waterfall order by position")]
    return stored == [None] + applied


# Page cache for the bulk writes of apply, undo and reevaluate (KiB, negative as in
# PRAGMA cache_size): at millions of in-scope requests, scoped and its indexes must
# stay in memory while a rule rewrites them; the connection's own size is restored.
BULK_CACHE_KIB = 512 * 1024


@contextlib.contextmanager
def _bulk_cache(db: sqlite_utils.Database):
    previous = db.execute("pragma cache_size").fetchone()[0]
    if previous >= 0 or -previous < BULK_CACHE_KIB:
        db.execute(f"pragma cache_size = {-BULK_CACHE_KIB}")
    try:
        yield
    finally:
        db.execute(f"pragma cache_size = {int(previous)}")


def apply(db: sqlite_utils.Database, name: str, actor: str | None = None) -> dict:
    """Apply one rule; returns {rule, requests_explained, orgs_changed, already}.

    The requests it newly explains are counted per (signature, org, day) and moved
    in sig_org and the timeline, and only the orgs they touch can change status;
    the bit is then set over the rule's key ranges of scoped, in order.
    """
    with _bulk_cache(db), db.atomic():
        rules = load_rules(db)
        if name not in rules:
            raise UnknownRule(f"Unknown rule {name!r}; the rules are: {', '.join(rules)}.")
        applied = applied_names(db)
        if name in applied:
            return {"rule": name, "requests_explained": 0, "orgs_changed": [], "already": True}
        rule = rules[name]
        params = _prepare(db, rule)
        # The requests it newly explains, counted per (signature, org, day): enough
        # to move sig_org, the timeline and the statuses without a second look.
        db.execute("drop table if exists temp.rule_new")
        db.execute(
            f"""create temp table rule_new as
            select s.sig_id, s.org_id, s.ts / 86400000 as day, count(*) as n
            from scoped s where ({rule.match_sql()}) and s.explained = 0
            group by 1, 2, 3""",
            params,
        )
        touched, before = _moved(db, -1)
        db.execute(
            f"update scoped as s set explained = explained | :rule_bit where ({rule.match_sql()})",
            dict(params, rule_bit=rule.BIT),
        )
        explained = _apply_delta(db, -1)
        seq = db.execute("select coalesce(max(applied_seq), 0) + 1 from rules").fetchone()[0]
        db.execute("update rules set applied = 1, applied_seq = ? where name = ?", [seq, name])
        changes = _changes(before, _statuses_of(db, touched))
        _record(db, name, "apply", actor, explained, changes)
        if _stored_waterfall_is_current(db, applied):
            last = db.execute("select max(position), remaining from rule_waterfall").fetchone()
            db.execute(
                "insert into rule_waterfall (position, rule, remaining, explained, computed_at) values (?, ?, ?, ?, ?)",
                [last[0] + 1, name, last[1] - explained, explained, utcnow()],
            )
        else:
            refresh_waterfall(db)
        db.execute("drop table temp.rule_delta")
        db.execute("drop table temp.rule_new")
    return {"rule": name, "requests_explained": explained, "orgs_changed": changes, "already": False}


def undo(db: sqlite_utils.Database, name: str, actor: str | None = None) -> dict:
    """Undo one applied rule; returns {rule, requests_unexplained, orgs_changed, already}."""
    with _bulk_cache(db), db.atomic():
        rules = load_rules(db)
        if name not in rules:
            raise UnknownRule(f"Unknown rule {name!r}; the rules are: {', '.join(rules)}.")
        applied = applied_names(db)
        if name not in applied:
            return {"rule": name, "requests_unexplained": 0, "orgs_changed": [], "already": True}
        bit = rules[name].BIT
        # The requests this rule alone explains become unexplained: counted per
        # (signature, org, day) in one scan, then the bit goes in a second.
        db.execute("drop table if exists temp.rule_new")
        db.execute(
            """create temp table rule_new as
            select sig_id, org_id, ts / 86400000 as day, count(*) as n
            from scoped where explained = :bit group by 1, 2, 3""",
            {"bit": bit},
        )
        touched, before = _moved(db, +1)
        db.execute("update scoped set explained = explained & ~:bit where explained & :bit != 0", {"bit": bit})
        unexplained = _apply_delta(db, +1)
        db.execute("update rules set applied = 0, applied_seq = null where name = ?", [name])
        changes = _changes(before, _statuses_of(db, touched))
        _record(db, name, "undo", actor, unexplained, changes)
        if applied[-1] == name and _stored_waterfall_is_current(db, applied):
            db.execute("delete from rule_waterfall where position = (select max(position) from rule_waterfall)")
        else:
            refresh_waterfall(db)
        db.execute("drop table temp.rule_delta")
        db.execute("drop table temp.rule_new")
    return {"rule": name, "requests_unexplained": unexplained, "orgs_changed": changes, "already": False}


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
                "bit": rule.BIT,
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


def _applied_bits(db: sqlite_utils.Database) -> list[tuple[str, int]]:
    return [tuple(r) for r in db.execute("select name, bit from rules where applied = 1 order by applied_seq")]


def compute_waterfall(db: sqlite_utils.Database, restrict: str = "1", restrict_params: dict | None = None) -> list[dict]:
    """In scope, then the requests still unexplained after each applied rule and all before it.

    Args:
        restrict: a condition on scoped ``s`` limiting the count to some of its key ranges.

    Returns:
        one dict per step (rule None for the in-scope step) with remaining (requests
        still unexplained) and explained (requests that step removed); one scan of scoped.
    """
    applied = _applied_bits(db)
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


def _has_table(db: sqlite_utils.Database, name: str) -> bool:
    return bool(db.execute("select 1 from sqlite_master where type = 'table' and name = ?", [name]).fetchone())


def refresh_waterfall(db: sqlite_utils.Database) -> None:
    """Store the waterfall in rule_waterfall, so the rules page never scans scoped."""
    if not _has_table(db, "rule_waterfall"):
        return
    now = utcnow()
    db.execute("delete from rule_waterfall")
    db.conn.executemany(
        "insert into rule_waterfall (position, rule, remaining, explained, computed_at) values (?, ?, ?, ?, ?)",
        [(i, s["rule"], s["remaining"], s["explained"], now) for i, s in enumerate(compute_waterfall(db))],
    )


def waterfall(db: sqlite_utils.Database) -> list[dict]:
    """The stored waterfall when it matches the current state (read-only), else computed now."""
    if _has_table(db, "rule_waterfall"):
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
    return compute_waterfall(db)


def rules_breakdown(db: sqlite_utils.Database, org_id: str | None = None) -> dict[str, dict[str, int]]:
    """In-scope requests each applied rule explains, per org.

    A request explained by several rules counts for each of them.

    Args:
        org_id: one org only; None for every org.

    Returns:
        {org_id: {rule_name: requests}} in applied order; rules explaining nothing,
        and orgs with nothing explained, are left out.
    """
    applied = _applied_bits(db)
    if not applied:
        return {}
    params = {f"b{i}": bit for i, (_, bit) in enumerate(applied)}
    columns = ", ".join(f"sum((s.explained & :b{i}) != 0)" for i in range(len(applied)))
    if org_id is None:
        source = "scoped s"
    else:  # the org's pairs, then each pair's range of scoped's key
        source = "sig_org so cross join scoped s on s.sig_id = so.sig_id and s.org_id = so.org_id and so.org_id = :org"
        params["org"] = str(org_id)
    result = {}
    for org, *counts in db.execute(
        f"select s.org_id, {columns} from {source} where s.explained != 0 group by s.org_id", params
    ):
        explained = {name: n for (name, _), n in zip(applied, counts) if n}
        if explained:
            result[org] = explained
    return result


def _adjust_waterfall(db: sqlite_utils.Database, before: list[dict], restrict: str, restrict_params: dict) -> None:
    """Move the stored waterfall by what changed within some key ranges of scoped:
    ``before`` is compute_waterfall() of those ranges before the change."""
    after = compute_waterfall(db, restrict, restrict_params)
    stored = [list(r) for r in db.execute("select position, remaining from rule_waterfall order by position")]
    for row, b, a in zip(stored, before, after):
        row[1] += a["remaining"] - b["remaining"]
    db.conn.executemany(
        "update rule_waterfall set remaining = ?, explained = ?, computed_at = ? where position = ?",
        [
            (remaining, None if i == 0 else stored[i - 1][1] - remaining, utcnow(), position)
            for i, (position, remaining) in enumerate(stored)
        ],
    )


def change_within(
    db: sqlite_utils.Database, name: str, restrict: str, restrict_params: dict,
    actor: str | None, action: str, detail: str | None = None,
) -> dict:
    """Bring one rule's explanations up to date within some key ranges of scoped, after
    the rule's own data changed there (a verdict made or withdrawn), applying the rule
    if it was not yet; recorded in the ledger as ``action``.

    Args:
        restrict: a condition on scoped ``s`` naming whole (signature[, org]) key ranges.

    Returns:
        {rule, requests_explained (negative: no longer explained), orgs_changed}.
    """
    with db.atomic():
        rule = load_rules(db)[name]
        applied = applied_names(db)
        waterfall_current = _stored_waterfall_is_current(db, applied)
        in_place = name in applied and waterfall_current
        before_steps = compute_waterfall(db, restrict, restrict_params) if in_place else None
        params = dict(_prepare(db, rule), **restrict_params, rule_bit=rule.BIT)
        match = f"({rule.match_sql()})"
        # Newly explained (no rule explained them), then newly unexplained (this rule alone did).
        db.execute("drop table if exists temp.rule_new")
        db.execute(
            f"""create temp table rule_new as
            select s.sig_id, s.org_id, s.ts / 86400000 as day,
                sum(case when s.explained = 0 then -1 else 1 end) as n
            from scoped s
            where ({restrict}) and (
                (s.explained = 0 and {match})
                or (s.explained = :rule_bit and not {match})
            )
            group by 1, 2, 3""",
            params,
        )
        touched, before = _moved(db, +1)
        db.execute(
            f"""update scoped as s set explained = case when {match}
                then explained | :rule_bit else explained & ~:rule_bit end
            where ({restrict}) and ((explained & :rule_bit) = 0) = {match}""",
            params,
        )
        moved = _apply_delta(db, +1)
        if name not in applied:
            seq = db.execute("select coalesce(max(applied_seq), 0) + 1 from rules").fetchone()[0]
            db.execute("update rules set applied = 1, applied_seq = ? where name = ?", [seq, name])
        changes = _changes(before, _statuses_of(db, touched))
        _record(db, name, action, actor, abs(moved), changes, detail)
        if in_place:
            _adjust_waterfall(db, before_steps, restrict, restrict_params)
        elif name not in applied and waterfall_current:
            last = db.execute("select max(position), remaining from rule_waterfall").fetchone()
            db.execute(
                "insert into rule_waterfall (position, rule, remaining, explained, computed_at) values (?, ?, ?, ?, ?)",
                [last[0] + 1, name, last[1] + moved, -moved, utcnow()],
            )
        else:
            refresh_waterfall(db)
        db.execute("drop table temp.rule_delta")
        db.execute("drop table temp.rule_new")
    return {"rule": name, "requests_explained": -moved, "orgs_changed": changes}
