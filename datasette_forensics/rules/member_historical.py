"""member_historical: a user with a session with the signature was a member of the org at t."""

from .common import build_pair_windows, in_pair_window, ms_rows, prepare_sessions

NAME = "member_historical"
DESCRIPTION = "A user with a session with this signature was a member of the org at the request's time."


def prepare(db) -> None:
    """Membership windows as integer milliseconds (joined_at <= t < left_at), per (signature, org)
    through the sessions matched to signatures."""
    prepare_sessions(db)
    db.execute("drop table if exists temp.rule_membership_windows")
    db.execute("create temp table rule_membership_windows (user_id text, org_id text, from_ms integer, to_ms integer)")
    db.conn.executemany(
        "insert into temp.rule_membership_windows values (?, ?, ?, ?)",
        ms_rows(db, "select user_id, org_id, joined_at, left_at from memberships", (2, 3)),
    )
    build_pair_windows(
        db,
        "rule_sig_windows",
        """select x.sig_id, m.org_id, m.from_ms, m.to_ms
        from temp.rule_session_sigs x join temp.rule_membership_windows m on m.user_id = x.user_id""",
    )


def match_sql() -> str:
    """A SQL condition on an in-scope request ``s`` (a row of scoped): true when the rule explains it."""
    return in_pair_window("rule_sig_windows", open_start=False)
