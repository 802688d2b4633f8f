"""Account records (MODEL §1.2): orgs, slugs, integrations, tokens, users, sessions...

A records file is CSV with a header row or JSON lines with the same keys. The whole
file is read and validated first (:func:`read_records`); only a file with no error
at all is written, in one transaction (:func:`write_records`): rows whose key is
already stored are updated, the others added. Nothing is ever deleted.

Stored values: ids and text as given (surrounding spaces trimmed, JSON numbers as
their text, ``12`` not ``12.0``); times as normalised UTC ISO text
(``2020-07-18T09:12:44.000Z``), so comparing the text compares the instants;
booleans as 1/0; networks normalised (``10.1.2.3/24`` → ``10.1.2.0/24``, ``1.2.3.4``
→ ``1.2.3.4/32``); an empty optional value as NULL. Columns a file adds are kept as
TEXT columns (names lowercased).
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import ipaddress
import json
import os
import re
import zlib
from dataclasses import dataclass, field

import sqlite_utils

from . import derived, ipinfo
from .errors import ForensicsError
from .patterns import regex_problem
from .readers import decode_text, read_whole
from .transaction import write_transaction
from .timeparse import TimeError, format_ms, parse_time

# Value types of the known columns.
TEXT = "text"  # trimmed text
EXACT = "exact"  # text kept exactly (user agents)
TIME = "time"
BOOL = "bool"
CIDR = "cidr"
REGEX = "regex"


@dataclass(frozen=True)
class Kind:
    """One kind of account record: its columns, required columns and key."""

    name: str
    columns: dict  # column -> value type
    required: tuple
    key: tuple
    periods: tuple = ()  # (start, end) columns: end must not be before start
    may_be_empty: tuple = ()  # required columns whose value may be '' (kept as '')

    @property
    def nullable_key(self) -> tuple:
        return tuple(c for c in self.key if c not in self.required)


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind(
            "orgs",
            {"id": TEXT, "slug": TEXT, "name": TEXT, "created_at": TIME, "contact_email": TEXT},
            required=("id", "slug"),
            key=("id",),
        ),
        Kind(
            "org_slugs",
            {"org_id": TEXT, "slug": TEXT, "valid_from": TIME, "valid_to": TIME},
            required=("org_id", "slug", "valid_from"),
            key=("org_id", "slug", "valid_from"),
            periods=(("valid_from", "valid_to"),),
        ),
        Kind(
            "integrations",
            {"id": TEXT, "org_id": TEXT, "name": TEXT, "created_at": TIME, "deleted_at": TIME},
            required=("id", "org_id", "created_at"),
            key=("id",),
            periods=(("created_at", "deleted_at"),),
        ),
        Kind(
            "tokens",
            {"id": TEXT, "org_id": TEXT, "integration_id": TEXT, "created_at": TIME, "revoked_at": TIME},
            required=("id", "org_id"),
            key=("id",),
            periods=(("created_at", "revoked_at"),),
        ),
        Kind(
            "users",
            {"id": TEXT, "email": TEXT, "name": TEXT, "is_staff": BOOL},
            required=("id", "email"),
            key=("id",),
        ),
        Kind(
            "memberships",
            {"user_id": TEXT, "org_id": TEXT, "role": TEXT, "joined_at": TIME, "left_at": TIME},
            required=("user_id", "org_id", "joined_at"),
            key=("user_id", "org_id", "joined_at"),
            periods=(("joined_at", "left_at"),),
        ),
        Kind(
            "sessions",
            {"user_id": TEXT, "ip": TEXT, "user_agent": EXACT, "first_seen": TIME, "last_seen": TIME},
            required=("user_id", "ip", "user_agent", "first_seen", "last_seen"),
            key=("user_id", "ip", "user_agent"),
            periods=(("first_seen", "last_seen"),),
            may_be_empty=("user_agent",),
        ),
        Kind(
            "partners",
            {"name": TEXT, "cidr": CIDR, "user_agent_pattern": REGEX},
            required=("name", "cidr"),
            key=("name", "cidr"),
        ),
        Kind(
            "partner_orgs",
            {"partner": TEXT, "org_id": TEXT, "authorized_at": TIME, "revoked_at": TIME},
            required=("partner", "org_id"),
            key=("partner", "org_id", "authorized_at"),
            periods=(("authorized_at", "revoked_at"),),
        ),
        Kind(
            "ip_info",
            {"cidr": CIDR, "asn": TEXT, "provider": TEXT, "rdns": TEXT},
            required=("cidr",),
            key=("cidr",),
        ),
    )
}

COLUMN_NAME = re.compile(r"[a-z_][a-z0-9_]{0,63}")
RESERVED = {"rowid", "oid", "_rowid_"}
_BOOLEANS = {"1": 1, "true": 1, "yes": 1, "0": 0, "false": 0, "no": 0}


@dataclass
class Row:
    line: int
    values: dict  # the columns this row gives -> stored value


@dataclass
class RecordFile:
    """A records file that passed validation, ready to write."""

    kind: Kind
    source: str
    columns: list = field(default_factory=list)  # every column the file gives, in order
    rows: list = field(default_factory=list)
    unit: str = "line"  # what a row's number counts: "line", or "item" in a JSON array

    @property
    def extras(self) -> list:
        return [c for c in self.columns if c not in self.kind.columns]


def get_kind(name: str) -> Kind:
    """The Kind called ``name``.

    Raises:
        ForensicsError: for an unknown kind, listing the known ones.
    """
    kind = KINDS.get(name)
    if kind is None:
        raise ForensicsError(f"Unknown record kind {name!r}: use one of {', '.join(KINDS)}.")
    return kind


def import_records(db: sqlite_utils.Database, kind: str, path: str) -> tuple[int, int]:
    """Validate a whole records file, then add and update its rows in one transaction.

    Args:
        db: the forensic database.
        kind: one of :data:`KINDS`.
        path: a CSV or JSON-lines file (plain, .gz or .bz2), or '-' for standard input.

    Returns:
        (added, updated): rows new to the database, and stored rows that the file
        changed (a row given again unchanged counts as neither).

    Raises:
        ForensicsError: anything wrong with the kind or the file; nothing is written then.
    """
    return store_records(db, read_records(kind, path))


def store_records(db: sqlite_utils.Database, records: RecordFile) -> tuple[int, int]:
    """Write validated records and bring the scope up to date, in one transaction
    (the caller's, if one is open).

    Returns:
        (added, updated).
    """
    with write_transaction(db):
        result = write_records(db, records)
        derived.after_records(db, records.kind.name)
    return result


def read_records(kind: str, path: str) -> RecordFile:
    """Read and validate a whole records file.

    Raises:
        ForensicsError: one sentence naming the file, line and column at fault.
    """
    spec = get_kind(kind)
    source = "standard input" if path == "-" else path
    text = decode_text(_read_bytes(path), source)
    first = text.lstrip()[:1]
    extension = os.path.splitext(path.removesuffix(".gz").removesuffix(".bz2"))[1].lower()
    if not first:
        raise ForensicsError(f"{source} is empty: there are no records to import.")
    records = RecordFile(spec, source)
    if first == "[":
        _read_json_array(text, records)
    elif first == "{" or extension in (".jsonl", ".json", ".ndjson"):
        _read_jsonl(text, records)
    else:
        _read_csv(text, records)
    _check_duplicates(records)
    return records


def write_records(db: sqlite_utils.Database, records: RecordFile) -> tuple[int, int]:
    """Add and update validated rows in one transaction (the caller's, if one is open).

    Returns:
        (added, updated).
    """
    with write_transaction(db):
        added, updated = _write(db.conn, records)
        if records.kind.name == "ip_info":
            ipinfo.apply_ip_info(db)
    return added, updated


def _write(conn, records: RecordFile) -> tuple[int, int]:
    kind = records.kind
    table = kind.name
    stored = {row[1].lower() for row in conn.execute(f"pragma table_info({_quote(table)})")}
    for column in records.extras:
        if column not in stored:
            conn.execute(f"alter table {_quote(table)} add column {_quote(column)} text")
    columns = records.columns
    insert = (
        f"insert into {_quote(table)} ({', '.join(map(_quote, columns))}) "
        f"values ({', '.join('?' for _ in columns)})"
    )
    if not conn.execute(f"select exists(select 1 from {_quote(table)})").fetchone()[0]:
        conn.executemany(insert, ([row.values.get(c) for c in columns] for row in records.rows))
        return len(records.rows), 0
    where = " and ".join(
        f"ifnull({_quote(c)}, '') = ?" if c in kind.nullable_key else f"{_quote(c)} = ?"
        for c in kind.key
    )
    added = updated = 0
    for row in records.rows:
        given = list(row.values)
        found = conn.execute(
            f"select rowid, {', '.join(map(_quote, given))} from {_quote(table)} where {where}",
            _key(kind, row.values),
        ).fetchone()
        if found is None:
            conn.execute(insert, [row.values.get(c) for c in columns])
            added += 1
            continue
        changes = [c for c, old in zip(given, found[1:]) if old != row.values[c]]
        if changes:
            conn.execute(
                f"update {_quote(table)} set {', '.join(f'{_quote(c)} = ?' for c in changes)}"
                " where rowid = ?",
                [row.values[c] for c in changes] + [found[0]],
            )
            updated += 1
    return added, updated


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _key(kind: Kind, values: dict) -> tuple:
    return tuple("" if values.get(c) is None else values[c] for c in kind.key)


# Reading


def _read_bytes(path: str) -> bytes:
    data = read_whole(path, "a records file")
    source = "standard input" if path == "-" else path
    try:
        if data.startswith(b"\x1f\x8b"):
            return gzip.decompress(data)
        if data.startswith(b"BZh"):
            return bz2.decompress(data)
    except (OSError, EOFError, ValueError, zlib.error):
        raise ForensicsError(f"{source} is a damaged compressed file.") from None
    return data


def _column_name(name, source: str, line: int) -> str:
    column = name.strip().lower() if isinstance(name, str) else ""
    if not COLUMN_NAME.fullmatch(column) or column in RESERVED or column.startswith("sqlite_"):
        raise ForensicsError(
            f"{source} line {line}: column name {_show(name)} is not allowed "
            "(use up to 64 letters, digits and underscores, not starting with a digit)."
        )
    return column


def _read_csv(text: str, records: RecordFile) -> None:
    source = records.source
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header = None
    try:
        end = 0
        for fields in reader:
            line, end = end + 1, reader.line_num
            if not any(f.strip() for f in fields):
                continue
            if header is None:
                header = fields
                columns = _header(header, records, line)
                continue
            if len(fields) > len(columns):
                raise ForensicsError(
                    f"{source} line {line} has {len(fields)} fields but the header has {len(columns)}."
                )
            raw = {c: (fields[i] if i < len(fields) else None) for i, c in enumerate(columns)}
            records.rows.append(Row(line, _row_values(raw, records, line)))
    except csv.Error as exc:
        raise ForensicsError(f"{source} line {reader.line_num} is not valid CSV ({exc}).") from None
    if header is None:
        raise ForensicsError(f"{source} is empty: there are no records to import.")


def _header(fields: list, records: RecordFile, line: int) -> list:
    columns = []
    for name in fields:
        column = _column_name(name, records.source, line)
        if column in columns:
            raise ForensicsError(f"{records.source} line {line}: column {column!r} appears twice.")
        columns.append(column)
    for column in records.kind.required:
        if column not in columns:
            raise ForensicsError(f"{records.source} line {line}: missing required column {column!r}.")
    records.columns = columns
    return columns


def _json_reason(exc: Exception) -> str:
    """Why json.loads refused a text, in a few words."""
    if isinstance(exc, json.JSONDecodeError):
        return exc.msg
    if isinstance(exc, RecursionError):
        return "too deeply nested"
    return str(exc).split(";")[0]  # a 5,000-digit number: Python's integer conversion limit


def _read_jsonl(text: str, records: RecordFile) -> None:
    source = records.source
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise ForensicsError(f"{source} line {line} is not valid JSON ({_json_reason(exc)}).") from None
        if not isinstance(obj, dict):
            raise ForensicsError(f"{source} line {line} is not a JSON object.")
        _add_object(obj, records, line)
    if not records.rows:
        raise ForensicsError(f"{source} is empty: there are no records to import.")


def _read_json_array(text: str, records: RecordFile) -> None:
    source = records.source
    try:
        items = json.loads(text)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, json.JSONDecodeError):
            raise ForensicsError(f"{source} line {exc.lineno} is not valid JSON ({exc.msg}).") from None
        raise ForensicsError(f"{source} is not valid JSON ({_json_reason(exc)}).") from None
    if not isinstance(items, list):
        raise ForensicsError(f"{source} is not a JSON array of objects.")
    records.unit = "item"
    for number, obj in enumerate(items, start=1):
        if not isinstance(obj, dict):
            raise ForensicsError(f"{source} item {number} is not a JSON object.")
        _add_object(obj, records, number)
    if not records.rows:
        raise ForensicsError(f"{source} is empty: there are no records to import.")


def _add_object(obj: dict, records: RecordFile, line: int) -> None:
    label = records.unit
    raw = {}
    for name, value in obj.items():
        column = _column_name(name, records.source, line)
        if column in raw:
            raise ForensicsError(f"{records.source} {label} {line}: column {column!r} appears twice.")
        raw[column] = value
        if column not in records.columns:
            records.columns.append(column)
    for column in records.kind.required:
        if column not in raw:
            raise ForensicsError(f"{records.source} {label} {line}: missing required column {column!r}.")
    records.rows.append(Row(line, _row_values(raw, records, line)))


def _row_values(raw: dict, records: RecordFile, line: int) -> dict:
    kind = records.kind
    where = f"{records.source} {records.unit} {line}"
    values = {}
    for column, value in raw.items():
        values[column] = _value(value, kind.columns.get(column), where, column)
    for column in kind.required:
        if values.get(column) is None or (values[column] == "" and column not in kind.may_be_empty):
            raise ForensicsError(f"{where}: required column {column!r} is empty.")
    for start, end in kind.periods:
        if values.get(start) is not None and values.get(end) is not None and values[end] < values[start]:
            raise ForensicsError(
                f"{where}: {end} {values[end]} is before {start} {values[start]}."
            )
    return values


def _value(value, vtype: str | None, where: str, column: str):
    """One stored value: text, an int for booleans, or None for empty."""
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        if vtype is None:
            return _unicode(json.dumps(value, ensure_ascii=False), where, column)
        raise ForensicsError(f"{where}, column {column!r}: expected a single value, not a JSON {_json_type(value)}.")
    if vtype == TIME and isinstance(value, (int, float)) and not isinstance(value, bool):
        text = None  # epoch seconds as a JSON number
    else:
        text = _unicode(_text(value), where, column)
        if vtype != EXACT:
            text = text.strip()
        if text == "":
            return "" if vtype == EXACT else None
    if vtype == TIME:
        try:
            return format_ms(parse_time(value if text is None else text))
        except TimeError:
            raise ForensicsError(
                f"{where}, column {column!r}: {_show(value)} is not a time "
                "(use ISO 8601, nginx time_local or epoch seconds)."
            ) from None
    if vtype == BOOL:
        flag = _BOOLEANS.get(text.lower())
        if flag is None:
            raise ForensicsError(
                f"{where}, column {column!r}: {_show(value)} is not a boolean (use 1/0, true/false or yes/no)."
            )
        return flag
    if vtype == CIDR:
        try:
            return str(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ForensicsError(
                f"{where}, column {column!r}: {_show(value)} is not an IP network such as 203.0.113.0/24."
            ) from None
    if vtype == REGEX:
        reason = regex_problem(text)
        if reason is not None:
            raise ForensicsError(
                f"{where}, column {column!r}: {_show(value)} is not a valid regular expression ({reason})."
            )
    return text


def _unicode(text: str, where: str, column: str) -> str:
    """Text SQLite can store: JSON's lone surrogate escapes (\\ud800) are refused."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ForensicsError(
            f"{where}, column {column!r}: {_show(text)} holds a lone surrogate escape such as "
            "\\ud800, which is not Unicode text."
        ) from None
    return text


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _json_type(value) -> str:
    return "object" if isinstance(value, dict) else "array"


def _show(value) -> str:
    text = str(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return repr(text)


def _check_duplicates(records: RecordFile) -> None:
    kind = records.kind
    label = records.unit + "s"
    seen: dict[tuple, int] = {}
    for row in records.rows:
        key = _key(kind, row.values)
        first = seen.setdefault(key, row.line)
        if first != row.line:
            described = ", ".join(
                f"{c} {_show(v)}" if v != "" else f"{c} empty" for c, v in zip(kind.key, key)
            )
            raise ForensicsError(
                f"{records.source} {label} {first} and {row.line} have the same key ({described})."
            )
