"""``window_hours`` and ``window_scoped_hours``: the requests per UTC hour, the cells a
time window reads its whole hours from (the contract with the in-memory window engine).

``window_hours`` holds every request per (hour, signature); ``window_scoped_hours`` the
in-scope requests per (hour, signature, org), with those no applied rule explains.
``window_generation.generation`` is bumped in the same transaction as any change to
either table, so a reader knows when to reload.

The derived-data owner (:mod:`datasette_forensics.derived`) keeps them: a full build
with the aggregates; ``window_hours`` brought up to date by :func:`catch_up`, which
counts the requests stored since it last ran (``window_hours_upto`` says how far the
cells go) in one upsert. An import runs it whenever its store waits for the parser
(``derived.while_idle``: the cells cost the store's idle moments, not its busy ones),
and a batch's close runs it for whatever is left; ``window_scoped_hours`` is recounted
for the signatures whose scope a batch changed when it closes; unexplained is recounted
after a wholesale re-evaluation; and a rule moves unexplained per (signature, org, hour)
from the counts it computes anyway (``temp.rule_new`` of :mod:`.explanations`): one
update per touched cell, no look at the requests again.

The generation is bumped when a batch closes: the window engine's copy stays the closed
batches' until then, as the scope does. A batch killed mid-way leaves its last chunks
uncounted until it resumes or any other batch closes (both catch up first).
"""

from __future__ import annotations

import sqlite_utils

HOUR_MS = 3_600_000


def hour_range(lo: int, hi: int) -> tuple[int, int, int, int]:
    """(first whole hour, hour after the last whole one, edge_lo, edge_hi) of [lo, hi):
    a window reads hours [first, after) from the cells, and [lo, edge_lo) and
    [edge_hi, hi) raw."""
    h_from, h_to = -(-lo // HOUR_MS), hi // HOUR_MS
    if h_from >= h_to:
        return 0, 0, hi, hi  # no whole hour: the window is all edge
    return h_from, h_to, h_from * HOUR_MS, h_to * HOUR_MS

# m024_cells_window_hours
WINDOW_HOURS = """
create table window_hours (            -- every request, per (UTC hour, signature)
    hour integer not null,             -- ts / 3600000
    sig_id integer not null,
    requests integer not null,
    first_ts integer not null,
    last_ts integer not null,
    primary key (hour, sig_id)
) without rowid;
create table window_scoped_hours (     -- in-scope requests, per (UTC hour, signature, org)
    hour integer not null,
    sig_id integer not null,
    org_id text not null,
    requests integer not null,
    unexplained integer not null,      -- not explained by any applied rule
    first_ts integer not null,
    last_ts integer not null,
    primary key (hour, sig_id, org_id)
) without rowid;
create table window_generation (id integer primary key check (id = 1), generation integer not null);
insert into window_generation (id, generation) values (1, 0);
"""

HOURS = """
insert into window_hours (hour, sig_id, requests, first_ts, last_ts)
select ts / 3600000, sig_id, count(*), min(ts), max(ts)
from requests {where}
group by 1, 2 order by 1, 2
"""

SCOPED_HOURS = """
insert into window_scoped_hours (hour, sig_id, org_id, requests, unexplained, first_ts, last_ts)
select ts / 3600000, sig_id, org_id, count(*), sum(explained = 0), min(ts), max(ts)
from scoped {where}
group by 1, 2, 3 order by 1, 2, 3
"""


# The cells of the requests from an id on, added to those kept (their first and last
# hours' cells may be shared with the requests around them).
ADD_REQUESTS = HOURS.format(where="where id >= ?") + """
on conflict (hour, sig_id) do update set requests = requests + excluded.requests,
    first_ts = min(first_ts, excluded.first_ts), last_ts = max(last_ts, excluded.last_ts)
"""


def catch_up(conn) -> bool:
    """Count the requests stored since the cells were last brought up to date into
    ``window_hours`` (inside the caller's transaction).

    Returns:
        True when there were requests to count.
    """
    upto, last = conn.execute(
        "select (select upto from window_hours_upto), (select coalesce(max(id), 0) from requests)"
    ).fetchone()
    if last < upto:
        return False
    conn.execute(ADD_REQUESTS, [upto])
    conn.execute("update window_hours_upto set upto = ?", [last + 1])
    return True


def bump(db: sqlite_utils.Database) -> None:
    """Tell readers the cells changed (call inside the transaction that changed them)."""
    db.execute("update window_generation set generation = generation + 1 where id = 1")


def refresh(db: sqlite_utils.Database) -> None:
    """Recount every cell."""
    db.execute("delete from window_hours")
    db.execute("delete from window_scoped_hours")
    db.execute(HOURS.format(where=""))
    db.execute("update window_hours_upto set upto = (select coalesce(max(id), 0) + 1 from requests)")
    db.execute(SCOPED_HOURS.format(where=""))
    bump(db)


def refresh_unexplained(db: sqlite_utils.Database, pairs_sql: str | None = None) -> None:
    """Recount unexplained: of every cell, or of the (sig_id, org_id) pairs selected by
    ``pairs_sql`` (trusted SQL), after rules moved requests."""
    pairs = "" if pairs_sql is None else f"where (sig_id, org_id) in ({pairs_sql})"
    db.execute(
        f"""update window_scoped_hours set unexplained = x.n
        from (
            select ts / 3600000 as hour, sig_id, org_id, sum(explained = 0) as n
            from scoped {pairs} group by 1, 2, 3
        ) x
        where window_scoped_hours.hour = x.hour and window_scoped_hours.sig_id = x.sig_id
            and window_scoped_hours.org_id = x.org_id and window_scoped_hours.unexplained != x.n"""
    )
    bump(db)


def refresh_scoped(db: sqlite_utils.Database, sigs_sql: str) -> None:
    """Recount the in-scope cells of the signatures ``sigs_sql`` selects (trusted SQL),
    whose scope or explanations a batch changed; ``window_hours`` grew with its chunks."""
    where = f"where sig_id in ({sigs_sql})"
    db.execute(f"delete from window_scoped_hours {where}")
    db.execute(SCOPED_HOURS.format(where=where))


def move(db: sqlite_utils.Database, delta_sql: str, sign: int) -> None:
    """Move unexplained counts by a (sig_id, org_id, hour, n) delta (trusted SQL): +n
    when sign > 0. One update per touched cell."""
    db.execute(
        f"""update window_scoped_hours set unexplained = window_scoped_hours.unexplained {'+' if sign > 0 else '-'} d.n
        from ({delta_sql}) d
        where window_scoped_hours.hour = d.hour and window_scoped_hours.sig_id = d.sig_id
            and window_scoped_hours.org_id = d.org_id"""
    )
    bump(db)
