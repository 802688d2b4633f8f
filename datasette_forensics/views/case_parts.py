"""The case-work parts of the workbench pages (MODEL §6): notes and tags, verdicts,
what explained each signature, requests outside the scope by reason, notification,
and the forms that change them (shown to holders of forensics-write)."""

from __future__ import annotations

import json

import sqlite_utils

from .. import notes, notifications
from ..derived import out_of_scope
from .common import Page

# The org's in-scope requests per (signature, set of explaining rules), read pair by
# pair along scoped's key.
SIG_MASKS = """
select s.sig_id, i.ip, a.ua, s.explained, count(*) as n
from sig_org so
cross join scoped s on s.sig_id = so.sig_id and s.org_id = so.org_id
join signatures g on g.id = s.sig_id
join ips i on i.id = g.ip_id
join user_agents a on a.id = g.ua_id
where so.org_id = :org
group by s.sig_id, s.explained
"""
RULES = "select name, bit from rules where applied = 1 order by applied_seq"
VERDICTS = """
select id, ip, user_agent, org_id, reason, actor, created_at from verdicts
where withdrawn_at is null and (org_id = :org or org_id is null)
    and json_array(ip, user_agent) in (select value from json_each(:sigs))
order by id
"""
SIG_VERDICTS = """
select id, ip, user_agent, org_id, reason, actor, created_at from verdicts
where withdrawn_at is null and json_array(ip, user_agent) in (select value from json_each(:sigs))
order by id
"""


def explained_by(mask: int, applied: list[tuple[str, int]]) -> list[str]:
    """The names of the applied rules a mask holds, in the order they were applied."""
    return [name for name, bit in applied if mask & bit]


def org_parts(db: sqlite_utils.Database, page: Page, org: str, status: str | None, unexplained: int) -> dict:
    """Notes, verdicts, per-signature explanations, out-of-scope reasons and notification of one org."""
    applied = [tuple(r) for r in db.execute(RULES)]
    per_sig: dict[int, dict] = {}
    for sig_id, ip, ua, mask, n in db.execute(SIG_MASKS, {"org": org}):
        entry = per_sig.setdefault(sig_id, {"ip": ip, "user_agent": ua, "unexplained": 0, "explained_by": {}})
        if mask == 0:
            entry["unexplained"] += n
        for name in explained_by(mask, applied):
            entry["explained_by"][name] = entry["explained_by"].get(name, 0) + n
    sig_keys = [notes.signature_target(e["ip"], e["user_agent"]) for e in per_sig.values()]
    sig_notes = notes.notes_for(db, "signature", sig_keys)
    explanations = []
    for e in sorted(per_sig.values(), key=lambda e: (-e["unexplained"], e["ip"], e["user_agent"])):
        key = notes.signature_target(e["ip"], e["user_agent"])
        explanations.append(dict(e, tags=notes.tags_of(sig_notes.get(key, [])), notes=sig_notes.get(key, [])))
    org_notes = notes.notes_for(db, "org", [org]).get(org, [])
    verdict_rows = [
        dict(zip(("id", "ip", "user_agent", "org_id", "reason", "actor", "created_at"), r))
        for r in db.execute(VERDICTS, {"org": org, "sigs": json.dumps(sig_keys)})
    ]
    latest = notifications.latest_notifications(db).get(org)
    reasons = out_of_scope.counts(db, org)
    return {
        "notes": org_notes,
        "tags": notes.tags_of(org_notes),
        "note_history": notes.history(db, [n["id"] for n in org_notes]),
        "verdicts": verdict_rows,
        "explanations": explanations,
        "out_of_scope": [
            {
                "reason": reason,
                "requests": n,
                "url": page.requests_url([("named_org_id", org), ("out_of_scope", reason), ("_nocount", "1")]),
            }
            for reason, n in (reasons or {}).items()
        ] if reasons is not None else None,
        "notified_at": latest["at"] if latest else None,
        "needs_update": notifications.needs_update(
            {"status": status, "unexplained_requests": unexplained}, latest
        ),
        "evidence_url": page.org_url(org) + "/evidence.html",
    }


def signature_parts(db: sqlite_utils.Database, rows: list[dict]) -> dict[str, dict]:
    """Notes, tags and standing verdicts of the signatures on a page, by their target key."""
    keys = [notes.signature_target(r["ip"], r["user_agent"]) for r in rows]
    found = notes.notes_for(db, "signature", keys)
    verdict_rows: dict[str, list] = {}
    for r in db.execute(SIG_VERDICTS, {"sigs": json.dumps(keys)}):
        v = dict(zip(("id", "ip", "user_agent", "org_id", "reason", "actor", "created_at"), r))
        verdict_rows.setdefault(notes.signature_target(v["ip"], v["user_agent"]), []).append(v)
    return {
        k: {"notes": found.get(k, []), "tags": notes.tags_of(found.get(k, [])), "verdicts": verdict_rows.get(k, [])}
        for k in keys
    }


# Pivot grouping -> the note target kind its rows are.
GROUPING_TARGETS = {"ip": "ip", "cidr24": "cidr", "cidr16": "cidr", "raw": "user_agent"}


async def add_tags(page: Page, kind: str | None, rows: list[dict], key) -> None:
    """Give each row its tags (the live tags of its target): key(row) is the target text."""
    if kind is None:
        for row in rows:
            row["tags"] = []
        return
    targets = [key(r) for r in rows]
    found = await page.db.execute_fn(lambda conn: notes.notes_for(sqlite_utils.Database(conn), kind, targets))
    for row, target in zip(rows, targets):
        row["tags"] = notes.tags_of(found.get(target, []))
