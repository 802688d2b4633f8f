"""The workbench requests page: the requests behind any figure, latest first, paged by key.

``/DB/-/forensics/requests`` (``.json``, and ``.csv`` streamed whole) takes the
pivots' filters (``org``, ``ip``, ``cidr``, ``cidr24``, ``cidr16``, ``ua``, ``family``,
``major``, ``os``, ``kind``, ``asn``, ``provider``, ``rdns``, ``tag``, ``from``, ``to``)
and its own (FILTERS): ``sig`` (a signature id), ``scope`` (``in``/``out``), ``status``
(``unexplained``/``explained``: in scope), ``rule`` (explained by that rule; the
verdicts are the rule ``verdict``), ``not_by`` (comma-separated rules: in scope and
explained by none of them), ``reason`` and ``named_org`` (out of scope, why, and the
org the request names), ``code`` (``404`` or ``2xx``), ``path`` (a path prefix),
``method`` and ``batch``.

It never scans: rows come from one index range (``requests_ts``, ``scoped_org``, or
the requests of a few signatures or of a small batch), walked backwards in widening
time steps within a time budget, and the next page starts below the last row's
(time, id) key (no OFFSET). The count comes from the kept aggregates (sig_stats,
sig_org, org_stats, pivot_groups, out_of_scope_counts, import_batches) whenever the
filters allow; otherwise a count bounded in rows and time says "at least N".
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass

from datasette.database import QueryInterrupted
from datasette.utils.asgi import AsgiStream, BadRequest

from ..derived.out_of_scope import ORG_OF_REQUEST, REASON_SQL, REASONS
from ..report import neutralise
from ..request_rows import REQUEST_JOINS
from .common import address_and_agent, Page, SIGNATURE_FILTERS, choice, ms_iso, open_page, page_view, parse_state
from .filter_bar import filter_bar

FILTERS = ("sig", "scope", "status", "rule", "not_by", "reason", "named_org", "code", "path", "method", "batch")
STATUSES = ("all", "unexplained", "explained")
SIG_LIST_MAX = 5_000  # more signatures than this: filtered row by row through their address and agent
DENSE_SIGS, DENSE_SHARE = 100, 0.02  # more signatures than this with this share of the requests: see Selection.dense
SMALL = 20_000  # a selection of at most this many requests is read whole by its own index, and sorted
STEP_MS = 3_600_000  # the first time step walked back; it grows while rows are few
BUDGET_S = 0.05  # time spent walking for one page before it returns what it found
STEP_LIMIT_MS = 40  # one step's query time limit
# A bounded count: up to the first cap within its time limit, then the second;
# past a cap (or out of time) it says "at least" the last cap it reached.
COUNT_STEPS = ((1_000, 25), (10_000, 40))
CSV_COLUMNS = ["id", "time", "ip", "user_agent", "method", "uri", "status", "org_id", "explained_by", "batch_id", "file", "line_no"]

RULES = "select name, bit, applied from rules order by applied_seq"
SIGS = """
select st.sig_id, {figures}
from sig_stats st join ips i on i.id = st.ip_id join user_agents a on a.id = st.ua_id
{org_join}
where {conds}
"""
ORG_SIGS = """
select sig_id, requests, requests, unexplained, first_ts, last_ts from sig_org
where org_id = :org and {predicate} limit :sig_cap
"""
DETAILS = f"""
select r.id, r.ts, i.ip, i.network, i.country, i.provider, a.ua, r.method, u.uri, r.status,
    coalesce(s.org_id, r.org_id) as org_id, s.explained, s.request_id is not null as in_scope,
    r.batch_id, r.line_no, b.source as file
from requests r
{REQUEST_JOINS}
left join scoped s on s.request_id = r.id
left join import_batches b on b.id = r.batch_id
where r.id in (select value from json_each(:ids))
"""
GROUP = "select requests, in_scope, unexplained from pivot_groups where grouping = :g and gkey = json_array({key})"
TOTALS = """
select coalesce(sum(requests), 0), coalesce(sum(in_scope), 0), coalesce(sum(unexplained), 0)
from pivot_groups where grouping = 'kind'
"""


@dataclass
class Selection:
    """The page's filters, compiled to SQL conditions over requests r, scoped s and paths p."""

    where: list
    params: dict
    sigs: list | None  # (sig_id, requests, in_scope, unexplained, first_ts, last_ts) the filters allow; None: any
    org: str | None
    scope: str  # any, in, out
    status: str  # all, unexplained, explained
    window: tuple[int, int] | None
    batch_rows: int | None  # the batch's imported requests, when ?batch= is given
    needs_path: bool  # a condition reads paths p (joined through uris u)
    plain: set  # the filters given beyond the signature ones, org, scope and status
    empty: bool  # the filters contradict each other: nothing matches
    group: tuple | None = None  # (grouping, value) of pivot_groups whose figures the signature filters select
    sig_join: bool = False  # the signature filters are conditions on ips i and user_agents a, joined per row
    dense: bool = False  # many signatures, holding a good share of the log: the time index finds their rows soonest


def _rule_bits(args: dict, key: str, by_name: dict) -> int:
    names = [n.strip() for n in args[key].split(",") if n.strip()]
    unknown = [n for n in names if n not in by_name]
    if unknown or not names:
        raise BadRequest(f"?{key}= must name rules, not {args[key]!r}.")
    return sum(by_name[n] for n in names)


async def _selection(page: Page, rules: list) -> Selection:
    request, state = page.request, page.state
    args = state.args
    where, params = [], {}
    scope = choice(request, "scope", ("any", "in", "out"), "any")
    status = choice(request, "status", STATUSES, "all")
    by_name = {name: bit for name, bit, _ in rules}
    plain = {k for k in FILTERS if k in args and k not in ("sig", "scope", "status")}
    in_scope = scope == "in" or status != "all" or state.org is not None or bool({"rule", "not_by"} & plain)
    out_scope = scope == "out" or bool({"reason", "named_org"} & plain)
    # Out of scope (scope=out, reason, named_org) with an org, a status or a rule (in
    # scope) selects nothing: a pivot filtered by an org links its out-of-scope figure so.
    empty = in_scope and out_scope
    scope = "in" if in_scope else "out" if out_scope else "any"
    if "rule" in args:
        where.append("s.explained & :rule_bits != 0")
        params["rule_bits"] = _rule_bits(args, "rule", by_name)
    if "not_by" in args:
        where.append("s.explained & :not_bits = 0")
        params["not_bits"] = _rule_bits(args, "not_by", by_name)
    if in_scope:
        where.append("s.request_id is not null")
    elif out_scope:
        where.append("s.request_id is null")
    if state.org is not None:
        where.append("s.org_id = :org")
        params["org"] = state.org
    if status == "unexplained":
        where.append("s.explained = 0")
    elif status == "explained":
        where.append("s.explained != 0")
    needs_path = False
    if "reason" in args:
        if args["reason"] not in REASONS:
            raise BadRequest(f"?reason= must be one of {', '.join(REASONS)}, not {args['reason']!r}.")
        where.append(f"{REASON_SQL} = :reason")
        params["reason"] = args["reason"]
        needs_path = True
    if "named_org" in args:
        where.append(f"coalesce({ORG_OF_REQUEST}, '') = :named_org")
        params["named_org"] = args["named_org"]
        needs_path = True
    if "code" in args:
        code = args["code"].strip().lower()
        if len(code) == 3 and code[0].isdigit() and code[1:] == "xx":
            params["code_lo"], params["code_hi"] = int(code[0]) * 100, int(code[0]) * 100 + 100
        elif code.isdigit():
            params["code_lo"], params["code_hi"] = int(code), int(code) + 1
        else:
            raise BadRequest(f"?code= must be a status code such as 404, or a class such as 2xx, not {code!r}.")
        where.append("r.status >= :code_lo and r.status < :code_hi")
    if "method" in args:
        where.append("r.method = :method")
        params["method"] = args["method"]
    batch_rows = None
    if "batch" in args:
        if not args["batch"].isdigit():
            raise BadRequest("?batch= must be a batch id (a whole number).")
        where.append("r.batch_id = :batch")
        params["batch"] = int(args["batch"])
        row = (await page.db.execute("select lines_imported from import_batches where id = :b", {"b": params["batch"]})).first()
        batch_rows = row[0] if row else 0
    if "path" in args:
        # The URIs under the prefix: a range of the paths' unique index, then their uris.
        where.append("u.path_id in (select id from paths where path >= :path and path < :path || char(1114111))")
        params["path"] = args["path"]
        needs_path = True
    sigs, sig_join = None, False
    if state.signature or state.cidr or state.tag or "sig" in args:
        conds, cond_params = state.conditions()
        if "sig" in args:
            if not args["sig"].isdigit():
                raise BadRequest("?sig= must be a signature id (a whole number).")
            conds.append("st.sig_id = :sig")
            cond_params["sig"] = int(args["sig"])
        if state.org is not None:
            figures = "so.requests, so.requests, so.unexplained, so.first_ts, so.last_ts"
            org_join = "join sig_org so on so.sig_id = st.sig_id and so.org_id = :org"
            cond_params["org"] = state.org
        else:
            figures, org_join = "st.requests, st.in_scope, st.unexplained, st.first_ts, st.last_ts", ""
        sql = SIGS.format(figures=figures, org_join=org_join, conds=" and ".join(conds) or "1") + " limit :sig_cap"
        sigs = [tuple(r) for r in await page.db.execute(sql, {**cond_params, "sig_cap": SIG_LIST_MAX + 1})]
        if any(len(set(request.args.getlist(key))) > 1 for key in SIGNATURE_FILTERS):
            sigs = []  # one filter given two values: nothing matches
        if len(sigs) > SIG_LIST_MAX:
            # Too many to list (a whole agent kind or family): each row's signature is checked.
            sigs, sig_join = None, True
            where += [c.replace("st.sig_id", "r.sig_id") for c in conds]
            params.update(cond_params)
    elif state.org is not None and (status != "all" or "rule" in args):
        # An org's unexplained (or explained) requests: those of its signatures that have some, when few.
        predicate = "unexplained > 0" if status == "unexplained" else "unexplained < requests"
        rows = await page.db.execute(ORG_SIGS.format(predicate=predicate), {"org": state.org, "sig_cap": SIG_LIST_MAX + 1})
        sigs = [tuple(r) for r in rows]
        if len(sigs) > SIG_LIST_MAX:
            sigs = None
    if sigs is not None:
        # Only the signatures with some of what the status asks for (their figures say so).
        if status == "unexplained":
            sigs = [s for s in sigs if s[3] > 0]
        elif status == "explained" or "rule" in args:
            sigs = [s for s in sigs if s[2] > s[3]]
        elif scope == "in":
            sigs = [s for s in sigs if s[2] > 0]
        where.append("r.sig_id in (select value from json_each(:sig_ids))")
        params["sig_ids"] = json.dumps([s[0] for s in sigs])
    window = None
    if state.window:
        w = state.window_params()
        window = (w["w_from"], w["w_to"])
        where.append("r.ts >= :w_from and r.ts < :w_to")
        params.update(w)
    return Selection(
        where, params, sigs, state.org, scope, status, window, batch_rows, needs_path, plain, empty,
        group=_group(state) if "sig" not in args and sigs != [] else None, sig_join=sig_join,
        dense=sigs is not None and len(sigs) > DENSE_SIGS and await _share(page, sigs, scope) >= DENSE_SHARE,
    )


async def _share(page: Page, sigs: list, scope: str) -> float:
    """The share of the log's (or the in-scope) requests these signatures hold."""
    requests, in_scope, _ = (await page.db.execute(TOTALS)).first()
    column, total = (2, in_scope) if scope == "in" else (1, requests)
    return sum(s[column] for s in sigs) / total if total else 0.0


def _group(state) -> tuple | None:
    """The pivot group (grouping, key value) the signature filters are, when they are one."""
    keys = set(state.signature) | ({state.cidr_cluster} if state.cidr_cluster else set())
    if state.tag or (state.cidr and not state.cidr_cluster) or len(keys) != 1:
        return None
    (key,) = keys
    if key == "major":
        return None
    value = state.cidr if key == state.cidr_cluster else state.signature[key]
    if value == "" and not SIGNATURE_FILTERS[key][1]:
        return None
    return ("raw" if key == "ua" else key), (None if value == "" else value)


async def _count(page: Page, sel: Selection) -> tuple[int | None, bool]:
    """(count, exact): from the aggregates when the filters allow, else bounded."""
    db = page.db
    if sel.empty:
        return 0, True
    if not sel.plain and sel.window is None and (sel.sigs is not None or not sel.sig_join or sel.group and sel.org is None):
        if sel.group is not None and sel.org is None:
            grouping, value = sel.group
            key = "(select id from user_agents where ua = :v)" if grouping == "raw" else ":v"
            row = (await db.execute(GROUP.format(key=key), {"g": grouping, "v": value})).first()
            requests, in_scope, unexplained = row if row else (0, 0, 0)
        elif sel.sigs is not None:
            requests = sum(s[1] for s in sel.sigs)
            in_scope = sum(s[2] for s in sel.sigs)
            unexplained = sum(s[3] for s in sel.sigs)
        elif sel.org is not None:
            row = (await db.execute("select in_scope, unexplained from org_stats where org_id = :org", {"org": sel.org})).first()
            requests = in_scope = row[0] if row else 0
            unexplained = row[1] if row else 0
        else:
            requests, in_scope, unexplained = (await db.execute(TOTALS)).first()
        if sel.status == "unexplained":
            return unexplained, True
        if sel.status == "explained":
            return in_scope - unexplained, True
        return {"in": in_scope, "out": requests - in_scope, "any": requests}[sel.scope], True
    by_signature = sel.sigs is not None or sel.sig_join
    if sel.plain and sel.plain <= {"reason", "named_org"} and not by_signature and sel.window is None and sel.org is None:
        sql = "select coalesce(sum(n), 0) from out_of_scope_counts where (:reason is null or reason = :reason) and (:named_org is null or org_id = :named_org)"
        p = {"reason": sel.params.get("reason"), "named_org": sel.params.get("named_org")}
        return (await db.execute(sql, p)).first()[0], True
    if sel.plain == {"batch"} and not by_signature and sel.window is None and sel.scope == "any":
        return sel.batch_rows, True
    if sel.plain and sel.plain <= {"rule", "not_by"} and not by_signature and sel.org is None and sel.window is None and sel.status == "all":
        n = await _waterfall_count(page, page.state.args)
        if n is not None:
            return n, True
    return await _bounded_count(page, sel)


WATERFALL = "select rule, remaining, explained from rule_waterfall order by position"


async def _waterfall_count(page: Page, args: dict) -> int | None:
    """A step of the rules waterfall, when it is current: what is left after some
    rules (``not_by`` = the rules of the first steps), or what a step's rule newly
    explained (``rule`` = its rule, ``not_by`` = the rules before it)."""
    steps = [tuple(r) for r in await page.db.execute(WATERFALL)]
    _, in_scope, unexplained = (await page.db.execute(TOTALS)).first()
    if not steps or steps[0][1] != in_scope or steps[-1][1] != unexplained:
        return None
    before = [n.strip() for n in args.get("not_by", "").split(",") if n.strip()]
    names = [rule for rule, _, _ in steps[1:]]
    k = len(before)
    if names[:k] != before:
        return None
    if "rule" not in args:
        return steps[k][1]
    if k < len(names) and names[k] == args["rule"]:
        return steps[k + 1][2]
    return None


async def _bounded_count(page: Page, sel: Selection) -> tuple[int | None, bool]:
    """(n, True) when the selection holds n requests, counted in time; (at least, False) else."""
    lo, hi = await _bounds(page, sel)
    reached = None
    for cap, limit_ms in COUNT_STEPS:
        sql, params = _driver(sel, (lo, hi), cursor=None, limit=cap + 1)
        try:
            n = (await page.db.execute(f"select count(*) from ({sql})", params, custom_time_limit=limit_ms)).first()[0]
        except QueryInterrupted:
            return reached, False
        if n <= cap:
            return n, True
        reached = cap
    return reached, False


def _small(sel: Selection) -> str | None:
    """The index that reads the whole selection cheaply, when it is small: by signature or by batch."""
    if sel.sigs is not None and sum(s[2] if sel.scope == "in" else s[1] for s in sel.sigs) <= SMALL:
        return "requests_sig"
    if sel.batch_rows is not None and sel.batch_rows <= SMALL:
        return "requests_batch"
    return None


def _driver(sel: Selection, span: tuple[int, int], cursor, limit: int) -> tuple[str, dict]:
    """The (ts, id) keys of the selection's requests in [span) below the cursor, latest first."""
    params = dict(sel.params, lo=span[0], hi=span[1], limit=limit)
    where = list(sel.where) + ["r.ts >= :lo and r.ts < :hi"]
    if cursor is not None:
        where.append("r.ts <= :c_ts and (r.ts < :c_ts or r.id < :c_id)")
        params["c_ts"], params["c_id"] = cursor
    small = _small(sel)
    key = "r.ts desc, r.id desc"
    if small or (sel.sigs is not None and not sel.dense):
        # A few signatures: their index ranges (sig_id, ts), or a small batch's lines.
        source = f"requests r indexed by {small or 'requests_sig'} left join scoped s on s.request_id = r.id"
    elif sel.org is not None:
        source = "scoped s indexed by scoped_org join requests r on r.id = s.request_id"
        where = [w.replace("r.ts", "s.ts").replace("r.id", "s.request_id") for w in where]
        key = "s.ts desc, s.request_id desc"
    else:
        source = "requests r indexed by requests_ts left join scoped s on s.request_id = r.id"
    if sel.needs_path:
        source += " join uris u on u.id = r.uri_id join paths p on p.id = u.path_id"
    if sel.sig_join:
        source += " join signatures g on g.id = r.sig_id join ips i on i.id = g.ip_id join user_agents a on a.id = g.ua_id"
    return f"select r.ts, r.id from {source} where {' and '.join(where)} order by {key} limit :limit", params


BOUNDS = "select (select min(ts) from requests), (select max(ts) from requests)"
ORG_BOUNDS = "select first_ts, last_ts from org_stats where org_id = :org"
SCOPE_BOUNDS = "select min(first_ts), max(last_ts) from org_stats"


async def _bounds(page: Page, sel: Selection) -> tuple[int, int]:
    """The time span the selection's requests lie in (end exclusive): its signatures',
    its org's or the in-scope requests' first and last, else the log's."""
    if sel.sigs is not None:
        firsts = [s[4] for s in sel.sigs if s[4] is not None]
        lo, hi = (min(firsts), max(s[5] for s in sel.sigs if s[5] is not None) + 1) if firsts else (0, 0)
    else:
        sql = ORG_BOUNDS if sel.org is not None else SCOPE_BOUNDS if sel.scope == "in" else BOUNDS
        row = (await page.db.execute(sql, {"org": sel.org})).first()
        lo, hi = ((row[0] or 0), (row[1] or 0) + 1) if row else (0, 0)
    if sel.scope == "in" and sel.org is None:
        first, last = (await page.db.execute(SCOPE_BOUNDS)).first()
        lo, hi = max(lo, first or 0), min(hi, (last or 0) + 1)
    if sel.window is not None:
        lo, hi = max(lo, sel.window[0]), min(hi, sel.window[1])
    return lo, hi


async def walk(page: Page, sel: Selection, cursor, size: int, limited: bool = True):
    """One page of (ts, id) keys below the cursor: (keys, next cursor, searched_to).

    searched_to is the time the walk reached when it stopped for the budget before
    the page filled (the next page goes on from there), else None. ``limited``:
    within BUDGET_S (the CSV walks on until the page is full).
    """
    budget = BUDGET_S if limited else None
    if sel.empty:
        return [], None, None
    lo, hi = await _bounds(page, sel)
    if cursor is not None:
        hi = min(hi, cursor[0] + 1)
    if _small(sel):
        sql, params = _driver(sel, (lo, hi), cursor, size + 1)
        keys = [tuple(r) for r in await page.db.execute(sql, params)]
        return keys[:size], (keys[size - 1] if len(keys) > size else None), None
    keys: list = []
    started = time.monotonic()
    step = STEP_MS
    top = hi
    while top > lo and len(keys) <= size:
        bottom = max(lo, top - step)
        sql, params = _driver(sel, (bottom, top), cursor, size + 1 - len(keys))
        try:
            found = [tuple(r) for r in await page.db.execute(sql, params, custom_time_limit=STEP_LIMIT_MS)]
        except QueryInterrupted:
            step = max(1000, step // 2)
        else:
            keys += found
            top = bottom
            if len(found) < size // 4 + 1:
                step *= 4
        if budget is not None and time.monotonic() - started > budget and len(keys) <= size:
            break
    if len(keys) > size:
        return keys[:size], keys[size - 1], None
    if top > lo:  # the budget ran out: the next page goes on below `top`
        return keys, (top, 0), top
    return keys, None, None


async def details(page: Page, keys: list, rules: list) -> list[dict]:
    """The rows for these (ts, id) keys, in their order, with their strings and links."""
    if not keys:
        return []
    rows = {r["id"]: r for r in await page.db.execute(DETAILS, {"ids": json.dumps([k[1] for k in keys])})}
    applied = [(name, bit) for name, bit, on in rules if on]
    out = []
    for _, request_id in keys:
        r = rows[request_id]
        mask = r["explained"] or 0
        out.append(
            {
                "id": r["id"],
                "time": ms_iso(r["ts"]),
                **address_and_agent(r),
                "method": r["method"],
                "uri": r["uri"],
                "status": r["status"],
                "org_id": r["org_id"],
                "in_scope": bool(r["in_scope"]),
                "explained_by": [name for name, bit in applied if mask & bit],
                "batch_id": r["batch_id"],
                "file": r["file"],
                "line_no": r["line_no"],
                "links": {
                    "request": page.page_url(f"requests/{r['id']}"),
                    "org": page.org_url(r["org_id"]) if r["org_id"] is not None and r["in_scope"] else None,
                    "signature": page.page_url("signatures", [("ip", r["ip"]), ("ua", r["ua"])]),
                },
            }
        )
    return out


def _cursor(value: str | None):
    if not value:
        return None
    try:
        ts, request_id = value.split(",")
        return int(ts), int(request_id)
    except ValueError:
        raise BadRequest("?next= must be the 'time,id' key a page links to.")


@page_view
async def view(datasette, request):
    """Requests behind a figure: filters in the URL, latest first, a page at a time."""
    fmt = request.url_vars.get("format")
    page = await open_page(datasette, request, "requests")
    page.json = fmt == ".json"
    state = await parse_state(page, extra=(*FILTERS, "next"))
    rules = [tuple(r) for r in await page.db.execute(RULES)]
    sel = await _selection(page, rules)
    if fmt == ".csv":
        return _csv(page, sel, rules)
    cursor = _cursor(state.args.get("next"))
    keys, next_key, searched_to = await walk(page, sel, cursor, state.size)
    rows = await details(page, keys, rules)
    total, exact = await _count(page, sel)
    filters = [(k, v) for k, v in state.args.items() if k not in ("next", "size", "page")]
    data = {
        "database": page.db.name,
        "view": "requests",
        "filters": filters,
        "count": total,
        "count_exact": exact,
        "size": state.size,
        "rows": rows,
        "next_url": page.self_url(next=f"{next_key[0]},{next_key[1]}") if next_key else None,
        "first_url": page.self_url(next=None) if cursor else None,
        "searched_to": ms_iso(searched_to) if searched_to is not None else None,
        "csv_url": _format_url(page, ".csv"),
        "requests_view_url": page.requests_view_url(),
        "clear_url": page.page_url("requests"),
    }
    return await page.respond(
        "forensics_requests.html", data, {"filter_bar": await filter_bar(page, STATUSES, sel.status)}
    )


def _format_url(page: Page, suffix: str) -> str:
    url = page.self_url(json_format=False, next=None)
    path, _, query = url.partition("?")
    return path + suffix + ("?" + query if query else "")


def _csv(page: Page, sel: Selection, rules: list) -> AsgiStream:
    """Every request of the selection as CSV, streamed a thousand rows at a time."""

    async def stream(writer):
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\r\n")
        w.writerow(CSV_COLUMNS)
        cursor = None
        while True:
            keys, cursor, _ = await walk(page, sel, cursor, 1000, limited=False)
            for r in await details(page, keys, rules):
                w.writerow([_cell(r, c) for c in CSV_COLUMNS])
            await writer.write(out.getvalue())
            out.seek(0)
            out.truncate()
            if cursor is None:
                break

    name = f"{page.db.name}-requests.csv"
    return AsgiStream(
        stream,
        content_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


def _cell(row: dict, column: str):
    value = ",".join(row[column]) if column == "explained_by" else row[column]
    return "" if value is None else neutralise(value)
