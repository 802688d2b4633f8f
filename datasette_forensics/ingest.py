"""The log import pipeline: read, parse, account for every line, store.

Each file is one import batch. Lines are processed in chunks; each chunk is one
transaction that stores its requests, its rejected lines, the duplicate-line
counters and the batch's running counts together, so a batch is never
half-counted: after Ctrl-C or a kill, the batch holds exactly the chunks that
committed, and running the same command again resumes after its last line.
"""

from __future__ import annotations

import hashlib
import json
import operator
import os
import sqlite3
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import sqlite_utils

from . import importers
from .dictionaries import Dictionary
from .enrich import classify_ip, classify_user_agent
from .errors import ForensicsError
from .timeparse import utcnow
from .readers import DamagedInput, LogInput, looks_binary, open_input, strip_line_ending

# Lines per transaction: large chunks write each touched index page once per
# 100,000 lines rather than once per 20,000 (the requests_sig and uris indexes
# are touched all over).
# FORENSICS_CHUNK_LINES overrides it (the crash-safety tests commit every 5,000 lines).
CHUNK_LINES = int(os.environ.get("FORENSICS_CHUNK_LINES") or 100_000)
DETECT_LINES = 20


# The third field of a rejected line's chunk item (see BatchWriter.store).
REJECTED = object()
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


class BatchWriter:
    """Stores chunks of classified lines for one batch, one transaction each."""

    def __init__(self, conn: sqlite3.Connection, batch_id: int):
        self.conn = conn
        self.batch_id = batch_id
        self.paths = Dictionary(conn, "paths", ["path"])
        self.uris = Dictionary(
            conn, "uris", ["uri"], enrich=lambda uri: (self.paths.id(uri.split("?", 1)[0]),),
            enrich_columns=["path_id"],
        )
        self.ips = Dictionary(
            conn, "ips", ["ip"], enrich=_ip_columns, enrich_columns=["version", "prefix", "prefix16"]
        )
        self.uas = Dictionary(
            conn, "user_agents", ["ua"], enrich=_ua_columns,
            enrich_columns=["family", "major", "os", "device", "kind"],
        )
        self.referers = Dictionary(conn, "referers", ["referer"])
        self.signatures = Dictionary(conn, "signatures", ["ip_id", "ua_id"])
        self.dictionaries = [self.paths, self.uris, self.ips, self.uas, self.referers, self.signatures]

    def write(self, chunk: list[tuple], last_line: int, result: FileResult) -> None:
        """Store a chunk: (line_no, raw, record, reason, bad_utf8) per counted line."""
        items = []
        for line_no, raw, rec, reason, bad in chunk:
            if rec is None:
                items.append((line_no, line_hash(raw), REJECTED, raw, reason, bad))
                continue
            ts, ip, ua, uri, method, status, size, referer, token_id, org_id, extra = _record_fields(rec)
            items.append((
                line_no, line_hash(raw), ts, (ip, ua), uri, method, status, size, referer,
                token_id, org_id, extra, raw if bad else None,
            ))  # fmt: skip
        self.store(items, last_line, result)

    def store(self, items: list[tuple], last_line: int, result: FileResult) -> None:
        """Store a chunk of counted lines in one transaction.

        Args:
            items: one per counted line, in line order. A parsed line is (line_no,
                line_hash, ts, sig, uri, method, status, bytes, referer, token_id,
                org_id, extra, raw): sig an id or the pair (ip, ua), uri and referer
                an id or the text (ids where the caches knew them when the line was
                read), raw the bytes when they are not valid UTF-8, else None. A
                rejected line is (line_no, line_hash, REJECTED, raw, reason, bad_utf8).
            last_line: the number of the chunk's last counted line.
            result: the batch's running counts, updated once the chunk committed.
        """
        conn = self.conn
        batch_id = self.batch_id
        conn.execute("begin immediate")
        try:
            for d in self.dictionaries:
                d.begin_chunk()
            keep, duplicates = self._deduplicate(items)
            requests, rejected, raw_rows = [], [], []
            add = requests.append
            # One dict probe per value already seen; ids start at 1, so `or` means a miss.
            ip_get, ip_miss = self.ips.cache.get, self.ips.miss
            ua_get, ua_miss = self.uas.cache.get, self.uas.miss
            sig_get, sig_miss = self.signatures.cache.get, self.signatures.miss
            uri_get, uri_miss = self.uris.cache.get, self.uris.miss
            ref_get, ref_miss = self.referers.cache.get, self.referers.miss
            for item in keep:
                if item[2] is REJECTED:
                    line_no, _, _, raw, reason, bad = item
                    rejected.append(
                        (batch_id, line_no, raw.decode("utf-8", "backslashreplace"),
                         raw if bad else None, reason)
                    )
                    continue
                line_no, _, ts, sig, uri, method, status, size, referer, token_id, org_id, extra, raw = item
                # New values get their ids in line order, and within a line in the
                # order ip, user agent, signature, uri, referer.
                if sig.__class__ is not int:
                    ip, ua = sig
                    sig = (ip_get(ip) or ip_miss(ip), ua_get(ua) or ua_miss(ua))
                    sig = sig_get(sig) or sig_miss(sig)
                if uri.__class__ is not int:
                    uri = uri_get(uri) or uri_miss(uri)
                if referer is not None and referer.__class__ is not int:
                    referer = ref_get(referer) or ref_miss(referer)
                add((batch_id, line_no, ts, sig, uri, method, status, size, referer, token_id, org_id, extra))
                if raw is not None:
                    raw_rows.append((batch_id, line_no, raw))
            # Dictionary rows first: paths before uris, ips/uas before signatures.
            for d in self.dictionaries:
                d.flush()
            conn.executemany(
                "insert into requests (batch_id, line_no, ts, sig_id, uri_id, method, status,"
                " bytes, referer_id, token_id, org_id, extra)"
                " values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                requests,
            )
            if rejected:
                conn.executemany(
                    "insert into rejected_lines (batch_id, line_no, raw, raw_bytes, reason)"
                    " values (?, ?, ?, ?, ?)",
                    rejected,
                )
            if raw_rows:
                conn.executemany("insert into raw_bytes values (?, ?, ?)", raw_rows)
            imported = len(requests)
            n_rejected = len(rejected)
            conn.execute(
                """update import_batches set lines_read = lines_read + ?,
                lines_imported = lines_imported + ?, lines_rejected = lines_rejected + ?,
                lines_duplicate = lines_duplicate + ?, last_line = ? where id = ?""",
                [len(items), imported, n_rejected, duplicates, last_line, batch_id],
            )
            conn.execute("commit")
        except BaseException:
            if conn.in_transaction:  # Ctrl-C can land right after the commit
                conn.execute("rollback")
            for d in self.dictionaries:
                d.forget_pending()
            raise
        result.lines_read += len(items)
        result.imported += imported
        result.rejected += n_rejected
        result.duplicates += duplicates

    def release(self) -> None:
        """Free the dictionaries' caches once the batch's last chunk is stored."""
        for d in self.dictionaries:
            d.release()

    def _deduplicate(self, items: list[tuple]) -> tuple[list[tuple], int]:
        """Drop the lines the database already holds enough copies of (MODEL §1.1).

        The k-th copy of a line in this batch is a duplicate when the database
        already holds k or more copies of it (imported or rejected, by any batch):
        so a line ends up stored as many times as the batch with most copies of it
        holds, whatever the order of the batches.

        line_counts keeps, per line, the copies stored (n) and the copies seen by
        the batch that last touched it. When another batch touches a line while
        the batch that had it is unfinished (interrupted, or running in another
        process), that batch's count moves to line_counts_suspended, and comes back
        when it resumes.
        """
        conn = self.conn
        hashes = [item[1] for item in items]
        prior = conn.execute(
            "select exists(select 1 from import_batches where id != ? and lines_read > 0)",
            [self.batch_id],
        ).fetchone()[0]
        if not prior:
            # Nothing from earlier batches: every line is new; counts just add up.
            batch_id = self.batch_id
            conn.executemany(
                """insert into line_counts (h, n, batch_id, base, seen) values (?1, ?2, ?3, 0, ?2)
                on conflict(h) do update set n = n + excluded.n, seen = seen + excluded.seen""",
                [(h, c, batch_id) for h, c in Counter(hashes).items()],
            )
            return items, 0
        unfinished = {
            row[0]
            for row in conn.execute(
                "select id from import_batches where status in ('running', 'interrupted') and id != ?",
                [self.batch_id],
            )
        }
        suspended_here = conn.execute(
            "select exists(select 1 from line_counts_suspended where batch_id = ?)", [self.batch_id]
        ).fetchone()[0]
        state: dict[int, list[int]] = {}  # h -> [copies stored, copies this batch has seen]
        suspend, resumed = [], []
        distinct = list(dict.fromkeys(hashes))
        for start in range(0, len(distinct), 5000):
            part = json.dumps(distinct[start : start + 5000])
            for h, n, batch_id, seen in conn.execute(
                "select h, n, batch_id, seen from line_counts where h in (select value from json_each(?))",
                [part],
            ):
                if batch_id == self.batch_id:
                    state[h] = [n, seen]
                else:
                    state[h] = [n, 0]
                    if batch_id in unfinished:
                        suspend.append((h, batch_id, seen))
            if suspended_here:
                for h, seen in conn.execute(
                    """select h, seen from line_counts_suspended
                    where batch_id = ? and h in (select value from json_each(?))""",
                    [self.batch_id, part],
                ):
                    if h in state:
                        state[h][1] = seen
                        resumed.append((self.batch_id, h))
        keep, duplicates = [], 0
        for item, h in zip(items, hashes):
            s = state.get(h)
            if s is None:
                s = state[h] = [0, 0]
            s[1] += 1
            if s[1] > s[0]:
                s[0] = s[1]
                keep.append(item)
            else:
                duplicates += 1
        if suspend:
            conn.executemany(
                """insert into line_counts_suspended (h, batch_id, seen) values (?, ?, ?)
                on conflict(batch_id, h) do update set seen = excluded.seen""",
                suspend,
            )
        if resumed:
            conn.executemany("delete from line_counts_suspended where batch_id = ? and h = ?", resumed)
        conn.executemany(
            """insert into line_counts (h, n, batch_id, base, seen) values (?, ?, ?, 0, ?)
            on conflict(h) do update set n = excluded.n, batch_id = excluded.batch_id,
            base = 0, seen = excluded.seen""",
            [(h, s[0], self.batch_id, s[1]) for h, s in state.items()],
        )
        return keep, duplicates


def _text_or_none(value) -> str | None:
    return None if value is None or value == "" else str(value)


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


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid != os.getpid()


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
            if _pid_alive(pid):
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
) -> FileResult:
    """Import one prepared input as one batch.

    ``finish`` (bringing the derived tables up to date) runs in the transaction that
    marks the batch finished: see :func:`_close_batch`.

    Returns:
        the FileResult; its status is 'complete', or 'incomplete' for a damaged
        compressed file (its message says so).

    Raises:
        KeyboardInterrupt: after marking the batch interrupted (committed chunks stay).
    """
    if isinstance(prepared, RowSource):
        return _import_rows(db, prepared, batch_name, command, on_progress, finish)
    conn = db.conn
    batch_id, skip_until, result = _start_batch(conn, prepared, batch_name, command)
    writer = BatchWriter(conn, batch_id)
    parse = prepared.format.Parser().parse
    parse_error = importers.ParseError
    record_fields, get_fields, methods = _record_fields, _RECORD_FIELDS, _METHODS
    blake2b, from_bytes = hashlib.blake2b, int.from_bytes
    # Values the caches know become ids right away: a waiting chunk holds no copies of them.
    ip_get, ua_get = writer.ips.cache.get, writer.uas.cache.get
    sig_get, uri_get, ref_get = writer.signatures.cache.get, writer.uris.cache.get, writer.referers.cache.get
    items: list[tuple] = []
    add = items.append
    line_no = 0
    last_line = skip_until
    log = prepared.input
    try:
        try:
            # The hot loop: a few million passes, so no per-line helper calls but the
            # parser's. line_hash and strip_line_ending are inlined (blocks() strips).
            for block in log.blocks():
                for raw in block:
                    line_no += 1
                    if not raw or raw.isspace():
                        continue
                    try:
                        text = raw.decode()
                        bad = None
                    except UnicodeDecodeError:
                        text = raw.decode("utf-8", "backslashreplace")
                        bad = raw
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
                    h = from_bytes(blake2b(raw, digest_size=8).digest(), "big", signed=True)
                    last_line = line_no
                    if rec is None:
                        add((line_no, h, REJECTED, raw, reason, bad is not None))
                    else:
                        try:
                            (
                                ts, ip, ua, uri, method, status, size, referer,
                                token_id, org_id, host, xff, auth_type, more,
                            ) = get_fields(rec)  # fmt: skip
                        except KeyError:
                            ts, ip, ua, uri, method, status, size, referer, token_id, org_id, extra = (
                                record_fields(rec)
                            )
                        else:  # record_fields inlined
                            if ua is None:
                                ua = ""
                            if host is None and xff is None and auth_type is None and not more:
                                extra = None
                            else:
                                extra = _extra_json(host, xff, auth_type, more)
                            if token_id is not None or org_id is not None:
                                token_id, org_id = _text_or_none(token_id), _text_or_none(org_id)
                        ip_id, ua_id = ip_get(ip), ua_get(ua)
                        sig = ip_id and ua_id and sig_get((ip_id, ua_id)) or (ip, ua)
                        add((
                            line_no, h, ts, sig, uri_get(uri) or uri, methods.get(method, method),
                            status, size, referer if referer is None else ref_get(referer) or referer,
                            token_id, org_id, extra, bad,
                        ))  # fmt: skip
                    if len(items) >= CHUNK_LINES:
                        writer.store(items, last_line, result)
                        items = []
                        add = items.append
                        if on_progress:
                            on_progress(result, log.consumed)
            writer.store(items, last_line, result)
        except DamagedInput as damage:
            writer.store(items, last_line, result)
            result.status = "incomplete"
            result.message = (
                f"{prepared.display} is damaged after line {damage.last_complete_line:,}: "
                f"the complete lines before the damage were imported and the batch is marked incomplete."
            )
        else:
            result.status = "complete"
    except KeyboardInterrupt:
        _mark_interrupted(conn, batch_id)
        raise
    finally:
        log.close()
    _close_batch(db, writer, result, log.sha256 if result.status == "complete" else None, finish)
    if on_progress:
        on_progress(result, log.consumed)
    return result


def _mark_interrupted(conn, batch_id: int) -> None:
    """Ctrl-C: the committed chunks stay, and the same command resumes (files) or re-runs the batch."""
    conn.execute("update import_batches set status = 'interrupted', pid = null where id = ?", [batch_id])


def _close_batch(db, writer: BatchWriter, result: FileResult, sha256: str | None, finish) -> None:
    """Mark a batch finished and run ``finish`` in one transaction.

    Apart, a kill between the two would leave a finished batch whose requests the
    scope, ip_info and the aggregates never saw, and a re-run would find nothing
    left to do. Together, the batch stays 'running' and a re-run resumes it.
    """
    writer.release()  # the derived tables are rebuilt next: the caches need not stay in memory
    batch_id = writer.batch_id
    conn = db.conn
    conn.execute("begin immediate")
    try:
        conn.execute(
            """update import_batches set status = ?, message = ?, finished_at = ?, sha256 = ?, pid = null
            where id = ?""",
            [result.status, result.message, utcnow(), sha256, batch_id],
        )
        # A finished batch never resumes: its suspended line counts are done with.
        conn.execute("delete from line_counts_suspended where batch_id = ?", [batch_id])
        if finish:
            finish(result)
        conn.execute("commit")
    except BaseException:
        if conn.in_transaction:
            conn.execute("rollback")
        raise


def _import_rows(
    db: sqlite_utils.Database,
    source: RowSource,
    batch_name: str | None,
    command: str | None,
    on_progress: Callable[[FileResult, int], None] | None,
    finish: Callable[[FileResult], None] | None = None,
) -> FileResult:
    """import_file for a RowSource: the same chunks, accounting and batch states.

    A re-run starts a new batch (duplicates are skipped) rather than resuming:
    a query's rows need not come back in the same order.
    """
    conn = db.conn
    cursor = conn.execute(
        """insert into import_batches (name, source, format, started_at, status, pid, command)
        values (?, ?, ?, ?, 'running', ?, ?)""",
        [batch_name, source.source, source.format, utcnow(), os.getpid(), command],
    )
    batch_id = cursor.lastrowid
    result = FileResult(source.display, batch_id, source.format)
    writer = BatchWriter(conn, batch_id)
    chunk: list[tuple] = []
    chunk_rows = min(CHUNK_LINES, source.chunk_rows or CHUNK_LINES)
    last_line = 0
    try:
        try:
            for line_no, raw, rec, reason in source.rows:
                chunk.append((line_no, raw, rec, reason, False))
                last_line = line_no
                if len(chunk) >= chunk_rows:
                    writer.write(chunk, last_line, result)
                    chunk = []
                    if on_progress:
                        on_progress(result, last_line)
            writer.write(chunk, last_line, result)
        except DamagedInput as damage:
            writer.write(chunk, last_line, result)
            result.status = "incomplete"
            result.message = (
                f"{str(damage)[:1].upper()}{str(damage)[1:]}: the rows before it were imported "
                "and the batch is marked incomplete."
            )
        else:
            result.status = "complete"
    except KeyboardInterrupt:
        _mark_interrupted(conn, batch_id)
        raise
    finally:
        source.close()
    _close_batch(db, writer, result, None, finish)
    if on_progress:
        on_progress(result, last_line)
    return result


def _after_batch(db: sqlite_utils.Database, result: FileResult, first_ip_id: int) -> None:
    """Bring ip_info, the scope and the aggregates up to date after one batch.

    ``first_ip_id`` is the first ``ips`` id this run could add; a resumed batch also
    added addresses in its earlier, interrupted runs, so it looks at every address.
    """
    from . import aggregates, ipinfo, scope

    batch_id = result.batch_id
    ipinfo.apply_ip_info(db, min_ip_id=None if result.resumed_from else first_ip_id - 1)
    scope.after_batch(db, batch_id)
    aggregates.refresh_batch(db, batch_id)


def import_rows(
    db: sqlite_utils.Database,
    source: RowSource,
    batch_name: str | None = None,
    command: str | None = None,
    on_progress: Callable[[FileResult, int], None] | None = None,
) -> FileResult:
    """Import a RowSource (rows already parsed, e.g. from ClickHouse) as one batch.

    Returns:
        the FileResult; 'incomplete' when the source failed mid-stream.
    """
    first_ip_id = db.execute("select coalesce(max(id), 0) + 1 from ips").fetchone()[0]
    return import_file(
        db, source, batch_name, command, on_progress,
        finish=lambda result: _after_batch(db, result, first_ip_id),
    )


def import_logs(
    db: sqlite_utils.Database,
    paths: Iterable[str],
    fmt: str = "auto",
    batch_name: str | None = None,
    command: str | None = None,
    on_progress: Callable[[FileResult, int], None] | None = None,
    on_start: Callable[[PreparedInput], None] | None = None,
) -> list[FileResult]:
    """Import log files, each as one batch; every input is checked before any is stored.

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
                finish=lambda result: _after_batch(db, result, first_ip_id),
            )
        except BaseException:
            for rest in prepared[index + 1 :]:
                rest.input.close()
            raise
        results.append(result)
    return results
