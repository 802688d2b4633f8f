"""The report of MODEL §4: funnel, org statuses, cross-tenant signatures, rules applied.

Its JSON shape is a public interface: scripts parse it. Every figure is read from
the kept aggregates (``pivot_groups``, ``org_stats``, ``signature_scope``,
``sig_org``, ``rule_counts``, ``out_of_scope_counts``), never by counting the
requests or the in-scope rows, so it answers in milliseconds at millions of requests.
"""

from __future__ import annotations

import csv
import io

import sqlite_utils

from . import notes, notifications, verdicts
from .derived import out_of_scope, rule_counts
from .derived.scope import get_incident
from .derived.status import rank_sql, status_sql
from .rules import SYSTEM, applied_names
from .terminal import visible

ORGS = f"""
select f.org_id, o.slug, o.name, {status_sql("f")}, f.in_scope, f.unexplained,
    f.unexplained_signatures, o.contact_email
from org_stats f
left join orgs o on o.id = f.org_id
order by {rank_sql("f")}, f.unexplained desc, f.org_id
"""

CROSS_TENANT = """
select ss.sig_id, i.ip, a.ua, ss.requests,
    (select sum(unexplained) from sig_org so where so.sig_id = ss.sig_id) as unexplained,
    (select json_group_array(org_id) from (
        select org_id from sig_org so where so.sig_id = ss.sig_id order by org_id)) as org_ids
from signature_scope ss
join signatures g on g.id = ss.sig_id
join ips i on i.id = g.ip_id
join user_agents a on a.id = g.ua_id
where ss.cross_tenant
order by unexplained desc, ss.requests desc, i.ip, a.ua
"""


# The four 'kind' groups hold every signature once.
FUNNEL = """
select (select count(*) from rejected_lines),
    coalesce(sum(requests), 0), coalesce(sum(in_scope), 0), coalesce(sum(unexplained), 0)
from pivot_groups where grouping = 'kind'
"""


def funnel(db: sqlite_utils.Database) -> dict:
    """Rejected lines, stored requests, in-scope and unexplained requests."""
    row = db.execute(FUNNEL).fetchone()
    return dict(zip(("lines_rejected", "requests", "in_scope", "unexplained"), row), out_of_scope=out_of_scope.counts(db))


def org_rows(db: sqlite_utils.Database) -> list[dict]:
    """Every org with in-scope requests: exposed, review, cleared; most unexplained first."""
    return [
        {
            "org_id": org_id,
            "slug": slug,
            "name": name,
            "status": status,
            "in_scope_requests": in_scope,
            "unexplained_requests": unexplained,
            "unexplained_signatures": signatures,
            "contact_email": email or None,
        }
        for org_id, slug, name, status, in_scope, unexplained, signatures, email in db.execute(ORGS)
    ]


def cross_tenant_signatures(db: sqlite_utils.Database) -> list[dict]:
    import json

    return [
        {
            "ip": ip,
            "user_agent": ua,
            "org_ids": json.loads(org_ids),
            "requests": requests,
            "unexplained_requests": unexplained,
        }
        for _, ip, ua, requests, unexplained, org_ids in db.execute(CROSS_TENANT)
    ]


def build_report(db: sqlite_utils.Database) -> dict:
    """The whole report as one JSON-ready dict.

    Beyond MODEL §4, each org also has ``explained_by``: the in-scope requests each
    applied rule explains for it (rules explaining none are left out).
    """
    incident = get_incident(db)
    orgs = org_rows(db)
    breakdown = rule_counts.breakdown(db)
    tags = notes.org_tags(db)
    for org in orgs:
        del org["name"]
        org["explained_by"] = breakdown.get(org["org_id"], {})
        org["tags"] = tags.get(org["org_id"], [])
    notifications.add_state(orgs, notifications.latest_notifications(db))
    return {
        "incident": None
        if incident is None
        else {k: incident[k] for k in ("name", "introduced_at", "patched_at")},
        "funnel": funnel(db),
        "orgs": orgs,
        "cross_tenant_signatures": cross_tenant_signatures(db),
        "rules_applied": [n for n in applied_names(db) if n not in {r.NAME for r in SYSTEM}],
        "verdicts": verdicts.for_report(db),
    }


CSV_COLUMNS = ["org_id", "slug", "name", "status", "unexplained_requests", "contact_email"]
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value):
    """A CSV cell an analyst can trust: control, bidi and invisible characters shown as
    visible escapes (as on the pages), and formula-like text prefixed with a quote so a
    spreadsheet does not evaluate it."""
    if not isinstance(value, str):
        return value
    value = visible(value)
    return "'" + value if value.startswith(FORMULA_PREFIXES) else value


def notification_csv(db: sqlite_utils.Database) -> str:
    """The notification list: exposed and review orgs with their contact, for mass mailing."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for org in org_rows(db):
        if org["status"] == "cleared":
            continue
        writer.writerow([neutralise(org[c]) if org[c] is not None else "" for c in CSV_COLUMNS])
    return out.getvalue()
