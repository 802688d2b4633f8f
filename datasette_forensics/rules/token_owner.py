"""token_owner: the log line names a token that belongs to the org it reached."""

NAME = "token_owner"
BIT = 1 << 5
DESCRIPTION = "The log line carries a token_id whose token belongs to the org requested."


def select_sql(restrict: str, columns: str = "s.request_id") -> str:
    """Args: restrict: extra SQL conditions on scoped alias s; columns: of scoped s to select.
    Returns: a select of the in-scope requests the rule explains."""
    return f"""
    select {columns} from tokens t
    cross join requests r on r.token_id = t.id
    cross join scoped s on s.request_id = r.id
    where r.token_id is not null and t.org_id = s.org_id {restrict}"""
