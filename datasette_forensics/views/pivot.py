"""IP clusters and user-agent groups: signatures grouped by a column of ips or user_agents.

Unfiltered, a pivot reads ``pivot_groups`` (one pre-computed row per group). With
filters it groups the per-signature relation of ``sources.py`` at request time;
both give the same figures.
"""

from __future__ import annotations

import json

from ..derived.aggregates import GROUPINGS, IP_GROUPINGS, KINDS
from . import case_parts, chart, sources
from ..windows import database as window_database
from .filter_bar import filter_bar
from .common import Page, choice, ms_iso, open_page, paged_total, paging, parse_state, sort_choice

# grouping -> (heading, field names of its key, requests_view columns, workbench filters)
GROUPING_KEYS = {
    "ip": ("Address", ("ip",), ("ip",), ("ip",)),
    "cidr24": ("Network (/24, /48)", ("network",), ("cidr24",), ("cidr24",)),
    "cidr16": ("Network (/16, /32)", ("network",), ("cidr16",), ("cidr16",)),
    "asn": ("ASN", ("asn",), ("asn",), ("asn",)),
    "provider": ("Provider", ("provider",), ("provider",), ("provider",)),
    "rdns": ("Reverse DNS", ("rdns",), ("rdns",), ("rdns",)),
    "country": ("Country", ("country",), ("country",), ("country",)),
    "network": ("Network kind", ("network_kind",), ("network",), ("network",)),
    "raw": ("User agent", ("user_agent",), ("user_agent",), ("ua",)),
    "family": ("Family", ("family",), ("ua_family",), ("family",)),
    "family_major": ("Family and major version", ("family", "major"), ("ua_family", "ua_major"), ("family", "major")),
    "os": ("Operating system", ("os",), ("ua_os",), ("os",)),
    "kind": ("Kind", ("kind",), ("ua_kind",), ("kind",)),
}

# page -> (title, groupings, default grouping, template)
IP_INFO_GROUPINGS = ("asn", "provider", "rdns")
PIVOTS = {
    "ips": ("IP clusters", ("ip", "cidr24", "cidr16", "asn", "provider", "country", "network", "rdns"), "ip"),
    "user-agents": ("User-agent groups", ("raw", "family", "family_major", "os", "kind"), "raw"),
}

STATUS = {
    "all": "1",
    "unexplained": "unexplained > 0",
    "explained": "in_scope > 0 and unexplained = 0",
}
SORTS = {
    "key": "k1",
    "requests": "requests",
    "in_scope": "in_scope",
    "unexplained": "unexplained",
    "orgs": "orgs",
    "signatures": "signatures",
    "ips": "ips",
    "user_agents": "user_agents",
    "first_seen": "first_ts",
    "last_seen": "last_ts",
}
TIEBREAK = "{t}unexplained desc, {t}in_scope desc, {t}requests desc, {t}k1, {t}k2"

FIGURES = (
    "k1", "k2", "requests", "in_scope", "unexplained", "orgs", "signatures", "ips", "user_agents",
    "first_ts", "last_ts", "browser", "library", "bot", "unknown",
)

# Unfiltered: the pre-computed groups.
GROUPS = """
select g.k1, g.k2, g.requests, g.in_scope, g.unexplained, g.orgs, g.signatures, g.ips,
    g.user_agents, g.first_ts, g.last_ts, g.browser, g.library, g.bot, g.unknown,
    a.ua as top_user_agent, p.path as last_path
from (
    select * from pivot_groups where grouping = :grouping and {status}
    order by {order} limit :limit offset :offset
) g
left join user_agents a on a.id = g.top_ua_id
left join uris u on u.id = g.last_uri_id
left join paths p on p.id = u.path_id
order by {outer_order}
"""
GROUPS_COUNT = "select count(*) from pivot_groups where grouping = :grouping and {status}"

# Filtered: group the signatures of this state at request time. The distinct orgs
# ({reach}) are counted here only when the page sorts by them; else for the page's
# groups only (REACH), like their top user agent and latest path.
FILTERED = """
with src as ({sigs}),
grouped as (
    select json_array({keys}) as gkey, {k1} as k1, {k2} as k2,
        sum(src.requests) as requests, sum(src.in_scope) as in_scope,
        sum(src.unexplained) as unexplained, count(*) as signatures,
        count(distinct src.ip_id) as ips, count(distinct src.ua_id) as user_agents,
        min(src.first_ts) as first_ts, max(src.last_ts) as last_ts,
        total(case when a.kind = 'browser' then src.requests end) as browser,
        total(case when a.kind = 'library' then src.requests end) as library,
        total(case when a.kind = 'bot' then src.requests end) as bot,
        total(case when a.kind = 'unknown' then src.requests end) as unknown
    from src join ips i on i.id = src.ip_id join user_agents a on a.id = src.ua_id
    where {conds}
    group by {group_by}
),
reach as ({reach})
select g.gkey, g.k1, g.k2, g.requests, g.in_scope, g.unexplained, coalesce(r.orgs, 0) as orgs,
    g.signatures, g.ips, g.user_agents, g.first_ts, g.last_ts, g.browser, g.library, g.bot,
    g.unknown, count(*) over () as total
from grouped g left join reach r on r.gkey = g.gkey
where {status}
order by {order} limit :limit offset :offset
"""
REACH = """
select json_array({keys}) as gkey, count(distinct p.org_id) as orgs
from ({pairs}) p
join sig_stats st on st.sig_id = p.sig_id
join ips i on i.id = st.ip_id join user_agents a on a.id = st.ua_id
where {conds}
group by {group_by}
"""
NO_REACH = "select null as gkey, null as orgs where 0"

# The signatures of the groups on the page (reached through the small ips or
# user_agents table and sig_stats' index on ip_id or ua_id).
PAGE_SIGS = """
select st.sig_id from sig_stats st
join ips i on i.id = st.ip_id join user_agents a on a.id = st.ua_id
where st.{key_id} in (
    select {alias}.id from {table} {alias} where json_array({keys}) in (select value from json_each(:gkeys))
) and {conds}
"""

# The top user agent and the latest path of the groups on the page (filtered).
FILTERED_TOP_UA = """
with src as ({sigs})
select json_array({keys}) as gkey, a.ua, sum(src.requests) as n
from src join ips i on i.id = src.ip_id join user_agents a on a.id = src.ua_id
where {conds} and json_array({keys}) in (select value from json_each(:gkeys))
group by {group_by}, src.ua_id
order by n desc, src.ua_id
"""
FILTERED_LAST_PATH = """
with src as ({sigs})
select x.gkey, p.path from (
    select json_array({keys}) as gkey, src.last_uri_id, max(src.last_ts)
    from src join ips i on i.id = src.ip_id join user_agents a on a.id = src.ua_id
    where {conds} and json_array({keys}) in (select value from json_each(:gkeys))
    group by {group_by}
) x
left join uris u on u.id = x.last_uri_id
left join paths p on p.id = u.path_id
"""


async def pivot_view(datasette, request, page_name: str):
    """A pivot page: IP clusters or user-agent groups, in HTML or JSON."""
    title, groupings, default = PIVOTS[page_name]
    page = await open_page(datasette, request, page_name)
    by = choice(request, "by", groupings, default)
    if by in IP_INFO_GROUPINGS:  # network owners and reverse DNS come from the ip_info records
        await page.require("ip_info")
    state = await parse_state(page, extra=("by", "status", "sort"))
    await window_database.for_page(page)
    status = choice(request, "status", tuple(STATUS), "all")
    sort, sort_column, descending = sort_choice(request, SORTS, "-unexplained")
    order = f"{{t}}{sort_column} {'desc' if descending else 'asc'}, " + TIEBREAK
    group_by, keys = GROUPINGS[by]
    filtered = state.filtered
    params = {"limit": state.size, "offset": (state.page - 1) * state.size, "grouping": by}

    if not filtered:
        sql = GROUPS.format(status=STATUS[status], order=order.format(t=""), outer_order=order.format(t="g."))
        rows = [dict(r) for r in await page.db.execute(sql, params)]
        total = (await page.db.execute(GROUPS_COUNT.format(status=STATUS[status]), params)).first()[0]
    elif state.engine:  # a window: the window engine groups in memory (windows/groups.py)
        conds, cond_params = state.conditions()
        key_id, alias, table = _member(by)
        rows, total = await page.db.groups(
            table=table, alias=alias, group_by=group_by, keys=keys, conds=conds, cond_params=cond_params,
            org=state.org, status=status, sort=sort_column, descending=descending,
            limit=params["limit"], offset=params["offset"],
        )
    else:
        sigs, source_params = sources.sigs_sql(state)
        conds, cond_params = state.conditions()
        parts = {
            "keys": ", ".join(keys), "k1": keys[0],
            "k2": keys[1] if len(keys) > 1 else "null", "group_by": group_by,
            "conds": " and ".join(conds) or "1",
        }
        params.update(source_params, **cond_params)
        by_orgs = sort.lstrip("-") == "orgs"
        if by_orgs:
            pairs, pair_params = sources.pairs_sql(state)
            params.update(pair_params)
        reach = REACH.format(pairs=pairs, **parts) if by_orgs else NO_REACH
        sql = FILTERED.format(sigs=sigs, reach=reach, status=STATUS[status], order=order.format(t=""), **parts)
        rows = [dict(r) for r in await page.db.execute(sql, params)]
        total = await paged_total(page.db, sql, params, rows)
        if rows:
            await _page_figures(page, state, by, parts, rows, orgs=not by_orgs)

    heading = GROUPING_KEYS[by][0]
    out_rows = [_row(page, by, r) for r in rows]
    await case_parts.add_tags(page, case_parts.GROUPING_TARGETS.get(by), out_rows, lambda r: r["key"])
    data = {
        "database": page.db.name,
        "view": page_name,
        "title": title,
        "by": by,
        "groupings": list(groupings),
        "status": status,
        "sort": sort,
        "filters": state.filter_params(),
        "source": _source(state) if filtered else "pivot_groups",
        "base_url": page.self_url(json_format=False, **{k: None for k, _ in state.filter_params()}, page=None),
        **paging(page, total),
        "rows": out_rows,
    }
    shown = out_rows[:30]
    charts = [
        chart.category_bars(
            "chart-groups",
            f"Requests of the first {len(shown)} groups on this page",
            GROUPING_KEYS[by][0],
            [
                {
                    "label": r["key"],
                    "parts": {
                        "unexplained": (r["unexplained"], r["links"]["unexplained"]),
                        "explained": (r["in_scope"] - r["unexplained"], r["links"]["explained"]),
                        "out of scope": (r["requests"] - r["in_scope"], r["links"]["out_of_scope"]),
                    },
                }
                for r in shown
            ],
        )
    ]
    return await page.respond(
        "forensics_pivot.html",
        data,
        {
            "title": title,
            "heading": heading,
            "by_urls": [(g, GROUPING_KEYS[g][0], page.self_url(by=g, page=None, sort=None)) for g in groupings],
            "filter_bar": await filter_bar(page, tuple(STATUS), status),
            "status_urls": [(s, page.self_url(status=None if s == "all" else s, page=None)) for s in STATUS],
            "sort_urls": {name: page.self_url(sort=("-" if sort != f"-{name}" else "") + name, page=None) for name in SORTS},
            "charts": charts,
            "kinds": KINDS,
        },
    )


async def _page_figures(page: Page, state, by: str, parts: dict, rows: list[dict], orgs: bool) -> None:
    """The shown groups' top user agent, latest path and (when ``orgs``) distinct orgs,
    from the relations of their signatures only."""
    params = {**state.conditions()[1], "gkeys": json.dumps([r["gkey"] for r in rows])}
    key_id, alias, table = _member(by)
    page_sigs = PAGE_SIGS.format(key_id=key_id, alias=alias, table=table, **parts)
    shown_sigs = [r[0] for r in await page.db.execute(page_sigs, params)]
    params["only_sigs"] = json.dumps(shown_sigs)
    only = "sigs" if len(shown_sigs) <= sources.ONLY_PROBES else "many_sigs"
    sigs, source_params = sources.sigs_sql(state, only=only)
    params.update(source_params)
    top = {}
    for gkey, ua, _ in await page.db.execute(FILTERED_TOP_UA.format(sigs=sigs, **parts), params):
        top.setdefault(gkey, ua)
    last = dict(await page.db.execute(FILTERED_LAST_PATH.format(sigs=sigs, **parts), params))
    reach = {}
    if orgs:
        pairs, pair_params = sources.pairs_sql(state, only=only)
        params.update(pair_params)
        reach = dict(await page.db.execute(REACH.format(pairs=pairs, **parts), params))
    for r in rows:
        r["top_user_agent"] = top.get(r["gkey"])
        r["last_path"] = last.get(r["gkey"])
        if orgs:
            r["orgs"] = reach.get(r["gkey"], 0)


def _member(by: str) -> tuple[str, str, str]:
    """What a grouping groups: (sig_stats column, alias, table) of addresses or user agents."""
    return ("ip_id", "i", "ips") if by in IP_GROUPINGS else ("ua_id", "a", "user_agents")


def _source(state) -> str:
    """What a filtered page grouped: the requests of a window, an org's pairs, or signatures."""
    return sources.window_source(state) if state.window else "sig_org" if state.org else "sig_stats"


def _row(page: Page, by: str, r: dict) -> dict:
    """One group with its figures and the links to the rows behind each."""
    _, names, view_columns, filters = GROUPING_KEYS[by]
    values = [r["k1"], r["k2"]][: len(names)]
    state = page.state
    group_view = [
        (f"{column}__isnull", "1") if value is None else (column, value)
        for column, value in zip(view_columns, values)
    ]
    group_filters = [(f, "" if v is None else v) for f, v in zip(filters, values)]
    own = {f for f in filters}
    # The group's own filters replace any page filter of the same name.
    page_filters = [(k, v) for k, v in state.filter_params() if k not in own]
    base = state.view_params() + group_view
    scoped = state.view_params(in_scope=True) + group_view
    key = " ".join(str(v) for v in values if v is not None) if any(v is not None for v in values) else None
    kinds = {k: int(r[k] or 0) for k in KINDS}
    return {
        "key": key,
        "values": dict(zip(names, values)),
        "requests": r["requests"],
        "in_scope": r["in_scope"],
        "unexplained": r["unexplained"],
        "orgs": r["orgs"],
        "signatures": r["signatures"],
        "ips": r["ips"],
        "user_agents": r["user_agents"],
        "first_seen": ms_iso(r["first_ts"]),
        "last_seen": ms_iso(r["last_ts"]),
        "kinds": kinds,
        "top_user_agent": r.get("top_user_agent"),
        "last_path": r.get("last_path"),
        "links": {
            "requests": page.requests_url(base),
            "in_scope": page.requests_url(scoped),
            "unexplained": page.requests_url(scoped + [("unexplained", "1")]),
            "explained": page.requests_url(scoped + [("unexplained", "0")]),
            "out_of_scope": page.requests_url(base + [("in_scope", "0")]),
            "orgs": page.page_url("orgs", page_filters + group_filters),
            "signatures": page.page_url("signatures", page_filters + group_filters),
            "ips": page.page_url("ips", [("by", "ip")] + page_filters + group_filters),
            "user_agents": page.page_url("user-agents", [("by", "raw")] + page_filters + group_filters),
            "kinds": {k: page.requests_url(base + [("ua_kind", k)]) for k in KINDS},
            "group": page.self_url(json_format=False, **{f: v for f, v in group_filters}, page=None),
        },
    }
