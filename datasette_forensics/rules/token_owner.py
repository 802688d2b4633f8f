"""token_owner: the log line names a token that belongs to the org it reached."""

NAME = "token_owner"
DESCRIPTION = "The log line carries a token_id whose token belongs to the org requested."


def prepare(db) -> None:
    """The requests that carry a known token, with the org the token belongs to."""
    db.execute("drop table if exists temp.rule_token_requests")
    db.execute("""create temp table rule_token_requests (request_id integer, org_id text,
        primary key (request_id, org_id)) without rowid""")
    db.execute(
        """insert or ignore into temp.rule_token_requests (request_id, org_id)
        select r.id, t.org_id from requests r join tokens t on t.id = r.token_id
        where r.token_id is not null"""
    )


def match_sql() -> str:
    """A SQL condition on an in-scope request ``s`` (a row of scoped): true when the rule explains it."""
    return "(s.request_id, s.org_id) in (select request_id, org_id from temp.rule_token_requests)"
