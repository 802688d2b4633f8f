"""member_current: a user with a session with the signature is a member of the org now."""

from . import prepare_sessions

NAME = "member_current"
BIT = 1 << 1
DESCRIPTION = "A user with a session with this signature is a member of the org now (no left_at)."


def prepare(db) -> None:
    """Match sessions to signatures."""
    prepare_sessions(db)


def select_sql(restrict: str, columns: str = "s.request_id") -> str:
    """Args: restrict: extra SQL conditions on scoped alias s; columns: of scoped s to select.
    Returns: a select of the in-scope requests the rule explains."""
    return f"""
    select {columns} from temp.rule_session_sigs x
    cross join memberships m on m.user_id = x.user_id and m.left_at is null
    cross join scoped s on s.sig_id = x.sig_id and s.org_id = m.org_id
    where 1 {restrict}"""
