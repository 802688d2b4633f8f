"""Org statuses (MODEL §4): the one status rule, and the SQL every page and the report use.

An org is *exposed* while a cross-tenant signature of it has unexplained requests,
in *review* while any of its in-scope requests is unexplained, and *cleared* once
none is. The rule is written once, in :data:`RULE`; the SQL below is built from it
over whichever figures a query has (``org_stats`` columns, or sums over ``sig_org``).
"""

from __future__ import annotations

import sqlite_utils

STATUSES = ("exposed", "review", "cleared")

# status -> its condition, over {cross} (unexplained requests of cross-tenant
# signatures, or the count of such signatures) and {unexplained}; first match wins.
RULE = (
    ("exposed", "{cross} > 0"),
    ("review", "{unexplained} > 0"),
    ("cleared", "1"),
)

# The figures of an org_stats row (alias given), and of an org's sig_org rows so
# joined to signature_scope ss.
ORG_STATS = {"cross": "{t}unexplained_cross_tenant", "unexplained": "{t}unexplained"}
SIG_ORG = {"cross": "sum(so.unexplained > 0 and ss.cross_tenant)", "unexplained": "sum(so.unexplained)"}


def _figures(alias: str | None) -> dict:
    if alias is None:
        return SIG_ORG
    t = f"{alias}." if alias else ""
    return {k: v.format(t=t) for k, v in ORG_STATS.items()}


def status_sql(alias: str | None = "") -> str:
    """The status (exposed, review or cleared) as a SQL expression.

    Args:
        alias: the org_stats alias ("" for none); None for sums over sig_org so
            joined to signature_scope ss (grouped by org).
    """
    figures = _figures(alias)
    whens = " ".join(f"when {cond.format(**figures)} then '{status}'" for status, cond in RULE[:-1])
    return f"case {whens} else '{RULE[-1][0]}' end"


def rank_sql(alias: str | None = "") -> str:
    """The status as a sort key: exposed 0, review 1, cleared 2."""
    figures = _figures(alias)
    whens = " ".join(f"when {cond.format(**figures)} then {i}" for i, (_, cond) in enumerate(RULE[:-1]))
    return f"case {whens} else {len(RULE) - 1} end"


def filter_sql(status: str, alias: str = "") -> str:
    """A SQL condition on an org_stats row that is true when the org has ``status``."""
    figures = _figures(alias)
    conditions = []
    for name, cond in RULE:
        if name == status:
            conditions.append(cond.format(**figures))
            return " and ".join(conditions)
        conditions.append(f"not ({cond.format(**figures)})")
    raise ValueError(f"Unknown status {status!r}: use one of {', '.join(STATUSES)}.")


ORG_FIGURES = f"""
select so.org_id,
    sum(so.requests) as in_scope_requests,
    sum(so.unexplained) as unexplained_requests,
    sum(so.unexplained > 0) as unexplained_signatures,
    {status_sql(None)} as status
from sig_org so
join signature_scope ss on ss.sig_id = so.sig_id
group by so.org_id
"""

STATUS_ORDER = "case status " + " ".join(f"when '{s}' then {i}" for i, s in enumerate(STATUSES[:-1])) + " else 2 end"


def org_statuses(db: sqlite_utils.Database) -> dict[str, str]:
    """org_id -> exposed | review | cleared, for every org with in-scope requests."""
    return {row[0]: row[4] for row in db.execute(ORG_FIGURES)}


def statuses_of(db: sqlite_utils.Database, orgs_sql: str) -> dict[str, str]:
    """org_id -> status for the orgs a SQL select names (only orgs with in-scope
    requests), from org_stats, which every change of unexplained counts keeps current."""
    return dict(db.execute(f"select org_id, {status_sql()} from org_stats where org_id in ({orgs_sql})"))
