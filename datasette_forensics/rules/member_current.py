"""member_current: a user with a session with the signature is a member of the org now."""

from .common import prepare_sessions

NAME = "member_current"
DESCRIPTION = "A user with a session with this signature is a member of the org now (no left_at)."


def prepare(db) -> None:
    """Match sessions to signatures."""
    prepare_sessions(db)


# The condition names (signature, org) pairs only: every request of a pair or none.
WHOLE_PAIRS = True


def match_sql() -> str:
    """A SQL condition on an in-scope request ``s`` (a row of scoped): true when the rule explains it."""
    return """(s.sig_id, s.org_id) in (
        select x.sig_id, m.org_id from temp.rule_session_sigs x
        join memberships m on m.user_id = x.user_id and m.left_at is null
    )"""
