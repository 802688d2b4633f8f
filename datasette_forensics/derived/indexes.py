"""Indexes built by a sort after a bulk load, rather than entry by entry during it.

A first import drops the indexes of each empty DEFERRABLE table (``requests``,
and the ``uris`` and ``paths`` dictionaries with their unique keys), noting each
in ``deferred_indexes`` (in the same transaction), loads its chunks into the bare
tables, and builds the indexes again in the transaction that closes the batch,
before the scope and the aggregates read them: the same indexes, each made by one
sort instead of millions of scattered inserts.

A deferred unique key holds because the importer that deferred it is the only
writer of its table and hands out one id per value (dictionaries.py, the key map).
Another importer needs the key to tell its values from stored ones: it builds the
deferred keys before it begins (:func:`settle` with ``importing``), while the first
one goes on.

While they are deferred, queries stay correct, only slower. A kill leaves them
noted; :func:`settle` builds them when the next command opens the database
(schema.connect) or the next import starts, unless the batch that deferred them
is still being imported by a live process.
"""

from __future__ import annotations

import sqlite3

from .. import dictionaries
from ..processes import alive
from .sorting import small_sort_runs

# The dictionaries whose unique key a first import defers: their key column, and
# where their ids are held (table, column).
KEYS = {
    "paths": ("path", (("uris", "path_id"),)),
    "uris": ("uri", (("requests", "uri_id"), ("sig_stats", "last_uri_id"), ("pivot_groups", "last_uri_id"))),
}
# Tables whose indexes a first import builds at its end. The dictionaries' unique keys
# need the compiled helper's key map (dictionaries.py) to stay unique meanwhile.
DEFERRABLE = ("requests",) + (tuple(KEYS) if dictionaries.keymap_new is not None else ())
UNIQUE = "sql like 'create unique index%'"  # a deferred index that is a table's key


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


def key_deferred(conn: sqlite3.Connection, table: str | None = None) -> bool:
    """Whether ``table``'s unique key (any table's, with None) is deferred: its importer keeps the key map."""
    return conn.execute(
        f"select exists(select 1 from deferred_indexes where (?1 is null or tbl = ?1) and {UNIQUE})", [table]
    ).fetchone()[0] == 1


def build(conn: sqlite3.Connection, batch_id: int | None = None, keys_only: bool = False) -> None:
    """Build the deferred indexes (those ``batch_id`` deferred, or all; ``keys_only``:
    the unique ones only), inside a write transaction."""
    deferred = conn.execute(
        f"""select name, tbl, sql from deferred_indexes where (?1 is null or batch_id = ?1)
        and (not ?2 or {UNIQUE}) order by rowid""",
        [batch_id, keys_only],
    ).fetchall()
    with small_sort_runs(conn):
        for name, table, sql in deferred:
            try:
                conn.execute(sql)
            except sqlite3.IntegrityError:  # a key with two rows: never made, but never fatal
                if table not in KEYS:
                    raise
                _merge_duplicates(conn, table)
                conn.execute(sql)
            conn.execute("delete from deferred_indexes where name = ?", [name])


def _merge_duplicates(conn: sqlite3.Connection, table: str) -> None:
    """Fold the rows of a keyed dictionary that share a value into the first of them,
    every reference moved to it, so that its unique key can be built."""
    column, references = KEYS[table]
    conn.execute("drop table if exists temp.key_duplicates")
    conn.execute(
        f"""create temp table key_duplicates as select id, keep from (
            select id, min(id) over (partition by {column}) as keep from {table}) where id != keep"""
    )
    for holder, ref in references:
        conn.execute(
            f"""update {holder} set {ref} = (select keep from temp.key_duplicates where id = {holder}.{ref})
            where {ref} in (select id from temp.key_duplicates)"""
        )
    conn.execute(f"delete from {table} where id in (select id from temp.key_duplicates)")
    conn.execute("drop table temp.key_duplicates")


def settle(conn: sqlite3.Connection, importing: bool = False) -> None:
    """Build indexes left deferred by a batch nobody is importing any more.

    Leaves them while their batch runs in a live process: it builds them when it
    closes; but an importer (``importing``) builds the unique keys of the deferred
    dictionaries then, which its own look-ups need. Call outside a transaction:
    this is one.
    """
    pending = conn.execute(
        """select d.batch_id, b.status, b.pid from deferred_indexes d
        left join import_batches b on b.id = d.batch_id limit 1"""
    ).fetchone()
    if pending is None:
        return
    batch_id, status, pid = pending
    keys_only = status == "running" and alive(pid)
    if keys_only and not (importing and key_deferred(conn)):
        return
    conn.execute("begin immediate")
    try:
        build(conn, keys_only=keys_only)
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
    return requests_through(conn, "requests_batch", alias)


def requests_through(conn: sqlite3.Connection, index: str, alias: str = "r") -> str:
    """A FROM item that reads ``requests`` through ``index``; the plain table while a
    first import defers it (another batch may close meanwhile)."""
    exists = conn.execute(
        "select exists(select 1 from sqlite_master where type = 'index' and name = ?)", [index]
    ).fetchone()[0]
    return f"requests {alias} indexed by {index}" if exists else f"requests {alias}"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
