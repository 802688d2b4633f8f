"""Indexes built by a sort after a bulk load, rather than entry by entry during it.

A first import into an empty ``requests`` table drops that table's indexes,
noting each in ``deferred_indexes`` (in the same transaction), loads its chunks
into the bare table, and builds the indexes again in the transaction that closes
the batch, before the scope and the aggregates read them: the same indexes,
each made by one sort instead of millions of scattered inserts.

While they are deferred, queries stay correct, only slower. A kill leaves them
noted; :func:`settle` builds them when the next command opens the database
(schema.connect) or the next import starts, unless the batch that deferred them
is still being imported by a live process.
"""

from __future__ import annotations

import sqlite3

from ..processes import alive
from .sorting import small_sort_runs

DEFERRABLE = ("requests",)  # tables whose indexes a first import builds at its end


def defer(conn: sqlite3.Connection, batch_id: int) -> bool:
    """Drop the indexes of each empty DEFERRABLE table, noting them for ``batch_id``.

    Call inside a write transaction, before the batch stores anything. Does
    nothing when indexes are deferred already (by any batch).

    Returns:
        True when some index was deferred.
    """
    if conn.execute("select exists(select 1 from deferred_indexes)").fetchone()[0]:
        return False
    deferred = False
    for table in DEFERRABLE:
        if conn.execute(f"select exists(select 1 from {table})").fetchone()[0]:
            continue
        for name, sql in conn.execute(
            "select name, sql from sqlite_master where type = 'index' and tbl_name = ? and sql is not null",
            [table],
        ).fetchall():
            conn.execute(
                "insert into deferred_indexes (name, tbl, sql, batch_id) values (?, ?, ?, ?)",
                [name, table, sql, batch_id],
            )
            conn.execute(f"drop index {_quote(name)}")
            deferred = True
    return deferred


def build(conn: sqlite3.Connection, batch_id: int | None = None) -> None:
    """Build the deferred indexes (those ``batch_id`` deferred, or all), inside a write transaction."""
    deferred = conn.execute(
        "select name, sql from deferred_indexes where ?1 is null or batch_id = ?1 order by rowid", [batch_id]
    ).fetchall()
    with small_sort_runs(conn):
        for name, sql in deferred:
            conn.execute(sql)
            conn.execute("delete from deferred_indexes where name = ?", [name])


def settle(conn: sqlite3.Connection) -> None:
    """Build indexes left deferred by a batch nobody is importing any more.

    Leaves them while their batch runs in a live process: it builds them when it
    closes. Call outside a transaction: this is one.
    """
    pending = conn.execute(
        """select d.batch_id, b.status, b.pid from deferred_indexes d
        left join import_batches b on b.id = d.batch_id limit 1"""
    ).fetchone()
    if pending is None:
        return
    batch_id, status, pid = pending
    if status == "running" and alive(pid):
        return
    conn.execute("begin immediate")
    try:
        build(conn)
        conn.execute("commit")
    except BaseException:
        if conn.in_transaction:
            conn.execute("rollback")
        raise


def batch_requests(conn: sqlite3.Connection, alias: str = "r") -> str:
    """A FROM item that reads one batch's requests through ``requests_batch`` (its rows
    are contiguous there), whatever the planner's statistics say.

    Statistics taken while one batch held every request (ANALYZE) rate ``batch_id = ?``
    as matching the whole table, and the planner then walks ``requests_ts`` or
    ``requests_sig`` over every request instead: a batch of a million lines into five
    million requests spent 4.7 s finding its candidates in scope, and 0.95 s its
    signatures. While a first import defers the index, the plain table.
    """
    exists = conn.execute(
        "select exists(select 1 from sqlite_master where type = 'index' and name = 'requests_batch')"
    ).fetchone()[0]
    return f"requests {alias} indexed by requests_batch" if exists else f"requests {alias}"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
