"""token_owner: the log line names a token that belongs to the org it reached."""

NAME = "token_owner"
BIT = 1 << 5
DESCRIPTION = "The log line carries a token_id whose token belongs to the org requested."


def select_sql(restrict: str) -> str:
    """Args: restrict: extra SQL conditions on scoped alias s. Returns: a select of request ids."""
    return f"""
    select s.request_id from tokens t
    cross join requests r on r.token_id = t.id
    cross join scoped s on s.request_id = r.id
    where r.token_id is not null and t.org_id = s.org_id {restrict}"""
