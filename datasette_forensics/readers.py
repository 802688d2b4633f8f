"""Opening log inputs: plain, gzip, bzip2 or standard input, hashed as they are read."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import os
import sys
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

from .errors import ForensicsError

HEAD_BYTES = 1 << 20
BLOCK_BYTES = 1 << 20
DAMAGED = (EOFError, OSError, zlib.error)


class _HashingReader(io.RawIOBase):
    """Pass-through reader that feeds every byte it reads to SHA-256 and counts them."""

    def __init__(self, raw: BinaryIO, prefix: bytes = b""):
        self.raw = raw
        self.prefix = prefix
        self.sha256 = hashlib.sha256()
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.prefix:
            n = min(len(buffer), len(self.prefix))
            buffer[:n] = self.prefix[:n]
            self.prefix = self.prefix[n:]
        else:
            data = self.raw.read(len(buffer))
            n = len(data)
            buffer[:n] = data
        self.sha256.update(memoryview(buffer)[:n])
        self.consumed += n
        return n


@dataclass
class LogInput:
    """One input to import: where it came from and how to read its lines."""

    source: str
    size: int | None
    compression: str | None
    head: bytes
    head_sha256: str
    _raw: BinaryIO | None = field(default=None, repr=False)
    _hasher: _HashingReader | None = field(default=None, repr=False)

    @property
    def consumed(self) -> int:
        return self._hasher.consumed if self._hasher else 0

    @property
    def sha256(self) -> str | None:
        return self._hasher.sha256.hexdigest() if self._hasher else None

    def lines(self) -> Iterator[tuple[int, bytes]]:
        """Yield (line number, raw bytes without the line ending), numbering from 1.

        A damaged compressed stream raises DamagedInput after the last complete line.
        """
        stream = _decompress(self._hasher, self.compression)
        buffered = io.BufferedReader(stream, buffer_size=1 << 20) if self.compression is None else stream
        line_no = 0
        pending = None
        try:
            for raw in buffered:
                if pending is not None:
                    yield line_no, pending
                line_no += 1
                pending = raw
        except DAMAGED as exc:
            # A line without its newline when the damage hit is incomplete: never count it.
            if pending is not None and pending.endswith(b"\n"):
                yield line_no, pending
            else:
                line_no -= 1
            raise DamagedInput(line_no, str(exc)) from None
        if pending is not None:
            yield line_no, pending

    def blocks(self) -> Iterator[list[bytes]]:
        """Yield the lines of :meth:`lines` in lists, without their line endings.

        Line numbers continue from one list to the next, starting at 1; an LF or
        CRLF ending is removed exactly as :func:`strip_line_ending` does. Plain
        input is split a block at a time, with no Python work per line; compressed
        input goes through :meth:`lines`. A damaged input yields the complete lines
        before the damage, then raises DamagedInput.
        """
        if self.compression is not None:
            yield from self._compressed_blocks()
            return
        read = self._hasher.read
        pending: list[bytes] = []  # the pieces of a line whose end is not read yet
        line_no = 0
        try:
            while True:
                data = read(BLOCK_BYTES)
                if not data:
                    break
                end = data.rfind(b"\n")
                if end < 0:
                    pending.append(data)
                    continue
                head = data[: end + 1]
                if pending:
                    pending.append(head)
                    head = b"".join(pending)
                    pending = []
                if end + 1 < len(data):
                    pending.append(data[end + 1 :])
                # Every line of head ends with LF, so CRLF can only be a line ending.
                if b"\r" in head:
                    head = head.replace(b"\r\n", b"\n")
                lines = head.split(b"\n")
                lines.pop()  # the empty piece after the last LF
                line_no += len(lines)
                yield lines
        except DAMAGED as exc:
            raise DamagedInput(line_no, str(exc)) from None
        if pending:
            yield [b"".join(pending)]  # a last line without a line ending: kept as is

    def _compressed_blocks(self) -> Iterator[list[bytes]]:
        block: list[bytes] = []
        try:
            for _, raw in self.lines():
                block.append(strip_line_ending(raw))
                if len(block) >= 4096:
                    yield block
                    block = []
        except DamagedInput:
            if block:
                yield block
            raise
        if block:
            yield block

    def close(self) -> None:
        if self._raw is not None and self._raw is not sys.stdin.buffer:
            self._raw.close()


class DamagedInput(Exception):
    def __init__(self, last_complete_line: int, reason: str):
        super().__init__(reason)
        self.last_complete_line = last_complete_line


def strip_line_ending(raw: bytes) -> bytes:
    if raw.endswith(b"\n"):
        raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
    return raw


def _compression_of(head: bytes) -> str | None:
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh"):
        return "bzip2"
    return None


def _decompress(raw: io.RawIOBase, compression: str | None):
    if compression == "gzip":
        return gzip.GzipFile(fileobj=io.BufferedReader(raw, 1 << 20), mode="rb")
    if compression == "bzip2":
        return bz2.BZ2File(io.BufferedReader(raw, 1 << 20), mode="rb")
    return raw


def open_input(path: str) -> LogInput:
    """Open a log file (or '-' for standard input) for reading.

    Args:
        path: a file path, or '-'.

    Returns:
        a LogInput whose ``head`` holds up to the first MiB of decompressed text.

    Raises:
        ForensicsError: when the path is missing, a directory or unreadable.
    """
    if path == "-":
        raw: BinaryIO = sys.stdin.buffer
        size = None
        source = "-"
    else:
        if not os.path.exists(path):
            raise ForensicsError(f"No such file: {path}")
        if os.path.isdir(path):
            raise ForensicsError(f"{path} is a directory, not a log file.")
        try:
            raw = open(path, "rb")
        except OSError as exc:
            raise ForensicsError(f"Cannot read {path}: {exc.strerror}.") from None
        size = os.fstat(raw.fileno()).st_size
        source = os.path.abspath(path)
    # Read the first raw bytes once: they decide the compression, and standard
    # input cannot be rewound, so they are replayed through the hashing reader.
    first = raw.read(HEAD_BYTES)
    compression = _compression_of(first)
    head = _read_head(first, compression, path)
    hasher = _HashingReader(raw, prefix=first)
    return LogInput(
        source=source,
        size=size,
        compression=compression,
        head=head,
        head_sha256=hashlib.sha256(first).hexdigest(),
        _raw=raw,
        _hasher=hasher,
    )


def _read_head(first: bytes, compression: str | None, path: str) -> bytes:
    if compression is None:
        return first[:HEAD_BYTES]
    try:
        if compression == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(first, HEAD_BYTES)
        return bz2.BZ2Decompressor().decompress(first, HEAD_BYTES)
    except (OSError, zlib.error, EOFError, ValueError):
        raise ForensicsError(f"{path} is not a valid {compression} file.") from None


def looks_binary(head: bytes) -> bool:
    """True when the first bytes are not text: NUL bytes or mostly control bytes."""
    sample = head[:65536]
    if not sample:
        return False
    if b"\x00" in sample:
        return True
    control = sum(1 for b in sample if b < 9 or 13 < b < 32)
    return control > len(sample) * 0.05


def read_whole(path: str, what: str) -> bytes:
    """The bytes of a small input (a records or incident file), or of standard input.

    Args:
        path: a file path, or '-'.
        what: how the error names the expected file, e.g. "a records file".

    Raises:
        ForensicsError: a missing path, a directory, or an unreadable file.
    """
    if path == "-":
        return sys.stdin.buffer.read()
    if not os.path.exists(path):
        raise ForensicsError(f"No such file: {path}")
    if os.path.isdir(path):
        raise ForensicsError(f"{path} is a directory, not {what}.")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ForensicsError(f"Cannot read {path}: {exc.strerror}.") from None


def decode_text(data: bytes, source: str) -> str:
    """UTF-8 text (a byte-order mark allowed), or one sentence naming the bad line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ForensicsError(f"{source} line {line} is not valid UTF-8 text.") from None
