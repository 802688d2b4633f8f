"""Apache/nginx combined log format.

``host ident authuser [time_local] "request" status bytes "referer" "user_agent"``

The parser here is shared by ``common`` (no referer/UA) and ``nginx-ext`` (trailing
fields after the UA). It is tolerant: common lines in a combined file, trailing
fields, request lines that are not ``METHOD URI PROTOCOL`` (kept with method None
and the request text as the uri) and, as a last resort, unescaped quotes inside the
request or the user agent. It rejects what is truly broken, such as a line cut off
inside a quoted field.
"""

from __future__ import annotations

import re

from ..timeparse import TimeError, parse_time_local
from . import ParseError, detect_by_parsing, split_request

NAME = "combined"
DESCRIPTION = 'Apache/nginx combined: host ident user [time] "request" status bytes "referer" "user agent"'

# A quoted field's content, with backslash escapes (\" and \\ in Apache, \xHH kept
# as written): the unrolled form is much faster than (?:[^"\\]|\\.)* in CPython.
_Q = r'[^"\\]*(?:\\.[^"\\]*)*'
_HEAD = r'(\S+) (\S+) (\S+) \[([^\]]*)\] '
_LINE = re.compile(
    _HEAD + r'"(' + _Q + r')" (\d+|-) (\d+|-)'
    r'(?: "(' + _Q + r')" "(' + _Q + r')"'
    r'((?: +(?:"' + _Q + r'"|[^\s"]\S*))*))? *'
).fullmatch
# Last resort for servers that do not escape quotes: the request ends at the first
# '" status bytes', the user agent is everything up to the final quote.
_FALLBACK = re.compile(
    _HEAD + r'"(.*?)" (\d+|-) (\d+|-)(?: "(.*?)" "(.*)")? *'
).fullmatch
_TRAILING = re.compile(r'"(' + _Q + r')"|(\S+)').findall
_PREFIX = re.compile(_HEAD).match
_UNESCAPED_QUOTE = re.compile(r'(?<!\\)"').findall
_STATUS_BYTES = re.compile(r'"' + _Q + r'" (\d+|-) (\d+|-)').match


class Parser:
    """Parse one combined (or common) log line into a record."""

    #: nginx-ext: the quoted field right after the UA is X-Forwarded-For.
    xff_after_ua = False
    #: The format name in rejection reasons.
    format_name = NAME
    #: Try the unescaped-quotes fallback (not for nginx-ext: it would swallow fields).
    fallback = True

    def __init__(self):
        self._last_time = None
        self._last_ts = None

    def parse(self, line: str) -> dict | None:
        """Parse one line.

        Args:
            line: the raw line, without its line ending.

        Returns:
            A record, or None for a blank line.

        Raises:
            ParseError: for a line that is not this format or is cut off.
        """
        m = _LINE(line)
        if m is not None:
            ip, ident, user, time, request, status, size, referer, ua, tail = m.groups()
        else:
            m = _FALLBACK(line) if self.fallback else None
            if m is None:
                if not line.strip():
                    return None
                raise ParseError(self._reason(line))
            ip, ident, user, time, request, status, size, referer, ua = m.groups()
            tail = None

        if time == self._last_time:
            ts = self._last_ts
        else:
            try:
                ts = parse_time_local(time)
            except TimeError as exc:
                raise ParseError(f"bad timestamp: {exc}") from None
            self._last_time, self._last_ts = time, ts

        if "\\" in request:
            request = request.replace('\\"', '"')
        method, uri, protocol = split_request(request)

        if referer is not None:
            if referer == "-":
                referer = None
            elif "\\" in referer:
                referer = referer.replace('\\"', '"')
            if ua == "-" or ua == "":
                ua = None
            elif "\\" in ua:
                ua = ua.replace('\\"', '"')

        extra = None
        xff = None
        if ident != "-" or user != "-":
            extra = {}
            if ident != "-":
                extra["ident"] = ident
            if user != "-":
                extra["remote_user"] = user
        if tail:
            trailing = [bare or quoted.replace('\\"', '"') for quoted, bare in _TRAILING(tail)]
            if self.xff_after_ua and tail.lstrip(" ")[:1] == '"':
                xff = trailing.pop(0)
                if xff == "-" or xff == "":
                    xff = None
            if trailing:
                if extra is None:
                    extra = {}
                extra["trailing"] = trailing

        if ip[:1] == "[" and ip[-1:] == "]":
            ip = ip[1:-1]
        return {
            "ts": ts,
            "ip": ip,
            "ua": ua,
            "uri": uri,
            "method": method,
            "protocol": protocol,
            "status": None if status == "-" else int(status),
            "bytes": None if size == "-" else int(size),
            "referer": referer,
            "token_id": None,
            "org_id": None,
            "auth_type": None,
            "host": None,
            "xff": xff,
            "extra": extra,
        }

    def _reason(self, line: str) -> str:
        """Why a line did not match (only computed for rejected lines)."""
        prefix = _PREFIX(line)
        if prefix is None:
            return f"not a {self.format_name} log line"
        rest = line[prefix.end():]
        if not rest.startswith('"'):
            return "bad request field"
        # An odd number of unescaped quotes: a quoted field never ends.
        if len(_UNESCAPED_QUOTE(rest.replace("\\\\", ""))) % 2:
            return "line cut off inside a quoted field"
        if _STATUS_BYTES(rest) is None:
            return "bad status or bytes field"
        return "unexpected text after the bytes field"


def shape(line: str, parser: Parser | None = None) -> str | None:
    """'common', 'combined' or 'ext' (fields after the UA) for a parseable line, else None."""
    try:
        if (parser or Parser()).parse(line) is None:
            return None
    except ParseError:
        return None
    m = _LINE(line)
    if m is not None:
        if m.group(8) is None:
            return "common"
        return "ext" if m.group(10) else "combined"
    return "common" if _FALLBACK(line).group(8) is None else "combined"


def shapes(lines: list[str]) -> dict[str, int]:
    """How many of ``lines`` are each shape; None counts the lines that do not parse."""
    parser = Parser()
    counts = {"common": 0, "combined": 0, "ext": 0, None: 0}
    for line in lines:
        counts[shape(line, parser)] += 1
    return counts


def family(lines: list[str]) -> str | None:
    """Which of common / combined / nginx-ext a file's first lines are, if any."""
    counts = shapes(lines)
    good = counts["common"] + counts["combined"] + counts["ext"]
    if good == 0 or good <= counts[None]:
        return None
    if counts["ext"] * 2 > good:
        return "nginx-ext"
    if (counts["combined"] + counts["ext"]) * 2 > good:
        return "combined"
    return "common"


def detect(lines: list[str]) -> bool:
    """Most lines are combined-format lines without fields after the user agent."""
    return family(lines) == NAME

