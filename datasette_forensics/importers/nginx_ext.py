"""nginx combined plus trailing fields.

``... "referer" "user_agent" "$http_x_forwarded_for" $request_time ...``

The quoted field right after the user agent is taken as X-Forwarded-For (``xff``);
every other trailing field, quoted or not, goes in ``extra["trailing"]`` as written
(without its quotes), in order.
"""

from __future__ import annotations

from . import combined

NAME = "nginx-ext"
DESCRIPTION = "nginx combined plus trailing fields (X-Forwarded-For, request_time, upstream time, host)"


class Parser(combined.Parser):
    """Parse one combined line with trailing fields into a record."""

    format_name = NAME
    xff_after_ua = True
    fallback = False


def detect(lines: list[str]) -> bool:
    """Most lines are combined lines with extra fields after the user agent."""
    return combined.family(lines) == NAME
