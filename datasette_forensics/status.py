"""Org statuses (MODEL §4), read from the pre-aggregated (signature, org) table."""

from __future__ import annotations

import sqlite_utils

STATUSES = ("exposed", "review", "cleared")

ORG_FIGURES = """
select so.org_id,
    sum(so.requests) as in_scope_requests,
    sum(so.unexplained) as unexplained_requests,
    sum(so.unexplained > 0) as unexplained_signatures,
    case
        when sum(so.unexplained > 0 and ss.cross_tenant) > 0 then 'exposed'
        when sum(so.unexplained) > 0 then 'review'
        else 'cleared'
    end as status
from sig_org so
join signature_scope ss on ss.sig_id = so.sig_id
group by so.org_id
"""

STATUS_ORDER = "case status when 'exposed' then 0 when 'review' then 1 else 2 end"


def org_statuses(db: sqlite_utils.Database) -> dict[str, str]:
    """org_id -> exposed | review | cleared, for every org with in-scope requests."""
    return {row[0]: row[4] for row in db.execute(ORG_FIGURES)}
