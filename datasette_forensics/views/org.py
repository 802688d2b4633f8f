"""One org: its status, signatures, members, integrations, what each rule explained,
its explained/unexplained timeline and its latest in-scope requests."""

from __future__ import annotations

import sqlite_utils
from datasette import NotFound
from datasette.utils import tilde_decode

from ..derived.status import status_sql
from . import case_parts, chart, sources
from ..request_rows import REQUEST_JOINS
from .common import address_and_agent, DAY_MS, choice, ms_iso, open_page, page_view, parse_state
from .filter_bar import filter_bar

ORG = f"""
select o.id, o.slug, o.name, o.contact_email, o.created_at,
    s.in_scope, s.unexplained, s.signatures, s.unexplained_signatures, s.cross_tenant_signatures,
    case when s.org_id is not null then {status_sql("s")} end as status
from (select :org as org_id) x
left join orgs o on o.id = x.org_id
left join org_stats s on s.org_id = x.org_id
"""
SLUGS = "select slug, valid_from, valid_to from org_slugs where org_id = :org order by valid_from"
# Cross-tenant signatures first, then the others, each read in the order of the
# sig_org_rank index (org, unexplained desc, requests desc, sig_id): a bounded range
# read however many signatures the org has, never a sort of all of them.
SIGNATURES_SHOWN = 500
SIGNATURES = """
select so.sig_id, i.ip, i.network, i.country, i.provider, a.ua, a.kind, so.requests, so.unexplained, so.first_ts, so.last_ts,
    st.cross_tenant, st.orgs, p.path
from sig_org so indexed by sig_org_rank
join sig_stats st on st.sig_id = so.sig_id
join ips i on i.id = st.ip_id
join user_agents a on a.id = st.ua_id
left join uris u on u.id = st.last_uri_id
left join paths p on p.id = u.path_id
where so.org_id = :org and st.cross_tenant = :cross_tenant and {conds} and {status}
order by so.unexplained desc, so.requests desc, so.sig_id
limit :limit
"""
MEMBERS = """
select m.user_id, u.email, u.name, u.is_staff, m.role, m.joined_at, m.left_at,
    (select count(*) from sessions se where se.user_id = m.user_id) as sessions
from memberships m left join users u on u.id = m.user_id
where m.org_id = :org
order by m.left_at is not null, m.joined_at
"""
INTEGRATIONS = """
select i.id, i.name, i.created_at, i.deleted_at,
    (select count(*) from tokens t where t.integration_id = i.id) as tokens
from integrations i where i.org_id = :org order by i.created_at
"""
RULES = "select name, bit from rules where applied = 1 order by applied_seq"
# The org's in-scope requests per set of explaining rules, read pair by pair from
# scoped's key (sig_id, org_id, request_id): the cross join keeps that order.
MASKS = """
select s.explained, count(*) from sig_org so
cross join scoped s on s.sig_id = so.sig_id and s.org_id = so.org_id
where so.org_id = :org and s.explained != 0
group by s.explained
"""
# With signature filters, the timeline counts the org's signatures that match them.
FILTERED_SIGS = """
select so.sig_id from sig_org so
join signatures g on g.id = so.sig_id
join ips i on i.id = g.ip_id
join user_agents a on a.id = g.ua_id
where so.org_id = :org and {conds}
"""
# The filter bar's status toggle, on signatures (so) and requests (s).
STATUS = {
    "all": ("1", "1"),
    "unexplained": ("so.unexplained > 0", "s.explained = 0"),
    "explained": ("so.unexplained < so.requests", "s.explained != 0"),
}
LATEST = f"""
select r.id, r.ts, i.ip, i.network, i.country, i.provider, a.ua, r.method, p.path, r.status, s.explained
from scoped s
join requests r on r.id = s.request_id
{REQUEST_JOINS}
where s.org_id = :org and s.ts >= :w_from and s.ts < :w_to and {{conds}} and {{status}}
order by s.ts desc limit 20
"""


@page_view
async def view(datasette, request):
    """One org's drill-down: why it has its status, and the requests behind it."""
    page = await open_page(datasette, request, "org", tables=("orgs",))
    org = tilde_decode(request.url_vars["org_id"])
    db = page.db
    state = await parse_state(page, extra=("status",))
    state.args.pop("org", None)
    status = choice(request, "status", tuple(STATUS), "all")
    conds, cond_params = state.conditions()
    sig_status, request_status = STATUS[status]
    filtered = {"conds": " and ".join(conds) or "1"}
    params = {"org": org, **cond_params, **state.window_params()}
    # The signature filters as requests_view parameters, for the timeline's links.
    signature_view = [(k, v) for k, v in state.view_params() if k not in ("ts__gte", "ts__lt")]
    row = (await db.execute(ORG, params)).first()
    if row["id"] is None and row["status"] is None:
        raise NotFound(f"Org not found: {org}")
    scoped = [("org_id", org), ("in_scope", "1")]
    info = {
        "org_id": org,
        "slug": row["slug"],
        "name": row["name"],
        "contact_email": row["contact_email"],
        "created_at": row["created_at"],
        "known": row["id"] is not None,
        "status": row["status"],
        "in_scope": row["in_scope"] or 0,
        "unexplained": row["unexplained"] or 0,
        "signatures": row["signatures"] or 0,
        "unexplained_signatures": row["unexplained_signatures"] or 0,
        "cross_tenant_signatures": row["cross_tenant_signatures"] or 0,
        "links": {
            "requests": page.requests_url([("org_id", org)]),
            "in_scope": page.requests_url(scoped),
            "unexplained": page.requests_url(scoped + [("unexplained", "1")]),
            "signatures": page.page_url("signatures", [("org", org)]),
            "unexplained_signatures": page.page_url("signatures", [("org", org), ("status", "unexplained")]),
            "cross_tenant_signatures": page.page_url("signatures", [("org", org), ("cross_tenant", "1")]),
            "ips": page.page_url("ips", [("org", org)]),
            "user_agents": page.page_url("user-agents", [("org", org)]),
        },
    }
    slugs = [] if await page.withhold("org_slugs", "Slug history") else [dict(r) for r in await db.execute(SLUGS, params)]
    signatures = []
    listed = []
    for cross_tenant in (1, 0):
        limit = SIGNATURES_SHOWN - len(listed)
        if limit > 0:
            sql = SIGNATURES.format(status=sig_status, **filtered)
            listed += await db.execute(sql, {**params, "cross_tenant": cross_tenant, "limit": limit})
    for r in listed:
        sig = [("sig_id", str(r["sig_id"]))]
        signatures.append(
            {
                **address_and_agent(r),
                "kind": r["kind"],
                "cross_tenant": bool(r["cross_tenant"]),
                "orgs": r["orgs"],
                "in_scope": r["requests"],
                "unexplained": r["unexplained"],
                "first_seen": ms_iso(r["first_ts"]),
                "last_seen": ms_iso(r["last_ts"]),
                "last_path": r["path"],
                "links": {
                    "in_scope": page.requests_url(scoped + sig),
                    "unexplained": page.requests_url(scoped + sig + [("unexplained", "1")]),
                    "orgs": page.page_url("orgs", [("ip", r["ip"]), ("ua", r["ua"])]),
                    "signature": page.page_url("signatures", [("ip", r["ip"]), ("ua", r["ua"])]),
                },
            }
        )
    members = []
    if not await page.withhold(("memberships", "users", "sessions"), "Members"):
        members = [dict(dict(r), is_staff=bool(r["is_staff"])) for r in await db.execute(MEMBERS, params)]
    integrations = []
    if not await page.withhold(("integrations", "tokens"), "Integrations"):
        integrations = [dict(r) for r in await db.execute(INTEGRATIONS, params)]
    applied = list(await db.execute(RULES))
    rules = []
    if applied:
        masks = list(await db.execute(MASKS, params))
        for name, bit in applied:
            rules.append(
                {
                    "rule": name,
                    "requests": sum(n for mask, n in masks if mask & bit),
                    "url": page.requests_url(scoped + [("rule", name)]),
                }
            )
    sigs = [r[0] for r in await db.execute(FILTERED_SIGS.format(**filtered), params)] if conds else None
    figures, timeline_source = await sources.hour_figures(page, state.from_ms, state.to_ms, org=org, sigs=sigs)
    unit = sources.timeline_unit(state, *(await db.execute(sources.LOG_SPAN)).first()) if state.window else DAY_MS
    timeline = []
    for bucket, _, in_scope, unexplained in sources.timeline_buckets(figures, unit):
        # The status toggle keeps the unexplained requests, or the explained ones.
        in_scope, unexplained = {"all": (in_scope, unexplained), "unexplained": (unexplained, unexplained),
                                 "explained": (in_scope - unexplained, 0)}[status]
        if not in_scope:
            continue
        span = scoped + signature_view + sources.bucket_span(state, bucket, unit)
        timeline.append(
            {
                "day": ms_iso(bucket * unit)[:10],
                "start": chart.bucket_label(bucket * unit, unit),
                "start_ms": bucket * unit,
                "in_scope": in_scope,
                "unexplained": unexplained,
                "explained": in_scope - unexplained,
                "links": {
                    "in_scope": page.requests_url(span),
                    "unexplained": page.requests_url(span + [("unexplained", "1")]),
                    "explained": page.requests_url(span + [("unexplained", "0")]),
                },
            }
        )
    latest = [
        {
            "time": ms_iso(r["ts"]),
            **address_and_agent(r),
            "method": r["method"],
            "path": r["path"],
            "status": r["status"],
            "explained": r["explained"] != 0,
            "url": page.page_url(f"requests/{r['id']}"),
        }
        for r in await db.execute(LATEST.format(status=request_status, **filtered), params)
    ]
    data = {
        "database": db.name,
        "view": "org",
        "org": info,
        "slug_history": slugs,
        "signatures": signatures,
        "members": members,
        "integrations": integrations,
        "rules": rules,
        "timeline": timeline,
        "timeline_unit": "day" if unit == DAY_MS else "hour",
        "timeline_source": timeline_source,
        "latest_requests": latest,
        "status": status,
        "filters": state.filter_params(),
        "latest_requests_url": page.requests_url(scoped + [("_sort_desc", "ts")]),
    }
    charts = [
        chart.time_bars(
            "chart-org-timeline",
            "In-scope requests per " + ("day" if unit == DAY_MS else "hour") + " (UTC): unexplained and explained"
            + (" (the window only)" if state.window else ""),
            [
                {
                    "start": t["start_ms"],
                    "parts": {
                        "unexplained": (t["unexplained"], t["links"]["unexplained"]),
                        "explained": (t["explained"], t["links"]["explained"]),
                    },
                }
                for t in timeline
            ],
            unit,
        )
    ]
    data["case"] = await db.execute_fn(
        lambda conn: case_parts.org_parts(sqlite_utils.Database(conn), page, org, info["status"], info["unexplained"])
    )
    return await page.respond(
        "forensics_org.html", data, {"charts": charts, "filter_bar": await filter_bar(page, tuple(STATUS), status)}
    )
