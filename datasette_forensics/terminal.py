"""Text for a terminal: log and record strings are attacker-controlled.

A user agent, a path, an org's slug or name may hold ANSI escapes (recolour,
retitle or clear the analyst's terminal, forge hyperlinks), C1 controls, or
bidi overrides that reorder what is shown. The command line passes such text
through ``safe()`` before printing it, and JSON it prints through
``json_safe()``.
"""

from __future__ import annotations

import re

# C0 (but newline) and C1 controls, DEL, bidi and other invisible format
# characters, line/paragraph separators, lone surrogates.
_UNSAFE = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e"
    "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\ud800-\udfff\U000e0000-\U000e007f]"
)


def _visible(match: re.Match) -> str:
    code = ord(match.group())
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def safe(text) -> str:
    """``text`` with every control, bidi and invisible format character shown as an escape (\\x1b, \\u202e).

    Newlines are kept. Use it on every human-readable line that holds log- or
    record-derived text.
    """
    return _UNSAFE.sub(_visible, str(text))


def visible(text) -> str:
    """``safe(text)`` on one line: newlines too become escapes (for web pages, where a
    newline would be invisible whitespace)."""
    return safe(text).replace("\n", "\\n")


def _json_escape(match: re.Match) -> str:
    code = ord(match.group())
    if code > 0xFFFF:  # a surrogate pair, as JSON spells it
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def json_safe(text: str) -> str:
    """JSON text (from ``json.dumps``) with the characters ``safe()`` shows escaped as ``\\uXXXX``.

    The JSON still parses to the same values; json.dumps already escapes C0
    controls, this also escapes C1, bidi and invisible format characters (they
    can only be inside strings).
    """
    return _UNSAFE.sub(_json_escape, text)


def is_terminal(stream) -> bool:
    """Whether output goes to a terminal (a function, so tests can pretend it does)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
