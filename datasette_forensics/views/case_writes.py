"""Case-work writes from the web (MODEL §6.3, §6.4): notes and tags, verdicts.

Each is a POST with Datasette's CSRF token; it needs the forensics-write permission
(403 otherwise, nothing changed), writes in one transaction, leaves a message and
goes back to the page the form was on.
"""

from __future__ import annotations

import sqlite3

import sqlite_utils
from datasette import Response

from .. import notes, permissions, verdicts
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
    if request.method == "GET":
        return await _listing(page, name)
    if request.method != "POST":
        return Response.text("Method not allowed.", status=405)
    await permissions.ensure_write(datasette, request.actor, what)
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


async def _listing(page, name: str) -> Response:
    """GET: every note with its history, or every verdict (withdrawn ones too), oldest first."""

    def read(conn):
        db = sqlite_utils.Database(conn)
        if name == "notes":
            listed = notes.list_notes(db, include_deleted=True)
            versions = notes.history(db, [n["id"] for n in listed])
            for n in listed:
                n["describe"] = notes.Target(n["kind"], n["target"]).describe()
                n["history"] = versions.get(n["id"], [])
            return listed
        return verdicts.listed(db, include_withdrawn=True)

    rows = await page.db.execute_fn(read)
    return await page.respond("forensics_case_list.html", {"database": page.db.name, "view": name, "rows": rows})


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
