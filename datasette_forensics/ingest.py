"""The log import pipeline: read, parse, account for every line, store.

Each file is one import batch. Lines are processed in chunks; each chunk is one
transaction that stores its requests, its rejected lines, the duplicate-line
counters and the batch's running counts together, so a batch is never
half-counted: after Ctrl-C or a kill, the batch holds exactly the chunks that
committed, and running the same command again resumes after its last line.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import sqlite_utils

from . import importers
from .dictionaries import Dictionary
from .enrich import classify_ip, classify_user_agent
from .errors import ForensicsError
from .readers import DamagedInput, LogInput, looks_binary, open_input, strip_line_ending

CHUNK_LINES = 20_000
DETECT_LINES = 20


def utcnow() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
        conn = self.conn
        conn.execute("begin immediate")
        try:
            for d in self.dictionaries:
                d.begin_chunk()
            keep, duplicates = self._deduplicate(chunk)
            requests, rejected, raw_rows = [], [], []
            for line_no, raw, rec, reason, bad in keep:
                if rec is None:
                    rejected.append(
                        (self.batch_id, line_no, raw.decode("utf-8", "backslashreplace"),
                         raw if bad else None, reason)
                    )
                    continue
                requests.append(self._request_row(line_no, rec))
                if bad:
                    raw_rows.append((self.batch_id, line_no, raw))
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
                [len(chunk), imported, n_rejected, duplicates, last_line, self.batch_id],
            )
            conn.execute("commit")
        except BaseException:
            if conn.in_transaction:  # Ctrl-C can land right after the commit
                conn.execute("rollback")
            for d in self.dictionaries:
                d.forget_pending()
            raise
        result.lines_read += len(chunk)
        result.imported += imported
        result.rejected += n_rejected
        result.duplicates += duplicates

    def _request_row(self, line_no: int, rec: dict) -> tuple:
        ip_id = self.ips.id(rec["ip"])
        ua_id = self.uas.id(rec.get("ua") or "")
        referer = rec.get("referer")
        extra = {k: rec[k] for k in ("host", "xff", "auth_type") if rec.get(k) is not None}
        if rec.get("extra"):
            extra.update(rec["extra"])
        return (
            self.batch_id,
            line_no,
            rec["ts"],
            self.signatures.id((ip_id, ua_id)),
            self.uris.id(rec["uri"]),
            rec.get("method"),
            rec.get("status"),
            rec.get("bytes"),
            self.referers.id(referer) if referer is not None else None,
            _text_or_none(rec.get("token_id")),
            _text_or_none(rec.get("org_id")),
            json.dumps(extra, ensure_ascii=False) if extra else None,
        )

    def _deduplicate(self, chunk: list[tuple]) -> tuple[list[tuple], int]:
        """Drop the lines the database already holds enough copies of (MODEL §1.1).

        The k-th copy of a line in this batch is a duplicate when earlier batches
        hold k or more copies, imported or rejected.
        """
        conn = self.conn
        hashes = [line_hash(item[1]) for item in chunk]
        prior = conn.execute(
            "select exists(select 1 from import_batches where id != ? and lines_read > 0)",
            [self.batch_id],
        ).fetchone()[0]
        if not prior:
            # Nothing from earlier batches: every line is new; counts just add up.
            counts: dict[int, int] = {}
            for h in hashes:
                counts[h] = counts.get(h, 0) + 1
            conn.executemany(
                """insert into line_counts (h, n, batch_id, base, seen) values (?, ?, ?, 0, ?)
                on conflict(h) do update set n = n + excluded.n, seen = seen + excluded.seen""",
                [(h, c, self.batch_id, c) for h, c in counts.items()],
            )
            return chunk, 0
        state: dict[int, list[int]] = {}
        distinct = list(dict.fromkeys(hashes))
        for start in range(0, len(distinct), 5000):
            part = distinct[start : start + 5000]
            for h, n, batch_id, base, seen in conn.execute(
                "select h, n, batch_id, base, seen from line_counts"
                " where h in (select value from json_each(?))",
                [json.dumps(part)],
            ):
                state[h] = [n, base, seen] if batch_id == self.batch_id else [n, n, 0]
        keep, duplicates = [], 0
        for item, h in zip(chunk, hashes):
            s = state.get(h)
            if s is None:
                s = state[h] = [0, 0, 0]
            s[2] += 1
            if s[2] <= s[1]:
                duplicates += 1
            else:
                s[0] += 1
                keep.append(item)
        conn.executemany(
            """insert into line_counts (h, n, batch_id, base, seen) values (?, ?, ?, ?, ?)
            on conflict(h) do update set n = excluded.n, batch_id = excluded.batch_id,
            base = excluded.base, seen = excluded.seen""",
            [(h, s[0], self.batch_id, s[1], s[2]) for h, s in state.items()],
        )
        return keep, duplicates


def _text_or_none(value) -> str | None:
    return None if value is None or value == "" else str(value)


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
    prepared: PreparedInput,
    batch_name: str | None = None,
    command: str | None = None,
    on_progress: Callable[[FileResult, int], None] | None = None,
) -> FileResult:
    """Import one prepared input as one batch.

    Returns:
        the FileResult; its status is 'complete', or 'incomplete' for a damaged
        compressed file (its message says so).

    Raises:
        KeyboardInterrupt: after marking the batch interrupted (committed chunks stay).
    """
    conn = db.conn
    batch_id, skip_until, result = _start_batch(conn, prepared, batch_name, command)
    writer = BatchWriter(conn, batch_id)
    parser = prepared.format.Parser()
    parse = parser.parse
    chunk: list[tuple] = []
    last_line = skip_until
    log = prepared.input
    try:
        try:
            for line_no, raw in log.lines():
                raw = strip_line_ending(raw)
                if not raw.strip():
                    continue
                try:
                    text = raw.decode("utf-8")
                    bad = False
                except UnicodeDecodeError:
                    text = raw.decode("utf-8", "backslashreplace")
                    bad = True
                try:
                    rec = parse(text)
                    reason = None
                    if rec is None:
                        continue
                except importers.ParseError as exc:
                    rec, reason = None, str(exc) or "unparseable line"
                except Exception as exc:  # a parser must never stop an import
                    rec, reason = None, f"unparseable line ({type(exc).__name__})"
                if line_no <= skip_until:
                    continue
                chunk.append((line_no, raw, rec, reason, bad))
                last_line = line_no
                if len(chunk) >= CHUNK_LINES:
                    writer.write(chunk, last_line, result)
                    chunk = []
                    if on_progress:
                        on_progress(result, log.consumed)
            writer.write(chunk, last_line, result)
        except DamagedInput as damage:
            writer.write(chunk, last_line, result)
            result.status = "incomplete"
            result.message = (
                f"{prepared.display} is damaged after line {damage.last_complete_line:,}: "
                f"the complete lines before the damage were imported and the batch is marked incomplete."
            )
        else:
            result.status = "complete"
    except KeyboardInterrupt:
        conn.execute(
            "update import_batches set status = 'interrupted', pid = null where id = ?", [batch_id]
        )
        raise
    finally:
        log.close()
    conn.execute(
        """update import_batches set status = ?, message = ?, finished_at = ?, sha256 = ?, pid = null
        where id = ?""",
        [result.status, result.message, utcnow(), log.sha256 if result.status == "complete" else None, batch_id],
    )
    if on_progress:
        on_progress(result, log.consumed)
    return result


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
    from . import aggregates, ipinfo, scope

    results = []
    for index, p in enumerate(prepared):
        first_ip_id = db.execute("select coalesce(max(id), 0) + 1 from ips").fetchone()[0]
        if on_start:
            on_start(p)
        try:
            result = import_file(db, p, batch_name, command, on_progress)
        except BaseException:
            for rest in prepared[index + 1 :]:
                rest.input.close()
            raise
        results.append(result)
        ipinfo.apply_ip_info(db, min_ip_id=first_ip_id - 1)
        scope.after_batch(db, result.batch_id)
        aggregates.refresh_batch(db, result.batch_id)
    return results
