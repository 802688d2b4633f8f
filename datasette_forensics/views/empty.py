"""Empty and partial states: what a database still lacks, and the command that adds it.

A page with nothing to show says why, in order of the workflow (logs, records, the
incident, rules), with the command line to run, rather than an empty table.
"""

from __future__ import annotations

import os

GAPS = """
select exists(select 1 from requests) as logs,
    exists(select 1 from orgs) as orgs,
    exists(select 1 from incident where id = 1) as incident,
    exists(select 1 from scoped) as in_scope,
    exists(select 1 from rules where applied = 1) as rules
"""


async def gaps(db) -> list[dict]:
    """What is missing, first things first: ``{"key", "missing", "command"}`` each."""
    have = dict((await db.execute(GAPS)).first())
    name = os.path.basename(db.path) if db.path else f"{db.name}.db"
    out = []
    if not have["logs"]:
        out.append(("logs", "No access logs are imported yet.", f"datasette-forensics import-logs {name} access.log*"))
    if not have["orgs"]:
        out.append(("records", "No account records yet: orgs (and their slugs, integrations, tokens, users, memberships, sessions, partners).",
                    f"datasette-forensics import-records {name} orgs orgs.csv"))
    if not have["incident"]:
        out.append(("incident", "No incident is set: nothing can be in scope until its window, scope paths and org routes are known.",
                    f"datasette-forensics incident {name} incident.toml"))
    elif have["logs"] and have["orgs"] and not have["in_scope"]:
        out.append(("scope", "The incident is set but no request is in scope: check its window, scope paths and org routes, and that the orgs had an integration live.",
                    f"datasette-forensics report {name} --format json"))
    if have["in_scope"] and not have["rules"]:
        out.append(("rules", "No elimination rule is applied: every in-scope request is still unexplained.",
                    f"datasette-forensics rules {name} --apply all"))
    return [{"key": k, "missing": m, "command": c} for k, m, c in out]
