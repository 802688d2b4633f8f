"""The overview: incident, funnel, statuses, rules waterfall, timeline, saved views."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import sqlite_utils

from datasette import Response

from .. import permissions
from ..derived import out_of_scope
from ..derived.status import STATUSES, status_sql
from ..timeparse import utcnow
from . import chart, sources
from .common import DAY_MS, ms_iso, open_page, page_view, parse_state

INCIDENT = """
select name, introduced_at, patched_at, patched_ms, scope_paths, org_routes, require_integration, set_at
from incident where id = 1
"""
# The funnel from the aggregates: the four 'kind' groups hold every signature once.
FUNNEL = """
select (select count(*) from rejected_lines) as lines_rejected,
    coalesce(sum(requests), 0) as requests,
    coalesce(sum(in_scope), 0) as in_scope,
    coalesce(sum(unexplained), 0) as unexplained
from pivot_groups where grouping = 'kind'
"""
STATUS_COUNTS = f"select {status_sql()} as status, count(*) from org_stats group by status"
HAS_WATERFALL = "select 1 from sqlite_master where type = 'table' and name = 'rule_waterfall'"
WATERFALL = "select rule, remaining, explained from rule_waterfall order by position"
APPLIED = """
select r.name, r.bit, (
    select l.requests_explained from rule_ledger l
    where l.rule = r.name and l.action = 'apply' order by l.id desc limit 1
) as explained
from rules r where r.applied = 1 order by r.applied_seq
"""
BITS = "select name, bit from rules"
TOP_SIGNATURES = """
select st.sig_id, i.ip, a.ua, st.requests, st.in_scope, st.unexplained, st.orgs, st.cross_tenant, p.path
from sig_stats st
join ips i on i.id = st.ip_id
join user_agents a on a.id = st.ua_id
left join uris u on u.id = st.last_uri_id
left join paths p on p.id = u.path_id
where st.unexplained > 0
order by st.cross_tenant desc, st.unexplained desc, st.in_scope desc, st.requests desc
limit 10
"""
SAVED_VIEWS = "select id, name, url, created_by, created_at from saved_views order by id desc"
PIVOTS = [
    ("ips", "IP clusters", "by address, /24 and /16 network, ASN, provider, country, network kind, reverse DNS"),
    ("user-agents", "User-agent groups", "by exact user agent, family, family and major version, OS, kind"),
    ("orgs", "Orgs", "exposure per org: exposed, review, cleared"),
    ("signatures", "Signatures", "address and user agent pairs, cross-tenant first, with their activity after the patch"),
    ("rules", "Rules", "apply and undo elimination rules, custom rules, audit log"),
]


@page_view
async def view(datasette, request):
    """The overview of the incident; POST saves a view (name and URL)."""
    page = await open_page(datasette, request, "overview")
    if request.method == "POST":
        return await _save_view(page)
    db = page.db
    incident_row = (await db.execute(INCIDENT)).first()
    incident = None
    if incident_row is not None:
        incident = {
            "name": incident_row["name"],
            "introduced_at": incident_row["introduced_at"],
            "patched_at": incident_row["patched_at"],
            "scope_paths": json.loads(incident_row["scope_paths"]),
            "org_routes": json.loads(incident_row["org_routes"]),
            "require_integration": bool(incident_row["require_integration"]),
            "set_at": incident_row["set_at"],
        }
    funnel = dict((await db.execute(FUNNEL)).first())
    funnel_links = {
        "lines_rejected": page.table_url("rejected_lines"),
        "requests": page.requests_url([]),
        "in_scope": page.requests_url([("in_scope", "1")]),
        "unexplained": page.requests_url([("in_scope", "1"), ("unexplained", "1")]),
    }
    funnel["out_of_scope"] = await db.execute_fn(lambda conn: out_of_scope.counts(sqlite_utils.Database(conn)))
    funnel_links["out_of_scope"] = {
        reason: page.requests_url([("out_of_scope", reason), ("_nocount", "1")]) for reason in out_of_scope.REASONS
    }
    counts = dict(list(await db.execute(STATUS_COUNTS)))
    statuses = [
        {"status": s, "orgs": counts.get(s, 0), "url": page.page_url("orgs", [("status", s)])}
        for s in STATUSES
    ]
    waterfall, waterfall_source = await _waterfall(page, funnel)
    state = await parse_state(page)
    first, last = (await db.execute(sources.LOG_SPAN)).first()
    figures, timeline_source = await sources.hour_figures(page, state.from_ms, state.to_ms)
    timeline = []
    for day, _, in_scope, unexplained in sources.timeline_buckets(figures, DAY_MS):
        if not in_scope:
            continue
        span = sources.bucket_span(state, day, DAY_MS) + [("in_scope", "1")]
        timeline.append(
            {
                "day": ms_iso(day * DAY_MS)[:10],
                "in_scope": in_scope,
                "unexplained": unexplained,
                "links": {
                    "in_scope": page.requests_url(span),
                    "unexplained": page.requests_url(span + [("unexplained", "1")]),
                },
            }
        )
    top = [
        {
            "ip": r["ip"],
            "user_agent": r["ua"],
            "requests": r["requests"],
            "in_scope": r["in_scope"],
            "unexplained": r["unexplained"],
            "orgs": r["orgs"],
            "cross_tenant": bool(r["cross_tenant"]),
            "last_path": r["path"],
            "links": {
                "requests": page.requests_url([("sig_id", str(r["sig_id"]))]),
                "unexplained": page.requests_url(
                    [("sig_id", str(r["sig_id"])), ("in_scope", "1"), ("unexplained", "1")]
                ),
                "orgs": page.page_url("orgs", [("ip", r["ip"]), ("ua", r["ua"])]),
                "signature": page.page_url("signatures", [("ip", r["ip"]), ("ua", r["ua"])]),
            },
        }
        for r in await db.execute(TOP_SIGNATURES)
    ]
    saved = [
        {"id": r["id"], "name": r["name"], "url": r["url"], "created_by": r["created_by"], "created_at": r["created_at"]}
        for r in await db.execute(SAVED_VIEWS)
    ]
    data = {
        "database": db.name,
        "view": "overview",
        "incident": incident,
        "funnel": funnel,
        "funnel_links": funnel_links,
        "statuses": statuses,
        "waterfall": waterfall,
        "waterfall_source": waterfall_source,
        "timeline": timeline,
        "top_unexplained_signatures": top,
        "pivots": [{"name": label, "url": page.page_url(name), "about": about} for name, label, about in PIVOTS],
        "saved_views": saved,
    }
    unit = sources.timeline_unit(state, first, last)
    log_timeline = _log_timeline(page, figures, unit)
    data["log_timeline"] = log_timeline
    # The timelines show the window (?from=/?to=) when one is given; the rest of the page is the whole log.
    data["timeline_window"] = {"from": ms_iso(state.from_ms), "to": ms_iso(state.to_ms)} if state.window else None
    data["timeline_source"] = timeline_source
    charts = {
        "timeline": chart.time_bars(
            "chart-timeline",
            "Requests per " + ("day" if unit == DAY_MS else "hour") + " (UTC): unexplained, explained, out of scope",
            [
                {"start": b["start_ms"], "parts": {p: (b[p.replace(" ", "_")], b["links"][p.replace(" ", "_")]) for p in chart.PARTS if p != "in scope"}}
                for b in log_timeline
            ],
            unit,
            parts=("unexplained", "explained", "out of scope"),
        ),
        "waterfall": chart.waterfall(
            "chart-waterfall", "Rules waterfall: what each applied rule explained, and what is left", waterfall
        ),
    }
    return await page.respond("forensics_overview.html", data, {"charts": charts})


async def _waterfall(page, funnel: dict) -> tuple[list[dict], str]:
    """The rules waterfall: the rules engine's table when it is current, else the ledger."""
    db = page.db
    bits = dict(list(await db.execute(BITS)))
    steps, source = [], "rule_waterfall"
    if (await db.execute(HAS_WATERFALL)).first():
        steps = [dict(r) for r in await db.execute(WATERFALL)]
    if not steps or steps[0]["remaining"] != funnel["in_scope"] or steps[-1]["remaining"] != funnel["unexplained"]:
        # No current table: what each applied rule newly explained when it was applied.
        source = "rule_ledger"
        steps = [{"rule": None, "remaining": funnel["in_scope"], "explained": None}]
        for name, _, explained in await db.execute(APPLIED):
            steps.append({"rule": name, "remaining": steps[-1]["remaining"] - (explained or 0), "explained": explained})
    names: list[str] = []  # the rules of the steps so far: what is left is explained by none of them
    for step in steps:
        before = list(names)
        if step["rule"] is not None and step["rule"] in bits:
            names.append(step["rule"])
            step["explained_url"] = page.requests_url(
                [("in_scope", "1"), ("rule", step["rule"])] + ([("not_by", ",".join(before))] if before else [])
            )
        step["url"] = page.requests_url([("in_scope", "1")] + ([("not_by", ",".join(names))] if names else []))
    return steps, source


def _log_timeline(page, figures: dict, unit: int) -> list[dict]:
    """Every request per hour or day (``unit``), split by scope: exact, from the hour cells
    and the window's raw edge hours; each bucket links to its requests (within the window)."""
    buckets = []
    for bucket, requests, in_scope, unexplained in sources.timeline_buckets(figures, unit):
        span = sources.bucket_span(page.state, bucket, unit)
        buckets.append(
            {
                "start": chart.bucket_label(bucket * unit, unit),
                "start_ms": bucket * unit,
                "requests": requests,
                "unexplained": unexplained,
                "explained": in_scope - unexplained,
                "out_of_scope": requests - in_scope,
                "links": {
                    "requests": page.requests_url(span),
                    "unexplained": page.requests_url(span + [("in_scope", "1"), ("unexplained", "1")]),
                    "explained": page.requests_url(span + [("in_scope", "1"), ("unexplained", "0")]),
                    "out_of_scope": page.requests_url(span + [("in_scope", "0")]),
                },
            }
        )
    return buckets


async def _save_view(page) -> Response:
    """Save a named view (a workbench URL) for everyone with read access, or rename or
    delete one (``action`` = save, rename or delete)."""
    datasette, request = page.datasette, page.request
    await permissions.ensure_write(datasette, request.actor, "Saving a view")
    form = await request.post_vars()
    action = form.get("action") or "save"
    back = _local_url(form.get("next") or "", request) or page.base
    name = (form.get("name") or "").strip()[:200]
    if action == "save":
        url = _local_url(form.get("url") or "", request)
        if not name or url is None:
            datasette.add_message(
                request, "A saved view needs a name and a URL of this site (a path such as /db/-/forensics/ips).", datasette.ERROR
            )
            return Response.redirect(back, status=303)
        sql, params, message = (
            "insert into saved_views (name, url, created_by, created_at) values (?, ?, ?, ?)",
            [name, url, (request.actor or {}).get("id"), utcnow()],
            f"Saved the view {name!r}.",
        )
    elif action in ("rename", "delete") and (form.get("id") or "").isdigit():
        if action == "rename" and not name:
            datasette.add_message(request, "A saved view needs a name.", datasette.ERROR)
            return Response.redirect(back, status=303)
        sql, params, message = (
            ("update saved_views set name = ? where id = ?", [name, int(form["id"])], f"Renamed the view to {name!r}.")
            if action == "rename"
            else ("delete from saved_views where id = ?", [int(form["id"])], "Deleted the view.")
        )
    else:
        datasette.add_message(request, "Unknown saved-view action.", datasette.ERROR)
        return Response.redirect(back, status=303)

    def write(conn):
        with conn:
            return conn.execute(sql, params).rowcount

    if not await page.db.execute_write_fn(write, block=True):
        message = "That saved view no longer exists."
    datasette.add_message(request, message)
    return Response.redirect(back, status=303)


def _local_url(value: str, request) -> str | None:
    """A path on this site (never another site, never javascript:); None when it is not one."""
    value = value.strip()
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        if parts.scheme not in ("http", "https") or parts.netloc != request.host:
            return None
    path = parts.path
    if not path.startswith("/") or path.startswith("//") or "\\" in path or any(ord(c) < 32 for c in value):
        return None
    return path + (f"?{parts.query}" if parts.query else "")
