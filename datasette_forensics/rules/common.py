"""What several rules share: sessions matched to signatures, record times as
milliseconds, and (signature, org) pairs explained within time windows."""

from __future__ import annotations

import ipaddress

import sqlite_utils

from ..timeparse import parse_time

# Sessions matched to signatures on (ip, exact user agent): one row per (sig, user),
# built by prepare_sessions() before a session rule runs.
SESSION_SIGNATURES = "select sig_id, user_id from temp.rule_session_sigs"


def _canonical_ip(text: str) -> str:
    try:
        return ipaddress.ip_address(text.strip()).compressed
    except ValueError:
        return text


def prepare_sessions(db: sqlite_utils.Database) -> None:
    """Match sessions to signatures on (ip, exact user agent).

    Addresses compare as addresses: ``2001:DB8::1`` in the records matches
    ``2001:db8:0::1`` in a log. User agents compare exactly.
    """
    db.execute("drop table if exists temp.rule_session_sigs")
    db.execute(
        "create temp table rule_session_sigs (sig_id integer, user_id text, primary key (sig_id, user_id))"
    )
    db.execute("drop table if exists temp.rule_session_keys")
    db.execute("create temp table rule_session_keys (ip text, ua text, user_id text)")
    db.conn.executemany(
        "insert into temp.rule_session_keys values (?, ?, ?)",
        [(_canonical_ip(ip), ua, user) for user, ip, ua in db.execute("select user_id, ip, user_agent from sessions")],
    )
    # IPv6 addresses the logs wrote in a non-canonical form, by canonical form.
    db.execute("drop table if exists temp.rule_ip_canonical")
    db.execute("create temp table rule_ip_canonical (ip text, ip_id integer)")
    db.conn.executemany(
        "insert into temp.rule_ip_canonical values (?, ?)",
        [
            (canonical, ip_id)
            for ip_id, ip in db.execute("select id, ip from ips where version = 6")
            if (canonical := _canonical_ip(ip)) != ip
        ],
    )
    for addresses in ("select id, ip from ips", "select ip_id as id, ip from temp.rule_ip_canonical"):
        db.execute(
            f"""insert or ignore into temp.rule_session_sigs (sig_id, user_id)
            select g.id, k.user_id
            from temp.rule_session_keys k
            join ({addresses}) i on i.ip = k.ip
            join user_agents a on a.ua = k.ua
            join signatures g on g.ip_id = i.id and g.ua_id = a.id"""
        )


def ms_rows(db: sqlite_utils.Database, sql: str, time_columns: tuple[int, ...]) -> list[tuple]:
    """Rows of a records query with the given columns turned into epoch milliseconds."""
    rows = []
    for row in db.execute(sql):
        row = list(row)
        for i in time_columns:
            row[i] = None if row[i] in (None, "") else parse_time(row[i])
        rows.append(tuple(row))
    return rows


def build_pair_windows(db: sqlite_utils.Database, table: str, select: str) -> None:
    """temp.<table>: the time windows (from_ms, to_ms) in which a select's (sig_id, org_id) pairs are explained."""
    db.execute(f"drop table if exists temp.{table}")
    db.execute(f"create temp table {table} as select distinct sig_id, org_id, from_ms, to_ms from ({select})")
    db.execute(f"create index temp.{table}_pair on {table}(sig_id, org_id)")


def in_pair_window(table: str, open_start: bool) -> str:
    """The condition that request s falls in a window of temp.<table> for its pair
    (from_ms <= ts < to_ms; a null to_ms is open, a null from_ms too when open_start).

    The pairs narrow the scan to their key ranges of scoped; the windows then test the time.
    """
    start = "(w.from_ms is null or w.from_ms <= s.ts)" if open_start else "w.from_ms <= s.ts"
    return f"""(s.sig_id, s.org_id) in (select sig_id, org_id from temp.{table})
    and exists (
        select 1 from temp.{table} w
        where w.sig_id = s.sig_id and w.org_id = s.org_id
          and {start} and (w.to_ms is null or s.ts < w.to_ms)
    )"""
