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

# The reason a request r (with its path p) is out of scope; null when it is in scope.
# Times and the integration requirement come from the incident row.
REASON_SQL = f"""(
    select case
        when r.ts < x.introduced_ms or r.ts >= x.patched_ms then 'outside_window'
        when coalesce(p.scope_match, 0) = 0 then 'path_not_in_scope'
        when r.org_id is null and p.slug is null then 'no_org'
        when o.org_id is null or o.org_id not in (select id from orgs) then 'unknown_org'
        when x.require_integration and not exists (
            select 1 from integration_windows i
            where i.org_id = o.org_id and i.from_ms <= r.ts and (i.to_ms is null or r.ts < i.to_ms)
        ) then 'no_live_integration'
    end
    from incident x, (select {ORG_OF_REQUEST} as org_id) o
)"""

COUNT = f"""
insert into out_of_scope_counts (org_id, reason, n)
select org_id, reason, count(*) from (
    select coalesce({ORG_OF_REQUEST}, '') as org_id, {REASON_SQL} as reason
    from {{requests}}
    join uris u on u.id = r.uri_id
    join paths p on p.id = u.path_id
    {{where}}
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
