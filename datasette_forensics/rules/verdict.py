"""verdict: the analyst's own eliminations (MODEL §6.3), one signature for one org or every org.

Verdicts are rows of ``verdicts``; this rule explains the in-scope requests of the
standing ones exactly as any rule does (its bit in ``scoped.explained``), so they
count in the waterfall, the statuses and every later batch. It is applied when the
first verdict is made and never by name: see datasette_forensics.verdicts.
"""

NAME = "verdict"
DESCRIPTION = "An analyst's verdict: this signature is explained for this org (or every org), with a reason."


def prepare(db) -> None:
    """The (signature, org) pairs of the standing verdicts; org null for every org."""
    db.execute("drop table if exists temp.verdict_pairs")
    db.execute(
        """create temp table verdict_pairs as
        select distinct g.id as sig_id, v.org_id
        from verdicts v
        join ips i on i.ip = v.ip
        join user_agents a on a.ua = v.user_agent
        join signatures g on g.ip_id = i.id and g.ua_id = a.id
        where v.withdrawn_at is null"""
    )


def match_sql() -> str:
    """A SQL condition on an in-scope request ``s`` (a row of scoped): true when a verdict explains it."""
    return """(
        s.sig_id in (select sig_id from temp.verdict_pairs where org_id is null)
        or (s.sig_id, s.org_id) in (select sig_id, org_id from temp.verdict_pairs where org_id is not null)
    )"""
