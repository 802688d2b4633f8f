"""Pre-aggregated figures for the workbench pages, so that no page groups millions of requests.

Four tables, all derived (they can be dropped and rebuilt with :func:`refresh`):

- ``sig_stats``: one row per signature: every stored request of it (in scope or
  not), its 2xx count, first and last time, the URI of its latest request, its
  activity at or after ``patched_at``, its in-scope reach and unexplained requests.
- ``pivot_groups``: the same figures summed per group for every grouping of the IP
  and user-agent pages (``ip``, ``cidr24``, ``cidr16``, ``asn``, ``provider``,
  ``rdns``, ``country``, ``network``, ``raw``, ``family``, ``family_major``, ``os``,
  ``kind``), with distinct orgs, signatures, addresses and user agents, the
  requests of each user-agent kind, the top user agent and the latest URI.
- ``org_stats``: per org with in-scope requests, the figures its status comes from.
- ``scope_days``: in-scope and unexplained requests per (org, UTC day).

:func:`refresh` recomputes them after a log batch or a scope recompute, for the
signatures given or for all. Rules change only ``scoped.explained``; they hand
the per-(signature, org) change in unexplained requests to :func:`move_unexplained`,
which carries it into every aggregate as exact deltas, set-wise, so applying or
undoing a rule keeps every page current without a refresh.
"""

from __future__ import annotations

import sqlite_utils

from . import indexes
from .sorting import small_sort_runs

# grouping -> (GROUP BY expression, key values) over ips i and user_agents a.
GROUPINGS = {
    "ip": ("i.id", ("i.ip",)),
    "cidr24": ("i.prefix", ("i.prefix",)),
    "cidr16": ("i.prefix16", ("i.prefix16",)),
    "asn": ("i.asn", ("i.asn",)),
    "provider": ("i.provider", ("i.provider",)),
    "rdns": ("i.rdns", ("i.rdns",)),
    "country": ("i.country", ("i.country",)),
    "network": ("i.network", ("i.network",)),
    "raw": ("a.id", ("a.ua",)),
    "family": ("a.family", ("a.family",)),
    "family_major": ("a.family, a.major", ("a.family", "a.major")),
    "os": ("a.os", ("a.os",)),
    "kind": ("a.kind", ("a.kind",)),
}
IP_GROUPINGS = ("ip", "cidr24", "cidr16", "asn", "provider", "rdns", "country", "network")
# The groupings of the owner columns ipinfo.py fills (MODEL §7).
IP_OWNER_GROUPINGS = ("asn", "provider", "rdns", "country", "network")
KINDS = ("browser", "library", "bot", "unknown")

# The values a grouping's stored key (pivot_groups.gkey) is made of, when not its
# key values: a raw user agent is an attacker's string of any length, so its group
# is keyed by the agent's id and the text is stored once, in k1.
GKEYS = {"raw": ("a.id",)}


def gkey_sql(grouping: str) -> str:
    """The SQL expression of a grouping's stored key, over ips i and user_agents a."""
    return f"json_array({', '.join(GKEYS.get(grouping, GROUPINGS[grouping][1]))})"


# A signature's request figures over some requests r; :patched is null before an incident.
SIG_FIGURES = """
select r.sig_id, count(*) as requests,
    coalesce(sum(r.status between 200 and 299), 0) as ok,  -- all statuses null: sum() is null
    min(r.ts) as first_ts, max(r.ts) as last_ts,
    coalesce(sum(r.ts >= :patched), 0) as after_patch,
    coalesce(sum(r.ts >= :patched and r.status between 200 and 299), 0) as after_patch_ok
from {requests} group by r.sig_id
"""

# Every figure but the latest URI, per signature.
SIG_STATS = """
insert into sig_stats (sig_id, ip_id, ua_id, requests, ok, first_ts, last_ts,
    after_patch, after_patch_ok, in_scope, orgs, cross_tenant, unexplained)
select a.sig_id, g.ip_id, g.ua_id, a.requests, a.ok, a.first_ts, a.last_ts,
    a.after_patch, a.after_patch_ok,
    coalesce(ss.requests, 0), coalesce(ss.orgs, 0), coalesce(ss.cross_tenant, 0),
    coalesce((select sum(so.unexplained) from sig_org so where so.sig_id = a.sig_id), 0)
from ({figures}) a
join signatures g on g.id = a.sig_id
left join signature_scope ss on ss.sig_id = a.sig_id
"""

# A log batch's requests added to sig_stats: it only adds requests, so a signature's
# counts grow by the batch's, its times widen; its scope figures are read again (the
# scope and the explanations of the batch's signatures were just brought up to date).
ADD_SIG_STATS = SIG_STATS + """where true
on conflict (sig_id) do update set
    requests = requests + excluded.requests, ok = ok + excluded.ok,
    first_ts = min(first_ts, excluded.first_ts), last_ts = max(last_ts, excluded.last_ts),
    after_patch = after_patch + excluded.after_patch, after_patch_ok = after_patch_ok + excluded.after_patch_ok,
    in_scope = excluded.in_scope, orgs = excluded.orgs, cross_tenant = excluded.cross_tenant,
    unexplained = excluded.unexplained
"""

# The URI of each signature's latest request (of those at its last time, the last
# stored): a probe of the few requests at that time, not a pass over all of them.
LAST_URI = """
update sig_stats set last_uri_id = (
    select r.uri_id from {requests}
    where r.ts = sig_stats.last_ts and r.sig_id = sig_stats.sig_id
    order by r.id desc limit 1
) {where}
"""

SIG_JOIN = "sig_stats st join ips i on i.id = st.ip_id join user_agents a on a.id = st.ua_id"

GROUP_ROWS = """
insert into pivot_groups (grouping, gkey, k1, k2, requests, in_scope, unexplained, signatures,
    ips, user_agents, first_ts, last_ts, browser, library, bot, unknown)
select :grouping, {gkey}, {k1}, {k2},
    sum(st.requests), sum(st.in_scope), sum(st.unexplained), count(*),
    count(distinct st.ip_id), count(distinct st.ua_id), min(st.first_ts), max(st.last_ts),
    total(case when a.kind = 'browser' then st.requests end),
    total(case when a.kind = 'library' then st.requests end),
    total(case when a.kind = 'bot' then st.requests end),
    total(case when a.kind = 'unknown' then st.requests end)
from {sig_join} {where}
group by {group_by}
"""

GROUP_ORGS = """
update pivot_groups set orgs = x.orgs
from (
    select {gkey} as gkey, count(distinct so.org_id) as orgs
    from {sig_join} join sig_org so on so.sig_id = st.sig_id {where}
    group by {group_by}
) x
where pivot_groups.grouping = :grouping and pivot_groups.gkey = x.gkey
"""

# The latest URI of a group (bare column of max), and its user agent with most requests.
GROUP_LAST_URI = """
update pivot_groups set last_uri_id = x.last_uri_id
from (
    select {gkey} as gkey, st.last_uri_id, max(st.last_ts)
    from {sig_join} {where} group by {group_by}
) x
where pivot_groups.grouping = :grouping and pivot_groups.gkey = x.gkey
"""

GROUP_TOP_UA = """
update pivot_groups set top_ua_id = x.ua_id
from (
    select gkey, ua_id from (
        select {gkey} as gkey, st.ua_id,
            row_number() over (partition by {group_by} order by sum(st.requests) desc, st.ua_id) as n
        from {sig_join} {where} group by {group_by}, st.ua_id
    ) where n = 1
) x
where pivot_groups.grouping = :grouping and pivot_groups.gkey = x.gkey
"""

ORG_STATS = """
insert into org_stats (org_id, in_scope, unexplained, signatures, unexplained_signatures,
    cross_tenant_signatures, unexplained_cross_tenant, first_ts, last_ts)
select so.org_id, sum(so.requests), sum(so.unexplained), count(*), sum(so.unexplained > 0),
    sum(ss.cross_tenant), sum(so.unexplained > 0 and ss.cross_tenant), min(so.first_ts), max(so.last_ts)
from sig_org so join signature_scope ss on ss.sig_id = so.sig_id
{where}
group by so.org_id
"""

SCOPE_DAYS = """
insert into scope_days (org_id, day, in_scope, unexplained)
select s.org_id, s.ts / 86400000, count(*), sum(s.explained = 0) from scoped s
{join}
group by 1, 2
"""


def _set_last_uris(db: sqlite_utils.Database, where: str) -> None:
    """sig_stats.last_uri_id of the signatures ``where`` picks (through requests_ts,
    or the plain table while a first import defers it)."""
    db.execute(LAST_URI.format(where=where, requests=indexes.requests_through(db.conn, "requests_ts")))


def patched_ms(conn) -> int | None:
    """The incident's patch time (epoch ms), which the after-patch figures count from; None without one."""
    row = conn.execute("select patched_ms from incident where id = 1").fetchone()
    return row[0] if row else None


def refresh(db: sqlite_utils.Database, sigs_sql: str | None = None, figures: str | None = None) -> None:
    """Recompute the page aggregates.

    Args:
        db: the forensic database.
        sigs_sql: a SQL select of the sig_ids whose requests or scope changed (built
            by the caller from trusted SQL, like ``scope.refresh_signatures``); the
            groups, orgs and days they touch are recomputed. None recomputes all.
        figures: with sigs_sql None, a select of every request's SIG_FIGURES already
            counted (:mod:`.batch_figures`); None counts them here.
    """
    params = {"patched": patched_ms(db)}
    with db.atomic():
        if sigs_sql is None:
            with small_sort_runs(db.conn):
                for table in ("sig_stats", "pivot_groups", "org_stats", "scope_days"):
                    db.execute(f"delete from {table}")
                # Every request: one pass in table order and a sort beats a walk of the
                # requests_sig index, which visits the table in random order (2× at 1M rows).
                every = figures or SIG_FIGURES.format(requests="requests r not indexed")
                db.execute(SIG_STATS.format(figures=every), params)
                _set_last_uris(db, "")
                for grouping in GROUPINGS:
                    refresh_grouping(db, grouping, None)
                db.execute(ORG_STATS.format(where=""))
                db.execute(SCOPE_DAYS.format(join=""))
                db.execute(
                    """insert or replace into derived_upto (id, request_id)
                    select 1, max(id) from requests having max(id) is not null"""
                )
            return
        db.execute("drop table if exists temp.aggregate_sigs")
        db.execute(f"create temp table aggregate_sigs as select distinct sig_id from ({sigs_sql})")
        where = "where sig_id in (select sig_id from temp.aggregate_sigs)"
        db.execute(f"delete from sig_stats {where}")
        db.execute(SIG_STATS.format(figures=SIG_FIGURES.format(requests=f"requests r {where}")), params)
        _set_last_uris(db, where)
        _refresh_above_signatures(db)


AGGREGATE_SIGS = "select sig_id from temp.aggregate_sigs"


def _refresh_above_signatures(db: sqlite_utils.Database, scope_sigs: str | None = AGGREGATE_SIGS) -> None:
    """The groups that hold the signatures of temp.aggregate_sigs (whose sig_stats rows
    are current), and the orgs and days that hold those of ``scope_sigs`` (a SQL select
    of the sig_ids whose scoped rows, sig_org or signature_scope changed; None: none
    did), recomputed; drops temp.aggregate_sigs."""
    for grouping in GROUPINGS:
        refresh_grouping(db, grouping, AGGREGATE_SIGS)
    if scope_sigs is not None:
        _refresh_orgs_and_days(db, f"where sig_id in ({scope_sigs})")
    db.execute("drop table temp.aggregate_sigs")


def _refresh_orgs_and_days(db: sqlite_utils.Database, where: str) -> None:
    """org_stats and scope_days of the orgs and (org, day) pairs the signatures ``where``
    picks (a condition on sig_id) reach with their in-scope requests, recomputed."""
    db.execute("drop table if exists temp.aggregate_orgs")
    db.execute(
        f"create temp table aggregate_orgs as select distinct org_id from sig_org {where}"
    )
    db.execute("delete from org_stats where org_id in (select org_id from temp.aggregate_orgs)")
    db.execute(ORG_STATS.format(where="where so.org_id in (select org_id from temp.aggregate_orgs)"))
    db.execute("drop table if exists temp.aggregate_days")
    db.execute(
        f"""create temp table aggregate_days as
        select distinct org_id, ts / 86400000 as day from scoped {where}"""
    )
    db.execute(
        """delete from scope_days where (org_id, day) in
        (select org_id, day from temp.aggregate_days)"""
    )
    db.execute(
        SCOPE_DAYS.format(
            join="""join temp.aggregate_days x on x.org_id = s.org_id
            and s.ts >= x.day * 86400000 and s.ts < (x.day + 1) * 86400000"""
        )
    )
    for table in ("aggregate_orgs", "aggregate_days"):
        db.execute(f"drop table temp.{table}")


def refresh_days(db: sqlite_utils.Database) -> None:
    """Recount every (org, day) of the timelines (after rules were re-evaluated wholesale)."""
    db.execute("delete from scope_days")
    db.execute(SCOPE_DAYS.format(join=""))


def move_days(db: sqlite_utils.Database, delta_sql: str, sign: int) -> None:
    """Move the unexplained counts of a rule's (org_id, day, n) delta in the timelines.

    Rules call this with the requests they newly explain (sign -1) or stop
    explaining (+1): one update per (org, day), not one per request.
    """
    db.execute(
        f"""update scope_days set unexplained = scope_days.unexplained {'+' if sign > 0 else '-'} d.n
        from ({delta_sql}) d where scope_days.org_id = d.org_id and scope_days.day = d.day"""
    )


def move_unexplained(db: sqlite_utils.Database, delta_sql: str) -> int:
    """Move unexplained counts by a (sig_id, org_id, n) delta, n signed, in every aggregate.

    One statement per table (and per grouping), whatever the number of pairs: the
    pairs' old and new counts give the orgs' unexplained signatures, the signatures'
    sums give the groups' figures.

    Returns:
        the sum of n.
    """
    db.execute("drop table if exists temp.unexplained_moves")
    db.execute(
        f"""create temp table unexplained_moves as
        select so.sig_id, so.org_id, so.unexplained as old, so.unexplained + d.n as new,
            coalesce(ss.cross_tenant, 0) as cross_tenant
        from ({delta_sql}) d
        join sig_org so on so.sig_id = d.sig_id and so.org_id = d.org_id
        left join signature_scope ss on ss.sig_id = d.sig_id
        where d.n != 0"""
    )
    db.execute(
        """update sig_org set unexplained = m.new from temp.unexplained_moves m
        where sig_org.sig_id = m.sig_id and sig_org.org_id = m.org_id"""
    )
    db.execute(
        """update org_stats set
            unexplained = org_stats.unexplained + m.n,
            unexplained_signatures = org_stats.unexplained_signatures + m.signatures,
            unexplained_cross_tenant = org_stats.unexplained_cross_tenant + m.cross_tenant
        from (
            select org_id, sum(new - old) as n, sum((new > 0) - (old > 0)) as signatures,
                sum(((new > 0) - (old > 0)) * cross_tenant) as cross_tenant
            from temp.unexplained_moves group by org_id
        ) m where org_stats.org_id = m.org_id"""
    )
    db.execute("drop table if exists temp.unexplained_sigs")
    db.execute(
        """create temp table unexplained_sigs as select sig_id, sum(new - old) as n
        from temp.unexplained_moves group by sig_id"""
    )
    db.execute(
        """update sig_stats set unexplained = sig_stats.unexplained + m.n
        from temp.unexplained_sigs m where sig_stats.sig_id = m.sig_id"""
    )
    for grouping, (group_by, _) in GROUPINGS.items():
        db.execute(
            f"""update pivot_groups set unexplained = pivot_groups.unexplained + x.n
            from (
                select {gkey_sql(grouping)} as gkey, sum(m.n) as n
                from temp.unexplained_sigs m, {SIG_JOIN} where st.sig_id = m.sig_id
                group by {group_by}
            ) x
            where pivot_groups.grouping = :grouping and pivot_groups.gkey = x.gkey""",
            {"grouping": grouping},
        )
    moved = db.execute("select coalesce(sum(new - old), 0) from temp.unexplained_moves").fetchone()[0]
    db.execute("drop table temp.unexplained_moves")
    db.execute("drop table temp.unexplained_sigs")
    return moved


def refresh_grouping(db: sqlite_utils.Database, grouping: str, sigs_sql: str | None) -> None:
    """Recompute one grouping's rows: all, or those holding the given signatures."""
    group_by, keys = GROUPINGS[grouping]
    parts = {
        "keys": ", ".join(keys),
        "k1": keys[0],
        "k2": keys[1] if len(keys) > 1 else "null",
        "group_by": group_by,
        "sig_join": SIG_JOIN,
        "gkey": gkey_sql(grouping),
    }
    params = {"grouping": grouping}
    if sigs_sql is None:
        db.execute("delete from pivot_groups where grouping = :grouping", params)
        where = ""
    else:
        db.execute("drop table if exists temp.aggregate_keys")
        db.execute(
            f"""create temp table aggregate_keys as select distinct {parts['gkey']} as gkey
            from {SIG_JOIN} where st.sig_id in ({sigs_sql})"""
        )
        # Signatures that left a group (none do today: keys never change) are covered
        # by the full refresh of after_records.
        db.execute(
            """delete from pivot_groups where grouping = :grouping
            and gkey in (select gkey from temp.aggregate_keys)""",
            params,
        )
        # Reach the groups' signatures through the small ips/user_agents tables and the
        # sig_stats indexes on ip_id and ua_id.
        alias, table = ("i", "ips") if grouping in IP_GROUPINGS else ("a", "user_agents")
        where = (
            f"where {alias}.id in (select {alias}.id from {table} {alias}"
            f" where {parts['gkey']} in (select gkey from temp.aggregate_keys))"
        )
    for sql in (GROUP_ROWS, GROUP_ORGS, GROUP_LAST_URI, GROUP_TOP_UA):
        db.execute(sql.format(where=where, **parts), params)
    if sigs_sql is not None:
        db.execute("drop table temp.aggregate_keys")


def counted_already(db: sqlite_utils.Database, batch_id: int) -> bool:
    """Whether a full refresh counted some of an unfinished batch's requests (it ran
    while the batch was interrupted, or between its chunks): ``derived_upto`` keeps
    the last request id it counted. Then the batch's close must not add them again."""
    row = db.execute("select request_id from derived_upto").fetchone()
    if row is None:
        return False
    first = db.execute(
        f"select min(r.id) from {indexes.batch_requests(db.conn)} where r.batch_id = ?", [batch_id]
    ).fetchone()[0]
    return first is not None and first <= row[0]


def refresh_batch(db: sqlite_utils.Database, batch_id: int, scope_sigs: str | None, tally=None) -> None:
    """Bring the aggregates up to date after a log batch: only that batch's signatures.

    A batch only adds requests: its signatures' rows of sig_stats take the batch's
    figures added to theirs (the batch's requests are read, not all of theirs), then
    the groups that hold them are recomputed, and the orgs and days that hold the
    signatures ``scope_sigs`` selects: those whose scope the batch changed
    (scope.TOUCHED_SIGS; None when it changed none). org_stats and scope_days are
    made of scoped, sig_org and signature_scope alone, which change for those only
    (a batch outside the incident's window changes none). None of its requests may
    be counted already (see :func:`counted_already`). ``tally``: the import's
    :class:`.batch_figures.Tally`, whose figures a first import takes when they hold
    exactly its requests.
    """
    rows = indexes.batch_requests(db.conn)
    params = {"batch_id": int(batch_id), "patched": patched_ms(db)}
    if not db.execute(
        f"""select exists(select 1 from {rows} where r.batch_id < :batch_id)
        or exists(select 1 from {rows} where r.batch_id > :batch_id)""",
        params,
    ).fetchone()[0]:
        # The only batch with requests (a first import): every signature is its.
        figures = None
        if tally is not None:
            stored = db.execute(f"select count(*) from {rows} where r.batch_id = :batch_id", params).fetchone()[0]
            figures = tally.figures(db.conn, stored)
        refresh(db, figures=figures)
        return
    db.execute("drop table if exists temp.aggregate_batch")
    db.execute(
        "create temp table aggregate_batch as "
        + SIG_FIGURES.format(requests=f"{rows} where r.batch_id = :batch_id"),
        params,
    )
    touched, everything = db.execute(
        "select (select count(*) from temp.aggregate_batch), (select count(*) from signatures)"
    ).fetchone()
    if touched * 2 >= everything:
        # A batch that brought most signatures (a first import): one full pass beats
        # reaching every group through the incremental path (45 s against 113 s for a
        # million signatures).
        refresh(db)
    else:
        with db.atomic():
            db.execute(ADD_SIG_STATS.format(figures="select * from temp.aggregate_batch"), params)
            # A signature's latest request may be the batch's where the batch reached its last time.
            _set_last_uris(
                db,
                """where sig_id in (select a.sig_id from temp.aggregate_batch a
                join sig_stats s on s.sig_id = a.sig_id where s.last_ts = a.last_ts)""",
            )
            db.execute("drop table if exists temp.aggregate_sigs")
            db.execute("create temp table aggregate_sigs as select sig_id from temp.aggregate_batch")
            _refresh_above_signatures(db, scope_sigs)
    db.execute("drop table temp.aggregate_batch")


def after_records(db: sqlite_utils.Database, kind: str) -> None:
    """Account records changed: ip_info moves addresses between asn/provider/rdns groups."""
    if kind == "ip_info":
        refresh_ip_owner_groups(db)


def refresh_ip_owner_groups(db: sqlite_utils.Database) -> None:
    """The owner columns of ips changed (ip_info, an upgrade, PTR names): regroup them."""
    with db.atomic():
        for grouping in IP_OWNER_GROUPINGS:
            refresh_grouping(db, grouping, None)
