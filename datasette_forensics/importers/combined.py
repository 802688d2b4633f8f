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
from . import BOM, MANY, ParseError, split_request

NAME = "combined"
DESCRIPTION = 'Apache/nginx combined: host ident user [time] "request" status bytes "referer" "user agent"'


def _line_pattern(quoted: str) -> re.Pattern:
    """The line regex, with ``quoted`` as the pattern of a quoted field's content.

    The request is split by the regex when it is ``METHOD URI HTTP/x`` (the usual
    case); otherwise group 8 holds it whole. Fields after the user agent (group 13)
    must each be a complete quoted string or a bare word: a line cut off inside a
    quoted field never matches.
    """
    return re.compile(
        r'(\S+) (\S+) (\S+) \[([^\]]*)\] '
        r'"(?:([A-Za-z][A-Za-z0-9_-]{0,31}) ([^ "\\]+) (HTTP/[^ "\\]+)|(' + quoted + r'))"'
        r" (\d{1,3}|-) (\d{1,18}|-)"
        r'(?: "(' + quoted + r')" "(' + quoted + r')"'
        r'((?: +(?:"' + quoted + r'"|[^\s"]\S*))' + MANY + r'))? *'
    )


# Lines without a backslash (nearly all) take the simple, fast pattern. Lines with
# one may hold \" inside a quoted field: the unrolled escape-aware pattern is much
# faster than (?:[^"\\]|\\.)* in CPython. Both give the same groups.
# The loops are possessive (*+): they never need to give anything back, and without
# it CPython keeps a backtracking frame per repetition, so one 10 MB line of escapes
# or of quoted fields took gigabytes of memory.
_Q = r'[^"\\]*(?:\\.[^"\\]*)' + MANY
_FAST = _line_pattern(r'[^"]*').fullmatch
_ESCAPED = _line_pattern(_Q).fullmatch
# Last resort for servers that do not escape quotes (see _fallback).
_HEAD = r'(\S+) (\S+) (\S+) \[([^\]]*)\] '
_FALLBACK_HEAD = re.compile(_HEAD + '"').match
_FALLBACK_STATUS = re.compile(r'" (\d{1,3}|-) (\d{1,18}|-)(?= "| *$)').search
_FALLBACK_TAIL = re.compile(r'(?: "([^"]*)" "(.*)")? *').fullmatch
_TRAILING = re.compile(r'"(' + _Q + r')"|(\S+)').findall
_PREFIX = re.compile(_HEAD).match
_UNESCAPED_QUOTE = re.compile(r'(?<!\\)"').findall
_STATUS_BYTES = re.compile(r'"' + _Q + r'" (\d{1,3}|-) (\d{1,18}|-)(?: |$)').match


# A plain line: a ``METHOD URI HTTP/x`` request, a referer and a user agent and
# nothing after them, no backslash in the quoted fields, and an address that is
# not bracketed. Parser.parse gives such a line's fields exactly as these groups
# (ip, ident, user, time, method, uri, protocol, status, bytes, referer, ua), with
# no extra fields but the ident and user when they are not "-", so an import
# takes it without building a record (ingest._file_chunks); any other line goes
# through Parser.parse.
PLAIN = re.compile(
    r'([^\s\[' + BOM + r']\S*) (\S+) (\S+) \[([^\]]*)\] "([A-Za-z][A-Za-z0-9_-]{0,31}) ([^ "\\]+) (HTTP/[^ "\\]+)"'
    r' (\d{1,3}|-) (\d{1,18}|-) "([^"\\]*)" "([^"\\]*)" *'
).fullmatch


def _fallback(line: str) -> tuple | None:
    """The fields of a line whose request or user agent holds unescaped quotes.

    The request ends at the first '" status bytes'; the referer has no quote; the
    user agent runs to the last quote. Linear time, whatever the line.
    """
    head = _FALLBACK_HEAD(line)
    if head is None:
        return None
    status = _FALLBACK_STATUS(line, head.end())
    if status is None:
        return None
    tail = _FALLBACK_TAIL(line, status.end())
    if tail is None:
        return None
    return (*head.groups(), line[head.end() : status.start()], *status.groups(), *tail.groups())


def _unescape(text: str) -> str:
    """Decode the two spellings of an escaped quote: Apache's \\" and nginx's \\x22."""
    return text.replace('\\"', '"').replace("\\x22", '"')


class Parser:
    """Parse one combined (or common) log line into a record."""

    #: nginx-ext: the quoted field right after the UA is X-Forwarded-For.
    xff_after_ua = False
    #: The format name in rejection reasons.
    format_name = NAME
    #: Try the unescaped-quotes fallback (not for nginx-ext: it would swallow fields).
    fallback = True
    #: The plain lines' pattern (see PLAIN), for the import's fast path.
    plain = staticmethod(PLAIN)

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
        escaped = "\\" in line
        m = (_ESCAPED if escaped else _FAST)(line)
        if m is not None:
            (
                ip, ident, user, time, method, uri, protocol, request,
                status, size, referer, ua, tail,
            ) = m.groups()  # fmt: skip
        else:
            fields = _fallback(line) if self.fallback else None
            if fields is None:
                if not line.strip():
                    return None
                raise ParseError(self._reason(line))
            ip, ident, user, time, request, status, size, referer, ua = fields
            method = tail = None

        if time == self._last_time:
            ts = self._last_ts
        else:
            try:
                ts = parse_time_local(time)
            except TimeError as exc:
                raise ParseError(f"bad timestamp: {exc}") from None
            self._last_time, self._last_ts = time, ts

        if method is None:
            method, uri, protocol = split_request(_unescape(request) if escaped else request)
        if referer is not None:
            if referer == "-":
                referer = None
            elif escaped:
                referer = _unescape(referer)
            if ua == "-" or ua == "":
                ua = None
            elif escaped:
                ua = _unescape(ua)

        extra = xff = None
        if ident != "-" or user != "-":
            extra = {}
            if ident != "-":
                extra["ident"] = ident
            if user != "-":
                extra["remote_user"] = user
        if tail:
            trailing = [bare or _unescape(quoted) for quoted, bare in _TRAILING(tail)]
            if self.xff_after_ua and tail.lstrip(" ")[:1] == '"':
                xff = trailing.pop(0)
                if xff == "-" or xff == "":
                    xff = None
            if trailing:
                if extra is None:
                    extra = {}
                extra["trailing"] = trailing

        if ip[0] == "[" or ip[0] == BOM:
            ip = ip.lstrip(BOM)
            if ip[:1] == "[" and ip[-1:] == "]" and len(ip) > 2:
                ip = ip[1:-1]
            if not ip:
                raise ParseError("missing client address")
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
    m = _ESCAPED(line)
    if m is not None:
        if m.group(11) is None:
            return "common"
        return "ext" if m.group(13) else "combined"
    return "common" if _fallback(line)[7] is None else "combined"


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
    """Most lines are combined lines (with a referer and UA), most without trailing fields."""
    return family(lines) == NAME

