"""Why a request is out of scope (MODEL §6.1): the first test of §2 it fails.

``out_of_scope_counts`` keeps, per org (the org the request names or routes to,
known or not; '' for none) and reason, how many stored requests fail the scope for
that reason, so the overview, the org page and the report never scan ``requests``.
A full recompute refills it in one scan; a log batch adds its own requests.
"""

from __future__ import annotations

import sqlite_utils

from . import indexes
from .scope import ORG_OF_REQUEST, get_incident

__all__ = ["ORG_OF_REQUEST", "REASONS", "REASON_SQL", "counts", "refresh", "add_batch"]

REASONS = ("outside_window", "path_not_in_scope", "no_org", "unknown_org", "no_live_integration")

# The reason a request is out of scope, over the incident row x; null when it is in
# scope. Times and the integration requirement come from the incident row. The
# request's time, own org id, path's scope match and slug, and its org are
# placeholders: REASON_SQL reads them from r and p, COUNT from a row that holds the
# request's org once resolved.
REASON_CASE = """case
        when {ts} < x.introduced_ms or {ts} >= x.patched_ms then 'outside_window'
        when coalesce({scope_match}, 0) = 0 then 'path_not_in_scope'
        when {own_org} is null and {slug} is null then 'no_org'
        when {org} is null or {org} not in (select id from orgs) then 'unknown_org'
        when x.require_integration and not exists (
            select 1 from integration_windows i
            where i.org_id = {org} and i.from_ms <= {ts} and (i.to_ms is null or {ts} < i.to_ms)
        ) then 'no_live_integration'
    end"""

# The reason a request r (with its path p) is out of scope, as one expression.
REASON_SQL = f"""(
    select {REASON_CASE.format(ts="r.ts", scope_match="p.scope_match", own_org="r.org_id", slug="p.slug", org="o.org_id")}
    from incident x, (select {ORG_OF_REQUEST} as org_id) o
)"""

# Each request's org is resolved once, in q; REASON_SQL as the grouped column would
# be evaluated three times a request (the filter, the key and the output), each
# resolving the org again: 2.45 s for a batch of a million requests.
COUNT = f"""
insert into out_of_scope_counts (org_id, reason, n)
select org_id, reason, count(*) from (
    select coalesce(q.org_id, '') as org_id,
        {REASON_CASE.format(ts="q.ts", scope_match="q.scope_match", own_org="q.own_org", slug="q.slug", org="q.org_id")}
        as reason
    from (
        select r.ts, r.org_id as own_org, p.scope_match, p.slug, {ORG_OF_REQUEST} as org_id
        from {{requests}}
        join uris u on u.id = r.uri_id
        join paths p on p.id = u.path_id
        {{where}}
    ) q, incident x
) where reason is not null
group by org_id, reason
on conflict (org_id, reason) do update set n = n + excluded.n
"""


def refresh(db: sqlite_utils.Database) -> None:
    """Recount every stored request's reason (nothing before an incident is set)."""
    db.execute("delete from out_of_scope_counts")
    if get_incident(db) is not None:
        db.execute(COUNT.format(requests="requests r not indexed", where=""))


def add_batch(db: sqlite_utils.Database, batch_id: int) -> None:
    """Count the reasons of one log batch's requests."""
    if get_incident(db) is not None:
        db.execute(
            COUNT.format(requests=indexes.batch_requests(db.conn), where="where r.batch_id = :batch_id"),
            {"batch_id": batch_id},
        )


def counts(db: sqlite_utils.Database, org_id: str | None = None) -> dict[str, int] | None:
    """The five reasons in order, each a count (0 when none); None before an incident is set.

    Args:
        org_id: one org's requests only ('' for requests that name no org).
    """
    if get_incident(db) is None:
        return None
    where, params = ("where org_id = :org", {"org": org_id}) if org_id is not None else ("", {})
    found = dict(db.execute(f"select reason, sum(n) from out_of_scope_counts {where} group by reason", params))
    return {reason: found.get(reason, 0) for reason in REASONS}
