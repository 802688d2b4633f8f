"""A Bloom filter of every hash in ``line_counts``, so that a later batch reads the
counts of only the lines the database may hold (:mod:`.line_counts`).

A later batch into a large database brings mostly lines the database has never
seen. Each chunk reads the counts of its distinct lines; with the filter it reads
only those the filter may hold: the filter has every hash of ``line_counts`` (and
a few false positives, which only cost a lookup), so a line it has never seen is
not in ``line_counts``.

The table ``line_filter`` keeps it, with the number of ``line_counts`` rows it
covers and a token that grows by one at every write. Every writer of
``line_counts`` (all of them are in line_counts.py) rewrites the filter in the same
transaction, or drops it (rows -1): so a filter in the database covers
``line_counts``, and a missing or dropped one, or one whose row count is not
``line_counts``'s (a writer that did not know it), is built again from
``line_counts`` by the next batch that needs it, never trusted. Removing rows would only make false positives; nothing removes
them. A first import never builds it: a later batch builds it when it first needs it.

A batch's writer keeps its copy in memory (:class:`Memo`): the database's filter
plus the hashes of its own batch (``line_counts_batch``), which the chunks then
skip reading too. The copy is current while the database's token is the one it
was read or written with.

The filter is the compiled helper's (``_plainlines.c``: a blocked Bloom filter, four
bits of one 64-byte block per hash); without it, nothing uses or keeps a filter.
"""

from __future__ import annotations

import sqlite3

try:
    from .._plainlines import bloom_add, bloom_add_text, bloom_maybe
except ImportError:  # the package without its compiled part
    bloom_add = bloom_add_text = bloom_maybe = None

# Bytes per line hash when the filter is built (rounded up to a power of two), and the
# fewest bits per hash before the next batch builds a larger one.
BUILD_BYTES_PER_HASH = 2
MIN_BITS_PER_HASH = 10
MIN_BYTES = 1 << 16
# A build reads line_counts in this many ranges of the hash space, each as one text
# (group_concat: a third of the time of a row each; the hashes are uniform).
BUILD_RANGES = 16


class Filter:
    """A filter in memory, and the ``line_filter`` token it was read or written with."""

    def __init__(self, bits: bytearray, token: int, batch_id: int):
        self.bits = bits
        self.token = token
        self.batch_id = batch_id  # its line_counts_batch hashes are in it too

    def maybe(self, hashes: list[int]) -> list[int]:
        """The hashes the filter may hold, in order; it never saw the others."""
        return bloom_maybe(self.bits, hashes)

    def add(self, hashes) -> None:
        bloom_add(self.bits, hashes)


class Memo:
    """A batch writer's copy of the filter, between its chunks."""

    def __init__(self) -> None:
        self.filter: Filter | None = None


def usable(conn: sqlite3.Connection, batch_id: int, memo: Memo | None) -> Filter | None:
    """The filter of ``line_counts`` and of this batch's ``line_counts_batch`` rows, read
    or built (and written) now if the memo's copy is not current; None without the
    compiled helper. Call inside the chunk's write transaction, while this batch
    keeps its counts apart (every other batch finished)."""
    if memo is None or bloom_add is None:
        return None
    row = conn.execute("select token, rows, length(bits) from line_filter").fetchone()
    held = memo.filter
    if held is not None and row is not None and held.token == row[0] and held.batch_id == batch_id:
        return held
    rows = conn.execute("select count(*) from line_counts").fetchone()[0]
    if row is not None and row[1] == rows and row[2] * 8 >= rows * MIN_BITS_PER_HASH:
        bits = bytearray(conn.execute("select bits from line_filter").fetchone()[0])
        token = row[0]
    else:  # missing, stale, or too full: build it from line_counts
        bits = _build(conn, rows)
        token = _write(conn, bits, rows)
    memo.filter = Filter(bits, token, batch_id)
    memo.filter.add(conn.execute("select h from line_counts_batch where batch_id = ?", [batch_id]))
    return memo.filter


def after_merge(conn: sqlite3.Connection, batch_id: int, memo: Memo | None) -> None:
    """``line_counts`` took the rows of ``line_counts_batch`` of ``batch_id`` (in the same
    transaction): keep the filter if the memo's copy covers them, else drop it."""
    row = conn.execute("select token from line_filter").fetchone()
    held = None if memo is None else memo.filter
    if row is None or held is None or held.token != row[0] or held.batch_id != batch_id:
        drop(conn)
        return
    rows = conn.execute("select count(*) from line_counts").fetchone()[0]
    held.token = _write(conn, held.bits, rows)


def _build(conn: sqlite3.Connection, rows: int) -> bytearray:
    """A filter of every hash of ``line_counts`` (``rows`` of them), sized for more."""
    size = MIN_BYTES
    while size < rows * BUILD_BYTES_PER_HASH:
        size *= 2
    bits = bytearray(size)
    step = (1 << 64) // BUILD_RANGES
    for low in range(-(1 << 63), 1 << 63, step):
        text = conn.execute(
            "select group_concat(h) from line_counts where h between ? and ?", [low, low + step - 1]
        ).fetchone()[0]
        if text is not None:
            bloom_add_text(bits, text)
    return bits


def drop(conn: sqlite3.Connection) -> None:
    """``line_counts`` took rows the filter does not have: the next batch that needs it
    builds it. The row stays, its token moved on (a writer's copy is then stale)."""
    conn.execute("update line_filter set token = token + 1, rows = -1, bits = x'' where rows >= 0")


def _write(conn: sqlite3.Connection, bits: bytearray, rows: int) -> int:
    return conn.execute(
        """insert into line_filter (id, token, rows, bits) values (1, 1, ?, ?)
        on conflict(id) do update set token = token + 1, rows = excluded.rows, bits = excluded.bits
        returning token""",
        [rows, bits],
    ).fetchone()[0]
