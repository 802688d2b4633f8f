"""Caddy's JSON access log (``http.log.access``).

``{"ts": 1716723772.60, "request": {"remote_ip": ..., "client_ip": ..., "method": ...,
"uri": ..., "host": ..., "proto": ..., "headers": {"User-Agent": [...]}}, "status":
200, "size": 3768, "duration": ...}``

``request.client_ip`` (the client after trusted proxies) is preferred to
``request.remote_ip``; the other one goes to ``extra`` when it differs.
"""

from __future__ import annotations

import json

from ..timeparse import TimeError, parse_time
from . import BOM, ParseError, dash, detect_by_parsing, json_object, to_int

NAME = "caddy"
DESCRIPTION = "Caddy JSON access log (ts, request.client_ip/remote_ip, request.uri, request.headers)"

#: Top-level keys kept in ``extra`` when present and not empty.
EXTRA_KEYS = ("logger", "duration", "bytes_read", "user_id", "err_id", "err_trace")


def _header(headers: dict, name: str) -> str | None:
    """A request header's value (several values joined by ', '), any name case."""
    values = headers.get(name)
    if values is None:
        lower = name.lower()
        values = next((v for k, v in headers.items() if k.lower() == lower), None)
    if isinstance(values, list):
        values = ", ".join(str(v) for v in values) if values else None
    return values if isinstance(values, str) and values else None


def _text(value) -> str | None:
    """A text field: None when missing, '' or '-'; another JSON value as its JSON text."""
    if value is None or isinstance(value, str):
        return dash(value)
    return json.dumps(value, ensure_ascii=False)


class Parser:
    """Parse one Caddy access-log line into a record."""

    def parse(self, line: str) -> dict | None:
        """Parse one line.

        Args:
            line: the raw line, without its line ending.

        Returns:
            A record, or None for a blank line.

        Raises:
            ParseError: not JSON, no request object, or a required field missing or bad.
        """
        entry = json_object(line)
        if entry is None:
            return None
        request = entry.get("request")
        if not isinstance(request, dict):
            raise ParseError("no request object: not an access log entry")
        if "ts" not in entry:
            raise ParseError("missing field ts")
        try:
            ts = parse_time(entry["ts"])
        except TimeError as exc:
            raise ParseError(f"bad timestamp: {exc}") from None
        client_ip = dash(request.get("client_ip"))
        remote_ip = dash(request.get("remote_ip"))
        ip = client_ip or remote_ip
        if not isinstance(ip, str):
            raise ParseError("missing field request.remote_ip")
        uri = request.get("uri")
        if not isinstance(uri, str) or not uri:
            raise ParseError("missing field request.uri")
        headers = request.get("headers")
        if not isinstance(headers, dict):
            headers = {}

        extra = {key: entry[key] for key in EXTRA_KEYS if entry.get(key) not in (None, "")}
        if remote_ip and remote_ip != ip:
            extra["remote_ip"] = remote_ip
        if request.get("remote_port"):
            extra["remote_port"] = request["remote_port"]
        return {
            "ts": ts,
            "ip": ip[1:-1] if ip[:1] == "[" and ip[-1:] == "]" and len(ip) > 2 else ip,
            "ua": _header(headers, "User-Agent"),
            "uri": uri,
            "method": _text(request.get("method")),
            "protocol": _text(request.get("proto")),
            "status": to_int(entry.get("status"), "status"),
            "bytes": to_int(entry.get("size"), "size"),
            "referer": _header(headers, "Referer"),
            "token_id": None,
            "org_id": None,
            "auth_type": None,
            "host": _text(request.get("host")),
            "xff": _header(headers, "X-Forwarded-For"),
            "extra": extra or None,
        }


def detect(lines: list[str]) -> bool:
    """Most lines are JSON objects with ``ts`` and a ``request`` object holding ``uri``."""
    if not lines[0].lstrip(BOM + " \t").startswith("{"):
        return False
    return detect_by_parsing(Parser(), lines)
