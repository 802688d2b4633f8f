"""Common Log Format (CLF): combined without the referer and user agent.

``host ident authuser [time_local] "request" status bytes``

The combined parser reads it (a line that does have a referer and user agent keeps
them); this module only names the format and detects it.
"""

from __future__ import annotations

from . import combined

NAME = "common"
DESCRIPTION = 'Common Log Format: host ident user [time] "request" status bytes'


class Parser(combined.Parser):
    """Parse one Common Log Format line into a record."""

    format_name = NAME


def detect(lines: list[str]) -> bool:
    """Most lines are CLF lines, and most of those have no referer/user agent."""
    return combined.family(lines) == NAME
