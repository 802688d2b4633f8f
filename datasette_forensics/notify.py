"""Notification (MODEL §6.6): one RFC 5322 message per org to tell, rendered, recorded, never sent.

The body comes from a Jinja2 template run in a sandbox with StrictUndefined: a
template that reads a name it was not given fails before anything is written.
Messages are built with the standard library's ``email`` package; header values
never come raw from records: a contact address must be one plain address, and an
org name loses its line breaks before it is a display name.
"""

from __future__ import annotations

import email.policy
import email.utils
import os
import re
from email.message import EmailMessage

import jinja2
import jinja2.sandbox
import sqlite_utils

from . import evidence
from .notifications import latest_notifications, needs_update
from .errors import ForensicsError
from .report import org_rows
from .derived.scope import get_incident
from .derived.status import STATUSES
from .timeparse import utcnow

# The unexplained requests a message's template is given (the evidence file has more).
MAX_REQUESTS = 200

BUILTIN_TEMPLATE = """\
Hello{% if org.name %} {{ org.name }}{% endif %},

We are writing about "{{ incident.name if incident else "a security incident" }}": an authentication
flaw in our API between {{ incident.introduced_at if incident else "?" }} and {{ incident.patched_at if incident else "?" }} (UTC)
could let a request made with an integration token reach another organisation.

Our review of the access logs for your organisation ({{ org.slug or org.org_id }}) found
{{ org.unexplained_requests }} request{{ "s" if org.unexplained_requests != 1 else "" }} in that window that we cannot attribute to you or
to a partner you authorised (status: {{ org.status }}).
{% if requests %}
The earliest of them (UTC time, client address, user agent, method, path):
{% for r in requests[:20] %}
  {{ r.time }}  {{ r.ip }}  {{ r.user_agent }}  {{ r.method }} {{ r.uri }}
{%- endfor %}
{% if org.unexplained_requests > 20 %}  ... and {{ org.unexplained_requests - 20 }} more.{% endif %}
{% endif %}
If you recognise these requests (for example your own CI runners or a tool you use),
please reply and tell us: we will record it and update our findings.

Regards,
The security team
"""
ADDRESS = re.compile(r"^[^@\s<>(),;:\"\[\]\\]+@[^@\s<>(),;:\"\[\]\\]+\.[^@\s<>(),;:\"\[\]\\]+$")
LINE_BREAKS = re.compile(r"[\r\n\x0b\x0c\x85\u2028\u2029]+")


def load_template(path: str | None) -> jinja2.Template:
    """The user's template (or the built-in one), compiled in a sandbox with StrictUndefined."""
    env = jinja2.sandbox.SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
    if path is None:
        return env.from_string(BUILTIN_TEMPLATE)
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ForensicsError(f"Cannot read the template {path}: {getattr(exc, 'strerror', None) or exc}.") from None
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ForensicsError(f"The template {path} does not compile: line {exc.lineno}: {exc.message}.") from None


def header_text(value: str) -> str:
    """A header value from any text: line breaks and other controls become spaces."""
    return re.sub(r"[\x00-\x1f\x7f]", " ", LINE_BREAKS.sub(" ", value or "")).strip()


def plain_address(value: str | None) -> str | None:
    """A contact that is exactly one plain address (no name, no line break, no list), else None."""
    value = (value or "").strip()
    return value if ADDRESS.match(value) and value.isprintable() else None


def build_message(org: dict, body: str, sender: str, subject: str) -> EmailMessage:
    msg = EmailMessage(policy=email.policy.SMTPUTF8)
    name = header_text(org.get("name") or "")
    msg["From"] = sender
    msg["To"] = email.utils.formataddr((name, org["contact_email"])) if name else org["contact_email"]
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate(usegmt=True)
    msg["Message-ID"] = email.utils.make_msgid(domain=sender.rsplit("@", 1)[-1])
    msg.set_content(body, charset="utf-8")
    return msg


def notify(
    db: sqlite_utils.Database, directory: str, sender: str, subject: str, template_path: str | None = None,
    statuses=("exposed", "review"), only_changed: bool = False, actor: str | None = None,
) -> dict:
    """Render and record one message per org with those statuses and a contact.

    Every message is rendered before any file or record is written: a template that
    fails for one org changes nothing.

    Returns:
        {written: [(org_id, path)], skipped: [(org_id, reason)]}.
    """
    sender = (sender or "").strip()
    if not plain_address(sender):
        raise ForensicsError(f"--from must be one plain address such as security@example.com, not {sender!r}.")
    if LINE_BREAKS.search(subject or "") or not (subject or "").strip():
        raise ForensicsError("--subject must be one non-empty line.")
    unknown = [s for s in statuses if s not in STATUSES]
    if unknown or not statuses:
        raise ForensicsError(f"Unknown status {unknown[0] if unknown else ''!r}: use {', '.join(STATUSES)}.")
    template = load_template(template_path)
    evidence.writable_directory(directory)
    incident = get_incident(db)
    incident = None if incident is None else {k: incident[k] for k in ("name", "introduced_at", "patched_at")}
    latest = latest_notifications(db)
    rendered, skipped = [], []
    for org in org_rows(db):
        if org["status"] not in statuses:
            continue
        if only_changed and not needs_update(org, latest.get(org["org_id"])):
            continue
        contact = plain_address(org["contact_email"])
        if contact is None:
            skipped.append((org["org_id"], "no contact" if not org["contact_email"] else "contact is not one plain address"))
            continue
        org = dict(org, contact_email=contact)
        context = {
            "org": org, "status": org["status"], "incident": incident,
            "requests": evidence.unexplained_requests(db, org["org_id"], MAX_REQUESTS),
            "in_scope_requests": org["in_scope_requests"], "unexplained_requests": org["unexplained_requests"],
        }
        try:
            body = template.render(**context)
        except jinja2.UndefinedError as exc:
            raise ForensicsError(f"The template reads a name it is not given ({exc.message}); it has org, status, incident, requests, in_scope_requests, unexplained_requests.") from None
        except jinja2.TemplateError as exc:
            raise ForensicsError(f"The template failed for org {org['org_id']}: {exc}.") from None
        path = os.path.join(directory, evidence.safe_name(org["org_id"]) + ".eml")
        rendered.append((org, path, build_message(org, body, sender, subject.strip())))
    now = utcnow()
    with db.atomic():
        for org, path, msg in rendered:
            db.execute(
                """insert into notifications (org_id, at, status, unexplained, contact_email, subject, file, actor)
                values (?, ?, ?, ?, ?, ?, ?, ?)""",
                [org["org_id"], now, org["status"], org["unexplained_requests"], org["contact_email"],
                 subject.strip(), os.path.basename(path), actor],
            )
        for _, path, msg in rendered:  # inside the transaction: a write that fails records nothing
            evidence.write_bytes(path, msg.as_bytes())
    return {"written": [(org["org_id"], path) for org, path, _ in rendered], "skipped": skipped}
