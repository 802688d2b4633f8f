"""W3C extended log format (IIS, CloudFront).

Header lines (``#Software:``, ``#Version:``, ``#Date:``, ``#Fields: date time c-ip
cs-method cs-uri-stem cs-uri-query sc-status sc-bytes cs(User-Agent) ...``) are not
counted; the latest ``#Fields:`` names the columns of the data lines after it.

Data lines are space separated (IIS) or tab separated (CloudFront). ``date`` and
``time`` are UTC (a missing ``date`` column takes the ``#Date:`` header's date).
IIS writes the spaces of ``cs(User-Agent)`` as ``+``; CloudFront percent-encodes it:
both are decoded, in the user agent only. A ``cs-uri-query`` of ``-`` means none.
"""

from __future__ import annotations

from urllib.parse import unquote

from ..timeparse import TimeError, parse_time
from . import BOM, ParseError, dash, to_int

NAME = "w3c"
DESCRIPTION = "W3C extended log format (IIS, CloudFront) with a #Fields: header"

#: Record key -> the W3C fields that give it, first present wins.
FIELD_MAP = {
    "ip": ("c-ip",),
    "method": ("cs-method",),
    "status": ("sc-status",),
    "bytes": ("sc-bytes",),
    "ua": ("cs(user-agent)",),
    "referer": ("cs(referer)",),
    "protocol": ("cs-version", "cs-protocol-version"),
    "host": ("x-host-header", "cs-host", "cs(host)"),
    "xff": ("x-forwarded-for", "cs(x-forwarded-for)"),
}
_URI_FIELDS = {"date", "time", "cs-uri-stem", "cs-uri-query", "cs-uri"}


class Parser:
    """Parse W3C header lines (None) and data lines (records)."""

    def __init__(self):
        self.fields: list[str] | None = None
        self.date: str | None = None

    def parse(self, line: str) -> dict | None:
        """Parse one line.

        Args:
            line: the raw line, without its line ending.

        Returns:
            None for a header, comment or blank line; a record for a data line.

        Raises:
            ParseError: a data line before any #Fields header, with the wrong number
                of fields, or missing the client address, time or uri.
        """
        if line.startswith(BOM):
            line = line[1:]
        if line.startswith("#"):
            self._header(line)
            return None
        if not line.strip():
            return None
        if self.fields is None:
            raise ParseError("data line before the #Fields header")
        tabbed = "\t" in line
        values = line.split("\t") if tabbed else line.split()
        if len(values) != len(self.fields):
            raise ParseError(f"expected {len(self.fields)} fields, got {len(values)}")
        row = dict(zip(self.fields, values))

        date = row.get("date") or self.date
        if date is None or "time" not in row:
            raise ParseError("missing field date or time")
        try:
            ts = parse_time(f"{date}T{row['time']}Z")
        except TimeError as exc:
            raise ParseError(f"bad timestamp: {exc}") from None

        found = {}
        used = set(_URI_FIELDS)
        for key, names in FIELD_MAP.items():
            name = next((n for n in names if dash(row.get(n)) is not None), None)
            found[key] = None if name is None else row[name]
            used.add(name)
        if found["ip"] is None:
            raise ParseError("missing field c-ip")
        uri = row.get("cs-uri-stem")
        if dash(uri) is not None:
            query = dash(row.get("cs-uri-query"))
            if query is not None:
                uri = f"{uri}?{query}"
        elif dash(row.get("cs-uri")) is not None:
            uri = row["cs-uri"]
        else:
            raise ParseError("missing field cs-uri-stem")
        ua = found["ua"]
        if ua is not None:
            ua = unquote(ua) if tabbed else ua.replace("+", " ")
        extra = {k: v for k, v in row.items() if k not in used and v != "-"}
        return {
            "ts": ts,
            "ip": found["ip"],
            "ua": ua,
            "uri": uri,
            "method": found["method"],
            "protocol": found["protocol"],
            "status": to_int(found["status"], "sc-status"),
            "bytes": to_int(found["bytes"], "sc-bytes"),
            "referer": found["referer"],
            "token_id": None,
            "org_id": None,
            "auth_type": None,
            "host": found["host"],
            "xff": found["xff"],
            "extra": extra or None,
        }

    def _header(self, line: str) -> None:
        directive, _, value = line[1:].partition(":")
        directive = directive.strip().lower()
        if directive == "fields":
            self.fields = [name.lower() for name in value.split()]
        elif directive == "date":
            self.date = value.split()[0] if value.split() else None


def detect(lines: list[str]) -> bool:
    """A ``#Fields:`` header among the lines, and most data lines parse."""
    if not any(line.lstrip(BOM).startswith("#Fields:") for line in lines):
        return False
    parser = Parser()
    good = bad = 0
    for line in lines:
        try:
            if parser.parse(line) is not None:
                good += 1
        except ParseError:
            bad += 1
    return good >= bad
