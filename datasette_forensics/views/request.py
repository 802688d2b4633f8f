"""One request: every field, the raw log line as imported, its provenance, its scope and rules."""

from __future__ import annotations

import json

from datasette import NotFound

from .. import rawlines
from .common import ms_iso, open_page, page_view

REQUEST = """
select r.id, r.ts, r.batch_id, r.line_no, r.sig_id, i.ip, i.prefix as cidr24, i.prefix16 as cidr16,
    i.asn, i.provider, i.rdns, a.ua, a.family, a.major, a.os, a.kind, r.method, u.uri, p.path,
    r.status, r.bytes, rf.referer, r.token_id, r.org_id as logged_org_id, r.extra,
    s.org_id as scope_org_id, s.explained, s.request_id is not null as in_scope,
    b.name as batch_name, b.source as file, b.format, b.started_at, o.slug as org_slug
from requests r
join signatures g on g.id = r.sig_id
join ips i on i.id = g.ip_id
join user_agents a on a.id = g.ua_id
join uris u on u.id = r.uri_id
join paths p on p.id = u.path_id
left join referers rf on rf.id = r.referer_id
left join scoped s on s.request_id = r.id
left join import_batches b on b.id = r.batch_id
left join orgs o on o.id = coalesce(s.org_id, r.org_id)
where r.id = :id
"""
RULES = "select name, bit from rules where applied = 1 order by applied_seq"
RAW_BYTES = "select raw from raw_bytes where batch_id = :batch and line_no = :line"


@page_view
async def view(datasette, request):
    """A request's own page: what the log said, where it came from, why it is in or out."""
    page = await open_page(datasette, request, "request")
    request_id = int(request.url_vars["request_id"])
    db = page.db
    row = (await db.execute(REQUEST, {"id": request_id})).first()
    if row is None:
        raise NotFound(f"Request not found: {request_id}")
    r = dict(row)
    if await page.withhold("orgs", "The org's slug"):
        r["org_slug"] = None
    raw = await db.execute_fn(lambda conn: rawlines.raw_line(conn, r["batch_id"], r["line_no"]))
    exact = (await db.execute(RAW_BYTES, {"batch": r["batch_id"], "line": r["line_no"]})).first()
    if raw is None and exact is not None:
        raw = exact[0]
    mask = r["explained"] or 0
    explained_by = [name for name, bit in await db.execute(RULES) if mask & bit]
    org_id = r["scope_org_id"] or r["logged_org_id"]
    sig = [("ip", r["ip"]), ("ua", r["ua"])]
    data = {
        "database": db.name,
        "view": "request",
        "id": r["id"],
        "time": ms_iso(r["ts"]),
        "ts": r["ts"],
        "ip": r["ip"],
        "cidr24": r["cidr24"],
        "cidr16": r["cidr16"],
        "asn": r["asn"],
        "provider": r["provider"],
        "rdns": r["rdns"],
        "user_agent": r["ua"],
        "ua_family": r["family"],
        "ua_major": r["major"],
        "ua_os": r["os"],
        "ua_kind": r["kind"],
        "method": r["method"],
        "uri": r["uri"],
        "path": r["path"],
        "status": r["status"],
        "bytes": r["bytes"],
        "referer": r["referer"],
        "token_id": r["token_id"],
        "logged_org_id": r["logged_org_id"],
        "extra": json.loads(r["extra"]) if r["extra"] else None,
        "in_scope": bool(r["in_scope"]),
        "org_id": org_id,
        "org_slug": r["org_slug"],
        "explained_by": explained_by,
        "unexplained": bool(r["in_scope"]) and mask == 0,
        "provenance": {
            "batch_id": r["batch_id"],
            "batch_name": r["batch_name"],
            "file": r["file"],
            "format": r["format"],
            "imported_at": r["started_at"],
            "line_no": r["line_no"],
        },
        # As imported: text when the bytes are UTF-8, else with backslash escapes (raw_bytes keeps them exact).
        "raw_line": None if raw is None else raw.decode("utf-8", "backslashreplace"),
        "raw_line_kept": raw is not None,
        "links": {
            "signature": page.page_url("signatures", sig),
            "signature_requests": page.page_url("requests", [("sig", str(r["sig_id"]))]),
            "org": page.org_url(org_id) if org_id is not None else None,
            "batch_requests": page.page_url("requests", [("batch", str(r["batch_id"]))]),
            "ip": page.page_url("ips", [("ip", r["ip"])]),
            "user_agent": page.page_url("user-agents", [("ua", r["ua"])]),
            "requests_view": page.requests_view_url([("id", str(r["id"]))]),
        },
    }
    return await page.respond("forensics_request.html", data, {"title": f"Request {r['id']}"})
