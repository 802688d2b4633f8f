"""The raw log line of every imported request, kept compressed, so a request's own
page shows the line as imported: from a file since deleted, standard input or a
ClickHouse query alike.

An import's reader packs each chunk's imported lines into blocks of BLOCK_LINES
(:func:`pack`, in the reader's process, maybe a child); the store writes them in the
chunk's own transaction (:func:`store`). One ``raw_chunks`` row is a block: its batch,
first and last line numbers, each line's offset from the first and its length (as
32-bit integers), and the lines' bytes concatenated, both compressed. Reading a
request's line is one primary-key probe and one small decompression (:func:`raw_line`).

The codec is Zstandard at level 1: on a usual access log it packs a line in fewer
bytes than zlib's fastest level (43.5 against 53.3 bytes a line, before SQLite's
pages) for a third of its CPU (0.32 against 1.01 us a line). Blocks written by
earlier versions are zlib streams; each compressed value says which it is by its
first bytes (a Zstandard frame's magic number; a zlib stream starts otherwise), so
those databases keep showing their lines.
"""

from __future__ import annotations

import sqlite3
import zlib
from array import array

import zstandard

BLOCK_LINES = 500
LEVEL = 1  # the import pays for it (README: the bytes a line costs)
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_compress = zstandard.ZstdCompressor(level=LEVEL).compress


def pack(batch_id: int, line_nos: list[int], lines: list[bytes]) -> list[tuple]:
    """Compress a chunk's imported lines into raw_chunks rows.

    Args:
        batch_id: the batch.
        line_nos: the lines' numbers, ascending.
        lines: the lines' bytes without line endings, one per number.

    Returns:
        rows (batch_id, first_line, last_line, meta, lines) for :func:`store`.
    """
    rows = []
    compress = _compress
    for start in range(0, len(lines), BLOCK_LINES):
        nos = line_nos[start : start + BLOCK_LINES]
        block = lines[start : start + BLOCK_LINES]
        first = nos[0]
        meta = array("I", [n - first for n in nos])
        meta.extend(len(line) for line in block)
        rows.append(
            (batch_id, first, nos[-1], compress(meta.tobytes()), compress(b"".join(block)))
        )
    return rows


def store(conn: sqlite3.Connection, rows: list[tuple]) -> None:
    """Write packed rows, inside the caller's transaction (a resumed batch may repeat a block)."""
    if rows:
        conn.executemany("insert or replace into raw_chunks values (?, ?, ?, ?, ?)", rows)


def raw_line(conn: sqlite3.Connection, batch_id: int, line_no: int) -> bytes | None:
    """The bytes of one imported line, or None when the database does not hold it
    (a request imported before raw lines were kept)."""
    row = conn.execute(
        """select first_line, meta, lines from raw_chunks
        where batch_id = ? and first_line <= ? and last_line >= ?
        order by first_line desc limit 1""",
        [batch_id, line_no, line_no],
    ).fetchone()
    return None if row is None else line_of(row, line_no)


def line_of(row, line_no: int) -> bytes | None:
    """The line numbered ``line_no`` in a raw_chunks row (first_line, meta, lines)."""
    first, meta, lines = row
    numbers = array("I")
    numbers.frombytes(_decompress(meta))
    n = len(numbers) // 2
    offsets, lengths = numbers[:n], numbers[n:]
    try:
        index = offsets.index(line_no - first)
    except ValueError:
        return None
    start = sum(lengths[:index])
    return _decompress(lines)[start : start + lengths[index]]


def _decompress(data: bytes) -> bytes:
    """A stored value's bytes: a Zstandard frame, or a zlib stream (blocks kept before it)."""
    if data[:4] == _ZSTD_MAGIC:
        return zstandard.ZstdDecompressor().decompress(data)
    return zlib.decompress(data)
