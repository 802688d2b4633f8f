"""Notification records (MODEL §6.6): when each org was told, and whether it must be told again."""

from __future__ import annotations

import sqlite_utils


def latest_notifications(db: sqlite_utils.Database) -> dict[str, dict]:
    """org_id -> its latest notification record (at, status, unexplained)."""
    return {
        org: {"at": at, "status": status, "unexplained": unexplained}
        for org, at, status, unexplained in db.execute(
            """select org_id, at, status, unexplained from notifications n
            where id = (select max(id) from notifications m where m.org_id = n.org_id)"""
        )
    }


def needs_update(org: dict, latest: dict | None) -> bool:
    """True when the org was notified and its status or unexplained count changed since."""
    return latest is not None and (
        latest["status"] != org["status"] or latest["unexplained"] != org["unexplained_requests"]
    )


def add_state(orgs: list[dict], latest: dict[str, dict]) -> None:
    """Give each org row (report.org_rows) its notified_at and needs_update."""
    for org in orgs:
        org["notified_at"] = latest[org["org_id"]]["at"] if org["org_id"] in latest else None
        org["needs_update"] = needs_update(org, latest.get(org["org_id"]))
