"""Custom rules: an analyst's named filter over the requests, applied like a built-in.

A definition is JSON, one of:

- ``{"filter": {...}}``: fields of the requests view, ANDed; a list of values
  means any of them. Fields: ``ip``, ``cidr``, ``user_agent`` (exact),
  ``ua_family``, ``ua_kind``, ``org_id``, ``path_prefix``, ``path_regex``
  (``re.search``), ``status`` (a code, or a class such as ``"4xx"``), ``from``
  (inclusive) and ``to`` (exclusive) times. Values are bound as SQL parameters.
- ``{"sql": "<predicate>"}``: one SQL boolean expression over the columns of
  ``requests_view``. It is checked with SQLite's authorizer while the statement
  is prepared: it may read only that view's columns (not ``explained`` or
  ``unexplained``, which depend on the other rules), call only the functions of
  :data:`ALLOWED_FUNCTIONS`, and hold no subquery; it cannot write, attach,
  run a pragma or a second statement.

A custom rule takes a bit of ``scoped.explained`` of its own when it is created
(see :mod:`.bits`).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
import secrets
import sqlite3

import sqlite_utils

from ..errors import ForensicsError
from ..patterns import regex_problem
from ..timeparse import TimeError, parse_time

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
MAX_PREDICATE = 4000
MAX_DESCRIPTION = 500

UA_KINDS = ("browser", "library", "bot", "unknown")
FILTER_FIELDS = (
    "ip", "cidr", "user_agent", "ua_family", "ua_kind", "org_id",
    "path_prefix", "path_regex", "status", "from", "to",
)
ALLOWED_FUNCTIONS = frozenset(
    {
        "lower", "upper", "substr", "substring", "like", "glob", "instr", "length",
        "coalesce", "ifnull", "abs", "regexp", "cidr_contains", "strftime", "date",
        "datetime", "julianday",
    }
)
# Columns of requests_view a predicate may not read: they are other rules' results.
FORBIDDEN_COLUMNS = frozenset({"explained", "unexplained", "explained_by"})
# The tables requests_view itself reads (the authorizer reports them from the view).
VIEW = "requests_view"
VIEW_TABLES = frozenset({"requests", "signatures", "ips", "user_agents", "uris", "paths", "referers", "scoped",
                         # read by the view's case columns (explained_by, out_of_scope, named_org_id)
                         "rules", "incident", "orgs", "integration_windows", "slug_windows"})


class InvalidRule(ForensicsError, ValueError):
    """A custom rule that cannot be saved: the message says why, in one sentence."""


# Functions registered on the connection that evaluates custom rules.


@functools.lru_cache(maxsize=256)
def _network(cidr: str):
    return ipaddress.ip_network(cidr, strict=False)


@functools.lru_cache(maxsize=65536)
def _address(ip: str):
    address = ipaddress.ip_address(ip)
    if address.version == 6 and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def cidr_contains(cidr, ip) -> int | None:
    """1 when the address ``ip`` lies in the network ``cidr``; 0 otherwise (NULL for NULL)."""
    if cidr is None or ip is None:
        return None
    try:
        network, address = _network(str(cidr)), _address(str(ip))
    except ValueError:
        return 0
    return int(address.version == network.version and address in network)


@functools.lru_cache(maxsize=256)
def _regex(pattern: str):
    return re.compile(pattern)


def regexp(pattern, value) -> int | None:
    """SQLite's ``value REGEXP pattern``: 1 when ``re.search`` finds the pattern."""
    if pattern is None or value is None:
        return None
    return int(_regex(str(pattern)).search(str(value)) is not None)


def register_functions(conn: sqlite3.Connection) -> None:
    """Make ``regexp`` and ``cidr_contains`` available on a connection."""
    conn.create_function("regexp", 2, regexp, deterministic=True)
    conn.create_function("cidr_contains", 2, cidr_contains, deterministic=True)


# Definitions


def _values(field: str, value) -> list:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise InvalidRule(f"The filter field {field!r} is an empty list: give at least one value.")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (str, int)) or (isinstance(v, str) and not v.strip()):
            raise InvalidRule(f"The filter field {field!r} holds {v!r}: give a non-empty string or a list of them.")
    return values


def _status_condition(values: list, bind) -> str:
    parts = []
    for v in values:
        text = str(v).strip().lower()
        if re.fullmatch(r"[1-5]xx", text):
            low = int(text[0]) * 100
            parts.append(f"status between {bind(low)} and {bind(low + 99)}")
        elif re.fullmatch(r"\d{3}", text):
            parts.append(f"status = {bind(int(text))}")
        else:
            raise InvalidRule(f"The filter status {v!r} is not an HTTP status: use a code such as 403 or a class such as '4xx'.")
    return " or ".join(parts)


def compile_filter(spec) -> tuple[str, dict]:
    """Compile a filter over the requests view to a predicate with bound parameters.

    Args:
        spec: a dict of FILTER_FIELDS to a value or a list of values.

    Returns:
        (predicate, params): SQL over requests_view columns with :f0, :f1... placeholders.

    Raises:
        InvalidRule: an unknown field or a bad value.
    """
    if not isinstance(spec, dict) or not spec:
        raise InvalidRule("A filter must be a JSON object with at least one of: " + ", ".join(FILTER_FIELDS) + ".")
    unknown = [k for k in spec if k not in FILTER_FIELDS]
    if unknown:
        raise InvalidRule(
            f"Unknown filter field {', '.join(map(repr, unknown))}: the fields are {', '.join(FILTER_FIELDS)}."
        )
    params: dict = {}

    def bind(value) -> str:
        key = f"f{len(params)}"
        params[key] = value
        return f":{key}"

    conditions = []
    for field in FILTER_FIELDS:
        if field not in spec:
            continue
        value = spec[field]
        if field in ("from", "to"):
            if isinstance(value, list) or isinstance(value, bool) or value in (None, ""):
                raise InvalidRule(f"The filter field {field!r} must be one time.")
            try:
                ms = parse_time(value)
            except TimeError:
                raise InvalidRule(
                    f"The filter field {field!r} = {value!r} is not a time (use ISO 8601 such as '2020-07-18T09:12:44Z')."
                ) from None
            conditions.append(f"ts >= {bind(ms)}" if field == "from" else f"ts < {bind(ms)}")
            continue
        values = _values(field, value)
        if field == "status":
            conditions.append(_status_condition(values, bind))
        elif field == "cidr":
            for v in values:
                try:
                    _network(str(v).strip())
                except ValueError:
                    raise InvalidRule(f"The filter cidr {v!r} is not a network such as 203.0.113.0/24.") from None
            conditions.append(" or ".join(f"cidr_contains({bind(str(v).strip())}, ip)" for v in values))
        elif field == "path_regex":
            for v in values:
                reason = regex_problem(str(v))
                if reason is not None:
                    raise InvalidRule(f"The filter path_regex {v!r} is not a valid regular expression ({reason}).")
            conditions.append(" or ".join(f"regexp({bind(str(v))}, path)" for v in values))
        elif field == "path_prefix":
            prefixes = [bind(str(v)) for v in values]
            conditions.append(" or ".join(f"substr(path, 1, length({p})) = {p}" for p in prefixes))
        elif field == "ua_kind":
            bad = [v for v in values if v not in UA_KINDS]
            if bad:
                raise InvalidRule(f"The filter ua_kind {bad[0]!r} is not one of {', '.join(UA_KINDS)}.")
            conditions.append(f"ua_kind in ({', '.join(bind(v) for v in values)})")
        else:  # ip, user_agent, ua_family, org_id: exact text
            conditions.append(f"{field} in ({', '.join(bind(str(v)) for v in values)})")
    return " and ".join(f"({c})" for c in conditions), params


def _scan(predicate: str) -> None:
    """Refuse what is not one expression: a ';', a comment, a parameter, unbalanced parentheses."""
    depth, i, n = 0, 0, len(predicate)
    closers = {"'": "'", '"': '"', "`": "`", "[": "]"}
    while i < n:
        c = predicate[i]
        if c in closers:
            end = predicate.find(closers[c], i + 1)
            while c in "'\"`" and end != -1 and predicate[end + 1 : end + 2] == c:  # doubled quote
                end = predicate.find(c, end + 2)
            if end == -1:
                raise InvalidRule("The SQL predicate has an unterminated string or quoted name.")
            i = end + 1
            continue
        if c == ";":
            raise InvalidRule("The SQL predicate must be one expression: ';' is not allowed outside a string.")
        if predicate.startswith("--", i) or predicate.startswith("/*", i):
            raise InvalidRule("The SQL predicate must not contain comments.")
        if c in "?:@$":
            raise InvalidRule(f"The SQL predicate must not contain parameters ({c!r} outside a string).")
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                raise InvalidRule("The SQL predicate closes a parenthesis it did not open: it must be one expression.")
        i += 1
    if depth:
        raise InvalidRule("The SQL predicate leaves a parenthesis open.")


class _Authorizer:
    """SQLite authorizer for a predicate wrapped in ``select count(*) from requests_view where (...)``."""

    def __init__(self):
        self.selects = 0
        self.reason: str | None = None

    def deny(self, reason: str) -> int:
        self.reason = self.reason or reason
        return sqlite3.SQLITE_DENY

    def __call__(self, action, arg1, arg2, dbname, source):
        if action == sqlite3.SQLITE_SELECT:
            if source == VIEW:
                return sqlite3.SQLITE_OK
            if source is None and self.selects == 0:
                self.selects += 1
                return sqlite3.SQLITE_OK
            return self.deny("subqueries are not allowed in a custom rule predicate")
        if action == sqlite3.SQLITE_READ:
            table, column = arg1, arg2
            if source == VIEW and table in VIEW_TABLES:
                return sqlite3.SQLITE_OK
            if table == VIEW and source is None and dbname == "main":
                if column in FORBIDDEN_COLUMNS:
                    return self.deny(f"the column {column} depends on the other rules and cannot be used")
                return sqlite3.SQLITE_OK
            if column == "" and source is None and table in VIEW_TABLES:
                return sqlite3.SQLITE_OK  # the view's own joins, with no column read
            return self.deny(f"a custom rule may read only the columns of {VIEW}, not {table}")
        if action == sqlite3.SQLITE_FUNCTION:
            name = (arg2 or "").lower()
            if source == VIEW or name in ALLOWED_FUNCTIONS or (name == "count" and self.selects == 1):
                return sqlite3.SQLITE_OK
            return self.deny(
                f"the function {arg2}() is not allowed (allowed: {', '.join(sorted(ALLOWED_FUNCTIONS))})"
            )
        if action == sqlite3.SQLITE_RECURSIVE:
            return self.deny("recursive queries are not allowed")
        return self.deny("a custom rule predicate may only read requests_view")


def check_predicate(conn: sqlite3.Connection, predicate) -> str:
    """Validate a SQL predicate over requests_view without running it.

    Returns:
        the predicate, stripped.

    Raises:
        InvalidRule: with the reason.
    """
    if not isinstance(predicate, str) or not predicate.strip():
        raise InvalidRule("The SQL predicate is empty: write a boolean expression such as ua_kind = 'bot'.")
    predicate = predicate.strip()
    if len(predicate) > MAX_PREDICATE:
        raise InvalidRule(f"The SQL predicate is longer than {MAX_PREDICATE:,} characters.")
    if "\x00" in predicate:
        raise InvalidRule("The SQL predicate contains a NUL character.")
    _scan(predicate)
    # A unique alias keeps the statement out of sqlite3's statement cache, so the
    # authorizer always sees it being prepared.
    sql = f"select count(*) as n_{secrets.token_hex(8)} from {VIEW} where ({predicate}\n)"
    if not sqlite3.complete_statement(sql + ";"):
        raise InvalidRule("The SQL predicate is not one complete expression.")
    register_functions(conn)
    authorizer = _Authorizer()
    conn.set_authorizer(authorizer)
    try:
        conn.execute("explain " + sql).fetchall()
    except sqlite3.Error as exc:
        if authorizer.reason:
            raise InvalidRule(f"The SQL predicate is refused: {authorizer.reason}.") from None
        raise InvalidRule(f"The SQL predicate is not a valid expression over {VIEW} ({exc}).") from None
    finally:
        conn.set_authorizer(None)
    if authorizer.reason:  # denied yet prepared: refuse all the same
        raise InvalidRule(f"The SQL predicate is refused: {authorizer.reason}.")
    return predicate


def compile_definition(definition) -> tuple[str, dict]:
    """(predicate, params) of a definition; SQL predicates are checked by :func:`check_predicate`."""
    if not isinstance(definition, dict) or len(definition) != 1 or next(iter(definition)) not in ("filter", "sql"):
        raise InvalidRule('A custom rule is {"filter": {...}} or {"sql": "<predicate>"}.')
    if "filter" in definition:
        return compile_filter(definition["filter"])
    predicate = definition["sql"]
    if not isinstance(predicate, str) or not predicate.strip():
        raise InvalidRule("The SQL predicate is empty: write a boolean expression such as ua_kind = 'bot'.")
    return predicate.strip(), {}


class CustomRule:
    """A saved custom rule, with the interface of the built-in rule modules."""

    builtin = False

    def __init__(self, name: str, bit: int, description: str, definition: dict):
        self.NAME = name
        self.BIT = bit
        self.DESCRIPTION = description
        self.definition = definition
        self.predicate, self.PARAMS = compile_definition(definition)

    def prepare(self, db: sqlite_utils.Database) -> None:
        """Register the functions; re-check a SQL predicate (the rules table may have been edited)."""
        register_functions(db.conn)
        if "sql" in self.definition:
            check_predicate(db.conn, self.predicate)

    def match_sql(self) -> str:
        """A SQL condition on an in-scope request ``s`` (a row of scoped): true when the rule explains it."""
        return f"""s.request_id in (select v.id from {VIEW} v where ({self.predicate}
    ))"""


def summary(definition: dict) -> str:
    if "sql" in definition:
        text = definition["sql"]
    else:
        text = ", ".join(f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in definition["filter"].items())
    return text if len(text) <= 200 else text[:199] + "…"
