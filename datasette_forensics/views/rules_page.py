"""The rules page: apply and undo rules, custom rules, the waterfall and the audit log."""

from __future__ import annotations

import json
import sqlite3

import sqlite_utils
from datasette import Response

from .. import permissions, preview, rules
from ..errors import ForensicsError
from ..derived import waterfall
from ..rules import actions, custom
from . import chart
from .common import open_page

LEDGER_LIMIT = 500
# Form fields of the custom-rule form: field -> whether it takes a comma-separated list.
FILTER_FORM = {
    "ip": True, "cidr": True, "user_agent": False, "ua_family": False, "ua_kind": True,
    "org_id": True, "path_prefix": False, "path_regex": False, "status": True, "from": False, "to": False,
}

LEDGER = """
select * from rule_ledger order by id desc limit :limit
"""


def page_data(db: sqlite_utils.Database, with_slugs: bool = True) -> dict:
    """Rules with their state, the waterfall and the latest ledger entries (read-only).

    Args:
        with_slugs: name the orgs in the ledger by their slug (from the orgs table).
    """
    listed = rules.list_rules(db)
    steps = waterfall.read(db)
    slugs = dict(db.execute("select id, slug from orgs")) if with_slugs and db["orgs"].exists() else {}
    columns = [c[1] for c in db.execute("pragma table_info(rule_ledger)")]
    ledger = []
    for row in db.execute(LEDGER, {"limit": LEDGER_LIMIT}):
        entry = dict(zip(columns, row))
        changes = json.loads(entry.get("orgs_changed") or "[]")
        for change in changes:
            change["slug"] = slugs.get(change["org_id"])
        ledger.append(
            {
                "id": entry["id"],
                "rule": entry["rule"],
                "action": entry["action"],
                "actor": entry["actor"],
                "at": entry["at"],
                "requests": entry["requests_explained"],
                "orgs_changed": changes,
                "detail": entry.get("detail"),
            }
        )
    bits = {r["name"]: r["bit"] for r in listed}
    mask = 0
    for step in steps:
        if step["rule"] is not None:
            mask |= bits.get(step["rule"], 0)
        step["mask"] = mask
    return {
        "rules": listed,
        "waterfall": steps,
        "unexplained": steps[-1]["remaining"],
        "ledger": ledger,
    }


def _json(data) -> Response:
    """JSON with <, > and & escaped, so no string in it can be sniffed as markup."""
    text = json.dumps(data, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Response(text, content_type="application/json; charset=utf-8")


def _definition_from_form(form) -> dict:
    if (form.get("kind") or "filter") == "sql":
        return {"sql": form.get("sql") or ""}
    spec = {}
    for field, is_list in FILTER_FORM.items():
        value = (form.get(f"f_{field}") or "").strip()
        if not value:
            continue
        if is_list:
            values = [v.strip() for v in value.split(",") if v.strip()]
            spec[field] = values if len(values) > 1 else values[0]
        else:
            spec[field] = value
    return {"filter": spec}


def _write(action: str, name: str, actor: str | None, form):
    """The write for one POST, run on the write connection."""

    def run(conn):
        db = sqlite_utils.Database(conn)
        with db.atomic():
            if action == "apply":
                return actions.apply(db, name, actor)
            if action == "undo":
                return actions.undo(db, name, actor)
            if action == "create":
                return actions.create_custom_rule(
                    db, name, _definition_from_form(form), actor, form.get("description")
                )
            if action == "delete":
                return actions.delete_custom_rule(db, name, actor)
        raise ForensicsError(f"Unknown action {action!r}: use apply, undo, create or delete.")

    return run


def _message(action: str, name: str, result: dict) -> str:
    def changed(changes):
        if not changes:
            return "no org changed status"
        return "; ".join(f"org {c['org_id']}: {c['from'] or 'none'} → {c['to'] or 'none'}" for c in changes)

    if action == "apply":
        if result["already"]:
            return f"{name} was already applied."
        return f"Applied {name}: {result['requests_explained']:,} requests newly explained; {changed(result['orgs_changed'])}."
    if action == "undo":
        if result["already"]:
            return f"{name} was not applied."
        return f"Undid {name}: {result['requests_unexplained']:,} requests no longer explained; {changed(result['orgs_changed'])}."
    if action == "create":
        return f"Saved custom rule {name} (not applied yet)."
    undone = result.get("undo")
    if undone:
        return f"Undid and deleted custom rule {name}: {undone['requests_unexplained']:,} requests no longer explained; {changed(undone['orgs_changed'])}."
    return f"Deleted custom rule {name}."


async def _preview(datasette, request, db) -> dict | None:
    """?preview=NAME (MODEL §6.2): what applying the rule would do, changing nothing.

    It holds the write lock for a rolled-back application, so it needs
    forensics-write like applying does.
    """
    name = (request.args.get("preview") or "").strip()
    if not name:
        return None
    await permissions.ensure_write(datasette, request.actor, "Previewing a rule")

    def run(conn):
        return preview.preview_apply(sqlite_utils.Database(conn), name)

    try:
        return await db.execute_write_fn(run, block=True)
    except (ForensicsError, sqlite3.Error) as exc:
        return {"rule": name, "error": str(exc)}


async def view(datasette, request):
    """Rules: apply, undo, custom rules, waterfall and audit log; POST changes them."""
    opened = await open_page(datasette, request, "rules")
    db = opened.db
    page = opened.base + "/rules"
    can_write = await permissions.may_write(datasette, request.actor)

    if request.method == "POST":
        await permissions.ensure_write(datasette, request.actor, "Changing rules")
        form = await request.post_vars()
        action = (form.get("action") or "").strip()
        name = (form.get("rule") or "").strip()
        actor = (request.actor or {}).get("id")
        try:
            result = await db.execute_write_fn(_write(action, name, actor, form), block=True)
        except (ForensicsError, sqlite3.Error) as exc:
            datasette.add_message(request, str(exc), datasette.ERROR)
        else:
            datasette.add_message(request, _message(action, name, result))
        return Response.redirect(page, status=303)
    if request.method != "GET":
        return Response.text("Method not allowed", status=405)

    with_slugs = not await opened.withhold("orgs", "Org slugs in the audit log")
    data = await db.execute_fn(lambda conn: page_data(sqlite_utils.Database(conn), with_slugs))
    data["preview"] = await _preview(datasette, request, db)
    if request.url_vars.get("format") == ".json":
        return _json(
            {
                "database": db.name,
                "rules": [
                    {k: r[k] for k in ("name", "description", "builtin", "applied", "bit", "applied_seq", "definition")}
                    for r in data["rules"]
                ],
                "waterfall": [{k: s[k] for k in ("rule", "remaining", "explained")} for s in data["waterfall"]],
                "unexplained": data["unexplained"],
                "ledger": data["ledger"],
                "can_write": can_write,
                "preview": data["preview"],
                **({"withheld": opened.withheld} if opened.withheld else {}),
            }
        )

    names: list[str] = []  # the rules of the steps so far: what is left is explained by none of them
    for step in data["waterfall"]:
        before = list(names)
        if step["rule"] is not None:
            names.append(step["rule"])
            # What this step newly explained: its rule's requests that no earlier rule explains.
            step["explained_url"] = opened.requests_url(
                [("rule", step["rule"])] + ([("not_by", ",".join(before))] if before else [])
            )
        step["url"] = opened.requests_url([("in_scope", "1")] + ([("not_by", ",".join(names))] if names else []))
    for rule in data["rules"]:
        rule["definition_text"] = (
            None if rule["definition"] is None else json.dumps(rule["definition"], ensure_ascii=False)
        )
    return Response.html(
        await datasette.render_template(
            "forensics_rules.html",
            dict(
                data,
                database=db.name,
                page_url=page,
                json_url=page + ".json",
                can_write=can_write,
                withheld=opened.withheld,
                in_scope=data["waterfall"][0]["remaining"],
                unexplained_url=opened.requests_url([("in_scope", "1"), ("unexplained", "1")]),
                filter_fields=list(FILTER_FORM),
                ua_kinds=custom.UA_KINDS,
                ledger_limit=LEDGER_LIMIT,
                waterfall_chart=chart.waterfall(
                    "chart-waterfall", "Rules waterfall: what each applied rule explained, and what is left", data["waterfall"]
                ),
                chart_frame_url=datasette.urls.path("-/forensics-chart"),
            ),
            request=request,
        )
    )
