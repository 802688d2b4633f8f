"""What every workbench page shares: the database and its permission check, the URL
state (grouping, filters, sort, paging), drill-down links and the HTML/JSON response.

Every figure a page shows links to the rows behind it: requests go to Datasette's
own ``requests_view`` table page (facets, CSV/JSON export and shareable URLs work
there), orgs and signatures go to the workbench page listing them. Filter values
always travel as SQL parameters; the only SQL text built here comes from fixed
allow-lists.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import sqlite3
from dataclasses import dataclass, field
from urllib.parse import urlencode

import sqlite_utils
from datasette import NotFound, Response
from datasette.database import QueryInterrupted
from datasette.views.base import DatasetteError
from datasette.utils import tilde_decode, tilde_encode
from datasette.utils.asgi import BadRequest

from .. import notes, permissions
from ..schema import is_forensic_database
from . import empty
from ..enrich import KINDS
from ..timeparse import TimeError, format_ms, parse_time

DAY_MS = 86_400_000
DEFAULT_SIZE = 50
MAX_SIZE = 1000

# Signature filters every page understands: URL parameter -> (SQL column, nullable,
# requests_view column). An empty value of a nullable one means "unknown" (null).
SIGNATURE_FILTERS = {
    "ip": ("i.ip", False, "ip"),
    "cidr24": ("i.prefix", False, "cidr24"),
    "cidr16": ("i.prefix16", False, "cidr16"),
    "ua": ("a.ua", False, "user_agent"),
    "kind": ("a.kind", False, "ua_kind"),
    "asn": ("i.asn", True, "asn"),
    "provider": ("i.provider", True, "provider"),
    "rdns": ("i.rdns", True, "rdns"),
    "country": ("i.country", True, "country"),
    "network": ("i.network", True, "network"),
    "family": ("a.family", True, "ua_family"),
    "major": ("a.major", True, "ua_major"),
    "os": ("a.os", True, "ua_os"),
}
STATE_KEYS = ("by", "org", "status", "cross_tenant", "cidr", *SIGNATURE_FILTERS, "tag", "from", "to", "sort", "page", "size")


SAVED_VIEWS_AT = """
select id, name, url, created_by, created_at from saved_views
where url = :path or substr(url, 1, length(:prefix)) = :prefix order by name, id
"""


def page_view(fn):
    """A workbench view: a query over Datasette's time limit is a 400 saying so, and one
    that names an index a first import has not built yet a 503 saying so, not a 500."""

    @functools.wraps(fn)
    async def view(datasette, request):
        try:
            return await fn(datasette, request)
        except QueryInterrupted:
            raise DatasetteError(
                "This view took longer than the sql_time_limit_ms setting allows. Views with "
                "?from=/?to= read the requests of that window: narrow it, or raise the setting.",
                title="Query took too long",
                status=400,
            )
        except sqlite3.OperationalError as exc:
            # The views read requests through named indexes (they never scan); a first
            # import builds those when it closes (derived/indexes.py).
            if "no such index" not in str(exc):
                raise
            raise DatasetteError(
                "A first import is still loading this database, and this view reads the "
                "indexes it builds when it finishes: reload the page then.",
                title="Import in progress",
                status=503,
            )

    return view


def ms_iso(ms) -> str | None:
    return None if ms is None else format_ms(ms)


def address_and_agent(r) -> dict:
    """A row's address with its owner (what ``m.owner`` shows beside it: network kind,
    country, provider) and its user agent, as every list of requests or signatures shows them."""
    return {
        "ip": r["ip"],
        "network": r["network"],
        "country": r["country"],
        "provider": r["provider"],
        "user_agent": r["ua"],
    }


def to_json_text(data) -> str:
    """JSON with <, > and & escaped, so log strings never appear as markup even if sniffed."""
    return (
        json.dumps(data, ensure_ascii=False, default=str)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )


@dataclass
class State:
    """The URL state of a page: everything needed to show the same view again."""

    args: dict = field(default_factory=dict)  # the recognised, non-empty parameters as given
    signature: dict = field(default_factory=dict)  # SIGNATURE_FILTERS present (value may be '')
    org: str | None = None
    cidr: str | None = None  # normalised network
    cidr_cluster: str | None = None  # cidr24 or cidr16 when cidr is one of those clusters
    cidr_ips: list | None = None  # else: the addresses seen within it
    from_ms: int | None = None
    to_ms: int | None = None
    tag: str | None = None  # ?tag=: signatures whose signature, address, network or user agent carry it
    tag_ips: str = "[]"  # JSON: addresses within networks tagged at other lengths (notes.tagged_addresses)
    tag_signatures: bool = True  # False where the tag filters the page's own rows instead (orgs)
    page: int = 1
    size: int = DEFAULT_SIZE
    engine: bool = False  # the window's figures come from the window engine (windows/database.py)

    @property
    def window(self) -> bool:
        return self.from_ms is not None or self.to_ms is not None

    def conditions(self) -> tuple[list[str], dict]:
        """SQL conditions on ips ``i`` and user_agents ``a`` for the signature filters."""
        where, params = [], {}
        for key, value in self.signature.items():
            column, nullable, _ = SIGNATURE_FILTERS[key]
            if nullable and value == "":
                where.append(f"{column} is null")
            else:
                where.append(f"{column} = :f_{key}")
                params[f"f_{key}"] = value
        if self.cidr_cluster is not None:
            where.append(f"{SIGNATURE_FILTERS[self.cidr_cluster][0]} = :f_cidr")
            params["f_cidr"] = self.cidr
        elif self.cidr is not None:
            where.append("i.ip in (select value from json_each(:f_cidr_ips))")
            params["f_cidr_ips"] = json.dumps(self.cidr_ips)
        if self.tag is not None and self.tag_signatures:
            where.append(notes.tag_condition())
            params.update(tag=self.tag, tag_ips=self.tag_ips)
        return where, params

    @property
    def filtered(self) -> bool:
        """Whether the page must group what this state selects rather than read its aggregate."""
        return bool(self.signature or self.cidr or self.org or self.window or (self.tag and self.tag_signatures))

    def window_params(self) -> dict:
        """The window as :w_from and :w_to (an open end is far away)."""
        return {
            "w_from": -(2**62) if self.from_ms is None else self.from_ms,
            "w_to": 2**62 if self.to_ms is None else self.to_ms,
        }

    def view_params(self, in_scope: bool = False) -> list[tuple[str, str]]:
        """The same filters as requests_view parameters (Datasette's table filters)."""
        params = []
        for key, value in self.signature.items():
            _, nullable, column = SIGNATURE_FILTERS[key]
            params.append((f"{column}__isnull", "1") if nullable and value == "" else (column, value))
        if self.cidr_cluster is not None:
            params.append((self.cidr_cluster, self.cidr))
        elif self.cidr is not None:
            params.append(("ip__in", json.dumps(self.cidr_ips)))
        if self.org is not None:
            params += [("org_id", self.org), ("in_scope", "1")]
        elif in_scope:
            params.append(("in_scope", "1"))
        if self.from_ms is not None:
            params.append(("ts__gte", str(self.from_ms)))
        if self.to_ms is not None:
            params.append(("ts__lt", str(self.to_ms)))
        return params

    def filter_params(self, drop: tuple = ()) -> list[tuple[str, str]]:
        """The filters as workbench URL parameters (no grouping, sort or paging)."""
        keep = ("org", "cidr", *SIGNATURE_FILTERS, "tag", "from", "to")
        return [(k, self.args[k]) for k in keep if k in self.args and k not in drop]


class Page:
    """One request to a workbench page: its database, URL state and link builders."""

    def __init__(self, datasette, request, db, name: str):
        self.datasette = datasette
        self.request = request
        self.db = db
        self.name = name
        self.json = request.url_vars.get("format") == ".json"
        self.base = datasette.urls.database(db.name) + "/-/forensics"
        self.state = State()
        self.withheld: list[str] = []  # sentences: what this actor may not see here, and why

    # Table permissions -------------------------------------------------------------

    async def may_view(self, table: str) -> bool:
        """May this actor view table (Datasette's view-table)?"""
        return await permissions.may_view_table(self.datasette, self.request.actor, self.db.name, table)

    async def require(self, *tables: str) -> None:
        """403 unless this actor may view every one of tables (a view that is all about them)."""
        await permissions.ensure_view_tables(self.datasette, self.request.actor, self.db.name, tables)

    async def withhold(self, tables: str | tuple, part: str) -> bool:
        """True (and a sentence on the page) when part comes from a table this actor may not view.

        Usage: ``if await page.withhold(("memberships", "users"), "Members"): members = []``
        """
        denied = [t for t in ((tables,) if isinstance(tables, str) else tables) if not await self.may_view(t)]
        if denied:
            self.withheld.append(permissions.withheld_sentence(denied, part))
        return bool(denied)

    # Links ---------------------------------------------------------------------

    def requests_url(self, params: list[tuple[str, str]]) -> str:
        """The workbench requests page (views/requests.py) for these requests_view
        filters (or the page's own parameters, which pass as they are)."""
        return self.page_url("requests", requests_filters(params, self.state))

    def requests_view_url(self, params: list[tuple[str, str]] | None = None) -> str:
        """Datasette's own requests_view table, for ad-hoc filtering and export: no count, no facet suggestions."""
        return self.table_url("requests_view", list(params or []) + [("_nocount", "1")])

    def table_url(self, table: str, params: list[tuple[str, str]] | None = None) -> str:
        return self.datasette.urls.table(self.db.name, table) + "?" + urlencode(list(params or []) + [("_nosuggest", "1")])

    def page_url(self, page: str = "", params: list[tuple[str, str]] | None = None, json_format: bool = False) -> str:
        path = self.base + (f"/{page}" if page else "") + (".json" if json_format else "")
        params = [(k, v) for k, v in (params or []) if v is not None]
        return path + ("?" + urlencode(params) if params else "")

    def org_url(self, org_id: str, json_format: bool = False) -> str:
        return self.page_url(f"orgs/{tilde_encode(str(org_id))}", json_format=json_format)

    def self_url(self, json_format: bool | None = None, **changes) -> str:
        """This page's URL with some state changed (None removes a parameter)."""
        args = dict(self.state.args)
        for key, value in changes.items():
            if value is None:
                args.pop(key, None)
            else:
                args[key] = str(value)
        fmt = self.json if json_format is None else json_format
        path = self.request.path
        if path.endswith(".json"):
            path = path[: -len(".json")]
        ordered = [(k, args[k]) for k in STATE_KEYS if k in args] + [(k, v) for k, v in args.items() if k not in STATE_KEYS]
        return path + (".json" if fmt else "") + ("?" + urlencode(ordered) if args else "")

    async def saved_views_here(self) -> list[dict]:
        """The saved views of this page (same path, any filters)."""
        path = self.request.path[: -len(".json")] if self.request.path.endswith(".json") else self.request.path
        rows = await self.db.execute(SAVED_VIEWS_AT, {"path": path, "prefix": path + "?"})
        return [dict(r) for r in rows]

    # Responses -------------------------------------------------------------------

    async def respond(self, template: str, data: dict, context: dict | None = None) -> Response:
        """The page as JSON (data) or HTML (data and context through the template)."""
        if self.withheld:
            data = dict(data, withheld=self.withheld)
        if self.json:
            return Response(to_json_text(data), content_type="application/json; charset=utf-8")
        can_write = await permissions.may_write(self.datasette, self.request.actor)
        page_context = {
            "database": self.db.name,
            "forensics_base": self.base,
            "forensics_page": self.name,
            "data": data,
            "json_url": self.self_url(json_format=True),
            "save_url": self.self_url(json_format=False),
            "can_write": can_write,
            "withheld": self.withheld,
            "rules_url": self.base + "/rules",
            "chart_frame_url": self.datasette.urls.path("-/forensics-chart"),
            "gaps": await empty.gaps(self.db),
            "page_views": await self.saved_views_here(),
        }
        page_context.update(context or {})
        return Response.html(
            await self.datasette.render_template(template, page_context, request=self.request)
        )


async def open_page(datasette, request, name: str, tables: tuple = ()) -> Page:
    """Every workbench view's first call: view permissions, then the forensic database.

    Args:
        name: the page's name (for the navigation).
        tables: tables the page is all about, beyond the log: an actor who may not
            view one of them gets 403 (parts of a page use ``page.withhold``).
    Returns:
        the Page; raises Forbidden (403) or NotFound (404, not a forensic database).
    """
    actor = request.actor
    route = tilde_decode(request.url_vars["database"])
    await permissions.ensure_view_database(datasette, actor, route)
    try:
        db = datasette.get_database(route=route)
    except KeyError:
        raise NotFound(f"Database not found: {route}")
    if db.name != route:
        await permissions.ensure_view_database(datasette, actor, db.name)
    if db.is_memory or not await db.execute_fn(is_forensic_database):
        raise NotFound(f"{db.name} is not a forensics database.")
    await permissions.ensure_view_tables(datasette, actor, db.name, permissions.LOG_TABLES + tuple(tables))
    return Page(datasette, request, db, name)


# The requests page's own parameters (views/requests.py): they pass through requests_filters.
REQUESTS_PAGE_KEYS = (
    "org", "cidr", *SIGNATURE_FILTERS, "tag", "from", "to",
    "sig", "scope", "status", "rule", "not_by", "reason", "named_org", "code", "path", "method", "batch",
)
# requests_view filters as the pages build them -> (requests page parameter, value map).
VIEW_TO_PAGE = {
    "sig_id": ("sig", None),
    "org_id": ("org", None),
    "in_scope": ("scope", {"1": "in", "0": "out"}),
    "unexplained": ("status", {"1": "unexplained", "0": "explained"}),
    "out_of_scope": ("reason", None),
    "named_org_id": ("named_org", None),
    "batch_id": ("batch", None),
    **{column: (key, None) for key, (_, _, column) in SIGNATURE_FILTERS.items()},
}


def requests_filters(params: list[tuple[str, str]], state: State) -> list[tuple[str, str]]:
    """requests_view filters (as the pages build them) as the requests page's parameters.

    Raises:
        ValueError: a filter the requests page has no equivalent for (a programming error).
    """
    columns = {column: key for key, (_, _, column) in SIGNATURE_FILTERS.items()}
    out = []
    for column, value in params:
        if column in VIEW_TO_PAGE:
            key, values = VIEW_TO_PAGE[column]
            out.append((key, values[value] if values else value))
        elif column in REQUESTS_PAGE_KEYS:
            out.append((column, value))
        elif column.endswith("__isnull") and column[: -len("__isnull")] in columns:
            out.append((columns[column[: -len("__isnull")]], ""))
        elif column == "ip__in":
            out.append(("cidr", state.cidr))
        elif column in ("ts__gte", "ts__lt"):
            out.append(("from" if column == "ts__gte" else "to", format_ms(int(value))))
        elif column == "status__gte" and value == "200":
            out.append(("code", "2xx"))
        elif column in ("status__lt", "_sort_desc", "_nocount"):
            continue  # the 2xx class's upper bound; the page is latest first and counts cheaply anyway
        else:
            raise ValueError(f"no requests page filter for requests_view's {column!r}")
    # org, status and rule imply scope=in: keep the URL short.
    keys = {k for k, _ in out}
    if keys & {"org", "status", "rule", "not_by"}:
        out = [(k, v) for k, v in out if (k, v) != ("scope", "in")]
    return list(dict.fromkeys(out))


def choice(request, key: str, allowed, default: str) -> str:
    """A parameter that must be one of a fixed set (400 otherwise)."""
    value = request.args.get(key) or default
    if value not in allowed:
        raise BadRequest(f"?{key}= must be one of {', '.join(allowed)}, not {value!r}.")
    return value


def sort_choice(request, allowed: dict, default: str) -> tuple[str, str, bool]:
    """?sort=NAME or ?sort=-NAME from an allow-list: (given, SQL expression, descending)."""
    value = request.args.get("sort") or default
    name = value.lstrip("-")
    if name not in allowed:
        raise BadRequest(f"?sort= must be one of {', '.join(allowed)} (prefix - for descending), not {value!r}.")
    return value, allowed[name], value.startswith("-")


async def parse_state(page: Page, extra: tuple = ()) -> State:
    """Read filters, paging and the time window from the query string.

    Args:
        extra: page-specific parameters to keep in the URL state (by, status, sort...).
    """
    request = page.request
    state = page.state
    for key in ("org", "cidr", "tag", "from", "to", "page", "size", *extra):
        value = request.args.get(key)
        if value not in (None, ""):
            state.args[key] = value
    search = (request.args.get("q") or "").strip()
    if search:
        # The filter bar's one search field: an address, a network or a user agent.
        state.args[search_target(search)] = search
    for key in SIGNATURE_FILTERS:
        if key in request.args:
            value = request.args.get(key) or ""
            if key == "kind" and value == "":
                continue  # the filter bar's "any kind"
            if key == "kind" and value not in KINDS:
                raise BadRequest(f"?kind= must be one of {', '.join(KINDS)}, not {value!r}.")
            state.signature[key] = value
            state.args[key] = value
    for key in ("ip", "ua"):
        if key in state.args and key not in state.signature:
            state.signature[key] = state.args[key]
    state.org = state.args.get("org")
    state.tag = state.args.get("tag")
    if state.tag is not None:
        state.tag_ips = await page.db.execute_fn(
            lambda conn: notes.tagged_addresses(sqlite_utils.Database(conn), state.tag)
        )
    if "cidr" in state.args:
        try:
            network = ipaddress.ip_network(state.args["cidr"].strip(), strict=False)
        except ValueError:
            raise BadRequest(f"?cidr= is not a network: {state.args['cidr']!r}.")
        state.cidr = str(network)
        clusters = {24: "cidr24", 16: "cidr16"} if network.version == 4 else {48: "cidr24", 32: "cidr16"}
        state.cidr_cluster = clusters.get(network.prefixlen)
        if state.cidr_cluster is None:
            # Any other network: the addresses seen within it (the ips table is small).
            rows = await page.db.execute("select ip from ips where version = :v", {"v": network.version})
            state.cidr_ips = sorted(r[0] for r in rows if ipaddress.ip_address(r[0]) in network)
    for key in ("from", "to"):
        if key in state.args:
            try:
                ms = parse_time(state.args[key])
            except TimeError as exc:
                raise BadRequest(f"?{key}= is not a time: {exc}.")
            setattr(state, f"{key}_ms", ms)
    try:
        state.page = max(1, int(state.args.get("page", 1)))
        state.size = min(MAX_SIZE, max(1, int(state.args.get("size", DEFAULT_SIZE))))
    except ValueError:
        raise BadRequest("?page= and ?size= must be whole numbers.")
    return state


def search_target(text: str) -> str:
    """Which filter a search names: ip for an address, cidr for a network, else ua."""
    try:
        ipaddress.ip_address(text)
        return "ip"
    except ValueError:
        pass
    if "/" in text:
        try:
            ipaddress.ip_network(text, strict=False)
            return "cidr"
        except ValueError:
            pass
    return "ua"


async def paged_total(db, sql: str, params: dict, rows: list[dict]) -> int:
    """The ``total`` column (``count(*) over ()``) of a page of ``sql``'s rows: from the
    page's first row, or past the last page, where there is none, from the first page's."""
    if rows:
        return rows[0]["total"]
    if not params.get("offset"):
        return 0
    first = (await db.execute(sql, dict(params, limit=1, offset=0))).first()
    return 0 if first is None else first["total"]


def paging(page: Page, total: int) -> dict:
    """Where this page of rows sits, with the URLs of its neighbours."""
    state = page.state
    last = max(1, -(-total // state.size))
    return {
        "page": state.page,
        "size": state.size,
        "total": total,
        "pages": last,
        "next_url": page.self_url(page=state.page + 1) if state.page < last else None,
        "previous_url": page.self_url(page=state.page - 1 if state.page > 2 else None) if state.page > 1 else None,
    }

