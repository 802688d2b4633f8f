"""Verdicts (MODEL §6.3): an analyst's own elimination of one signature, for one org or every org.

A verdict is a row of ``verdicts``; the ``verdict`` rule (rules/verdict.py) explains
the requests of the standing ones. Making or withdrawing a verdict re-evaluates that
rule over the signature's key ranges of ``scoped`` only, and goes to the ledger with
the requests it explained and the orgs whose status changed.
"""

from __future__ import annotations

import csv
import io
import json

import sqlite_utils

from . import derived, rules
from .errors import ForensicsError
from .rules import actions
from .rules import verdict as verdict_rule
from .timeparse import utcnow

COLUMNS = ("ip", "user_agent", "org_id", "reason")
MAX_REASON = 2000

SIGNATURE = """
select g.id from signatures g join ips i on i.id = g.ip_id join user_agents a on a.id = g.ua_id
where i.ip = ? and a.ua = ?
"""
STANDING = """
select id from verdicts where ip = ? and user_agent = ? and org_id is ? and withdrawn_at is null
"""


def _signature(db: sqlite_utils.Database, ip: str, ua: str) -> int:
    if not ip.strip():
        raise ForensicsError("A verdict needs the signature's address (--ip).")
    row = db.execute(SIGNATURE, [ip, ua]).fetchone()
    if row is None:
        raise ForensicsError(f"No request was made from address {ip} with user agent {ua!r}.")
    return row[0]


def _check_org(db: sqlite_utils.Database, org: str | None) -> None:
    if org is not None and not db.execute(
        "select 1 from orgs where id = :o union all select 1 from org_stats where org_id = :o limit 1", {"o": org}
    ).fetchone():
        raise ForensicsError(f"Unknown org {org!r}: it is neither in the org records nor reached by a request.")


def _restrict(sig_id: int, org: str | None) -> tuple[str, dict]:
    if org is None:
        return "s.sig_id = :v_sig", {"v_sig": sig_id}
    return "s.sig_id = :v_sig and s.org_id = :v_org", {"v_sig": sig_id, "v_org": org}


def _rematch(db, restrict: str, params: dict, actor: str | None, action: str, detail: str) -> dict:
    """Re-evaluate the verdict rule over the changed verdict's key ranges (applying the
    rule with the first verdict), and record the change in the ledger."""
    applied = rules.applied_names(db)
    if verdict_rule.NAME not in applied:
        seq = db.execute("select coalesce(max(applied_seq), 0) + 1 from rules").fetchone()[0]
        db.execute("update rules set applied = 1, applied_seq = ? where name = ?", [seq, verdict_rule.NAME])
    rule = rules.get_rule(db, verdict_rule.NAME)  # with the bit this database gave it
    explained, changes = derived.after_rule_data_changed(db, rule, applied, restrict, params)
    actions.record(db, verdict_rule.NAME, action, actor, abs(explained), changes, detail)
    return {"rule": verdict_rule.NAME, "requests_explained": explained, "orgs_changed": changes}


def _in_scope(db, sig_id: int, org: str | None) -> int:
    sql = "select coalesce(sum(requests), 0) from sig_org where sig_id = ?" + (" and org_id = ?" if org else "")
    return db.execute(sql, [sig_id] + ([org] if org else [])).fetchone()[0]


def make(db: sqlite_utils.Database, ip: str, ua: str, org: str | None, reason: str, actor: str | None) -> dict:
    """Make a verdict and explain its requests.

    Args:
        org: one org id, or None for every org the signature reached.

    Returns:
        {action, ip, user_agent, org_id, in_scope, requests_explained, orgs_changed}.
    """
    reason = (reason or "").strip()
    if not reason:
        raise ForensicsError("A verdict needs a reason (for example 'customer confirmed: their CI runners').")
    if len(reason) > MAX_REASON:
        raise ForensicsError(f"A verdict's reason is at most {MAX_REASON:,} characters.")
    org = (org or "").strip() or None
    with db.atomic():
        sig_id = _signature(db, ip, ua)
        _check_org(db, org)
        if db.execute(STANDING, [ip, ua, org]).fetchone():
            where = f"org {org}" if org else "every org"
            raise ForensicsError(f"A verdict on {ip} {ua!r} for {where} already stands: withdraw it first.")
        rules.ensure_rules(db)
        db.execute(
            "insert into verdicts (ip, user_agent, org_id, reason, actor, created_at) values (?, ?, ?, ?, ?, ?)",
            [ip, ua, org, reason, actor, utcnow()],
        )
        restrict, params = _restrict(sig_id, org)
        detail = json.dumps({"ip": ip, "user_agent": ua, "org_id": org, "reason": reason}, ensure_ascii=False)
        result = _rematch(db, restrict, params, actor, "verdict", detail)
    return dict(result, action="verdict", ip=ip, user_agent=ua, org_id=org, in_scope=_in_scope(db, sig_id, org))


def withdraw(db: sqlite_utils.Database, ip: str, ua: str, org: str | None, actor: str | None) -> dict:
    """Withdraw a standing verdict; the requests it alone explained are unexplained again."""
    org = (org or "").strip() or None
    with db.atomic():
        row = db.execute(STANDING, [ip, ua, org]).fetchone()
        if row is None:
            where = f"org {org}" if org else "every org"
            raise ForensicsError(f"No verdict on {ip} {ua!r} for {where} stands.")
        sig_id = _signature(db, ip, ua)
        db.execute("update verdicts set withdrawn_at = ?, withdrawn_by = ? where id = ?", [utcnow(), actor, row[0]])
        restrict, params = _restrict(sig_id, org)
        detail = json.dumps({"ip": ip, "user_agent": ua, "org_id": org}, ensure_ascii=False)
        result = _rematch(db, restrict, params, actor, "withdraw", detail)
    return dict(result, action="withdraw", ip=ip, user_agent=ua, org_id=org, in_scope=_in_scope(db, sig_id, org))


def read_file(path: str) -> list[dict]:
    """Rows of a verdicts CSV (ip, user_agent, org_id, reason), checked before anything is written."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ForensicsError(f"Cannot read {path}: {getattr(exc, 'strerror', None) or exc}.") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ForensicsError(f"{path} has no column {missing[0]!r}: the columns are {', '.join(COLUMNS)}.")
    rows = []
    for n, row in enumerate(reader, start=2):
        if not (row.get("reason") or "").strip():
            raise ForensicsError(f"{path} line {n}: a verdict needs a reason.")
        rows.append({c: row.get(c) or "" for c in COLUMNS})
    return rows


def make_many(db: sqlite_utils.Database, rows: list[dict], actor: str | None) -> list[dict]:
    """Make every verdict of a file in one transaction: one bad row changes nothing."""
    with db.atomic():
        return [make(db, r["ip"], r["user_agent"], r["org_id"], r["reason"], actor) for r in rows]


def listed(db: sqlite_utils.Database, include_withdrawn: bool = False) -> list[dict]:
    """The verdicts, oldest first (standing ones only unless include_withdrawn)."""
    where = "" if include_withdrawn else "where withdrawn_at is null"
    columns = ("id", "ip", "user_agent", "org_id", "reason", "actor", "created_at", "withdrawn_by", "withdrawn_at")
    return [
        dict(zip(columns, row))
        for row in db.execute(f"select {', '.join(columns)} from verdicts {where} order by id")
    ]


def for_report(db: sqlite_utils.Database) -> list[dict]:
    """The report's ``verdicts``: the standing ones, oldest first."""
    keys = ("ip", "user_agent", "org_id", "reason", "actor", "created_at")
    return [{k: v[k] for k in keys} for v in listed(db)]


def summary(result: dict) -> str:
    """One sentence for a made or withdrawn verdict."""
    where = f"org {result['org_id']}" if result["org_id"] else "every org"
    what = f"{result['ip']} {result['user_agent']!r} for {where}"
    changes = "; ".join(f"org {c['org_id']}: {c['from'] or 'none'} → {c['to'] or 'none'}" for c in result["orgs_changed"])
    tail = f"; {changes}" if changes else ""
    if result["action"] == "withdraw":
        return f"Withdrew the verdict on {what}: {-result['requests_explained']:,} requests no longer explained{tail}."
    if not result["in_scope"]:
        return f"Verdict on {what} stored; this signature made no in-scope request{' for that org' if result['org_id'] else ''}."
    return f"Verdict on {what}: {result['requests_explained']:,} requests newly explained{tail}."
