"""The raw log line of every imported request, kept compressed, so a request's own
page shows the line as imported: from a file since deleted, standard input or a
ClickHouse query alike.

An import's reader packs each chunk's imported lines into blocks of BLOCK_LINES
(:func:`pack`, in the reader's process, maybe a child); the store writes them in the
chunk's own transaction (:func:`store`). One ``raw_chunks`` row is a block: its batch,
first and last line numbers, ``meta`` saying which line numbers it holds, and the
lines' bytes, compressed. Reading a request's line is one primary-key probe and one
small decompression (:func:`raw_line`).

The lines are joined by newlines (a line read from a file holds none), and ``meta``
is one byte when the block's lines are numbered without a gap, the usual case
(:data:`CONSECUTIVE`), or that byte's sibling followed by each line's offset from the
first, compressed, when rejected, duplicate or blank lines left gaps
(:data:`OFFSETS`). So packing does no work a line beyond joining and compressing
(0.3 us a line less than writing each line's offset and length). A block with a line
that holds a newline (a value from a query can) is kept the way earlier versions kept
every block: the lines concatenated, and ``meta`` the compressed uint32 offsets, then
lengths.

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
from typing import Callable

import zstandard

BLOCK_LINES = 500
LEVEL = 1  # the import pays for it (README: the bytes a line costs)
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_compress = zstandard.ZstdCompressor(level=LEVEL).compress
# meta of a block joined by newlines (neither byte starts a Zstandard frame or a zlib stream)
CONSECUTIVE = b"L"  # the lines are numbered first_line, first_line + 1, ... last_line
OFFSETS = b"O"  # followed by the compressed uint32 offsets of the lines from first_line


def pack(batch_id: int, line_no: Callable[[int], int], lines: list[bytes]) -> list[tuple]:
    """Compress a chunk's imported lines into raw_chunks rows.

    Args:
        batch_id: the batch.
        line_no: the number of the i-th line (ascending in i).
        lines: the lines' bytes without line endings.

    Returns:
        rows (batch_id, first_line, last_line, meta, lines) for :func:`store`.
    """
    rows = []
    compress = _compress
    total = len(lines)
    for start in range(0, total, BLOCK_LINES):
        end = min(start + BLOCK_LINES, total)
        block = lines[start:end]
        first, last = line_no(start), line_no(end - 1)
        joined = b"\n".join(block)
        newline_inside = joined.count(b"\n") != end - start - 1
        if not newline_inside and last - first == end - start - 1:
            meta = CONSECUTIVE
        else:
            offsets = array("I", [line_no(i) - first for i in range(start, end)])
            if newline_inside:  # a line holds a newline: say where each ends
                offsets.extend(len(line) for line in block)
                meta, joined = compress(offsets.tobytes()), b"".join(block)
            else:
                meta = OFFSETS + compress(offsets.tobytes())
        rows.append((batch_id, first, last, meta, compress(joined)))
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
    if meta == CONSECUTIVE or meta[:1] == OFFSETS:
        parts = _decompress(lines).split(b"\n")
        if meta == CONSECUTIVE:
            index = line_no - first
            return parts[index] if 0 <= index < len(parts) else None
        offsets = _uint32s(meta[1:])
        return parts[offsets.index(line_no - first)] if line_no - first in offsets else None
    numbers = _uint32s(meta)
    n = len(numbers) // 2
    offsets, lengths = numbers[:n], numbers[n:]
    try:
        index = offsets.index(line_no - first)
    except ValueError:
        return None
    start = sum(lengths[:index])
    return _decompress(lines)[start : start + lengths[index]]


def _uint32s(data: bytes) -> array:
    numbers = array("I")
    numbers.frombytes(_decompress(data))
    return numbers


def _decompress(data: bytes) -> bytes:
    """A stored value's bytes: a Zstandard frame, or a zlib stream (blocks kept before it)."""
    if data[:4] == _ZSTD_MAGIC:
        return zstandard.ZstdDecompressor().decompress(data)
    return zlib.decompress(data)
