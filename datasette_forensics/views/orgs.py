"""Per-org exposure: every org with in-scope requests, its status and figures."""

from __future__ import annotations

import json

from .. import notes
from ..derived import status as org_status
from . import case_parts, chart, sources
from ..windows import database as window_database
from .filter_bar import filter_bar
from .common import choice, open_page, page_view, paged_total, paging, parse_state, sort_choice

STATUS_SQL = org_status.status_sql("s")
STATUS_FILTER = {"all": "1", **{s: org_status.filter_sql(s, "s") for s in org_status.STATUSES}}
SORTS = {
    "status": org_status.rank_sql("s"),
    "org_id": "f.org_id",
    "slug": "o.slug",
    "in_scope": "f.in_scope",
    "unexplained": "f.unexplained",
    "unexplained_signatures": "f.unexplained_signatures",
    "cross_tenant_signatures": "f.cross_tenant_signatures",
}
TIEBREAK = "f.unexplained desc, f.org_id"

# Unfiltered: the per-org aggregates, as f (figures) and s (status): the status is
# always the org's own, the figures may be filtered (below).
ORGS = f"""
select f.org_id, o.slug, o.name, o.contact_email, {STATUS_SQL} as status, f.in_scope, f.unexplained,
    f.unexplained_signatures, f.cross_tenant_signatures, count(*) over () as total
from org_stats f
join org_stats s on s.org_id = f.org_id
left join orgs o on o.id = f.org_id
where {{status}}
order by {{order}} limit :limit offset :offset
"""
# Filtered: the (signature, org) pairs of matching signatures, grouped by org ({joins}:
# ips i and user_agents a, only when the filters need them).
ORGS_FILTERED = f"""
with f as (
    select p.org_id, sum(p.requests) as in_scope, sum(p.unexplained) as unexplained,
        sum(p.unexplained > 0) as unexplained_signatures, sum(st.cross_tenant) as cross_tenant_signatures
    from ({{pairs}}) p
    join sig_stats st on st.sig_id = p.sig_id
    {{joins}}
    where {{conds}}
    group by p.org_id
)
select f.org_id, o.slug, o.name, o.contact_email, {STATUS_SQL} as status, f.in_scope, f.unexplained,
    f.unexplained_signatures, f.cross_tenant_signatures, count(*) over () as total
from f
join org_stats s on s.org_id = f.org_id
left join orgs o on o.id = f.org_id
where {{status}}
order by {{order}} limit :limit offset :offset
"""
# The signature behind most of each listed org's unexplained (else in-scope) requests:
# ranked on the pairs alone ({joins} only when filters need ips/user_agents), then
# its strings looked up for the listed orgs only.
TOP_SIGNATURE = """
select x.org_id, i.ip, a.ua, pa.path from (
    select org_id, sig_id from (
        select p.org_id, p.sig_id,
            row_number() over (partition by p.org_id order by p.unexplained desc, p.requests desc, p.sig_id) as n
        from ({pairs}) p {joins}
        where p.org_id in (select value from json_each(:orgs)) and {conds}
    ) where n = 1
) x
join sig_stats st on st.sig_id = x.sig_id
join ips i on i.id = st.ip_id
join user_agents a on a.id = st.ua_id
left join uris u on u.id = st.last_uri_id
left join paths pa on pa.id = u.path_id
"""
IA_JOINS = "join ips i on i.id = st.ip_id join user_agents a on a.id = st.ua_id"
TOP_JOINS = "join sig_stats st on st.sig_id = p.sig_id " + IA_JOINS
# Unfiltered: one seek per listed org in the index sig_org_rank.
TOP_SIGNATURE_RANKED = """
select x.org_id, i.ip, a.ua, pa.path from (
    select o.value as org_id, (
        select so.sig_id from sig_org so where so.org_id = o.value
        order by so.unexplained desc, so.requests desc limit 1
    ) as sig_id
    from json_each(:orgs) o
) x
join sig_stats st on st.sig_id = x.sig_id
join ips i on i.id = st.ip_id
join user_agents a on a.id = st.ua_id
left join uris u on u.id = st.last_uri_id
left join paths pa on pa.id = u.path_id
"""


@page_view
async def view(datasette, request):
    """Orgs: status (exposed, review, cleared) and in-scope figures, filterable by status."""
    page = await open_page(datasette, request, "orgs", tables=("orgs",))
    state = await parse_state(page, extra=("status", "sort"))
    await window_database.for_page(page)
    status = choice(request, "status", tuple(STATUS_FILTER), "all")
    sort, sort_sql, descending = sort_choice(request, SORTS, "status")
    order = f"{sort_sql} {'desc' if descending else 'asc'}, {TIEBREAK}"
    state.tag_signatures = False  # ?tag= here: orgs carrying the tag
    filtered = state.filtered
    params = {"limit": state.size, "offset": (state.page - 1) * state.size}
    pairs, pair_params = sources.pairs_sql(state)
    conds, cond_params = state.conditions()
    params.update(pair_params, **cond_params)
    conds_sql = " and ".join(conds) or "1"
    status_sql = STATUS_FILTER[status]
    if state.tag is not None:
        status_sql = f"({status_sql}) and f.org_id in ({notes.TAGGED})"
        params.update(kind="org", tag=state.tag)
    if filtered:
        sql = ORGS_FILTERED.format(pairs=pairs, joins=IA_JOINS if conds else "", conds=conds_sql, status=status_sql, order=order)
    else:
        sql = ORGS.format(status=status_sql, order=order)
    rows = [dict(r) for r in await page.db.execute(sql, params)]
    total = await paged_total(page.db, sql, params, rows)
    top = {}
    if rows:
        params["orgs"] = json.dumps([r["org_id"] for r in rows])
        if filtered:
            top_sql = TOP_SIGNATURE.format(pairs=pairs, conds=conds_sql, joins=TOP_JOINS if conds else "")
        else:
            top_sql = TOP_SIGNATURE_RANKED
        for org_id, ip, ua, path in await page.db.execute(top_sql, params):
            top[org_id] = {"ip": ip, "user_agent": ua, "last_path": path}

    others = state.filter_params(drop=("org",))
    out = []
    for r in rows:
        org = r["org_id"]
        scoped = state.view_params() + [("org_id", org), ("in_scope", "1")]
        signature = top.get(org)
        out.append(
            {
                "org_id": org,
                "slug": r["slug"],
                "name": r["name"],
                "contact_email": r["contact_email"],
                "status": r["status"],
                "in_scope": r["in_scope"],
                "unexplained": r["unexplained"],
                "unexplained_signatures": r["unexplained_signatures"],
                "cross_tenant_signatures": r["cross_tenant_signatures"],
                "top_signature": signature,
                "links": {
                    "org": page.org_url(org),
                    "in_scope": page.requests_url(scoped),
                    "unexplained": page.requests_url(scoped + [("unexplained", "1")]),
                    "explained": page.requests_url(scoped + [("unexplained", "0")]),
                    "unexplained_signatures": page.page_url(
                        "signatures", [("org", org), ("status", "unexplained")] + others
                    ),
                    "cross_tenant_signatures": page.page_url(
                        "signatures", [("org", org), ("cross_tenant", "1")] + others
                    ),
                    "top_signature": page.page_url("signatures", [("ip", signature["ip"]), ("ua", signature["user_agent"])])
                    if signature
                    else None,
                },
            }
        )
    await case_parts.add_tags(page, "org", out, lambda r: r["org_id"])
    data = {
        "database": page.db.name,
        "view": "orgs",
        "status": status,
        "sort": sort,
        "filters": state.filter_params(),
        "source": sources.window_source(state) if state.window else ("sig_org" if filtered else "org_stats"),
        "base_url": page.self_url(json_format=False, **{k: None for k, _ in state.filter_params()}, page=None),
        **paging(page, total),
        "rows": out,
    }
    shown = out[:30]
    charts = [
        chart.category_bars(
            "chart-orgs",
            f"In-scope requests of the first {len(shown)} orgs on this page",
            "Org",
            [
                {
                    "label": o["slug"] or o["org_id"],
                    "parts": {
                        "unexplained": (o["unexplained"], o["links"]["unexplained"]),
                        "explained": (o["in_scope"] - o["unexplained"], o["links"]["explained"]),
                    },
                }
                for o in shown
            ],
            parts=("unexplained", "explained"),
        )
    ]
    return await page.respond(
        "forensics_orgs.html",
        data,
        {
            "charts": charts,
            "filter_bar": await filter_bar(page, tuple(STATUS_FILTER), status),
            "status_urls": [(s, page.self_url(status=None if s == "all" else s, page=None)) for s in STATUS_FILTER],
            "sort_urls": {n: page.self_url(sort=("-" if sort != f"-{n}" else "") + n, page=None) for n in SORTS},
        },
    )
