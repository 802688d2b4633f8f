"""Case-work writes from the web (MODEL §6.3, §6.4): notes and tags, verdicts.

Each is a POST with Datasette's CSRF token; it needs the forensics-write permission
(403 otherwise, nothing changed), writes in one transaction, leaves a message and
goes back to the page the form was on.
"""

from __future__ import annotations

import sqlite3

import sqlite_utils
from datasette import Forbidden, Response

from .. import WRITE_PERMISSION, notes, verdicts
from ..errors import ForensicsError
from .common import open_page


def _back(page, form) -> str:
    """The page the form came from (only a workbench page of this database)."""
    back = form.get("next") or ""
    if back.startswith(page.base) and "//" not in back and "\\" not in back:
        return back
    return page.base


async def _post(datasette, request, name: str, what: str, write) -> Response:
    page = await open_page(datasette, request, name)
    if request.method != "POST":
        return Response.text("Method not allowed: this address takes the case-work forms' POSTs.", status=405)
    if not await datasette.permission_allowed(request.actor, WRITE_PERMISSION, default=False):
        raise Forbidden(f"{what} needs the forensics-write permission.")
    form = await request.post_vars()
    actor = (request.actor or {}).get("id")

    def run(conn):
        db = sqlite_utils.Database(conn)
        with db.atomic():
            return write(db, form, actor)

    try:
        message = await page.db.execute_write_fn(run, block=True)
    except (ForensicsError, sqlite3.Error) as exc:
        datasette.add_message(request, str(exc), datasette.ERROR)
    else:
        datasette.add_message(request, message)
    return Response.redirect(_back(page, form), status=303)


def _form_target(db, form) -> notes.Target:
    kind = (form.get("kind") or "").strip()
    if kind == "signature":
        return notes.resolve_target(db, kind, (form.get("ip") or "", form.get("user_agent") or ""))
    return notes.resolve_target(db, kind, form.get("target") or "")


def _write_note(db, form, actor) -> str:
    action = (form.get("action") or "write").strip()
    if action == "write":
        target = _form_target(db, form)
        saved = notes.add_note(db, target, form.get("tag"), form.get("text"), actor)
        return f"Note {saved['id']} saved on {target.describe()}."
    try:
        note_id = int(form.get("note_id") or "")
    except ValueError:
        raise ForensicsError("Which note? The form gave no note number.") from None
    if action == "edit":
        notes.edit_note(db, note_id, form.get("tag"), form.get("text"), actor)
        return f"Note {note_id} edited; the earlier version is kept."
    if action == "delete":
        notes.delete_note(db, note_id, actor)
        return f"Note {note_id} deleted; its history is kept."
    raise ForensicsError(f"Unknown action {action!r}: use write, edit or delete.")


async def notes_view(datasette, request):
    """POST: write, edit or delete a note or tag."""
    return await _post(datasette, request, "notes", "Writing a note", _write_note)


def _write_verdict(db, form, actor) -> str:
    action = (form.get("action") or "make").strip()
    ip, ua = form.get("ip") or "", form.get("user_agent") or ""
    org = (form.get("org_id") or "").strip() or None
    if action == "make":
        result = verdicts.make(db, ip, ua, org, form.get("reason") or "", actor)
    elif action == "withdraw":
        result = verdicts.withdraw(db, ip, ua, org, actor)
    else:
        raise ForensicsError(f"Unknown action {action!r}: use make or withdraw.")
    return verdicts.summary(result)


async def verdicts_view(datasette, request):
    """POST: make or withdraw a verdict."""
    return await _post(datasette, request, "verdicts", "Saving a verdict", _write_verdict)
