"""Elimination rules (MODEL §3): a registry of rules and the engine that applies them.

A rule is a module (or, for custom rules, an object) with ``NAME``, ``BIT``,
``DESCRIPTION``, ``select_sql(restrict)`` returning a select of the ids of the
in-scope requests it explains, and optionally ``prepare(db)`` to build temporary
helper tables. An applied rule sets its bit in ``scoped.explained``; a request
is unexplained while that mask is 0. Applied rules are re-evaluated whenever
scope changes, so they explain later batches and record updates too.
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


from . import member_current, member_historical, partner, post_patch_valid, staff, token_owner  # noqa: E402

BUILTINS = [staff, member_current, member_historical, partner, post_patch_valid, token_owner]
REGISTRY = {rule.NAME: rule for rule in BUILTINS}


class UnknownRule(ForensicsError, LookupError):
    """A rule name that is neither built in nor saved as a custom rule."""




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
    params = dict(getattr(rule, "PARAMS", None) or {}, rule_bit=rule.BIT)
    db.execute(
        f"update scoped set explained = explained | :rule_bit where request_id in ({rule.select_sql(restrict)})",
        params,
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
    unknown = [n for n in names if n not in rules]
    if unknown or not names:
        raise UnknownRule(
            f"Unknown rule {', '.join(repr(n) for n in unknown) or repr(spec)}; "
            f"the rules are: {', '.join(rules)}."
        )
    return names


def _statuses_of(db: sqlite_utils.Database, orgs_sql: str) -> dict[str, str]:
    """org_id -> status for the orgs a SQL select names (only orgs with in-scope requests)."""
    from ..status import ORG_FIGURES, org_statuses

    # The same figures as status.ORG_FIGURES, grouped over those orgs' rows only
    # (SQLite does not push an IN (subquery) filter into an aggregate subquery).
    if ORG_FIGURES.count("group by so.org_id") != 1:  # its shape changed: read every org
        wanted = {row[0] for row in db.execute(orgs_sql)}
        return {org: status for org, status in org_statuses(db).items() if org in wanted}
    sql = ORG_FIGURES.replace("group by so.org_id", f"where so.org_id in ({orgs_sql})\ngroup by so.org_id")
    return {row[0]: row[4] for row in db.execute(sql)}


def _apply_delta(db: sqlite_utils.Database, sign: int) -> int:
    """Move temp.rule_delta's counts into sig_org.unexplained; returns the requests moved."""
    db.execute(
        f"""update sig_org set unexplained = sig_org.unexplained {'+' if sign > 0 else '-'} d.n
        from temp.rule_delta d where sig_org.sig_id = d.sig_id and sig_org.org_id = d.org_id"""
    )
    return db.execute("select coalesce(sum(n), 0) from temp.rule_delta").fetchone()[0]


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

    The rule's matches go to a temporary table once; the requests it newly explains
    are counted per (signature, org) and moved in sig_org, and only the orgs they
    touch can change status, so the cost follows what the rule matches.
    """
    with _bulk_cache(db), db.atomic():
        rules = load_rules(db)
        if name not in rules:
            raise UnknownRule(f"Unknown rule {name!r}; the rules are: {', '.join(rules)}.")
        applied = applied_names(db)
        if name in applied:
            return {"rule": name, "requests_explained": 0, "orgs_changed": [], "already": True}
        rule = rules[name]
        prepare = getattr(rule, "prepare", None)
        if prepare is not None:
            prepare(db)
        # Keyed like the covering index scoped_sig, so most rules fill it in order.
        db.execute("drop table if exists temp.rule_hits")
        db.execute(
            """create temp table rule_hits (sig_id integer, org_id text, request_id integer,
            explained integer, primary key (sig_id, org_id, request_id)) without rowid"""
        )
        db.execute(
            f"""insert or ignore into temp.rule_hits (sig_id, org_id, request_id, explained)
            {rule.select_sql('', 's.sig_id, s.org_id, s.request_id, s.explained')}""",
            dict(getattr(rule, "PARAMS", None) or {}),
        )
        db.execute("drop table if exists temp.rule_delta")
        db.execute(
            """create temp table rule_delta as
            select sig_id, org_id, count(*) as n from temp.rule_hits
            where explained = 0 group by sig_id, org_id"""
        )
        touched = "select distinct org_id from temp.rule_delta"
        before = _statuses_of(db, touched)
        aggregates.move_days(
            db,
            """select s.org_id, s.ts / 86400000 as day, count(*) as n from temp.rule_hits h
            join scoped s on s.request_id = h.request_id where h.explained = 0 group by 1, 2""",
            -1,
        )
        db.execute(
            "update scoped set explained = explained | :bit where request_id in (select request_id from temp.rule_hits)",
            {"bit": rule.BIT},
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
        db.execute("drop table temp.rule_hits")
        db.execute("drop table temp.rule_delta")
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
        # One scan finds the requests this rule explains; everything else is
        # computed from them: those it explained alone become unexplained.
        db.execute("drop table if exists temp.rule_undo")
        db.execute(
            """create temp table rule_undo as
            select request_id, sig_id, org_id, ts, explained from scoped where explained & :bit != 0""",
            {"bit": bit},
        )
        db.execute("drop table if exists temp.rule_delta")
        db.execute(
            """create temp table rule_delta as
            select sig_id, org_id, count(*) as n from temp.rule_undo where explained = :bit
            group by sig_id, org_id""",
            {"bit": bit},
        )
        touched = "select distinct org_id from temp.rule_delta"
        before = _statuses_of(db, touched)
        aggregates.move_days(
            db,
            f"""select org_id, ts / 86400000 as day, count(*) as n from temp.rule_undo
            where explained = {int(bit)} group by 1, 2""",
            +1,
        )
        db.execute(
            """update scoped set explained = explained & ~:bit
            where request_id in (select request_id from temp.rule_undo)""",
            {"bit": bit},
        )
        unexplained = _apply_delta(db, +1)
        db.execute("update rules set applied = 0, applied_seq = null where name = ?", [name])
        changes = _changes(before, _statuses_of(db, touched))
        _record(db, name, "undo", actor, unexplained, changes)
        if applied[-1] == name and _stored_waterfall_is_current(db, applied):
            db.execute("delete from rule_waterfall where position = (select max(position) from rule_waterfall)")
        else:
            refresh_waterfall(db)
        db.execute("drop table temp.rule_delta")
        db.execute("drop table temp.rule_undo")
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


def compute_waterfall(db: sqlite_utils.Database) -> list[dict]:
    """In scope, then the requests still unexplained after each applied rule and all before it.

    Returns:
        one dict per step (rule None for the in-scope step) with remaining (requests
        still unexplained) and explained (requests that step removed); one scan of scoped.
    """
    applied = _applied_bits(db)
    params, mask, columns = {}, 0, ["count(*)"]
    for i, (_, bit) in enumerate(applied):
        mask |= bit
        params[f"m{i}"] = mask
        columns.append(f"coalesce(sum((explained & :m{i}) = 0), 0)")
    counts = db.execute(f"select {', '.join(columns)} from scoped", params).fetchone()
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
    columns = ", ".join(f"sum((explained & :b{i}) != 0)" for i in range(len(applied)))
    where = "explained != 0"
    if org_id is not None:
        where += " and org_id = :org"
        params["org"] = str(org_id)
    result = {}
    for org, *counts in db.execute(f"select org_id, {columns} from scoped where {where} group by org_id", params):
        explained = {name: n for (name, _), n in zip(applied, counts) if n}
        if explained:
            result[org] = explained
    return result
