"""Access-log formats: one module per format, a registry, and detection.

Each format module has:

- ``NAME``: the name used on the command line (``--format nginx-ext``);
- ``DESCRIPTION``: one line;
- ``detect(lines) -> bool``: whether the first non-blank lines of a file are this format;
- ``Parser``: ``Parser().parse(line)`` returns a record dict, or None for a blank,
  header or comment line of the format, and raises ParseError for a bad line.

A record has every key of RECORD_KEYS; a value the line does not give is None.
``ts`` (UTC epoch milliseconds), ``ip`` and ``uri`` are always set.
"""

from __future__ import annotations

import json
import re
import sys

__all__ = [
    "ParseError",
    "RECORD_KEYS",
    "FORMATS",
    "get_format",
    "detect_format",
]

RECORD_KEYS = (
    "ts",
    "ip",
    "ua",
    "uri",
    "method",
    "protocol",
    "status",
    "bytes",
    "referer",
    "token_id",
    "org_id",
    "auth_type",
    "host",
    "xff",
    "extra",
)


#: A byte-order mark: some tools write one before a file's first line.
BOM = "\ufeff"

#: The largest status or byte count kept (SQLite integers are 64-bit).
MAX_INT = 2**63 - 1



# Possessive repetition ("*+") keeps CPython's regex engine from holding a
# backtracking frame per repetition, which made one 10 MB line cost gigabytes. It
# exists from Python 3.11; on 3.10 the patterns fall back to a plain "*" (same
# matches, more memory on pathological lines).
MANY = "*+" if sys.version_info >= (3, 11) else "*"

class ParseError(ValueError):
    """A line that cannot be imported; the message is the rejection reason."""


# Helpers shared by the format modules. They are defined before the format modules
# are imported below, because those modules import them from this package.

_METHOD = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
_COMMON_METHODS = frozenset(
    ("GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE", "PROPFIND")
)


def split_request(request: str) -> tuple[str | None, str, str | None]:
    """Split an HTTP request line into (method, uri, protocol).

    ``GET /x HTTP/1.1`` gives all three; ``GET /x`` (HTTP/0.9) has no protocol; a
    URI with spaces in it is kept whole. Anything else (``-``, a scanner's garbage)
    gives (None, the request text as written, None).
    """
    parts = request.split(" ")
    if len(parts) == 3:
        method, uri, protocol = parts
        if protocol.startswith("HTTP/") and (method in _COMMON_METHODS or _METHOD.fullmatch(method)):
            return method, uri, protocol
    if len(parts) >= 2 and _METHOD.fullmatch(parts[0]):
        if len(parts) > 3 and parts[-1].startswith("HTTP/"):
            return parts[0], " ".join(parts[1:-1]), parts[-1]
        if len(parts) == 2 and (parts[1][:1] in ("/", "*") or "://" in parts[1]):
            return parts[0], parts[1], None
    return None, request, None


def dash(value):
    """None for a missing value: None, '' or '-'; the value otherwise."""
    if value is None or value == "" or value == "-":
        return None
    return value


def to_int(value, field: str) -> int | None:
    """An integer field (status, bytes): None when missing, ParseError when not a number."""
    if value is None or value == "" or value == "-":
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value <= MAX_INT:
            return value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    raise ParseError(f"bad {field}: {shorten(str(value))}")


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def load_json(line: str):
    """``json.loads``, with lone surrogate escapes (``\\ud800``) kept as their text.

    A lone surrogate is not Unicode and SQLite cannot store it: an attacker's
    ``"\\ud800"`` would stop the import. Written back as its escape, the value reads
    as the line wrote it.

    Raises:
        ValueError: the line is not JSON (or is nested too deeply to read).
    """
    try:
        value = json.loads(line)
        if "\\u" in line and _SURROGATE_ESCAPE.search(line):
            value = _escape_surrogates(value)
    except RecursionError:  # '[[[[...' a hundred thousand deep
        raise ValueError("JSON nested too deeply") from None
    return value


def json_object(line: str) -> dict | None:
    """A JSON log line as an object (a leading BOM ignored), or None for a blank line.

    Raises:
        ParseError: not JSON, or not an object.
    """
    if not line.strip():
        return None
    try:
        value = load_json(line)
    except ValueError:
        if line.startswith(BOM):
            return json_object(line[1:])
        raise ParseError("not JSON") from None
    if not isinstance(value, dict):
        raise ParseError("not a JSON object")
    return value


def _escape_surrogates(value):
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, list):
        return [_escape_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_escape_surrogates(k): _escape_surrogates(v) for k, v in value.items()}
    return value


def shorten(text: str, limit: int = 40) -> str:
    """Text for a rejection reason: at most ``limit`` characters, quoted."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def detect_by_parsing(parser, lines: list[str]) -> bool:
    """True when most of the lines that are not headers parse, and at least one does.

    A few bad lines among the first ones must not stop detection.
    """
    good = bad = 0
    for line in lines:
        try:
            if parser.parse(line) is not None:
                good += 1
        except Exception:
            bad += 1
    return good > bad


from . import alb, caddy, combined, common, csv_format, jsonl, nginx_ext, w3c  # noqa: E402

FORMATS = {
    module.NAME: module
    for module in (caddy, jsonl, nginx_ext, combined, common, alb, w3c, csv_format)
}


def get_format(name: str):
    """The format module called ``name``.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown format {name!r}; choose one of: {', '.join(FORMATS)}") from None


def detect_format(lines: list[str]):
    """The format of a file from its first non-blank lines, or None if none fits.

    Args:
        lines: up to the first 20 non-blank decoded lines of the file.

    Returns:
        A format module, or None when the lines are not a recognisable log.
    """
    lines = [line.rstrip("\r\n") for line in lines if line.strip()]
    if not lines:
        return None
    for module in FORMATS.values():
        if module.detect(lines):
            return module
    return None
