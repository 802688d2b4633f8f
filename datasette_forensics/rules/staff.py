"""staff: a staff user has a session with the request's signature."""

from . import prepare_sessions

NAME = "staff"
BIT = 1 << 0
DESCRIPTION = "A staff user has a session with this signature (ip and user agent)."


def prepare(db) -> None:
    """Match sessions to signatures."""
    prepare_sessions(db)


def select_sql(restrict: str, columns: str = "s.request_id") -> str:
    """Args: restrict: extra SQL conditions on scoped alias s; columns: of scoped s to select.
    Returns: a select of the in-scope requests the rule explains."""
    return f"""
    select {columns} from temp.rule_session_sigs x
    cross join users u on u.id = x.user_id
    cross join scoped s on s.sig_id = x.sig_id
    where u.is_staff = 1 {restrict}"""
