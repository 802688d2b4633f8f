"""Times in access logs to UTC epoch milliseconds, and back to sortable text.

Accepted forms:

- ISO 8601: ``2020-07-18T09:12:44Z``, ``2020-07-18 09:12:44+02:00``, fractional
  seconds, offsets ``+0530``, ``+05:30`` or ``+05``; no offset means UTC; a date alone
  (``2020-07-18``) means midnight UTC.
- nginx/Apache ``time_local``: ``18/Jul/2020:09:12:44 +0000``, with or without the
  surrounding brackets.
- epoch seconds: an int, a float, or a numeric string (``1595063564.123``).

Fractions of a millisecond are rounded half to even. Anything else, and any instant
outside 1970-01-01 .. 2200-12-31 UTC, raises TimeError.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime, timezone
from functools import lru_cache

__all__ = ["TimeError", "parse_time", "parse_time_local", "format_ms"]

MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
        start=1,
    )
}
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
MIN_MS = 0
MAX_MS = (date(2201, 1, 1).toordinal() - _EPOCH_ORDINAL) * 86_400_000
_MAX_OFFSET_SECONDS = 18 * 3600

_ISO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
    r"\s*([Zz]|[+-]\d{2}(?::?\d{2})?)?)?"
)
_TIME_LOCAL = re.compile(
    r"(\d{1,2})/([A-Za-z]{3})/(\d{4}):(\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?"
    r"(?: ?([+-]\d{2}:?\d{2}|[Zz]))?"
)
# time_local fast path: "DD/Mon/YYYY:HH:MM +ZZZZ" -> epoch ms of that minute.
_minute_ms: dict[str, int] = {}
_MINUTE_CACHE_SIZE = 100_000
_SECOND_MS = {f"{second:02d}": second * 1000 for second in range(60)}
_EPOCH = re.compile(r"\d+(?:\.\d*)?|\.\d+")


class TimeError(ValueError):
    """A value that is not a time this tool understands; the message says why."""


def parse_time(value) -> int:
    """Parse a log time to UTC epoch milliseconds.

    Args:
        value: a string in one of the accepted forms, or epoch seconds (int or float).

    Returns:
        Milliseconds since 1970-01-01T00:00:00Z.

    Raises:
        TimeError: for None, booleans, empty or unrecognised text, or absurd dates.
    """
    if isinstance(value, str):
        # Cache only short texts: an attacker's megabyte-long times must not pile up.
        return _parse_text(value) if len(value) <= 64 else _parse_text.__wrapped__(value)
    if value is None:
        raise TimeError("no time")
    if isinstance(value, bool):
        raise TimeError(f"not a time: {value!r}")
    if isinstance(value, int):
        return _check(value * 1000, value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TimeError(f"not a time: {value!r}")
        if abs(value) >= MAX_MS:  # round() of an overflowing product would raise
            raise TimeError(f"after 2200: {value!r}")
        return _check(round(value * 1000), value)
    raise TimeError(f"not a time: {type(value).__name__}")


def parse_time_local(value: str) -> int:
    """Parse an nginx/Apache ``time_local`` (``18/Jul/2020:09:12:44 +0000``) fast.

    The hot path of a combined-log import. The instant of each minute seen
    (``18/Jul/2020:09:12`` with its offset) is cached, so most lines cost a dict
    lookup and the seconds.

    Raises:
        TimeError: when the text is not a valid time_local.
    """
    if len(value) == 26 and value[17] == ":":
        base = _minute_ms.get(value[:17] + value[20:])
        if base is not None:
            second = _SECOND_MS.get(value[18:20])
            if second is not None:
                return base + second
    ms = _parse_time_local(value)
    if len(value) == 26 and value[17] == ":":
        if len(_minute_ms) >= _MINUTE_CACHE_SIZE:
            _minute_ms.clear()
        _minute_ms[value[:17] + value[20:]] = ms - _SECOND_MS[value[18:20]]
    return ms


def format_ms(ms: int) -> str:
    """Format epoch milliseconds as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (fixed width, sortable)."""
    seconds, millis = divmod(int(ms), 1000)
    d = datetime.fromtimestamp(seconds, timezone.utc)
    return (
        f"{d.year:04d}-{d.month:02d}-{d.day:02d}T"
        f"{d.hour:02d}:{d.minute:02d}:{d.second:02d}.{millis:03d}Z"
    )


def _check(ms: int, shown) -> int:
    if isinstance(shown, int) and not -(10**30) < shown < 10**30:
        shown = "a number of more than 30 digits"  # repr() refuses ints of over 4300 digits
    if ms < MIN_MS:
        raise TimeError(f"before 1970: {shown!r}")
    if ms >= MAX_MS:
        raise TimeError(f"after 2200: {shown!r}")
    return ms


def _short(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


@lru_cache(maxsize=4096)
def _parse_text(text: str) -> int:
    s = text.strip()
    if not s:
        raise TimeError("empty time")
    if s[0] == "[" and s[-1] == "]":
        s = s[1:-1].strip()
    if _EPOCH.fullmatch(s):
        whole, _, frac = s.partition(".")
        whole = whole.lstrip("0")
        if len(whole) > 13:  # also keeps int() away from huge digit strings
            raise TimeError(f"after 2200: {_short(s)}")
        return _check(_fraction_ms(int(whole or 0), frac), s)
    if "/" in s[:3]:
        return _parse_time_local(s)
    m = _ISO.fullmatch(s)
    if m is None:
        raise TimeError(f"not a recognised time: {_short(text)}")
    year, month, day, hour, minute, second, frac, offset = m.groups()
    return _assemble(text, year, month, day, hour, minute, second, frac, offset)


def _parse_time_local(text: str) -> int:
    s = text
    if s[:1] == "[" and s[-1:] == "]":
        s = s[1:-1]
    # Fast path: exactly "DD/Mon/YYYY:HH:MM:SS +ZZZZ".
    if (
        len(s) == 26
        and s[2] == "/"
        and s[6] == "/"
        and s[11] == ":"
        and s[14] == ":"
        and s[17] == ":"
        and s[20] == " "
        and s.isascii()
        and (s[21] == "+" or s[21] == "-")
    ):
        digits = s[0:2] + s[7:11] + s[12:14] + s[15:17] + s[18:20] + s[22:26]
        month = MONTHS.get(s[3:6])
        if month is not None and digits.isdigit():
            hour, minute, second = int(s[12:14]), int(s[15:17]), int(s[18:20])
            off_h, off_m = int(s[22:24]), int(s[24:26])
            if hour < 24 and minute < 60 and second < 60 and off_m < 60 and off_h < 19:
                try:
                    days = date(int(s[7:11]), month, int(s[0:2])).toordinal() - _EPOCH_ORDINAL
                except ValueError:
                    raise TimeError(f"date out of range: {_short(text)}") from None
                offset = off_h * 3600 + off_m * 60
                if s[21] == "-":
                    offset = -offset
                ms = (days * 86400 + hour * 3600 + minute * 60 + second - offset) * 1000
                return _check(ms, text)
    # Slow path: single-digit day, fraction, offset with a colon or none (UTC).
    m = _TIME_LOCAL.fullmatch(s.strip())
    if m is None:
        raise TimeError(f"not a recognised time: {_short(text)}")
    day, mon, year, hour, minute, second, frac, offset = m.groups()
    month = MONTHS.get(mon.title())
    if month is None:
        raise TimeError(f"unknown month {mon!r}")
    return _assemble(text, year, month, day, hour, minute, second, frac, offset)


def _assemble(text, year, month, day, hour, minute, second, frac, offset) -> int:
    try:
        days = date(int(year), int(month), int(day)).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        raise TimeError(f"date out of range: {_short(text)}") from None
    hour, minute, second = int(hour or 0), int(minute or 0), int(second or 0)
    if hour > 23 or minute > 59 or second > 59:
        raise TimeError(f"time out of range: {_short(text)}")
    seconds = days * 86400 + hour * 3600 + minute * 60 + second - _offset_seconds(offset, text)
    return _check(_fraction_ms(seconds, frac or ""), text)


def _offset_seconds(offset: str | None, text: str) -> int:
    if not offset or offset in "Zz":
        return 0
    digits = offset[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    total = hours * 3600 + minutes * 60
    if minutes > 59 or total > _MAX_OFFSET_SECONDS:
        raise TimeError(f"offset out of range: {_short(text)}")
    return -total if offset[0] == "-" else total


def _fraction_ms(whole: int, frac: str) -> int:
    """Exact seconds + decimal fraction digits to milliseconds, rounding half to even."""
    ms = whole * 1000 + int(frac[:3].ljust(3, "0") or 0)
    rest = frac[3:].rstrip("0")
    if rest and (rest > "5" or (rest == "5" and ms % 2)):
        ms += 1
    return ms


def utcnow() -> str:
    """The current time as the stored ISO text (microseconds, UTC): for audit columns."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
