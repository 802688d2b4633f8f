"""member_historical: a user with a session with the signature was a member of the org at t."""

from . import ms_rows, prepare_sessions

NAME = "member_historical"
BIT = 1 << 2
DESCRIPTION = "A user with a session with this signature was a member of the org at the request's time."


def prepare(db) -> None:
    """Sessions matched to signatures; membership windows as integer milliseconds (joined_at <= t < left_at)."""
    prepare_sessions(db)
    db.execute("drop table if exists temp.rule_membership_windows")
    db.execute("create temp table rule_membership_windows (user_id text, org_id text, from_ms integer, to_ms integer)")
    db.conn.executemany(
        "insert into temp.rule_membership_windows values (?, ?, ?, ?)",
        ms_rows(db, "select user_id, org_id, joined_at, left_at from memberships", (2, 3)),
    )
    db.execute("create index temp.rule_membership_windows_user on rule_membership_windows(user_id)")


def select_sql(restrict: str, columns: str = "s.request_id") -> str:
    """Args: restrict: extra SQL conditions on scoped alias s; columns: of scoped s to select.
    Returns: a select of the in-scope requests the rule explains."""
    return f"""
    select {columns} from temp.rule_session_sigs x
    cross join temp.rule_membership_windows m on m.user_id = x.user_id
    cross join scoped s on s.sig_id = x.sig_id and s.org_id = m.org_id
    where m.from_ms <= s.ts and (m.to_ms is null or s.ts < m.to_ms) {restrict}"""
