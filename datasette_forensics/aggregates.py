"""Pre-aggregated figures for the workbench pages, so that no page groups millions of requests.

``sig_stats`` holds one row per signature: its address and user agent ids, every
stored request of it (in scope or not), its 2xx count, its first and last time and
the URI of its latest request, its activity at or after ``patched_at``, and its
in-scope reach copied from ``signature_scope``. Rules never change these figures
(they change ``scoped.explained`` and ``sig_org.unexplained`` only), so a log batch
and a scope recompute are the only times to refresh them. Pages group these rows
(tens of thousands, not millions) by the columns of ``ips`` and ``user_agents``.
"""

from __future__ import annotations

import sqlite_utils

# Every figure but the latest URI, per signature; :patched is null before an incident.
SIG_STATS = """
insert into sig_stats (sig_id, ip_id, ua_id, requests, ok, first_ts, last_ts,
    after_patch, after_patch_ok, in_scope, orgs, cross_tenant)
select a.sig_id, g.ip_id, g.ua_id, a.requests, a.ok, a.first_ts, a.last_ts,
    a.after_patch, a.after_patch_ok,
    coalesce(ss.requests, 0), coalesce(ss.orgs, 0), coalesce(ss.cross_tenant, 0)
from (
    select sig_id, count(*) as requests,
        sum(status between 200 and 299) as ok,
        min(ts) as first_ts, max(ts) as last_ts,
        coalesce(sum(ts >= :patched), 0) as after_patch,
        coalesce(sum(ts >= :patched and status between 200 and 299), 0) as after_patch_ok
    from requests {where} group by sig_id
) a
join signatures g on g.id = a.sig_id
left join signature_scope ss on ss.sig_id = a.sig_id
"""

# The URI of each signature's latest request (SQLite takes the bare column from the max row).
LAST_URI = """
update sig_stats set last_uri_id = l.uri_id
from (select sig_id, uri_id, max(ts) from requests {where} group by sig_id) l
where l.sig_id = sig_stats.sig_id
"""


def refresh(db: sqlite_utils.Database, sigs_sql: str | None = None) -> None:
    """Recompute the per-signature aggregates.

    Args:
        db: the forensic database.
        sigs_sql: a SQL select of the sig_ids to refresh (built by the caller from
            trusted SQL, like ``scope.refresh_signatures``); None refreshes all.
    """
    where = f"where sig_id in ({sigs_sql})" if sigs_sql else ""
    row = db.execute("select patched_ms from incident where id = 1").fetchone()
    params = {"patched": row[0] if row else None}
    with db.atomic():
        db.execute(f"delete from sig_stats {where}")
        db.execute(SIG_STATS.format(where=where), params)
        db.execute(LAST_URI.format(where=where))


def refresh_batch(db: sqlite_utils.Database, batch_id: int) -> None:
    """Bring the aggregates up to date after a log batch: only that batch's signatures."""
    db.execute("drop table if exists temp.aggregate_sigs")
    db.execute(
        "create temp table aggregate_sigs as select distinct sig_id from requests where batch_id = ?",
        [int(batch_id)],
    )
    refresh(db, "select sig_id from temp.aggregate_sigs")
    db.execute("drop table temp.aggregate_sigs")
