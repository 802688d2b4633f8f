"""``window_days``: the requests of each (UTC day, signature, org), for time windows.

A ``?from=``/``?to=`` window over a pivot reads the whole days it covers from these
cells and only the requests of its partial edge days from ``requests`` (through the
``requests_ts`` index), so it is exact to the millisecond and its cost no longer
grows with the window's length in raw requests.

One cell per (day, signature, org) with in-scope requests, and one per (day,
signature) with ``org_id = ''`` for the requests out of scope: ``requests`` counts
the cell's requests, ``unexplained`` those no applied rule explains (0 out of
scope). A rule change moves ``unexplained`` by the per-(signature, org, day) counts
it computes anyway (``temp.rule_new`` of :mod:`.explanations`): one update per
touched cell, no look at the requests again.
"""

from __future__ import annotations

import sqlite_utils

from . import window_hours

DAY_MS = 86_400_000
OUT_OF_SCOPE = ""

# m022_win2_window_days
WINDOW_DAYS = """
create table window_days (
    day integer not null,           -- ts / 86400000 (UTC day number)
    sig_id integer not null,
    org_id text not null,           -- '' : the signature's requests out of scope
    requests integer not null,
    unexplained integer not null,
    first_ts integer not null,
    last_ts integer not null,
    primary key (day, sig_id, org_id)
) without rowid;
create index window_days_sig on window_days(sig_id);
create index window_days_org on window_days(org_id, day);
"""

# The cells of the requests selected by {where} (a condition on requests r).
CELLS = """
insert into window_days (day, sig_id, org_id, requests, unexplained, first_ts, last_ts)
select r.ts / 86400000, r.sig_id, coalesce(s.org_id, ''), count(*),
    coalesce(sum(s.explained = 0), 0), min(r.ts), max(r.ts)
from requests r {indexed} left join scoped s on s.request_id = r.id
{where}
group by 1, 2, 3
"""


def refresh(db: sqlite_utils.Database, sigs_sql: str | None = None) -> None:
    """Recount the cells: all, or those of the signatures given (a SQL select of sig_ids,
    built by the caller from trusted SQL)."""
    if sigs_sql is None:
        db.execute("delete from window_days")
        db.execute(CELLS.format(indexed="not indexed", where=""))
        window_hours.refresh(db)
        return
    db.execute("drop table if exists temp.window_sigs")
    db.execute(f"create temp table window_sigs as select distinct sig_id from ({sigs_sql})")
    where = "where sig_id in (select sig_id from temp.window_sigs)"
    db.execute(f"delete from window_days {where}")
    db.execute(CELLS.format(indexed="", where="where r.sig_id in (select sig_id from temp.window_sigs)"))
    window_hours.refresh(db, "temp.window_sigs")
    db.execute("drop table temp.window_sigs")


def refresh_unexplained(db: sqlite_utils.Database) -> None:
    """Recount every in-scope cell's unexplained requests (after rules were re-evaluated wholesale)."""
    db.execute("update window_days set unexplained = 0 where org_id != '' and unexplained != 0")
    db.execute(
        """update window_days set unexplained = x.n
        from (
            select ts / 86400000 as day, sig_id, org_id, count(*) as n
            from scoped where explained = 0 group by 1, 2, 3
        ) x
        where window_days.day = x.day and window_days.sig_id = x.sig_id and window_days.org_id = x.org_id"""
    )
    window_hours.refresh_unexplained(db)


def move(db: sqlite_utils.Database, delta_sql: str, sign: int) -> None:
    """Move unexplained counts by a (sig_id, org_id, day, n) delta: +n when sign > 0."""
    db.execute(
        f"""update window_days set unexplained = window_days.unexplained {'+' if sign > 0 else '-'} d.n
        from ({delta_sql}) d
        where window_days.day = d.day and window_days.sig_id = d.sig_id and window_days.org_id = d.org_id"""
    )
    window_hours.refresh_unexplained(db, f"select distinct sig_id, org_id from ({delta_sql})")
