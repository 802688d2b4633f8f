"""Evidence for one org (MODEL §6.5): a self-contained HTML file to send to that customer.

The file holds the incident window, the org's status, its unexplained in-scope
requests with their provenance, and how many of its requests each rule or verdict
explained. It has inline style only: no script, nothing loaded from elsewhere. It
never names another customer: a cross-tenant signature is "also seen on N other
organisations". Every log string is escaped by the template.
"""

from __future__ import annotations

import os
from pathlib import Path

import jinja2
import sqlite_utils

from .errors import ForensicsError
from .derived import rule_counts
from .derived.scope import get_incident
from .derived.status import status_sql
from .request_rows import REQUEST_JOINS
from .terminal import visible
from .timeparse import format_ms, utcnow

# The most unexplained requests one file lists; the rest are counted.
MAX_REQUESTS = 5000

ORG = f"""
select o.id, o.slug, o.name, o.contact_email, s.in_scope, s.unexplained, s.unexplained_signatures,
    case when s.org_id is not null then {status_sql("s")} end as status
from (select :org as org_id) x
left join orgs o on o.id = x.org_id
left join org_stats s on s.org_id = x.org_id
"""
# The org's unexplained requests, pair by pair along scoped's key, oldest first.
UNEXPLAINED = f"""
select s.ts, i.ip, a.ua, r.method, u.uri, r.status, b.source, r.line_no, st.orgs
from sig_org so
cross join scoped s on s.sig_id = so.sig_id and s.org_id = so.org_id
join requests r on r.id = s.request_id
{REQUEST_JOINS}
join sig_stats st on st.sig_id = s.sig_id
left join import_batches b on b.id = r.batch_id
where so.org_id = :org and so.unexplained > 0 and s.explained = 0
order by s.ts, s.request_id
limit :limit
"""

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    # Log- and record-derived text shows its control, bidi and invisible characters as
    # visible escapes (\x1b, \u202e), as the pages and the command line do.
    finalize=lambda value: visible(value) if isinstance(value, str) else value,
)


def org_summary(db: sqlite_utils.Database, org_id: str) -> dict:
    """The org's figures and status; raises for an org that is neither known nor reached."""
    row = db.execute(ORG, {"org": str(org_id)}).fetchone()
    if row is None or (row[0] is None and row[7] is None):
        raise ForensicsError(f"Unknown org {org_id!r}: it is neither in the org records nor reached by a request.")
    keys = ("org_id", "slug", "name", "contact_email", "in_scope_requests", "unexplained_requests",
            "unexplained_signatures", "status")
    org = dict(zip(keys, row))
    org["org_id"] = str(org_id)
    for k in ("in_scope_requests", "unexplained_requests", "unexplained_signatures"):
        org[k] = org[k] or 0
    return org


def unexplained_requests(db: sqlite_utils.Database, org_id: str, limit: int = MAX_REQUESTS) -> list[dict]:
    """The org's unexplained in-scope requests, oldest first, with provenance; other orgs as a count."""
    return [
        {
            "time": format_ms(ts),
            "ip": ip,
            "user_agent": ua,
            "method": method,
            "uri": uri,
            "status": status,
            "file": os.path.basename(source or ""),
            "line": line_no,
            "other_orgs": max((orgs or 1) - 1, 0),
        }
        for ts, ip, ua, method, uri, status, source, line_no, orgs in db.execute(
            UNEXPLAINED, {"org": str(org_id), "limit": limit}
        )
    ]


def render(db: sqlite_utils.Database, org_id: str) -> str:
    """The evidence file for one org, as HTML text."""
    org = org_summary(db, org_id)
    incident = get_incident(db)
    requests = unexplained_requests(db, org_id)
    return _env.get_template("forensics_evidence_file.html").render(
        org=org,
        incident=None if incident is None else {k: incident[k] for k in ("name", "introduced_at", "patched_at")},
        requests=requests,
        more=max(org["unexplained_requests"] - len(requests), 0),
        explained_by=rule_counts.breakdown(db, str(org_id)).get(str(org_id), {}),
        generated_at=utcnow(),
    )


def safe_name(org_id: str) -> str:
    """A file name for an org id: anything but letters, digits, - and _ becomes _."""
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(org_id))
    return name or "_"


def write(db: sqlite_utils.Database, org_id: str, path: str) -> str:
    """Write one org's evidence file; returns its path."""
    text = render(db, org_id)
    _write_text(path, text)
    return path


def _write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str, data: bytes) -> None:
    """Write a file whole or not at all (through a temporary file beside it)."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise ForensicsError(f"Cannot write {path}: {exc.strerror or exc}.") from None


def writable_directory(directory: str) -> None:
    """Create the directory if needed and check that files can be written in it."""
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise ForensicsError(f"Cannot create the directory {directory}: {exc.strerror or exc}.") from None
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK | os.X_OK):
        raise ForensicsError(f"Cannot write files in {directory}.")


def write_all(db: sqlite_utils.Database, directory: str) -> list[str]:
    """One evidence file per exposed and review org, named ORG_ID.html; returns the paths."""
    writable_directory(directory)
    orgs = [
        org for (org,) in db.execute("select org_id from org_stats where unexplained > 0 order by org_id")
    ]
    texts = [(os.path.join(directory, safe_name(org) + ".html"), render(db, org)) for org in orgs]
    for path, text in texts:
        _write_text(path, text)
    return [p for p, _ in texts]
