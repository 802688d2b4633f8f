"""Scope (MODEL §2): which requests the incident puts in play, computed set-wise in SQL.

Keeps ``scoped``, ``post_patch_valid``, ``signature_scope``, ``sig_org`` (its
requests; unexplained counts are moved by :mod:`.explanations`), the paths'
scope columns and the records' time windows.

The expensive part, resolving each request's org, is split so that Python only
ever looks at distinct values: regexes run once per distinct path, record times
become integer windows once per record, and SQL joins do the rest. Scope is kept
current incrementally: a new log batch adds only its own requests; changed
account records rebuild the windows and recompute.
"""

from __future__ import annotations

import contextlib
import json
import re

import sqlite_utils

from ..timeparse import parse_time
from . import indexes

# The org a request reached: the log's own org_id, else the slug's owner at the
# request's time (latest valid_from wins), else the org whose current slug it is.
ORG_OF_REQUEST = """
coalesce(
    r.org_id,
    case when p.slug_timed then (
        select w.org_id from slug_windows w
        where w.slug = p.slug and w.from_ms <= r.ts and (w.to_ms is null or r.ts < w.to_ms)
        order by w.from_ms desc limit 1
    ) end,
    p.org_static
)"""

# {{requests}} is "requests r not indexed" for a full recompute (a sequential scan
# beats the ts index by an order of magnitude when the window covers much of the
# log) and indexes.batch_requests for one batch (its rows are contiguous in requests_batch).
CANDIDATES = f"""
select r.id as request_id, r.sig_id, r.ts, {ORG_OF_REQUEST} as org_id
from {{requests}}
join uris u on u.id = r.uri_id
join paths p on p.id = u.path_id
where r.ts >= :introduced and r.ts < :patched
  and p.scope_match = 1
  and (r.org_id is not null or p.slug is not null)
  {{restrict}}
"""

# Materialised, so the org of each request is resolved once, not once per use;
# inserted in the order of scoped's key, so the rows are appended, not scattered.
INSERT_SCOPED = """
with c as materialized ({candidates})
insert into scoped (request_id, org_id, sig_id, ts)
select c.request_id, c.org_id, c.sig_id, c.ts from c
where c.org_id in (select id from orgs)
  and (not :require_integration or exists (
      select 1 from integration_windows i
      where i.org_id = c.org_id and i.from_ms <= c.ts and (i.to_ms is null or c.ts < i.to_ms)
  ))
order by c.sig_id, c.org_id, c.request_id
"""

POST_PATCH = f"""
select r.sig_id, {ORG_OF_REQUEST} as org_id
from {{requests}}
join uris u on u.id = r.uri_id
join paths p on p.id = u.path_id
where r.ts >= :patched and r.status between 200 and 299
  and (r.org_id is not null or p.slug is not null)
  {{restrict}}
"""

INSERT_POST_PATCH = """
insert into post_patch_valid (sig_id, org_id, requests)
select sig_id, org_id, count(*) from ({post_patch}) where org_id is not null
group by sig_id, org_id
on conflict (sig_id, org_id) do update set requests = requests + excluded.requests
"""


def get_incident(db: sqlite_utils.Database) -> dict | None:
    """The incident row with its regex lists decoded, or None before one is set."""
    row = db.execute("select * from incident where id = 1").fetchone()
    if row is None:
        return None
    incident = dict(zip([d[0] for d in db.execute("select * from incident limit 0").description], row))
    incident["scope_paths"] = json.loads(incident["scope_paths"])
    incident["org_routes"] = json.loads(incident["org_routes"])
    return incident


def _params(incident: dict) -> dict:
    return {
        "introduced": incident["introduced_ms"],
        "patched": incident["patched_ms"],
        "require_integration": int(bool(incident["require_integration"])),
    }


def classify_paths(db: sqlite_utils.Database, incident: dict, only_new: bool) -> None:
    """Run the scope and org-route regexes once per distinct path."""
    scope_res = [re.compile(p) for p in incident["scope_paths"]]
    route_res = [re.compile(p) for p in incident["org_routes"]]
    where = "where scope_match is null" if only_new else ""
    updates = []
    for path_id, path in db.execute(f"select id, path from paths {where}").fetchall():
        match = 1 if any(r.search(path) for r in scope_res) else 0
        slug = None
        for route in route_res:
            m = route.search(path)
            if m:
                slug = m.group("org")
                break
        updates.append((match, slug, path_id))
    db.conn.executemany("update paths set scope_match = ?, slug = ? where id = ?", updates)
    resolve_path_orgs(db, only_new)


def resolve_path_orgs(db: sqlite_utils.Database, only_new: bool = False) -> None:
    """Attach to each routed path the org of its slug, or mark it time-dependent."""
    where = "and org_static is null and slug_timed is null" if only_new else ""
    db.execute(
        f"""update paths set
        org_static = (select o.id from orgs o where o.slug = paths.slug order by o.id limit 1),
        slug_timed = exists (select 1 from slug_windows w where w.slug = paths.slug)
        where slug is not null {where}"""
    )


def _ms(value) -> int | None:
    return None if value in (None, "") else parse_time(value)


def rebuild_windows(db: sqlite_utils.Database) -> None:
    """Turn the records' slug history and integration lifetimes into integer windows."""
    db.execute("delete from slug_windows")
    db.execute("delete from integration_windows")
    tables = set(db.table_names())
    if "org_slugs" in tables:
        db.conn.executemany(
            "insert into slug_windows values (?, ?, ?, ?)",
            [
                (slug, org_id, _ms(valid_from), _ms(valid_to))
                for slug, org_id, valid_from, valid_to in db.execute(
                    "select slug, org_id, valid_from, valid_to from org_slugs"
                )
            ],
        )
    if "integrations" in tables:
        db.conn.executemany(
            "insert into integration_windows values (?, ?, ?)",
            [
                (org_id, _ms(created_at), _ms(deleted_at))
                for org_id, created_at, deleted_at in db.execute(
                    "select org_id, created_at, deleted_at from integrations"
                )
            ],
        )


def _records_ready(db: sqlite_utils.Database) -> bool:
    return "orgs" in db.table_names()


def rebuild(db: sqlite_utils.Database) -> bool:
    """Recompute the whole scope from the incident, the records and every request.

    Returns:
        True when requests may be in scope (an incident and the records are set):
        the applied rules must then be re-evaluated.
    """
    incident = get_incident(db)
    db.execute("delete from scoped")
    db.execute("delete from post_patch_valid")
    db.execute("delete from signature_scope")
    db.execute("delete from sig_org")
    if incident is None:
        db.execute("update paths set scope_match = null, slug = null, org_static = null, slug_timed = null")
        return False
    rebuild_windows(db)
    classify_paths(db, incident, only_new=False)
    if not _records_ready(db):
        return False
    params = _params(incident)
    full = dict(restrict="", requests="requests r not indexed")
    with _indexes_rebuilt_after(db, "scoped"):
        db.execute(INSERT_SCOPED.format(candidates=CANDIDATES.format(**full)), params)
    db.execute(INSERT_POST_PATCH.format(post_patch=POST_PATCH.format(**full)), params)
    refresh_signatures(db)
    return True


@contextlib.contextmanager
def _indexes_rebuilt_after(db: sqlite_utils.Database, table: str):
    """Bulk-load a table without its indexes, then build them once (a sort, not
    millions of random inserts). The index definitions are read from the schema."""
    indexes = db.execute(
        "select name, sql from sqlite_master where type = 'index' and tbl_name = ? and sql is not null",
        [table],
    ).fetchall()
    for name, _ in indexes:
        db.execute(f'drop index "{name}"')
    yield
    for _, sql in indexes:
        db.execute(sql)


# The signatures whose reach a batch may have changed (see after_batch).
TOUCHED_SIGS = "select sig_id from temp.touched_sigs"


def after_batch(db: sqlite_utils.Database, batch_id: int) -> bool:
    """Bring the scope up to date after a log batch: only that batch's requests are read.

    Returns:
        True when temp.touched_sigs holds the signatures whose reach may have
        changed (those of the new in-scope rows, and those with new post-patch
        requests): the caller re-evaluates the rules over them and drops it.
        False when there are none (a batch before the incident's window, say):
        then nothing derived from the scope changed.
    """
    incident = get_incident(db)
    if incident is None:
        return False
    classify_paths(db, incident, only_new=True)
    if not _records_ready(db):
        return False
    params = dict(_params(incident), batch_id=batch_id)
    restrict = "and r.batch_id = :batch_id"
    first_new = db.execute("select coalesce(max(request_id), 0) + 1 from scoped").fetchone()[0]
    rows = indexes.batch_requests(db.conn)
    batch = dict(restrict=restrict, requests=rows)
    db.execute(INSERT_SCOPED.format(candidates=CANDIDATES.format(**batch)), params)
    db.execute(INSERT_POST_PATCH.format(post_patch=POST_PATCH.format(**batch)), params)
    db.execute("drop table if exists temp.touched_sigs")
    db.execute(
        f"""create temp table touched_sigs as
        select distinct sig_id from scoped where request_id >= :first
        union select distinct r.sig_id from {rows} where r.batch_id = :batch_id and r.ts >= :patched""",
        dict(params, first=first_new),
    )
    if not db.execute("select exists(select 1 from temp.touched_sigs)").fetchone()[0]:
        db.execute("drop table temp.touched_sigs")
        return False
    refresh_signatures(db, TOUCHED_SIGS)
    return True


def has_incident(db: sqlite_utils.Database) -> bool:
    """Whether an incident is set."""
    return db.execute("select 1 from incident where id = 1").fetchone() is not None


def refresh_signatures(db: sqlite_utils.Database, sigs: str | None = None) -> None:
    """Recount signature reach (cross-tenant) and the (signature, org) aggregates.

    Args:
        sigs: a SQL select of the sig_ids to refresh; None refreshes all.
    """
    where = f"where sig_id in ({sigs})" if sigs else ""
    db.execute(f"delete from signature_scope {where}")
    db.execute(
        f"""insert into signature_scope (sig_id, orgs, requests, cross_tenant)
        select sig_id, count(distinct org_id), count(*), count(distinct org_id) > 1
        from scoped {where} group by sig_id"""
    )
    db.execute(f"delete from sig_org {where}")
    db.execute(
        f"""insert into sig_org (sig_id, org_id, requests, unexplained, first_ts, last_ts)
        select sig_id, org_id, count(*), sum(explained = 0), min(ts), max(ts)
        from scoped {where} group by sig_id, org_id"""
    )
