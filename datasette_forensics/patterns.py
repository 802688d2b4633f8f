"""Regular expressions that analysts write (records, the incident, custom rules)."""

from __future__ import annotations

import re


def regex_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a valid Python regular expression, or None when it is.

    Catches what ``re.compile`` raises on hostile input too (absurd repeat counts,
    nesting deep enough to exhaust the parser's recursion).
    """
    try:
        re.compile(pattern)
    except (re.error, OverflowError, RecursionError, ValueError) as exc:
        return str(exc).rstrip(".")
    return None
