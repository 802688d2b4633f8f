"""staff: a staff user has a session with the request's signature."""

from .common import prepare_sessions

NAME = "staff"
DESCRIPTION = "A staff user has a session with this signature (ip and user agent)."


def prepare(db) -> None:
    """Match sessions to signatures."""
    prepare_sessions(db)


# The condition names (signature, org) pairs only: every request of a pair or none.
WHOLE_PAIRS = True


def match_sql() -> str:
    """A SQL condition on an in-scope request ``s`` (a row of scoped): true when the rule explains it."""
    # One key range of scoped per signature: the pairs are contiguous in its key.
    return """s.sig_id in (
        select x.sig_id from temp.rule_session_sigs x
        join users u on u.id = x.user_id where u.is_staff = 1
    )"""
