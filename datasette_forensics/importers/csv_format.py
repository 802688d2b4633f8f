"""CSV with a header row of nginx variable names (the same names as ``jsonl``).

The first line is the header (case and surrounding spaces ignored). A later line
identical to the header (files exported in parts and concatenated) is a header too.
Each line is read on its own: a quoted field cannot span lines.
"""

from __future__ import annotations

import csv

from . import BOM, ParseError, detect_by_parsing
from .jsonl import TIME_FIELDS, from_fields

NAME = "csv"
DESCRIPTION = "CSV with a header row of nginx variable names (remote_addr, request_uri, timestamp, ...)"


def _row(line: str) -> list[str]:
    try:
        return next(csv.reader([line], strict=True))
    except csv.Error as exc:
        raise ParseError(f"bad CSV: {exc}") from None


class Parser:
    """Parse the header, then one CSV row at a time, into records."""

    def __init__(self):
        self.header_line: str | None = None
        self.fields: list[str] | None = None

    def parse(self, line: str) -> dict | None:
        """Parse one line.

        Args:
            line: the raw line, without its line ending.

        Returns:
            None for the header (or a blank line), a record for a data row.

        Raises:
            ParseError: a row with the wrong number of columns, bad quoting, or a
                required field missing or bad.
        """
        if not line.strip():
            return None
        if self.fields is None:
            self.header_line = line
            self.fields = [name.strip().lstrip(BOM).strip().lower() for name in _row(line)]
            return None
        if line == self.header_line:
            return None
        values = _row(line)
        if len(values) != len(self.fields):
            raise ParseError(f"expected {len(self.fields)} columns, got {len(values)}")
        return from_fields(dict(zip(self.fields, values)))


def detect(lines: list[str]) -> bool:
    """The first line is a header naming remote_addr, a time and a uri; most rows parse."""
    try:
        header = {name.strip().lstrip(BOM).strip().lower() for name in _row(lines[0])}
    except ParseError:
        return False
    if "remote_addr" not in header or not header & set(TIME_FIELDS):
        return False
    if "request_uri" not in header and "request" not in header:
        return False
    return len(lines) == 1 or detect_by_parsing(Parser(), lines)
