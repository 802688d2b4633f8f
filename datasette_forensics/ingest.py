"""The log import pipeline: read, parse, account for every line, store.

Each file is one import batch. Lines are processed in chunks; each chunk is one
transaction that stores its requests, its rejected lines, the duplicate-line
counters and the batch's running counts together, so a batch is never
half-counted: after Ctrl-C or a kill, the batch holds exactly the chunks that
committed, and running the same command again resumes after its last line.

Two halves: a :class:`ChunkReader` reads, parses and hashes lines and gives their
values dictionary ids (:func:`_file_chunks`, :func:`_row_chunks`), in a child
process when that pays (pipeline.py); a :class:`BatchWriter` stores each chunk.
"""

from __future__ import annotations

import hashlib
import json
import operator
import os
import sqlite3
import struct
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import sqlite_utils

from . import derived, importers, ipinfo, pipeline, processes, rawlines, readonly
from .derived import batch_figures, indexes, line_counts, line_filter
from .checkpointer import Checkpointer
from .dictionaries import Dictionary, moved_row, store_rows
from .enrich import classify_ip, classify_user_agent
from .errors import ForensicsError
from .timeparse import TimeError, parse_time_local, utcnow
from .transaction import write_transaction
from .readers import DamagedInput, LogInput, looks_binary, open_input, strip_line_ending

# Lines per transaction: large chunks write each touched index page once per
# 50,000 lines rather than once per 20,000 (the requests_sig and uris indexes are
# touched all over). A chunk is held by the reader and the store at once (and
# pickled between them): 100,000 lines ran 5% faster for 95 MB more at peak.
# FORENSICS_CHUNK_LINES overrides it (the crash-safety tests commit every 5,000 lines).
CHUNK_LINES = int(os.environ.get("FORENSICS_CHUNK_LINES") or 50_000)
# SQLite's page cache while the chunks are stored, in KiB (half the usual): the
# reader holds its own memory meanwhile, and both together stay under 400 MB even
# for a log where every line brings a new user agent; at 5M lines it costs 10-17%
# (99 s with 64 MiB; 109 and 116 s with 32 MiB, in two runs).
STORE_CACHE_KIB = int(os.environ.get("FORENSICS_STORE_CACHE_KIB") or 32 << 10)
# A chunk also ends after this many bytes of lines, so that huge lines (a 10 MB
# user agent) travel and wait one or two at a time, not fifty thousand.
CHUNK_BYTES = 16 << 20
DETECT_LINES = 20
# While an import writes, the WAL is copied back to the database beside the store (a
# thread of its own, checkpointer.py), once CHECKPOINT_CHUNKS chunks are in it
# (about 40 MB of log: a page the import rewrites, the tail of requests and of its
# indexes or the line counts, is copied back once per 40 MB, not per 4 MB as with
# SQLite's default of 1,000 pages). CHECKPOINT_PAGES is the automatic checkpoint of
# an import without a parse process (and so without that thread): the WAL stays
# bounded. Measured at 1M lines: the store spends 1.5 s less in commits.
CHECKPOINT_CHUNKS = 3
CHECKPOINT_PAGES = 40_000
# With the checkpointer's thread copying the WAL back, the store's own automatic
# checkpoint is only a bound (480 MB of log): at 40,000 pages the store itself ran
# most checkpoints of a 4M-line import, inside its commits (commits 13.6 s against
# 8.9 s, the import 60.9 s against 57.6 s).
CHECKPOINT_PAGES_BESIDE = 120_000

try:  # the compiled fast path for plain lines (setup.py builds it; absent, the Python loop does its work)
    from ._plainlines import take as _take_plain
except ImportError:
    _take_plain = None


# Signatures the fast path of _file_chunks remembers by their texts (a few MB at most).
SIGNATURE_TEXTS = 20_000

# One str object per common method, rather than one per line while a chunk waits.
_METHODS = {m: m for m in ("GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH")}




def line_hash(raw: bytes) -> int:
    """A 64-bit signed BLAKE2b hash of a raw line: the key for duplicate detection."""
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big", signed=True)


@dataclass
class FileResult:
    source: str
    batch_id: int
    format: str
    lines_read: int = 0
    imported: int = 0
    rejected: int = 0
    duplicates: int = 0
    status: str = "running"
    message: str | None = None
    resumed_from: int = 0

    def summary(self) -> str:
        text = (
            f"{self.source}: {self.lines_read:,} lines read = {self.imported:,} imported"
            f" + {self.rejected:,} rejected + {self.duplicates:,} duplicates"
        )
        if self.resumed_from:
            text += f" (resumed after line {self.resumed_from:,})"
        return text


@dataclass
class PreparedInput:
    input: LogInput
    format: object  # an importers module
    display: str


@dataclass
class RowSource:
    """Rows that arrive already parsed (a ClickHouse query): the other kind of input.

    ``rows`` yields (line_no, raw, record, reason) per counted row: raw is the bytes
    that stand for the row's raw line (hashed for duplicate detection, stored for a
    rejected row), record is None for a rejected row and reason then says why. A
    failure mid-stream raises DamagedInput: the batch keeps what came before it and
    is marked incomplete. Accounting, dedupe and storage are the files' own
    (BatchWriter).
    """

    source: str  # provenance, e.g. clickhouse://host:port/db
    display: str
    format: str  # import_batches.format, e.g. 'clickhouse'
    rows: Iterator[tuple[int, bytes, dict | None, str | None]]
    close: Callable[[], None] = lambda: None
    chunk_rows: int | None = None  # rows per transaction, if fewer than CHUNK_LINES (memory)


def prepare(path: str, fmt: str = "auto") -> PreparedInput:
    """Open one input and settle its format, refusing what is not a log.

    Raises:
        ForensicsError: missing file, directory, binary data, empty file, unknown
            format, or no line of the file's beginning parses.
    """
    log = open_input(path)
    try:
        if looks_binary(log.head):
            raise ForensicsError(f"{path} looks like a binary file, not a text access log.")
        lines = _head_lines(log.head)
        if not lines:
            raise ForensicsError(f"{path} is empty: there is nothing to import.")
        if fmt == "auto":
            module = importers.detect_format(lines)
            if module is None:
                raise ForensicsError(
                    f"{path} is not in any known log format (its first lines match none of "
                    f"{', '.join(importers.FORMATS)}); pass --format to name one."
                )
        else:
            try:
                module = importers.get_format(fmt)
            except ValueError as exc:
                raise ForensicsError(str(exc).rstrip(".") + ".") from None
            if not _any_parses(module, lines):
                raise ForensicsError(f"None of the first lines of {path} parse as {fmt}.")
    except BaseException:
        log.close()
        raise
    return PreparedInput(log, module, path)


def _head_lines(head: bytes) -> list[str]:
    chunks = head.split(b"\n")
    if len(chunks) > 1:
        chunks = chunks[:-1]  # the last piece may be cut mid-line
    lines = []
    for raw in chunks:
        text = strip_line_ending(raw + b"\n").decode("utf-8", "backslashreplace")
        if text.strip():
            lines.append(text)
        if len(lines) >= DETECT_LINES:
            break
    return lines


def _any_parses(module, lines: list[str]) -> bool:
    parser = module.Parser()
    for line in lines:
        try:
            if parser.parse(line) is not None:
                return True
        except Exception:
            continue
    return False


@dataclass
class Chunk:
    """Counted lines ready to store, as a reader made them (maybe in a child process).

    ``requests`` and ``rejected`` are the rows of those tables, in line order;
    ``request_hashes`` and ``rejected_hashes`` the lines' hashes (line_hash), one
    per row. ``raw_rows`` keep the bytes of imported lines that are not valid
    UTF-8. ``new_rows`` are the dictionaries' new rows, in dependency order, and
    the ids in the rows are the reader's (provisional: see dictionaries.py).
    ``raw_chunks`` are the imported lines themselves, packed by rawlines.pack.
    """

    requests: list[tuple]
    request_hashes: list[int]
    rejected: list[tuple]
    rejected_hashes: list[int]
    raw_rows: list[tuple]
    new_rows: list[list[tuple]]
    last_line: int  # the number of the chunk's last counted line
    progress: int  # bytes read so far (files) or rows (queries)
    raw_chunks: list[tuple] = field(default_factory=list)

    @property
    def lines(self) -> int:
        return len(self.request_hashes) + len(self.rejected_hashes)


class ChunkReader:
    """The reading side of a batch: turns counted lines into Chunks.

    Holds the six dictionaries: every value becomes an id as its line is read,
    and new values are enriched here, once (in the child process, when there is
    one). ``add_record`` and ``add_rejected`` take one line each.
    """

    def __init__(self, conn: sqlite3.Connection, batch_id: int, proxies=None):
        self.batch_id = batch_id
        self.proxies = proxies  # proxies.TrustedProxies: the client behind a trusted peer, or None
        # A first import defers the unique keys of uris and paths (derived/indexes.py).
        self.paths = Dictionary(conn, "paths", ["path"], mapped=indexes.key_deferred(conn, "paths"))
        self.uris = Dictionary(
            conn, "uris", ["uri"], prefix_of=self.paths, enrich_columns=["path_id"], refs={2: "paths"},
            mapped=indexes.key_deferred(conn, "uris"),
        )
        self.ips = Dictionary(
            conn, "ips", ["ip"], enrich=_ip_columns, enrich_columns=["version", "prefix", "prefix16"]
        )
        self.uas = Dictionary(
            conn, "user_agents", ["ua"], enrich=_ua_columns,
            enrich_columns=["family", "major", "os", "device", "kind"],
        )
        self.referers = Dictionary(conn, "referers", ["referer"])
        self.signatures = Dictionary(conn, "signatures", ["ip_id", "ua_id"], refs={1: "ips", 2: "user_agents"})
        # Dependency order: paths before uris, ips and user agents before signatures.
        self.dictionaries = [self.paths, self.uris, self.ips, self.uas, self.referers, self.signatures]
        self.start()

    def start(self) -> None:
        """Begin a chunk."""
        self.requests: list[tuple] = []
        self.request_hashes: list[int] = []
        self.rejected: list[tuple] = []
        self.rejected_hashes: list[int] = []
        self.raw_rows: list[tuple] = []
        self.raw_lines: list[bytes] = []  # each request's raw line (the caller of add_record appends it)

    def take(self, last_line: int, progress: int) -> Chunk:
        """The chunk read since the last take (or start), and begin the next."""
        chunk = Chunk(
            self.requests, self.request_hashes, self.rejected, self.rejected_hashes, self.raw_rows,
            [d.take_rows() for d in self.dictionaries], last_line, progress,
            rawlines.pack(self.batch_id, lambda i, rows=self.requests: rows[i][1], self.raw_lines),
        )  # fmt: skip
        self.start()
        return chunk

    def resume(self) -> None:
        """Call when the producer resumes after yielding a chunk: every chunk before
        it is stored then (pipeline.py), so the reader may look up what the store
        stored as handed out."""
        by_table = {d.table: d for d in self.dictionaries}
        for table, upto in self.paths.conn.execute(
            "select tbl, upto from dictionary_watermarks where batch_id = ?", [self.batch_id]
        ):
            by_table[table].raise_bound(upto)

    @property
    def lines(self) -> int:
        """Lines in the chunk so far."""
        return len(self.request_hashes) + len(self.rejected_hashes)

    def add_rejected(self, line_no: int, h: int, raw: bytes, reason: str, bad_utf8: bool) -> None:
        self.rejected.append(
            (self.batch_id, line_no, raw.decode("utf-8", "backslashreplace"), raw if bad_utf8 else None, reason)
        )
        self.rejected_hashes.append(h)

    def add_record(self, line_no: int, h: int, rec: dict, bad: bytes | None) -> None:
        """Add a parsed line; ``bad`` is its raw bytes when they are not valid UTF-8."""
        if self.proxies is not None:
            rec = self.proxies.resolve(rec)
        ts, ip, ua, uri, method, status, size, referer, token_id, org_id, extra = _record_fields(rec)
        # New values get their ids in line order, and within a line in the order
        # ip, user agent, signature, uri, referer.
        sig = (self.ips.id(ip), self.uas.id(ua))
        self.requests.append((
            self.batch_id, line_no, ts, self.signatures.id(sig), self.uris.id(uri), _METHODS.get(method, method),
            status, size, None if referer is None else self.referers.id(referer), token_id, org_id, extra,
        ))  # fmt: skip
        self.request_hashes.append(h)
        if bad is not None:
            self.raw_rows.append((self.batch_id, line_no, bad))

    def use_connection(self, conn: sqlite3.Connection) -> None:
        for d in self.dictionaries:
            d.use_connection(conn)

    def release(self) -> None:
        """Free the dictionaries' caches once the batch is read."""
        for d in self.dictionaries:
            d.release()


class BatchWriter:
    """Stores the chunks of one batch, one transaction each."""

    def __init__(self, db: sqlite_utils.Database, batch_id: int, dictionaries: list[Dictionary]):
        self.db = db
        self.conn = db.conn
        self.batch_id = batch_id
        self.dictionaries = dictionaries  # the reader's: their tables, columns and refs
        # Per table, the reader's ids that did not land, and the stored ids they stand for.
        self.moved: dict[str, dict[int, int]] = {}
        self.unchecked = 0  # chunks committed since the checkpointer was last asked
        self.line_filter = line_filter.Memo()  # the line counts' filter, between chunks
        # The signature figures of the stored requests, counted beside it (a child only).
        self.tally: batch_figures.Tally | None = None
        self.checkpointer: Checkpointer | None = None  # copies the WAL back beside it (a child only)

    def idle(self) -> bool:
        """Work done while the parser has not finished the next chunk (a child only):
        count the stored requests into the hour cells. Returns True when there was work."""
        return derived.while_idle(self.db)

    def store(self, chunk: Chunk, result: FileResult) -> None:
        """Store a chunk in one transaction, and add its counts to ``result`` once committed."""
        conn = self.conn
        batch_id = self.batch_id
        requests, rejected, raw_rows = chunk.requests, chunk.rejected, chunk.raw_rows
        ids = None
        with write_transaction(self.db):
            moved = self.moved
            for d, rows in zip(self.dictionaries, chunk.new_rows):
                if store_rows(conn, d, rows, moved) and rows and not moved.get(d.table):
                    # Every id the reader handed out so far is stored as it was.
                    conn.execute(
                        """insert into dictionary_watermarks (batch_id, tbl, upto) values (?, ?, ?)
                        on conflict do update set upto = excluded.upto""",
                        [batch_id, d.table, rows[-1][0] + 1],
                    )
            if moved.get("signatures") or moved.get("uris") or moved.get("referers"):
                self._move_ids(requests)
            keep, duplicates = line_counts.count(
                conn, batch_id, chunk.request_hashes + chunk.rejected_hashes, self.line_filter
            )
            if keep is not None:
                n = len(requests)
                if raw_rows:
                    dropped = {r[1] for r, k in zip(requests, keep) if not k}
                    raw_rows = [r for r in raw_rows if r[1] not in dropped]
                requests = [r for r, k in zip(requests, keep) if k]
                rejected = [r for r, k in zip(rejected, keep[n:]) if k]
            conn.executemany(
                "insert into requests (batch_id, line_no, ts, sig_id, uri_id, method, status,"
                " bytes, referer_id, token_id, org_id, extra)"
                " values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                requests,
            )
            if requests and self.tally is not None:  # rowids are handed out in order, under the lock
                last = conn.execute("select last_insert_rowid()").fetchone()[0]
                ids = (last - len(requests) + 1, last)
            if rejected:
                conn.executemany(
                    "insert into rejected_lines (batch_id, line_no, raw, raw_bytes, reason)"
                    " values (?, ?, ?, ?, ?)",
                    rejected,
                )
            if raw_rows:
                conn.executemany("insert into raw_bytes values (?, ?, ?)", raw_rows)
            rawlines.store(conn, chunk.raw_chunks)
            imported = len(requests)
            n_rejected = len(rejected)
            conn.execute(
                """update import_batches set lines_read = lines_read + ?,
                lines_imported = lines_imported + ?, lines_rejected = lines_rejected + ?,
                lines_duplicate = lines_duplicate + ?, last_line = ? where id = ?""",
                [chunk.lines, imported, n_rejected, duplicates, chunk.last_line, batch_id],
            )
        if ids is not None:  # committed
            self.tally.stored(*ids)
        self.unchecked += 1
        if self.checkpointer is not None and self.unchecked >= CHECKPOINT_CHUNKS:
            self.checkpointer.request()
            self.unchecked = 0
        result.lines_read += chunk.lines
        result.imported += imported
        result.rejected += n_rejected
        result.duplicates += duplicates

    def _move_ids(self, requests: list[tuple]) -> None:
        """Replace, in place, the reader's ids that did not land by the stored ones."""
        sigs, uris, refs = (self.moved.get(t, {}) for t in ("signatures", "uris", "referers"))
        positions = [(3, sigs), (4, uris), (8, refs)]  # sig_id, uri_id, referer_id
        for i, r in enumerate(requests):
            if r[3] in sigs or r[4] in uris or r[8] in refs:
                requests[i] = moved_row(r, positions)


_RECORD_FIELDS = operator.itemgetter(
    "ts", "ip", "ua", "uri", "method", "status", "bytes", "referer",
    "token_id", "org_id", "host", "xff", "auth_type", "extra",
)  # fmt: skip


def _record_fields(rec: dict) -> tuple:
    """What a request row takes from a record.

    Returns:
        (ts, ip, ua, uri, method, status, bytes, referer, token_id, org_id, extra):
        ua is '' when the line had none, extra the JSON of host, xff, auth_type
        and the record's own extra fields, or None.
    """
    try:
        (
            ts, ip, ua, uri, method, status, size, referer,
            token_id, org_id, host, xff, auth_type, more,
        ) = _RECORD_FIELDS(rec)  # fmt: skip
    except KeyError:  # a record without every RECORD_KEYS key: only ts, ip and uri are required
        get = rec.get
        ts, ip, uri = rec["ts"], rec["ip"], rec["uri"]
        ua, method, status, size, referer = get("ua"), get("method"), get("status"), get("bytes"), get("referer")
        token_id, org_id, host, xff, auth_type, more = (
            get("token_id"), get("org_id"), get("host"), get("xff"), get("auth_type"), get("extra")
        )  # fmt: skip
    if host is None and xff is None and auth_type is None and not more:
        extra = None
    else:
        extra = _extra_json(host, xff, auth_type, more)
    if token_id is not None:
        token_id = None if token_id == "" else str(token_id)
    if org_id is not None:
        org_id = None if org_id == "" else str(org_id)
    return ts, ip, ua or "", uri, method, status, size, referer, token_id, org_id, extra


def _extra_json(host, xff, auth_type, more: dict | None) -> str | None:
    fields = {"host": host, "xff": xff, "auth_type": auth_type}
    extra = {k: v for k, v in fields.items() if v is not None}
    if more:
        extra.update(more)
    return json.dumps(extra, ensure_ascii=False) if extra else None


def _ip_columns(ip: str) -> tuple:
    info = classify_ip(ip)
    return info["version"], info["prefix"], info["prefix16"]


def _ua_columns(ua: str) -> tuple:
    info = classify_user_agent(ua)
    return info["family"], info["major"], info["os"], info["device"], info["kind"]


def _start_batch(conn, prepared: PreparedInput, batch_name, command) -> tuple[int, int, FileResult]:
    log = prepared.input
    fmt = prepared.format.NAME
    if log.source != "-":
        row = conn.execute(
            """select id, last_line, pid, lines_read, lines_imported, lines_rejected, lines_duplicate
            from import_batches where source = ? and size = ? and head_sha256 = ? and format = ?
            and status in ('running', 'interrupted') order by id desc limit 1""",
            [log.source, log.size, log.head_sha256, fmt],
        ).fetchone()
        if row is not None:
            batch_id, last_line, pid = row[0], row[1], row[2]
            if processes.alive(pid):
                raise ForensicsError(
                    f"{prepared.display} is being imported by another process (pid {pid})."
                )
            conn.execute(
                "update import_batches set status = 'running', pid = ? where id = ?",
                [os.getpid(), batch_id],
            )
            result = FileResult(
                prepared.display, batch_id, fmt, row[3], row[4], row[5], row[6], resumed_from=last_line
            )
            return batch_id, last_line, result
    cursor = conn.execute(
        """insert into import_batches (name, source, format, size, head_sha256, started_at,
        status, pid, command) values (?, ?, ?, ?, ?, ?, 'running', ?, ?)""",
        [batch_name, log.source, fmt, log.size, log.head_sha256, utcnow(), os.getpid(), command],
    )
    batch_id = cursor.lastrowid
    return batch_id, 0, FileResult(prepared.display, batch_id, fmt)


def import_file(
    db: sqlite_utils.Database,
    prepared: PreparedInput | RowSource,
    batch_name: str | None = None,
    command: str | None = None,
    on_progress: Callable[[FileResult, int], None] | None = None,
    finish: Callable[[FileResult], None] | None = None,
    proxies=None,
) -> FileResult:
    """Import one prepared input (a file, or rows from a query) as one batch.

    A ChunkReader reads the input, in a child process when that pays (see
    :mod:`pipeline`), while the BatchWriter here stores its chunks. ``finish``
    (bringing the derived tables up to date) runs in the transaction that marks
    the batch finished: see :func:`_close_batch`.

    Returns:
        the FileResult; its status is 'complete', or 'incomplete' for a damaged
        compressed file or a query that failed mid-stream (its message says so).

    Raises:
        KeyboardInterrupt: after marking the batch interrupted (committed chunks stay).
    """
    conn = db.conn
    if isinstance(prepared, RowSource):
        # A re-run starts a new batch (duplicates are skipped) rather than resuming:
        # a query's rows need not come back in the same order.
        cursor = conn.execute(
            """insert into import_batches (name, source, format, started_at, status, pid, command)
            values (?, ?, ?, ?, 'running', ?, ?)""",
            [batch_name, prepared.source, prepared.format, utcnow(), os.getpid(), command],
        )
        batch_id = cursor.lastrowid
        result = FileResult(prepared.display, batch_id, prepared.format)
        size, close = None, prepared.close
    else:
        batch_id, skip_until, result = _start_batch(conn, prepared, batch_name, command)
        size, close = prepared.input.size, prepared.input.close
    indexes.settle(conn, importing=True)
    with write_transaction(db):
        first_import = not conn.execute("select exists(select 1 from requests)").fetchone()[0]
        indexes.defer(conn, batch_id)  # a first import: built by a sort when the batch closes
    reader = ChunkReader(conn, batch_id, proxies)
    writer = BatchWriter(db, batch_id, reader.dictionaries)
    db_file = conn.execute("pragma database_list").fetchone()[2]

    def produce(in_child: bool) -> Iterator[Chunk]:
        if in_child:  # the parent's connection is never touched here
            reader.use_connection(readonly.connect(db_file))
        if isinstance(prepared, RowSource):
            return _row_chunks(prepared.rows, min(CHUNK_LINES, prepared.chunk_rows or CHUNK_LINES), reader)
        return _file_chunks(prepared, skip_until, reader)

    chunks = pipeline.Chunks(produce, pipeline.use_child(size) and bool(db_file), prepared.display)
    chunks.idle = writer.idle
    if chunks.in_child:
        reader.release()  # the child has its own copy
        # Beside the store (in one process: at the close, and in its commits, as before).
        if first_import:  # only a batch that holds every request takes the tally's figures
            writer.tally = batch_figures.Tally(db_file)
        writer.checkpointer = Checkpointer(db_file)
    page_cache = conn.execute("pragma cache_size").fetchone()[0]
    checkpoint = conn.execute("pragma wal_autocheckpoint").fetchone()[0]
    conn.execute(f"pragma cache_size = -{STORE_CACHE_KIB}")
    conn.execute(f"pragma wal_autocheckpoint = {CHECKPOINT_PAGES_BESIDE if chunks.in_child else CHECKPOINT_PAGES}")
    progress = 0
    try:
        try:
            try:
                for chunk in chunks:
                    writer.store(chunk, result)
                    progress = chunk.progress
                    del chunk  # freed before the next one arrives
                    if on_progress:
                        on_progress(result, progress)
            except DamagedInput as damage:
                result.status = "incomplete"
                result.message = _damage_message(prepared, damage)
            else:
                result.status = "complete"
        except KeyboardInterrupt:
            _mark_interrupted(conn, batch_id)
            raise
        finally:
            chunks.close()
            close()
            conn.execute(f"pragma cache_size = {page_cache}")
        reader.release()  # the derived tables are rebuilt next: the caches need not stay in memory
        head = derived.Head(writer.tally)
        if chunks.in_child and not result.resumed_from:  # the new addresses' owners, beside the close
            head.located = ipinfo.Located(conn, reader.ips.first_new - 1)
        _close_batch(
            db, batch_id, result, chunks.end if result.status == "complete" else None, finish, writer.line_filter,
            head,
        )
    finally:
        conn.execute(f"pragma wal_autocheckpoint = {checkpoint}")
        if writer.tally is not None:
            writer.tally.drop(conn)
        if writer.checkpointer is not None:
            writer.checkpointer.close()
    if on_progress:
        on_progress(result, progress)
    return result


def _damage_message(prepared: PreparedInput | RowSource, damage: DamagedInput) -> str:
    if isinstance(prepared, RowSource):
        return (
            f"{str(damage)[:1].upper()}{str(damage)[1:]}: the rows before it were imported "
            "and the batch is marked incomplete."
        )
    return (
        f"{prepared.display} is damaged after line {damage.last_complete_line:,}: "
        f"the complete lines before the damage were imported and the batch is marked incomplete."
    )


def _file_chunks(prepared: PreparedInput, skip_until: int, reader: ChunkReader) -> Iterator[Chunk]:
    """Read, parse and hash a file's lines into chunks.

    Yields a chunk per CHUNK_LINES counted lines, and a last one, maybe empty.
    Lines up to ``skip_until`` (a resumed batch's) are read but not counted
    again. A damaged input yields the lines before the damage, then raises
    DamagedInput.

    A format's plain lines (a parser's ``plain`` pattern: see
    importers.combined.PLAIN), nearly every line of a usual access log, take a
    fast path: the pattern's groups go straight to a request row, with no record
    built, exactly the row ``add_record`` would make of ``parse``'s record (the
    per-line work is written out here: the calls it saves were most of its cost).
    Every other line is parsed and added one by one. Each imported line's bytes go
    to ``reader.raw_lines`` (rawlines.py), from either path. When the compiled module
    is built (``_plainlines.c``, by setup.py), it takes runs of combined plain lines
    itself, in the same caches and dictionaries, and hands back to this loop any
    line it is not sure of (non-ASCII, not plain, a time that does not parse).

    Returns:
        the SHA-256 of the whole input.
    """
    parser = prepared.format.Parser()
    parse = parser.parse
    # A plain line's address is the peer's: with trusted proxies, add_record finds the client.
    plain = getattr(parser, "plain", None) if reader.proxies is None else None
    parse_error = importers.ParseError
    line_no = chunk_bytes = chunk_lines = 0
    last_line = skip_until
    log = prepared.input
    batch_id = reader.batch_id
    times = _Times()
    ip_id, ip_new = reader.ips.cache.get, reader.ips.miss
    ua_id, ua_new = reader.uas.cache.get, reader.uas.miss
    sig_id, sig_new = reader.signatures.cache.get, reader.signatures.miss
    uri_id, uri_new = reader.uris.cache.get, reader.uris.miss
    ref_id, ref_new = reader.referers.cache.get, reader.referers.miss
    methods = _METHODS.get
    # (address, user agent) texts to their signature's id: one lookup a line, not three.
    signatures: dict[tuple[str, str], int] = {}
    signature = signatures.get
    blake2b = hashlib.blake2b
    # The plain lines' hashes wait as digests, turned into integers all at once
    # (line_hash's value) before a general line's or the chunk's end.
    digests: list[bytes] = []
    add_request, add_digest, add_raw = reader.requests.append, digests.append, reader.raw_lines.append
    # The compiled fast path (_plainlines.c) takes runs of plain lines itself, with
    # the same caches and dictionaries, and hands back any line it is not sure of.
    take = _take_plain if plain is importers.combined.PLAIN else None
    context = (
        batch_id, times.ms, times.parse, signatures, SIGNATURE_TEXTS,
        reader.ips.cache, ip_new, reader.uas.cache, ua_new, reader.signatures.cache, sig_new,
        reader.uris.cache, uri_new, reader.referers.cache, ref_new, _METHODS, _ident_extra,
        CHUNK_LINES, CHUNK_BYTES,
    )  # fmt: skip
    try:
        for block in log.blocks():  # blocks() strips the line endings
            i, n = 0, len(block)
            while i < n:
                if take is not None and line_no >= skip_until:
                    i, line_no, last_line, chunk_lines, chunk_bytes = take(
                        block, i, line_no, last_line, chunk_lines, chunk_bytes,
                        reader.requests, digests, reader.raw_lines, context,
                    )  # fmt: skip
                if i < n and chunk_lines < CHUNK_LINES and chunk_bytes < CHUNK_BYTES:
                    raw = block[i]
                    i += 1
                    line_no += 1
                    m = None
                    if plain is not None and line_no > skip_until:
                        try:
                            m = plain(raw.decode())
                        except UnicodeDecodeError:
                            pass
                        if m is not None:
                            ip, ident, user, time, method, uri, _protocol, status, size, referer, ua = m.groups()
                            ts = times.get(time) or times.parse(time)
                            if ts is None:  # parse() rejects the line
                                m = None
                    if m is not None:
                        if ua == "-":
                            ua = ""
                        pair = (ip, ua)
                        sig = signature(pair)
                        if sig is None:
                            key = (ip_id(ip) or ip_new(ip), ua_id(ua) or ua_new(ua))
                            sig = sig_id(key) or sig_new(key)
                            if len(signatures) >= SIGNATURE_TEXTS:
                                signatures.clear()
                            signatures[pair] = sig
                        add_request((
                            batch_id, line_no, ts, sig, uri_id(uri) or uri_new(uri), methods(method, method),
                            None if status == "-" else int(status), None if size == "-" else int(size),
                            None if referer == "-" else ref_id(referer) or ref_new(referer), None, None,
                            None if ident == "-" and user == "-" else _ident_extra(ident, user),
                        ))  # fmt: skip
                        add_digest(blake2b(raw, digest_size=8).digest())
                        add_raw(raw)
                    else:
                        if not raw or raw.isspace():
                            continue
                        try:
                            text, bad = raw.decode(), None
                        except UnicodeDecodeError:
                            text, bad = raw.decode("utf-8", "backslashreplace"), raw
                        try:
                            rec = parse(text)
                        except parse_error as exc:
                            rec, reason = None, str(exc) or "unparseable line"
                        except Exception as exc:  # a parser must never stop an import
                            rec, reason = None, f"unparseable line ({type(exc).__name__})"
                        else:
                            if rec is None:
                                continue
                        if line_no <= skip_until:
                            continue
                        if rec is None:
                            reader.add_rejected(line_no, line_hash(raw), raw, reason, bad is not None)
                        else:
                            _add_digests(reader, digests)
                            reader.add_record(line_no, line_hash(raw), rec, bad)
                            add_raw(raw)
                    last_line = line_no
                    chunk_bytes += len(raw)
                    chunk_lines += 1
                if chunk_lines >= CHUNK_LINES or chunk_bytes >= CHUNK_BYTES:
                    _add_digests(reader, digests)
                    yield reader.take(last_line, log.consumed)
                    add_request, add_raw = reader.requests.append, reader.raw_lines.append
                    reader.resume()
                    chunk_bytes = chunk_lines = 0
    except DamagedInput:
        _add_digests(reader, digests)
        yield reader.take(last_line, log.consumed)
        raise
    _add_digests(reader, digests)
    yield reader.take(last_line, log.consumed)
    return log.sha256


def _ident_extra(ident: str, user: str) -> str:
    """A plain line's ``extra``, as ``add_record`` makes it of the record Parser.parse gives."""
    more = {}
    if ident != "-":
        more["ident"] = ident
    if user != "-":
        more["remote_user"] = user
    return _extra_json(None, None, None, more)


def _add_digests(reader: ChunkReader, digests: list[bytes]) -> None:
    """Add the hashes of plain lines (their 8-byte digests) to the chunk's, as line_hash gives them."""
    if digests:
        reader.request_hashes.extend(struct.unpack(f">{len(digests)}q", b"".join(digests)))
        digests.clear()


class _Times:
    """``time_local`` texts to epoch milliseconds, each distinct text parsed once (bounded).

    A log's lines of one second mostly come together, so a few thousand texts
    suffice (100,000 would hold some 15 MB).
    """

    LIMIT = 4096

    def __init__(self):
        self.ms: dict[str, int] = {}
        self.get = self.ms.get

    def parse(self, text: str) -> int | None:
        """The milliseconds of a text not seen yet, or None when it is not a valid time."""
        try:
            ms = parse_time_local(text)
        except TimeError:
            return None
        if len(self.ms) >= self.LIMIT:
            self.ms.clear()
        self.ms[text] = ms
        return ms


def _row_chunks(rows: Iterator[tuple], chunk_rows: int, reader: ChunkReader) -> Iterator[Chunk]:
    """A RowSource's rows as chunks, like _file_chunks."""
    last_line = chunk_bytes = 0
    try:
        for line_no, raw, rec, reason in rows:
            chunk_bytes += len(raw)
            if rec is None:
                reader.add_rejected(line_no, line_hash(raw), raw, reason, False)
            else:
                reader.add_record(line_no, line_hash(raw), rec, None)
                reader.raw_lines.append(raw)
            last_line = line_no
            if reader.lines >= chunk_rows or chunk_bytes >= CHUNK_BYTES:
                yield reader.take(last_line, last_line)
                reader.resume()
                chunk_bytes = 0
    except DamagedInput:
        yield reader.take(last_line, last_line)
        raise
    yield reader.take(last_line, last_line)


def _mark_interrupted(conn, batch_id: int) -> None:
    """Ctrl-C: the committed chunks stay, and the same command resumes (files) or re-runs the batch."""
    conn.execute("update import_batches set status = 'interrupted', pid = null where id = ?", [batch_id])


def _close_batch(
    db, batch_id: int, result: FileResult, sha256: str | None, finish, memo: line_filter.Memo | None = None,
    head: derived.Head | None = None,
) -> None:
    """Mark a batch finished and run ``finish(result, head)`` in one transaction
    (``memo``: its writer's copy of the line filter; ``head``: what was done ahead for it).

    Apart, a kill between the two would leave a finished batch whose requests the
    scope, ip_info and the aggregates never saw, and a re-run would find nothing
    left to do. Together, the batch stays 'running' and a re-run resumes it.
    """
    conn = db.conn
    with write_transaction(db):
        conn.execute(
            """update import_batches set status = ?, message = ?, finished_at = ?, sha256 = ?, pid = null
            where id = ?""",
            [result.status, result.message, utcnow(), sha256, batch_id],
        )
        # A finished batch never resumes: its line counts are settled, its readers'
        # watermarks done with, and the indexes it deferred are built before the
        # scope and the aggregates read them.
        line_counts.finish_batch(conn, batch_id, memo)
        conn.execute("delete from dictionary_watermarks where batch_id = ?", [batch_id])
        indexes.build(conn, batch_id)
        if finish:
            finish(result, head)


def _after_batch(
    db: sqlite_utils.Database, result: FileResult, first_ip_id: int, head: derived.Head | None = None
) -> None:
    """Bring ip_info, the scope and the aggregates up to date after one batch.

    ``first_ip_id`` is the first ``ips`` id this run could add; a resumed batch also
    added addresses in its earlier, interrupted runs, so it looks at every address.
    """
    derived.after_batch(db, result.batch_id, None if result.resumed_from else first_ip_id - 1, head)


def import_rows(
    db: sqlite_utils.Database,
    source: RowSource,
    batch_name: str | None = None,
    command: str | None = None,
    on_progress: Callable[[FileResult, int], None] | None = None,
    proxies=None,
) -> FileResult:
    """Import a RowSource (rows already parsed, e.g. from ClickHouse) as one batch.

    ``proxies`` (a proxies.TrustedProxies) finds the client behind a trusted peer.

    Returns:
        the FileResult; 'incomplete' when the source failed mid-stream.
    """
    first_ip_id = db.execute("select coalesce(max(id), 0) + 1 from ips").fetchone()[0]
    return import_file(
        db, source, batch_name, command, on_progress,
        finish=lambda result, head: _after_batch(db, result, first_ip_id, head), proxies=proxies,
    )


def import_logs(
    db: sqlite_utils.Database,
    paths: Iterable[str],
    fmt: str = "auto",
    batch_name: str | None = None,
    command: str | None = None,
    on_progress: Callable[[FileResult, int], None] | None = None,
    on_start: Callable[[PreparedInput], None] | None = None,
    proxies=None,
) -> list[FileResult]:
    """Import log files, each as one batch; every input is checked before any is stored.

    ``proxies`` (a proxies.TrustedProxies) finds the client behind a trusted peer.

    Raises:
        ForensicsError: an input is not importable (nothing is stored then).
    """
    prepared: list[PreparedInput] = []
    try:
        for path in paths:
            prepared.append(prepare(path, fmt))
    except BaseException:
        for p in prepared:
            p.input.close()
        raise
    results = []
    for index, p in enumerate(prepared):
        first_ip_id = db.execute("select coalesce(max(id), 0) + 1 from ips").fetchone()[0]
        if on_start:
            on_start(p)
        try:
            result = import_file(
                db, p, batch_name, command, on_progress,
                finish=lambda result, head: _after_batch(db, result, first_ip_id, head), proxies=proxies,
            )
        except BaseException:
            for rest in prepared[index + 1 :]:
                rest.input.close()
            raise
        results.append(result)
    return results
