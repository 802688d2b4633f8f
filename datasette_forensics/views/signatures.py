"""Signatures (address, exact user agent): cross-tenant first, with the orgs each
reached and what it did at and after the patch."""

from __future__ import annotations

import json

import sqlite_utils

from .. import notes
from . import case_parts, sources
from ..windows import database as window_database
from .filter_bar import filter_bar
from .common import address_and_agent, choice, ms_iso, open_page, page_view, paged_total, paging, parse_state, sort_choice

STATUS = {
    "all": "1",
    "unexplained": "{t}unexplained > 0",
    "explained": "{t}in_scope > 0 and {t}unexplained = 0",
}
CROSS = {"any": "1", "1": "st.cross_tenant = 1", "0": "st.cross_tenant = 0"}
SORTS = {
    "cross_tenant": "st.cross_tenant",
    "requests": "{t}requests",
    "in_scope": "{t}in_scope",
    "unexplained": "{t}unexplained",
    "orgs": "st.orgs",
    "first_seen": "{t}first_ts",
    "last_seen": "{t}last_ts",
    "after_patch": "st.after_patch",
    "after_patch_ok": "st.after_patch_ok",
}
TIEBREAK = "{t}unexplained desc, {t}in_scope desc, {t}requests desc, st.sig_id"

# Unfiltered: sig_stats in its rank index order, then the page's strings.
PAGE = """
select st.sig_id, i.ip, i.network, i.country, i.provider, a.ua, a.kind, st.requests, st.in_scope, st.unexplained, st.first_ts,
    st.last_ts, st.cross_tenant, st.orgs, st.after_patch, st.after_patch_ok, p.path
from (
    select * from sig_stats st where {status} and {cross} order by {order} limit :limit offset :offset
) st
join ips i on i.id = st.ip_id
join user_agents a on a.id = st.ua_id
left join uris u on u.id = st.last_uri_id
left join paths p on p.id = u.path_id
order by {order}
"""
COUNT = "select count(*) from sig_stats st where {status} and {cross}"
# Filtered: the signatures of this state (figures of the org or window when given),
# ranked and paged first; the strings are read for the page's rows only.
FILTERED = """
with src as ({sigs}),
ranked as (
    select src.sig_id, src.ip_id, src.ua_id, src.requests, src.in_scope, src.unexplained, src.first_ts,
        src.last_ts, st.last_uri_id, st.cross_tenant, st.orgs, st.after_patch, st.after_patch_ok,
        count(*) over () as total
    from src
    join sig_stats st on st.sig_id = src.sig_id
    {join_ia}
    where {conds} and {status} and {cross}
    order by {order} limit :limit offset :offset
)
select r.sig_id, i.ip, i.network, i.country, i.provider, a.ua, a.kind, r.requests, r.in_scope, r.unexplained, r.first_ts,
    r.last_ts, r.cross_tenant, r.orgs, r.after_patch, r.after_patch_ok, p.path, r.total
from ranked r
join ips i on i.id = r.ip_id
join user_agents a on a.id = r.ua_id
left join uris u on u.id = r.last_uri_id
left join paths p on p.id = u.path_id
order by {outer_order}
"""
# The signature filters' conditions read ips i and user_agents a.
JOIN_IA = "join ips i on i.id = st.ip_id join user_agents a on a.id = st.ua_id"
ORGS = """
select so.sig_id, so.org_id, o.slug, so.requests, so.unexplained
from sig_org so left join orgs o on o.id = so.org_id
where so.sig_id in (select value from json_each(:sigs))
order by so.sig_id, so.requests desc, so.org_id
"""
POST_PATCH = """
select sig_id, org_id, requests from post_patch_valid
where sig_id in (select value from json_each(:sigs)) order by sig_id, org_id
"""
PATCHED = "select patched_ms from incident where id = 1"


@page_view
async def view(datasette, request):
    """Signatures: cross-tenant first; orgs reached; did it stop, or keep succeeding, after the patch?"""
    page = await open_page(datasette, request, "signatures")
    state = await parse_state(page, extra=("status", "cross_tenant", "sort"))
    await window_database.for_page(page)
    status = choice(request, "status", tuple(STATUS), "all")
    cross = choice(request, "cross_tenant", tuple(CROSS), "any")
    sort, sort_sql, descending = sort_choice(request, SORTS, "-cross_tenant")
    filtered = state.filtered
    t = "src." if filtered else "st."
    order = (f"{sort_sql} {'desc' if descending else 'asc'}, " + TIEBREAK).format(t=t)
    params = {"limit": state.size, "offset": (state.page - 1) * state.size}
    status_sql = STATUS[status].format(t=t)
    if filtered:
        sigs, source_params = sources.sigs_sql(state)
        conds, cond_params = state.conditions()
        params.update(source_params, **cond_params)
        outer_order = order.replace("src.", "r.").replace("st.", "r.")
        sql = FILTERED.format(
            sigs=sigs, conds=" and ".join(conds) or "1", join_ia=JOIN_IA if conds else "", status=status_sql,
            cross=CROSS[cross], order=order, outer_order=outer_order,
        )
        rows = [dict(r) for r in await page.db.execute(sql, params)]
        total = await paged_total(page.db, sql, params, rows)
    else:
        rows = [
            dict(r)
            for r in await page.db.execute(PAGE.format(status=status_sql, cross=CROSS[cross], order=order), params)
        ]
        total = (await page.db.execute(COUNT.format(status=status_sql, cross=CROSS[cross]))).first()[0]

    reach, after = {}, {}
    if rows:
        sigs_param = {"sigs": json.dumps([r["sig_id"] for r in rows])}
        hide_slugs = await page.withhold("orgs", "Org slugs")
        for sig_id, org_id, slug, requests, unexplained in await page.db.execute(ORGS, sigs_param):
            reach.setdefault(sig_id, []).append(
                {"org_id": org_id, "slug": None if hide_slugs else slug, "in_scope": requests, "unexplained": unexplained,
                 "url": page.org_url(org_id)}
            )
        for sig_id, org_id, requests in await page.db.execute(POST_PATCH, sigs_param):
            after.setdefault(sig_id, []).append({"org_id": org_id, "requests_2xx": requests})
    patched = (await page.db.execute(PATCHED)).first()
    patched_ms = patched[0] if patched else None

    base = state.view_params()
    out = []
    for r in rows:
        sig = [("sig_id", str(r["sig_id"]))]
        links = {
            "requests": page.requests_url(sig + base),
            "in_scope": page.requests_url(sig + state.view_params(in_scope=True)),
            "unexplained": page.requests_url(sig + state.view_params(in_scope=True) + [("unexplained", "1")]),
            "orgs": page.page_url("orgs", [("ip", r["ip"]), ("ua", r["ua"])]),
            "ip": page.page_url("ips", [("ip", r["ip"])]),
            "user_agent": page.page_url("user-agents", [("ua", r["ua"])]),
        }
        if patched_ms is not None:
            after_patch = sig + [("ts__gte", str(patched_ms))]
            links["after_patch"] = page.requests_url(after_patch)
            links["after_patch_ok"] = page.requests_url(after_patch + [("status__gte", "200"), ("status__lt", "300")])
        out.append(
            {
                **address_and_agent(r),
                "kind": r["kind"],
                "cross_tenant": bool(r["cross_tenant"]),
                "orgs": r["orgs"],
                "reached": reach.get(r["sig_id"], []),
                "requests": r["requests"],
                "in_scope": r["in_scope"],
                "unexplained": r["unexplained"],
                "first_seen": ms_iso(r["first_ts"]),
                "last_seen": ms_iso(r["last_ts"]),
                "last_path": r["path"],
                "after_patch": r["after_patch"] if patched_ms is not None else None,
                "after_patch_ok": r["after_patch_ok"] if patched_ms is not None else None,
                "post_patch_valid": after.get(r["sig_id"], []),
                "after_patch_verdict": _verdict(r, patched_ms),
                "links": links,
            }
        )
    parts = await page.db.execute_fn(lambda conn: case_parts.signature_parts(sqlite_utils.Database(conn), out))
    for row in out:
        row.update(parts[notes.signature_target(row["ip"], row["user_agent"])])
    data = {
        "database": page.db.name,
        "view": "signatures",
        "status": status,
        "cross_tenant": cross,
        "sort": sort,
        "patched_at": ms_iso(patched_ms),
        "filters": state.filter_params(),
        "source": sources.window_source(state) if state.window else ("sig_org" if state.org else "sig_stats"),
        "base_url": page.self_url(json_format=False, **{k: None for k, _ in state.filter_params()}, page=None),
        **paging(page, total),
        "rows": out,
    }
    return await page.respond(
        "forensics_signatures.html",
        data,
        {
            "filter_bar": await filter_bar(page, tuple(STATUS), status),
            "status_urls": [(s, page.self_url(status=None if s == "all" else s, page=None)) for s in STATUS],
            "cross_urls": [(c, page.self_url(cross_tenant=None if c == "any" else c, page=None)) for c in CROSS],
            "sort_urls": {n: page.self_url(sort=("-" if sort != f"-{n}" else "") + n, page=None) for n in SORTS},
        },
    )


def _verdict(r: dict, patched_ms) -> str | None:
    """What the signature did at and after the patch, in a few words."""
    if patched_ms is None:
        return None
    if r["after_patch"] == 0:
        return "stopped at the patch"
    if r["after_patch_ok"] > 0:
        return "kept succeeding after the patch"
    return "refused after the patch"
