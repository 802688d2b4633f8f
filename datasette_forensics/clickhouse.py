"""ClickHouse as a log source, and as the first stage of the scope.

When logs outgrow one machine they usually already sit in ClickHouse. Two things
then help:

- ``import-logs DB --from-clickhouse URL --query SQL`` streams a query's rows over
  the native protocol into the forensic database, through the same pipeline as log
  files (accounting, duplicate detection, dictionaries, scope);
- ``clickhouse-scope DB`` prints the ClickHouse SQL that keeps only the incident's
  candidate requests, so the first cut runs inside ClickHouse and only candidates
  travel to SQLite for the drill-down.

A row becomes a record exactly as a ``jsonl`` line with the same keys would (MODEL
§1.1 names; ``--map jsonl_name=column`` renames columns). The *raw line* of a row,
which duplicate detection hashes and a rejected row stores, is its canonical JSON:
keys sorted, ``,`` and ``:`` separators, non-ASCII as is, DateTime values as ISO 8601
UTC text (``2020-07-01T00:00:00Z``), Date as ``YYYY-MM-DD``, Decimal, UUID and
addresses as strings, undecodable String bytes with ``\\xNN`` escapes. Pulling the
same rows again therefore adds nothing, whatever order the columns come in, and
dedupe stays exact (no lossy key). The per-row work is compiled once per result
shape (``RowConverter``), so the ClickHouse side of a pull costs a few
microseconds a row; the rest is the shared SQLite write path.
"""

from __future__ import annotations

import datetime
import decimal
import ipaddress
import json
import logging
import math
import re
import urllib.parse
import uuid
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Iterable, Iterator

from . import ingest
from .errors import ForensicsError
from .importers import MAX_INT, RECORD_KEYS, ParseError, jsonl, shorten, to_int
from .readers import DamagedInput
from .timeparse import MAX_MS, MIN_MS, TimeError, format_ms, parse_time

__all__ = [
    "Server",
    "parse_url",
    "parse_maps",
    "quote_identifier",
    "quote_table",
    "quote_string",
    "table_query",
    "open_rows",
    "RowConverter",
    "normalise",
    "server_message",
    "summary",
    "scope_sql",
    "re2_pattern",
]

DEFAULT_PORT = 9000
BLOCK_ROWS = 100_000
#: Rows per SQLite transaction: a driver block in flight plus this many parsed rows
#: bound the memory of a pull, whatever its size.
CHUNK_ROWS = 25_000
#: Query settings for every pull: big blocks (bounded memory: one block at a time),
#: and read-only, so that a pasted query can never change the source.
PULL_SETTINGS = {"max_block_size": BLOCK_ROWS, "readonly": 2}
CONNECT_TIMEOUT = 10

TIME_FIELDS = jsonl.TIME_FIELDS
#: The names ``--map`` accepts: the jsonl field names of MODEL §1.1.
FIELD_NAMES = TIME_FIELDS + jsonl.MAPPED

# Keep the driver's own connection warnings (with tracebacks) off the terminal:
# failures reach the analyst as one sentence instead.
logging.getLogger("clickhouse_driver").addHandler(logging.NullHandler())


# --- where and what -----------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    """A ClickHouse server reached over the native protocol."""

    host: str
    port: int
    database: str
    user: str
    password: str

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """The provenance of a batch: no user or password in it."""
        return f"clickhouse://{self.address}/{self.database}"


def parse_url(url: str) -> Server:
    """Read ``clickhouse://[user[:password]@]host[:port][/database]``.

    The port defaults to 9000 (native protocol), the database to ``default``, the
    user to ``default`` with no password.

    Raises:
        ForensicsError: not such a URL.
    """
    text = url.strip()
    if "://" not in text:
        text = "clickhouse://" + text
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError:
        raise ForensicsError(f"{url!r} is not a ClickHouse URL (clickhouse://host:port/database).") from None
    if parts.scheme != "clickhouse" or not parts.hostname or parts.query or parts.fragment:
        raise ForensicsError(f"{url!r} is not a ClickHouse URL (clickhouse://host:port/database).")
    database = urllib.parse.unquote(parts.path.strip("/")) or "default"
    if "/" in database:
        raise ForensicsError(f"{url!r} is not a ClickHouse URL (clickhouse://host:port/database).")
    return Server(
        host=parts.hostname,
        port=port or DEFAULT_PORT,
        database=database,
        user=urllib.parse.unquote(parts.username) if parts.username else "default",
        password=urllib.parse.unquote(parts.password) if parts.password else "",
    )


def parse_maps(pairs: Iterable[str]) -> dict[str, str]:
    """``--map jsonl_name=column`` options as {jsonl name: ClickHouse column}.

    Raises:
        ForensicsError: a pair without ``=``, an unknown jsonl name, an empty column,
            or a name or a column mapped twice.
    """
    mapping: dict[str, str] = {}
    for pair in pairs:
        name, sep, column = pair.partition("=")
        name, column = name.strip(), column.strip()
        if not sep or not name or not column:
            raise ForensicsError(f"--map expects jsonl_name=clickhouse_column, not {pair!r}.")
        if name not in FIELD_NAMES:
            raise ForensicsError(
                f"--map {pair}: {name!r} is not a jsonl field name (use one of {', '.join(FIELD_NAMES)})."
            )
        if name in mapping and mapping[name] != column:
            raise ForensicsError(f"--map names {name} twice ({mapping[name]} and {column}).")
        other = next((n for n, c in mapping.items() if c == column and n != name), None)
        if other is not None:
            raise ForensicsError(f"--map reads column {column} twice (as {other} and as {name}).")
        mapping[name] = column
    return mapping


def quote_identifier(name: str) -> str:
    """A ClickHouse identifier in backquotes."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_table(table: str) -> str:
    """``db.table`` or ``table`` as quoted identifiers.

    Raises:
        ForensicsError: an empty name or part.
    """
    parts = table.split(".")
    if len(parts) > 2 or not all(p.strip() for p in parts):
        raise ForensicsError(f"--table {table!r} is not a table name (table or database.table).")
    return ".".join(quote_identifier(p.strip()) for p in parts)


def quote_string(text: str) -> str:
    """A ClickHouse string literal: backslashes and quotes escaped."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def table_query(table: str, where: str | None = None) -> str:
    """The query that ``--table T [--where EXPR]`` stands for."""
    query = f"SELECT * FROM {quote_table(table)}"
    if where is not None and where.strip():
        query += f" WHERE ({where})"
    return query


# --- pulling rows ---------------------------------------------------------------------


def _client(server: Server):
    try:
        from clickhouse_driver import Client
    except ImportError:  # pragma: no cover - the driver is an optional dependency
        raise ForensicsError(
            "Reading from ClickHouse needs clickhouse-driver: pip install 'datasette-forensics[clickhouse]'."
        ) from None
    return Client(
        host=server.host,
        port=server.port,
        database=server.database,
        user=server.user,
        password=server.password,
        connect_timeout=CONNECT_TIMEOUT,
        client_name="datasette-forensics",
    )


def server_message(exc: Exception) -> str:
    """The first line of a ClickHouse error, without codes, stack trace or final period."""
    text = getattr(exc, "message", None) or str(exc)
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "") or type(exc).__name__
    line = re.sub(r"^(Code: \d+\.\s*)?(DB::Exception:\s*)+", "", line)
    line = re.sub(r"\.?\s*Stack trace:.*$", "", line)
    line = line.strip().rstrip(".")
    return line if len(line) <= 200 else line[:197].rstrip() + "..."


def _connection_error(server: Server, exc: Exception) -> ForensicsError:
    from clickhouse_driver import errors

    text = str(exc).lower()
    if "refused" in text:
        reason = "connection refused"
    elif isinstance(exc, (errors.SocketTimeoutError, TimeoutError)) or "timed out" in text:
        reason = (
            f"no answer in the native protocol within {CONNECT_TIMEOUT} s "
            "(the native port is usually 9000; 8123 is HTTP)"
        )
    elif "name or service not known" in text or "nodename nor servname" in text:
        reason = "unknown host"
    else:
        reason = server_message(exc)
    return ForensicsError(f"Cannot connect to ClickHouse at {server.address}: {reason}.")


def _naive_datetimes_in_utc(client) -> None:
    """Make the driver return zone-less DateTime values as naive UTC, not server time.

    The driver turns a ``DateTime`` column without a time zone into naive datetimes
    in the server's zone, which cannot tell the repeated hour of a DST change apart.
    Declaring the session zone UTC (after the query is sent, before its first
    block) makes them naive UTC: exact. Columns with a zone come back aware anyway.
    """
    info = getattr(getattr(client, "connection", None), "server_info", None)
    if info is not None and hasattr(info, "session_timezone"):
        info.session_timezone = "UTC"


def open_rows(url: str, query: str, mapping: dict[str, str] | None = None) -> ingest.RowSource:
    """Send a query and check its columns; nothing is stored yet.

    Args:
        url: the server, ``clickhouse://host:port/database``.
        query: a SELECT; it runs read-only, in blocks of BLOCK_ROWS rows.
        mapping: {jsonl name: column} renames (``--map``).

    Returns:
        a RowSource whose rows are (row number, canonical JSON bytes, record or
        None, rejection reason or None).

    Raises:
        ForensicsError: the server cannot be reached, refuses the query, or the
            result lacks a mapped or a required column.
    """
    from clickhouse_driver import errors

    server = parse_url(url)
    if not query or not query.strip():
        raise ForensicsError("The ClickHouse query is empty.")
    client = _client(server)
    try:
        try:
            stream = client.execute_iter(query, settings=PULL_SETTINGS, with_column_types=True)
        except (errors.Error, OSError, EOFError) as exc:  # refused, timed out, unknown user or database
            raise _connection_error(server, exc) from None
        _naive_datetimes_in_utc(client)
        try:
            columns = next(stream)
        except StopIteration:
            columns = []
        except (errors.NetworkError, errors.SocketTimeoutError, OSError, EOFError) as exc:
            raise ForensicsError(f"ClickHouse at {server.address} dropped the connection: {server_message(exc)}.") from None
        except errors.Error as exc:
            raise ForensicsError(f"ClickHouse rejected the query: {server_message(exc)}.") from None
        converter = RowConverter(columns, mapping or {})
    except BaseException:
        client.disconnect()
        raise
    source = ingest.RowSource(
        source=server.url,
        display=server.url,
        format="clickhouse",
        rows=_rows(stream, converter, client, server),
        close=client.disconnect,
        chunk_rows=CHUNK_ROWS,
    )
    return source


def _rows(stream, converter: "RowConverter", client, server: Server) -> Iterator[tuple]:
    from clickhouse_driver import errors

    convert = converter.convert
    n = 0
    try:
        for row in stream:
            n += 1
            raw, record, reason = convert(row)
            yield n, raw, record, reason
    except errors.Error as exc:
        client.disconnect()
        raise DamagedInput(n, f"ClickHouse at {server.address} failed after row {n:,}: {server_message(exc)}") from None
    except (OSError, EOFError) as exc:
        client.disconnect()
        raise DamagedInput(n, f"the connection to ClickHouse at {server.address} broke after row {n:,}: {exc}") from None


# --- rows to records ------------------------------------------------------------------

_EPOCH = datetime.datetime(1970, 1, 1)
_MS = datetime.timedelta(milliseconds=1)
_UTC = datetime.timezone.utc
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)


class _Unusual(Exception):
    """A value the fast path does not handle: convert the row the general way.

    Raised for exactly two cases: a String value the driver hands over as bytes
    (it is not valid UTF-8), and a time outside the range the store accepts. Any
    other exception in the fast path is a defect and propagates.
    """


def _iso(value: datetime.datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(_UTC).replace(tzinfo=None)
    return value.isoformat() + "Z"


def normalise(value):
    """A driver value as the JSON value that stands for it in the raw line."""
    if value is None or isinstance(value, (str, int, float)):
        return value
    if isinstance(value, datetime.datetime):
        return _iso(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, (decimal.Decimal, uuid.UUID, ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [normalise(v) for v in value]
    if isinstance(value, dict):
        return {str(normalise(k)): normalise(v) for k, v in value.items()}
    return str(value)


def _kind(ch_type: str) -> str:
    """How the fast path treats a column: 'str', 'nstr', 'int', 'datetime' or 'other'."""
    t, nullable = ch_type, False
    while True:
        if t.startswith("Nullable(") and t.endswith(")"):
            t, nullable = t[9:-1], True
        elif t.startswith("LowCardinality(") and t.endswith(")"):
            t = t[15:-1]
        else:
            break
    if t == "String" or t.startswith(("FixedString(", "Enum8(", "Enum16(")):
        return "nstr" if nullable else "str"
    if re.fullmatch(r"U?Int(8|16|32|64|128|256)", t):
        return "int"
    if t == "DateTime" or t.startswith(("DateTime(", "DateTime64(")):
        return "datetime"
    return "other"


def _ms(value: datetime.datetime) -> int:
    if value.tzinfo is not None:
        value = value.astimezone(_UTC).replace(tzinfo=None)
    ms = round((value - _EPOCH) / _MS)
    if ms < MIN_MS or ms >= MAX_MS:
        raise _Unusual
    return ms


def _text(value):
    """jsonl's text rule: '', '-' and None are missing; other values as text."""
    if value.__class__ is str:
        return None if value == "" or value == "-" else value
    if value is None:
        return None
    return jsonl._text(value)


def _column_list(names: list[str], limit: int = 40) -> str:
    shown = ", ".join(names[:limit]) or "(none)"
    if len(names) > limit:
        shown += f" and {len(names) - limit} more"
    return shown


class RowConverter:
    """Turns the rows of one query result into (raw line, record, reason).

    Built once per result from its column names and types; ``convert`` is the
    per-row hot path. Rows with values the fast path does not expect (bytes from
    invalid UTF-8, times out of range, a ``request`` column...) go through
    ``convert_general``, which builds the jsonl field mapping and calls
    ``jsonl.from_fields``: the reference the fast path must agree with.
    """

    def __init__(self, columns: list[tuple[str, str]], mapping: dict[str, str]):
        names = [name for name, _ in columns]
        for field, column in mapping.items():
            if column not in names:
                raise ForensicsError(
                    f"The ClickHouse result has no column {column} (--map {field}={column}); "
                    f"its columns are: {_column_list(names)}."
                )
        rename = {column: field for field, column in mapping.items()}
        keys = [rename.get(name, name) for name in names]
        seen: dict[str, str] = {}
        for name, key in zip(names, keys):
            if key in seen:
                raise ForensicsError(
                    f"The ClickHouse result has two columns for {key} ({seen[key]} and {name}); "
                    "select or map only one."
                )
            seen[key] = name
        if "remote_addr" not in seen:
            raise ForensicsError(
                f"The ClickHouse result has no remote_addr column; its columns are: {_column_list(names)} "
                "(map one with --map remote_addr=COLUMN)."
            )
        if "request_uri" not in seen and "request" not in seen:
            raise ForensicsError(
                f"The ClickHouse result has no request_uri column; its columns are: {_column_list(names)} "
                "(map one with --map request_uri=COLUMN)."
            )
        if not any(t in seen for t in TIME_FIELDS):
            raise ForensicsError(
                f"The ClickHouse result has no time column ({', '.join(TIME_FIELDS)}); its columns are: "
                f"{_column_list(names)} (map one with --map timestamp=COLUMN)."
            )
        self.columns = columns
        self.keys = keys
        self.kinds = [_kind(ch_type) for _, ch_type in columns]
        self._plan()

    def _plan(self) -> None:
        """Compile the fast path for this result's columns (see ``_fast_source``)."""
        self.source = _fast_source(self.keys, self.kinds)
        if self.source is None:
            self._fast = None
            return
        namespace = dict(_FAST_GLOBALS)
        exec(compile(self.source, "<clickhouse row converter>", "exec"), namespace)
        self._fast = namespace["fast"]

    def convert(self, row: tuple) -> tuple[bytes, dict | None, str | None]:
        """One row: (canonical JSON bytes, record or None, rejection reason or None)."""
        fast = self._fast
        if fast is not None:
            try:
                line, record, reason = fast(row)
            except _Unusual:
                return self.convert_general(row)
            return line.encode("utf-8"), record, reason
        return self.convert_general(row)

    def fields(self, row: tuple) -> dict:
        """The row as a jsonl object: {jsonl name or column name: JSON value}."""
        return {key: normalise(value) for key, value in zip(self.keys, row)}

    def convert_general(self, row: tuple) -> tuple[bytes, dict | None, str | None]:
        """The reference conversion: canonical JSON, then ``jsonl.from_fields``."""
        fields = self.fields(row)
        line = json.dumps(fields, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        raw = line.encode("utf-8", "backslashreplace")
        try:
            return raw, jsonl.from_fields(fields), None
        except ParseError as exc:
            return raw, None, str(exc) or "unconvertible row"
        except Exception as exc:  # a row must never stop an import
            return raw, None, f"unconvertible row ({type(exc).__name__})"


def _time_of(value) -> int:
    try:
        return parse_time(value)
    except TimeError as exc:
        raise ParseError(f"bad timestamp: {exc}") from None


def _bad_uri(uri) -> str:
    return f"bad request_uri: {shorten(str(uri))}"


_FAST_GLOBALS = {
    "_enc": encode_basestring,
    "_int": int.__repr__,
    "_dump": _JSON.encode,
    "_iso": _iso,
    "_normalise": normalise,
    "_ms": _ms,
    "_text": _text,
    "_time_of": _time_of,
    "_to_int": to_int,
    "_bad_uri": _bad_uri,
    "ParseError": ParseError,
    "MAX_INT": MAX_INT,
    "_Unusual": _Unusual,
}

# Record keys filled from a jsonl text field.
_TEXT_FIELDS = (
    ("ua", "http_user_agent"),
    ("method", "request_method"),
    ("protocol", "server_protocol"),
    ("referer", "http_referer"),
    ("token_id", "token_id"),
    ("org_id", "org_id"),
    ("auth_type", "auth_type"),
    ("host", "host"),
    ("xff", "http_x_forwarded_for"),
)


def _fast_source(keys: list[str], kinds: list[str]) -> str | None:
    """Python source of ``fast(row) -> (line, record, reason)`` for one result shape.

    Specialised on the columns (which field is where, of which type), the row path
    costs a few microseconds instead of a dict, a json.dumps and a from_fields per
    row. It must agree with ``convert_general`` (jsonl.from_fields on the canonical
    fields) on every row it returns for: tests/test_clickhouse.py checks that with
    generated rows. It raises ``_Unusual`` for the two kinds of value it leaves to
    ``convert_general`` (see ``_Unusual``); anything else it raises is a defect.
    None when the result has a ``request`` column (jsonl's request-line fallback).
    """
    index = {key: i for i, key in enumerate(keys)}
    if "request" in index:
        return None
    raw = [f"c{i}" for i in range(len(keys))]  # the driver's values
    # Normalised values (what the raw line holds): only datetime and other types change.
    norm = [
        f"n{i}" if kind in ("datetime", "other") else raw[i] for i, kind in enumerate(kinds)
    ]
    body = [f"    {', '.join(raw)}, = row"]
    # The driver hands a String that is not valid UTF-8 over as bytes.
    strings = [raw[i] for i, kind in enumerate(kinds) if kind in ("str", "nstr")]
    if strings:
        body.append(f"    if {' or '.join(f'{c}.__class__ is bytes' for c in strings)}:")
        body.append("        raise _Unusual")
    for i, kind in enumerate(kinds):
        if kind == "datetime":
            body.append(f"    n{i} = None if c{i} is None else _iso(c{i})")
        elif kind == "other":
            body.append(f"    n{i} = _normalise(c{i})")

    def encoded(i: int) -> str:
        kind, v = kinds[i], norm[i]
        if kind == "str":
            return f"_enc({v})"
        if kind in ("nstr", "datetime"):
            return f'("null" if {v} is None else _enc({v}))'
        if kind == "int":
            return f'("null" if {v} is None else _int({v}))'
        return f"_dump({v})"

    order = sorted(range(len(keys)), key=lambda i: keys[i])
    template = "{" + ",".join(json.dumps(keys[i], ensure_ascii=False).replace("%", "%%") + ":%s" for i in order) + "}"
    body.append(f"    line = {template!r} % ({', '.join(encoded(i) for i in order)},)")

    def text(i: int | None) -> str:
        if i is None:
            return "None"
        kind, v = kinds[i], norm[i]
        if kind == "str":
            return f'({v} if {v} != "" and {v} != "-" else None)'
        if kind == "nstr":
            return f'(None if {v} is None or {v} == "" or {v} == "-" else {v})'
        if kind == "int":
            return f"(None if {v} is None else _int({v}))"
        return f"_text({v})"

    def present(i: int) -> str:
        v = norm[i]
        if kinds[i] == "str":
            return f'{v} != "" and {v} != "-"'
        return f'{v} is not None and {v} != "" and {v} != "-"'

    def integer(field: str, name: str) -> str:
        i = index.get(field)
        if i is None:
            return "None"
        v = norm[i]
        if kinds[i] == "int":
            return (
                f"({v} if {v} is None or ({v}.__class__ is int and 0 <= {v} <= MAX_INT)"
                f" else _to_int({v}, {name!r}))"
            )
        return f"_to_int({v}, {name!r})"

    ip = index["remote_addr"]
    uri = index["request_uri"]
    body += [
        f"    ip = {text(ip)}",
        "    if ip is None:",
        '        return line, None, "missing field remote_addr"',
        '    if ip[:1] == "[" and ip[-1:] == "]":',
        "        ip = ip[1:-1]",
    ]
    times = [index[t] for t in TIME_FIELDS if t in index]
    for n, i in enumerate(times):
        convert = f"_ms(c{i})" if kinds[i] == "datetime" else f"_time_of({norm[i]})"
        body += [f"    {'if' if n == 0 else 'elif'} {present(i)}:", f"        chosen = {i}", f"        ts = {convert}"]
    body += [
        "    else:",
        '        return line, None, "missing time (timestamp, time_iso8601, time_local or msec)"',
        f"    uri = {norm[uri]}",
        '    if uri is None or uri == "":',
        '        return line, None, "missing field request_uri"',
        "    if uri.__class__ is not str:",
        "        return line, None, _bad_uri(uri)",
        f"    status = {integer('status', 'status')}",
        f"    size = {integer('body_bytes_sent', 'body_bytes_sent')}",
        "    extra = {}",
    ]
    for i, key in enumerate(keys):
        if key in jsonl.MAPPED:
            continue
        condition = f'{norm[i]} is not None and {norm[i]} != ""'
        if i in times:
            condition = f"chosen != {i} and {condition}"
        body += [f"    if {condition}:", f"        extra[{key!r}] = {norm[i]}"]
    fields = {
        "ts": "ts", "ip": "ip", "uri": "uri", "status": "status", "bytes": "size", "extra": "extra or None",
    }
    for record_key, field in _TEXT_FIELDS:
        fields[record_key] = text(index.get(field))
    record = ", ".join(f"{k!r}: {fields[k]}" for k in RECORD_KEYS)
    body.append(f"    return line, {{{record}}}, None")
    # to_int and _time_of raise ParseError: the row is rejected with its message.
    return "\n".join(
        ["def fast(row):", "    try:"]
        + ["    " + line for line in body]
        + ["    except ParseError as exc:", "        return line, None, str(exc)", ""]
    )


# --- the first stage: scope SQL for ClickHouse ------------------------------------

_UNSUPPORTED = (
    ("(?=", "lookahead"),
    ("(?!", "negative lookahead"),
    ("(?<=", "lookbehind"),
    ("(?<!", "negative lookbehind"),
    ("(?P=", "a named backreference"),
    ("(?>", "an atomic group"),
    ("(?(", "a conditional group"),
    ("(?#", "a comment group"),
)


def re2_pattern(pattern: str) -> str:
    """A Python regex of the incident, as the RE2 regex ClickHouse's match() runs.

    RE2 accepts ``(?P<org>...)`` and the common syntax as is; Python's ``\\Z`` is
    RE2's ``\\z``. What RE2 cannot do (lookaround, backreferences, atomic and
    conditional groups, verbose or ASCII flags) is refused rather than
    approximated. (``\\d``, ``\\w`` and ``\\s`` are ASCII-only in RE2: the same for
    ASCII paths, which percent-encoded paths are.)

    Raises:
        ForensicsError: the pattern uses something RE2 lacks.
    """
    out = []
    i, n, in_class = 0, len(pattern), False
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            if not in_class and nxt in "123456789":
                raise ForensicsError(
                    f"The regex {pattern!r} uses a backreference, which ClickHouse (RE2) cannot run."
                )
            out.append("\\z" if nxt == "Z" and not in_class else c + nxt)
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
        elif c == "[":
            in_class = True
            out.append(c)
            i += 1
            # A ] right after [ or [^ is a literal.
            if i < n and pattern[i] == "^":
                out.append("^")
                i += 1
            if i < n and pattern[i] == "]":
                out.append("]")
                i += 1
            continue
        elif c == "(" and pattern.startswith("(?", i):
            for prefix, what in _UNSUPPORTED:
                if pattern.startswith(prefix, i):
                    raise ForensicsError(
                        f"The regex {pattern!r} uses {what}, which ClickHouse (RE2) cannot run."
                    )
            flags = re.match(r"\(\?([a-zA-Z]+)[:)]", pattern[i:])
            if flags and set(flags.group(1)) - set("imsU"):
                raise ForensicsError(
                    f"The regex {pattern!r} uses the inline flag (?{flags.group(1)}), "
                    "which ClickHouse (RE2) does not have."
                )
        out.append(c)
        i += 1
    return "".join(out)


def _time_bound(column: str, ms: int, op: str, field: str) -> str:
    """``column op instant``, exact for a DateTime (whole seconds) or epoch-seconds column."""
    if field == "msec":
        return f"{column} {op} {ms / 1000!r}"
    # For whole seconds s: s*1000 >= ms  <=>  s >= ceil(ms/1000), and the same for <.
    return f"{column} {op} toDateTime({math.ceil(ms / 1000)})"


def scope_sql(incident: dict, table: str, mapping: dict[str, str] | None = None, org_id: bool = True) -> str:
    """The ClickHouse SELECT of the incident's candidate requests (MODEL §2, first cut).

    It keeps a row when it is in the window (``introduced_at <= t < patched_at``),
    its path (the URI up to the first ``?``, not decoded) matches a scope path, and
    it names an org (an org route matches, or it carries org_id) - the SQLite
    scope's own candidates. It also keeps the 2xx rows at or after ``patched_at``
    that name an org: the evidence ``post_patch_valid`` needs. Whether the org is
    known and had a live integration is decided in SQLite, against the records.

    Args:
        incident: the incident, as ``scope.get_incident`` returns it.
        table: the ClickHouse table (``table`` or ``database.table``).
        mapping: {jsonl name: column} for request_uri, status, org_id and the time
            column (``timestamp`` unless another time field is mapped); a
            DateTime column, or ``msec`` in epoch seconds.
        org_id: False when the table has no org_id column.

    Raises:
        ForensicsError: a regex that RE2 cannot run, or a bad table name.
    """
    mapping = mapping or {}
    time_field = next((t for t in TIME_FIELDS if t in mapping), "timestamp")
    ts = quote_identifier(mapping.get(time_field, time_field))
    uri = quote_identifier(mapping.get("request_uri", "request_uri"))
    status = quote_identifier(mapping.get("status", "status"))
    path = f"splitByChar('?', ifNull({uri}, ''))[1]"  # ifNull: a Nullable column too
    scope = " OR ".join(f"match({path}, {quote_string(re2_pattern(p))})" for p in incident["scope_paths"])
    routes = [f"match({path}, {quote_string(re2_pattern(p))})" for p in incident["org_routes"]]
    if org_id:
        column = quote_identifier(mapping.get("org_id", "org_id"))
        # ifNull: in ClickHouse, NULL NOT IN (...) is true.
        routes.insert(0, f"ifNull(toString({column}), '') NOT IN ('', '-')")
    names_org = "\n         OR ".join(routes)
    introduced, patched = incident["introduced_ms"], incident["patched_ms"]
    name = json.dumps(incident["name"], ensure_ascii=True)
    return f"""-- Candidate requests of the incident {name} (datasette-forensics clickhouse-scope).
-- In the window {format_ms(introduced)} <= t < {format_ms(patched)}, on a scope path, naming an org;
-- plus the 2xx requests at or after the patch that name an org (post_patch_valid evidence).
-- Known orgs and live integrations are checked in SQLite after the import.
SELECT *
FROM {quote_table(table)}
WHERE (
    {_time_bound(ts, introduced, '>=', time_field)} AND {_time_bound(ts, patched, '<', time_field)}
    AND ({scope})
    AND ({names_org})
) OR (
    {_time_bound(ts, patched, '>=', time_field)}
    AND match(toString({status}), '^2[0-9][0-9]$')
    AND ({names_org})
)
"""


def summary(result: ingest.FileResult) -> str:
    """The counts of one pull, as import-logs prints them for a file."""
    return (
        f"{result.source}: {result.lines_read:,} rows read = {result.imported:,} imported"
        f" + {result.rejected:,} rejected + {result.duplicates:,} duplicates"
    )
