"""Notes and tags (MODEL §6.4) on orgs, signatures, addresses, networks and user agents.

A note is a row of ``notes``: its target (kind and value), an optional tag (a short
word) and optional text. Every version of a note (written, edited, deleted) is a row
of ``note_history``: nothing is ever lost. A target's tags are the tags of its live
notes.

Targets are stored as text: an org id, an address, a normalised network, a user
agent, or for a signature the JSON array ``[ip, user_agent]``.
"""

from __future__ import annotations

import ipaddress
import json
import re

import sqlite_utils

from .errors import ForensicsError
from .timeparse import utcnow

KINDS = ("org", "signature", "ip", "cidr", "user_agent")
TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,39}$")
MAX_TEXT = 20_000

# A live note, its tag, by target kind: the select that pages and filters share.
TAGGED = "select target from notes where kind = :kind and tag = :tag and deleted_at is null"


class Target:
    """What a note is about: a kind and its stored text."""

    def __init__(self, kind: str, value: str):
        self.kind = kind
        self.value = value

    def describe(self) -> str:
        if self.kind == "signature":
            ip, ua = json.loads(self.value)
            return f"signature {ip} {ua!r}"
        return f"{self.kind.replace('_', ' ')} {self.value}"


def signature_target(ip: str, user_agent: str) -> str:
    # Compact, as SQLite's json_array(ip, ua) writes it: pages match on it.
    return json.dumps([ip, user_agent], ensure_ascii=False, separators=(",", ":"))


def normalise_cidr(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        raise ForensicsError(f"{text!r} is not a network (for example 203.0.113.0/24).") from None


def resolve_target(db: sqlite_utils.Database, kind: str, value) -> Target:
    """Check that a target exists; returns it with its stored text.

    Args:
        kind: one of KINDS.
        value: the org id, address, network, user agent, or (ip, user agent) for a signature.

    Raises:
        ForensicsError: the target is not in the database.
    """
    if kind == "org":
        org = str(value).strip()
        known = db.execute(
            "select 1 from orgs where id = :o union all select 1 from org_stats where org_id = :o limit 1", {"o": org}
        ).fetchone()
        if not known:
            raise ForensicsError(f"Unknown org {org!r}: it is neither in the org records nor reached by a request.")
        return Target(kind, org)
    if kind == "signature":
        ip, ua = value
        found = db.execute(
            """select 1 from signatures g join ips i on i.id = g.ip_id join user_agents a on a.id = g.ua_id
            where i.ip = ? and a.ua = ?""",
            [ip, ua],
        ).fetchone()
        if not found:
            raise ForensicsError(f"No request was made from address {ip} with user agent {ua!r}.")
        return Target(kind, signature_target(ip, ua))
    if kind == "ip":
        if not db.execute("select 1 from ips where ip = ?", [value]).fetchone():
            raise ForensicsError(f"No request was made from address {value}.")
        return Target(kind, value)
    if kind == "cidr":
        network = normalise_cidr(value)
        seen = db.execute("select 1 from ips where prefix = :n or prefix16 = :n limit 1", {"n": network}).fetchone()
        if not seen:
            try:
                parsed = ipaddress.ip_network(network)
                seen = any(
                    ipaddress.ip_address(ip) in parsed
                    for (ip,) in db.execute("select ip from ips where version = ?", [parsed.version])
                )
            except ValueError:
                seen = False
        if not seen:
            raise ForensicsError(f"No request was made from network {network}.")
        return Target(kind, network)
    if kind == "user_agent":
        if not db.execute("select 1 from user_agents where ua = ?", [value]).fetchone():
            raise ForensicsError(f"No request was made with user agent {value!r}.")
        return Target(kind, value)
    raise ForensicsError(f"Unknown note target {kind!r}; use one of {', '.join(KINDS)}.")


def _check(tag: str | None, text: str | None) -> tuple[str | None, str | None]:
    tag = (tag or "").strip() or None
    text = (text or "").strip() or None
    if tag is None and text is None:
        raise ForensicsError("A note needs a tag or some text.")
    if tag is not None and not TAG.match(tag):
        raise ForensicsError(
            f"A tag is one short word (letters, digits, _ . : -, at most 40 characters), not {tag!r}."
        )
    if text is not None and len(text) > MAX_TEXT:
        raise ForensicsError(f"A note's text is at most {MAX_TEXT:,} characters.")
    return tag, text


def _history(db, note_id: int, action: str, tag, text, actor, at) -> None:
    db.execute(
        "insert into note_history (note_id, action, tag, text, actor, at) values (?, ?, ?, ?, ?, ?)",
        [note_id, action, tag, text, actor, at],
    )


def add_note(db: sqlite_utils.Database, target: Target, tag: str | None, text: str | None, actor: str | None) -> dict:
    """Write a note (a tag, text, or both) on a resolved target; returns it."""
    tag, text = _check(tag, text)
    now = utcnow()
    with db.atomic():
        cursor = db.execute(
            """insert into notes (kind, target, tag, text, created_by, created_at, updated_by, updated_at)
            values (?, ?, ?, ?, ?, ?, ?, ?)""",
            [target.kind, target.value, tag, text, actor, now, actor, now],
        )
        note_id = cursor.lastrowid
        _history(db, note_id, "write", tag, text, actor, now)
    return get_note(db, note_id)


def get_note(db: sqlite_utils.Database, note_id: int) -> dict:
    row = db.execute("select * from notes where id = ?", [note_id]).fetchone()
    if row is None:
        raise ForensicsError(f"There is no note {note_id}.")
    columns = [c[0] for c in db.execute("select * from notes limit 0").description]
    return dict(zip(columns, row))


def edit_note(db: sqlite_utils.Database, note_id: int, tag: str | None, text: str | None, actor: str | None) -> dict:
    """Replace a live note's tag and text; the earlier version stays in the history."""
    tag, text = _check(tag, text)
    with db.atomic():
        note = get_note(db, note_id)
        if note["deleted_at"]:
            raise ForensicsError(f"Note {note_id} was deleted; write a new one.")
        now = utcnow()
        db.execute(
            "update notes set tag = ?, text = ?, updated_by = ?, updated_at = ? where id = ?",
            [tag, text, actor, now, note_id],
        )
        _history(db, note_id, "edit", tag, text, actor, now)
    return get_note(db, note_id)


def delete_note(db: sqlite_utils.Database, note_id: int, actor: str | None) -> dict:
    """Delete a note: it leaves its target, and its history keeps every version."""
    with db.atomic():
        note = get_note(db, note_id)
        if note["deleted_at"]:
            raise ForensicsError(f"Note {note_id} was already deleted.")
        now = utcnow()
        db.execute("update notes set deleted_at = ?, deleted_by = ? where id = ?", [now, actor, note_id])
        _history(db, note_id, "delete", note["tag"], note["text"], actor, now)
    return get_note(db, note_id)


def notes_for(db: sqlite_utils.Database, kind: str, values) -> dict[str, list[dict]]:
    """Live notes of some targets of one kind, oldest first: {target: [note, ...]}."""
    values = list(values)
    if not values:
        return {}
    result: dict[str, list[dict]] = {}
    for row in db.execute(
        """select id, target, tag, text, created_by, created_at, updated_by, updated_at from notes
        where kind = :kind and deleted_at is null and target in (select value from json_each(:targets))
        order by id""",
        {"kind": kind, "targets": json.dumps(values)},
    ):
        note = dict(zip(("id", "target", "tag", "text", "created_by", "created_at", "updated_by", "updated_at"), row))
        result.setdefault(note["target"], []).append(note)
    return result


def tags_of(notes: list[dict]) -> list[str]:
    return sorted({n["tag"] for n in notes if n["tag"]})


def org_tags(db: sqlite_utils.Database) -> dict[str, list[str]]:
    """Every org's tags, sorted."""
    tags: dict[str, set] = {}
    for org, tag in db.execute(
        "select target, tag from notes where kind = 'org' and tag is not null and deleted_at is null"
    ):
        tags.setdefault(org, set()).add(tag)
    return {org: sorted(t) for org, t in tags.items()}


def history(db: sqlite_utils.Database, note_ids) -> dict[int, list[dict]]:
    """Every version of some notes, oldest first."""
    result: dict[int, list[dict]] = {}
    for row in db.execute(
        """select note_id, action, tag, text, actor, at from note_history
        where note_id in (select value from json_each(:ids)) order by id""",
        {"ids": json.dumps(list(note_ids))},
    ):
        result.setdefault(row[0], []).append(dict(zip(("note_id", "action", "tag", "text", "actor", "at"), row)))
    return result


def list_notes(db: sqlite_utils.Database, include_deleted: bool = False) -> list[dict]:
    """Every note, oldest first."""
    columns = [c[0] for c in db.execute("select * from notes limit 0").description]
    where = "" if include_deleted else "where deleted_at is null"
    return [dict(zip(columns, row)) for row in db.execute(f"select * from notes {where} order by id")]


def tag_condition() -> str:
    """A condition on ips ``i`` and user_agents ``a`` binding :tag and :tag_ips: the
    signature, its address, its /24 or /16 network or its user agent carries the tag
    (:tag_ips, from tagged_addresses(), the addresses in networks tagged at other lengths)."""
    live = "deleted_at is null and tag = :tag"
    return f"""(
        i.ip in (select target from notes where kind = 'ip' and {live})
        or i.ip in (select value from json_each(:tag_ips))
        or i.prefix in (select target from notes where kind = 'cidr' and {live})
        or i.prefix16 in (select target from notes where kind = 'cidr' and {live})
        or a.ua in (select target from notes where kind = 'user_agent' and {live})
        or json_array(i.ip, a.ua) in (select target from notes where kind = 'signature' and {live})
    )"""


def tagged_addresses(db: sqlite_utils.Database, tag: str) -> str:
    """JSON list of the addresses within networks tagged ``tag`` whose length is not a
    cluster's (/24, /16; /48, /32 for IPv6)."""
    networks = []
    for (target,) in db.execute(
        "select target from notes where kind = 'cidr' and tag = ? and deleted_at is null", [tag]
    ):
        network = ipaddress.ip_network(target)
        if network.prefixlen not in ((24, 16) if network.version == 4 else (48, 32)):
            networks.append(network)
    if not networks:
        return "[]"
    return json.dumps(
        sorted(
            ip
            for ip, version in db.execute("select ip, version from ips where version is not null")
            if any(n.version == version and ipaddress.ip_address(ip) in n for n in networks)
        )
    )
