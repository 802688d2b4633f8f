"""JSON lines with nginx variable names.

One object a line: ``remote_addr``, ``http_user_agent``, ``request_uri``,
``request_method``, ``status``, ``body_bytes_sent``, ``http_referer`` and a time in
``timestamp``, ``time_iso8601``, ``time_local`` or ``msec`` (the first present wins).
Optional: ``server_protocol``, ``auth_type``, ``token_id``, ``org_id``, ``host``,
``http_x_forwarded_for``. ``request`` (``GET /x HTTP/1.1``) stands in for a missing
``request_uri``/``request_method``. Every other key goes to ``extra``.

The mapping (``from_fields``) is shared with the ``csv`` format.
"""

from __future__ import annotations

import json

from ..timeparse import TimeError, parse_time
from . import BOM, ParseError, dash, detect_by_parsing, json_object, shorten, split_request, to_int

NAME = "jsonl"
DESCRIPTION = "JSON lines with nginx variable names (remote_addr, request_uri, time_iso8601, ...)"

TIME_FIELDS = ("timestamp", "time_iso8601", "time_local", "msec")
#: Fields mapped to a record key (beside the time fields).
MAPPED = (
    "remote_addr",
    "http_user_agent",
    "request_uri",
    "request_method",
    "request",
    "server_protocol",
    "status",
    "body_bytes_sent",
    "http_referer",
    "auth_type",
    "token_id",
    "org_id",
    "host",
    "http_x_forwarded_for",
)


def _text(value) -> str | None:
    """A text field: None when missing or '-'/''; numbers as their decimal text."""
    if isinstance(value, str):
        return dash(value)
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def from_fields(fields: dict) -> dict:
    """A record from a mapping of nginx variable names to values.

    Args:
        fields: one JSON object or CSV row; empty strings and '-' count as missing.

    Returns:
        A record.

    Raises:
        ParseError: when remote_addr, the time or the uri is missing, or a value is bad.
    """
    ip = _text(fields.get("remote_addr"))
    if ip is None:
        raise ParseError("missing field remote_addr")
    if ip[:1] == "[" and ip[-1:] == "]" and len(ip) > 2:
        ip = ip[1:-1]

    time_key = next((k for k in TIME_FIELDS if dash(fields.get(k)) is not None), None)
    if time_key is None:
        raise ParseError("missing time (timestamp, time_iso8601, time_local or msec)")
    try:
        ts = parse_time(fields[time_key])
    except TimeError as exc:
        raise ParseError(f"bad timestamp: {exc}") from None

    method = _text(fields.get("request_method"))
    uri = fields.get("request_uri")
    protocol = _text(fields.get("server_protocol"))
    request = fields.get("request")
    if isinstance(request, str) and request and (not uri or method is None or protocol is None):
        req_method, req_uri, req_protocol = split_request(request)
        uri = uri or req_uri
        method = method or req_method
        protocol = protocol or req_protocol
    if uri is None or uri == "":
        raise ParseError("missing field request_uri")
    if not isinstance(uri, str):
        raise ParseError(f"bad request_uri: {shorten(str(uri))}")

    extra = {
        key: value
        for key, value in fields.items()
        if key not in MAPPED and key != time_key and value is not None and value != ""
    }
    return {
        "ts": ts,
        "ip": ip,
        "ua": _text(fields.get("http_user_agent")),
        "uri": uri,
        "method": method,
        "protocol": protocol,
        "status": to_int(fields.get("status"), "status"),
        "bytes": to_int(fields.get("body_bytes_sent"), "body_bytes_sent"),
        "referer": _text(fields.get("http_referer")),
        "token_id": _text(fields.get("token_id")),
        "org_id": _text(fields.get("org_id")),
        "auth_type": _text(fields.get("auth_type")),
        "host": _text(fields.get("host")),
        "xff": _text(fields.get("http_x_forwarded_for")),
        "extra": extra or None,
    }


class Parser:
    """Parse one JSON line with nginx variable names into a record."""

    def parse(self, line: str) -> dict | None:
        """Parse one line.

        Args:
            line: the raw line, without its line ending.

        Returns:
            A record, or None for a blank line.

        Raises:
            ParseError: not JSON, not an object, or a required field missing or bad.
        """
        fields = json_object(line)
        return None if fields is None else from_fields(fields)


def detect(lines: list[str]) -> bool:
    """Most lines are JSON objects with remote_addr, a time and a uri."""
    if not lines[0].lstrip(BOM + " \t").startswith("{"):
        return False
    return detect_by_parsing(Parser(), lines)
