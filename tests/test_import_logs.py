"""import-logs: accounting, duplicates, inputs, enrichment, bad input, interruption, progress.

Each test builds its own logs and database in a temporary directory and asserts on
what the database holds and what the command prints.
"""

from __future__ import annotations

import bz2
import datetime
import gzip
import json
import os
import pty
import random
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from datasette_forensics import ingest, schema
from datasette_forensics.cli import cli
from datasette_forensics.importers import FORMATS

CURL = "curl/7.68.0"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/84.0.4147.89 Safari/537.36"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
BAD = "this line is not an access log line"


@pytest.fixture(autouse=True, params=["never", "always"], ids=["here", "child"])
def parse_process(request, monkeypatch):
    """Every test twice: reading in this process, and in a child process (pipeline.py)."""
    monkeypatch.setenv("FORENSICS_PARSE_PROCESS", request.param)
    return request.param


def line(i: int, ip: str = "192.0.2.1", ua: str = CURL, when: str = "01/Jul/2020:02:00:00 +0000") -> str:
    """A combined-format line whose URI ends in its number i."""
    return f'{ip} - - [{when}] "GET /api/0/items/{i}/ HTTP/1.1" 200 {i} "-" "{ua}"'


def write(path: Path, lines: list[str], ending: str = "\n") -> Path:
    path.write_bytes("".join(item + ending for item in lines).encode())
    return path


def invoke(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def rows(db_path: Path, sql: str, params=()) -> list[tuple]:
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def scalar(db_path: Path, sql: str, params=()):
    return rows(db_path, sql, params)[0][0]


def batches(db_path: Path) -> list[dict]:
    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("select * from import_batches order by id")]
    finally:
        conn.close()


def item_numbers(db_path: Path) -> list[int]:
    """The number i of every stored request (from its URI), sorted, with repeats."""
    uris = rows(db_path, "select u.uri from requests r join uris u on u.id = r.uri_id")
    return sorted(int(uri.rstrip("/").rsplit("/", 1)[1]) for (uri,) in uris)


def assert_accounted(db_path: Path) -> None:
    """Every batch adds up, and its counts match the rows actually stored."""
    for b in batches(db_path):
        assert b["lines_read"] == b["lines_imported"] + b["lines_rejected"] + b["lines_duplicate"]
        assert b["lines_imported"] == scalar(
            db_path, "select count(*) from requests where batch_id = ?", [b["id"]]
        )
        assert b["lines_rejected"] == scalar(
            db_path, "select count(*) from rejected_lines where batch_id = ?", [b["id"]]
        )


def assert_cells_exact(db_path: Path) -> int:
    """The hour cells count exactly the requests below their watermark (window_hours_upto):
    what a kill at any moment leaves, and all of them once batches close. Returns the watermark."""
    conn = sqlite3.connect(db_path)
    try:
        (upto,) = conn.execute("select upto from window_hours_upto").fetchone()
        assert conn.execute("select * from window_hours order by hour, sig_id").fetchall() == conn.execute(
            """select ts / 3600000, sig_id, count(*), min(ts), max(ts) from requests where id < ?
            group by 1, 2 order by 1, 2""",
            [upto],
        ).fetchall()
        return upto
    finally:
        conn.close()


def summary(path: Path, read: int, imported: int, rejected: int, duplicates: int) -> str:
    return (
        f"{path}: {read:,} lines read = {imported:,} imported + {rejected:,} rejected"
        f" + {duplicates:,} duplicates"
    )


def import_ok(db_path: Path, *files, input=None) -> str:
    result = invoke("import-logs", db_path, *files, input=input)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    return result.stdout


# --- accounting and duplicates ------------------------------------------------------


def test_accounting_printed_and_stored(tmp_path):
    db = tmp_path / "t.db"
    lines = [line(i) for i in range(10)]
    lines[3:3] = [BAD]
    lines[8:8] = [BAD + " (another)"]
    log = write(tmp_path / "a.log", lines)
    out = import_ok(db, log)
    assert out == summary(log, 12, 10, 2, 0) + "\n"
    (b,) = batches(db)
    assert (b["lines_read"], b["lines_imported"], b["lines_rejected"], b["lines_duplicate"]) == (12, 10, 2, 0)
    assert b["status"] == "complete"
    assert b["source"] == str(log.resolve())
    assert b["format"] == "combined"
    rejected = rows(db, "select line_no, raw, reason from rejected_lines order by line_no")
    assert [(n, raw) for n, raw, _ in rejected] == [(4, BAD), (9, BAD + " (another)")]
    assert all(reason for _, _, reason in rejected)
    assert item_numbers(db) == list(range(10))
    assert_accounted(db)


def test_reimport_adds_nothing(tmp_path):
    db = tmp_path / "t.db"
    log = write(tmp_path / "a.log", [line(i) for i in range(30)] + [BAD])
    import_ok(db, log)
    out = import_ok(db, log)
    assert out == summary(log, 31, 0, 0, 31) + "\n"
    assert scalar(db, "select count(*) from requests") == 30
    assert scalar(db, "select count(*) from rejected_lines") == 1
    assert [b["lines_duplicate"] for b in batches(db)] == [0, 31]
    assert_accounted(db)


def test_overlapping_export_adds_only_new_lines(tmp_path):
    db = tmp_path / "t.db"
    a = write(tmp_path / "a.log", [line(i) for i in range(40)])
    b = write(tmp_path / "b.log", [line(i) for i in range(20, 50)])
    import_ok(db, a)
    out = import_ok(db, b)
    assert out == summary(b, 30, 10, 0, 20) + "\n"
    assert item_numbers(db) == list(range(50))
    assert_accounted(db)


def test_identical_lines_in_one_file_are_separate_requests(tmp_path):
    db = tmp_path / "t.db"
    twice = write(tmp_path / "twice.log", [line(1), line(1), line(2)])
    assert import_ok(db, twice) == summary(twice, 3, 3, 0, 0) + "\n"
    assert item_numbers(db) == [1, 1, 2]
    assert import_ok(db, twice) == summary(twice, 3, 0, 0, 3) + "\n"
    # A third copy in a later file is new: the database held only two.
    thrice = write(tmp_path / "thrice.log", [line(1), line(1), line(1), line(3)])
    assert import_ok(db, thrice) == summary(thrice, 4, 2, 0, 2) + "\n"
    assert item_numbers(db) == [1, 1, 1, 2, 3]
    assert_accounted(db)


def test_rejected_line_seen_again_is_a_duplicate(tmp_path):
    db = tmp_path / "t.db"
    a = write(tmp_path / "a.log", [line(i) for i in range(5)] + [BAD, BAD])
    assert import_ok(db, a) == summary(a, 7, 5, 2, 0) + "\n"
    # Two copies were rejected before: the first two here are duplicates, the third is new.
    b = write(tmp_path / "b.log", [BAD, line(7), line(8), BAD, BAD, line(9), line(10)])
    assert import_ok(db, b) == summary(b, 7, 4, 1, 2) + "\n"
    assert scalar(db, "select count(*) from rejected_lines where raw = ?", [BAD]) == 3
    assert_accounted(db)


def test_crlf_and_lf_files_hold_the_same_lines(tmp_path):
    db = tmp_path / "t.db"
    lines = [line(i, ua=CHROME) for i in range(8)] + [BAD]
    crlf = write(tmp_path / "crlf.log", lines, ending="\r\n")
    lf = write(tmp_path / "lf.log", lines)
    assert import_ok(db, crlf) == summary(crlf, 9, 8, 1, 0) + "\n"
    assert import_ok(db, lf) == summary(lf, 9, 0, 0, 9) + "\n"
    # The line ending is not part of any stored value.
    assert rows(db, "select ua from user_agents") == [(CHROME,)]
    assert rows(db, "select raw from rejected_lines") == [(BAD,)]


def test_blank_lines_are_not_counted(tmp_path):
    db = tmp_path / "t.db"
    log = tmp_path / "blank.log"
    log.write_bytes(
        b"\n" + line(1).encode() + b"\n\n   \n\t\r\n" + line(2).encode() + b"\r\n\n" + BAD.encode() + b"\n\n"
    )
    assert import_ok(db, log) == summary(log, 3, 2, 1, 0) + "\n"
    assert rows(db, "select line_no from requests order by line_no") == [(2,), (6,)]
    assert rows(db, "select line_no from rejected_lines") == [(8,)]


# --- inputs ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gz", "bz2", "stdin", "stdin-gz"])
def test_compressed_and_stdin_inputs(tmp_path, kind):
    db = tmp_path / "t.db"
    text = "".join(item + "\n" for item in [line(i) for i in range(25)] + [BAD]).encode()
    plain = tmp_path / "plain.log"
    plain.write_bytes(text)
    if kind == "gz":
        source = tmp_path / "a.log.gz"
        source.write_bytes(gzip.compress(text))
        out = import_ok(db, source)
    elif kind == "bz2":
        source = tmp_path / "a.log.bz2"
        source.write_bytes(bz2.compress(text))
        out = import_ok(db, source)
    else:
        source = "-"
        out = import_ok(db, "-", input=gzip.compress(text) if kind == "stdin-gz" else text)
    assert out == summary(source, 26, 25, 1, 0) + "\n"
    assert item_numbers(db) == list(range(25))
    assert scalar(db, "select source from import_batches") == (
        "-" if source == "-" else str(source.resolve())
    )
    # The decompressed lines are the same lines as the plain file's.
    assert import_ok(db, plain) == summary(plain, 26, 0, 0, 26) + "\n"


def test_provenance_points_at_the_raw_line(tmp_path):
    db = tmp_path / "t.db"
    lines = []
    for i in range(40):
        lines.append(line(i, ip=f"198.51.100.{i}"))
        if i % 7 == 0:
            lines.append("")
        if i % 11 == 0:
            lines.append(BAD + f" {i}")
    log = write(tmp_path / "a.log", lines)
    import_ok(db, log)
    file_lines = log.read_text().split("\n")
    stored = rows(
        db,
        """select b.source, r.line_no, u.uri, i.ip from requests r
        join import_batches b on b.id = r.batch_id join uris u on u.id = r.uri_id
        join signatures s on s.id = r.sig_id join ips i on i.id = s.ip_id""",
    )
    assert len(stored) == 40
    for source, line_no, uri, ip in stored:
        assert source == str(log.resolve())
        raw = file_lines[line_no - 1]
        assert raw.startswith(ip + " ") and f" {uri} " in raw
    for line_no, raw in rows(db, "select line_no, raw from rejected_lines"):
        assert file_lines[line_no - 1] == raw


def test_raw_lines_and_hour_cells_across_reads_chunks_and_batches(tmp_path, monkeypatch):
    """The raw lines are packed per chunk by the reader (rawlines.pack) and the hour
    cells counted while the store waits and when a batch closes: with reads of 4 KiB,
    chunks of 1,234 lines (not whole blocks), rejected and duplicate lines, and a second
    batch into the same hours, every request's raw line is its file's line, the blocks
    are exactly rawlines.pack's, and window_hours is a direct count of the requests."""
    from datasette_forensics import readers, rawlines

    monkeypatch.setattr(readers, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(ingest, "CHUNK_LINES", 1234)
    db = tmp_path / "t.db"

    def log(name, first, n):
        lines = []
        for i in range(first, first + n):
            when = f"01/Jul/2020:{i * 7 // 1000 % 24:02d}:{i % 60:02d}:{i * 13 % 60:02d} +0000"
            lines.append(line(i, ip=f"198.51.100.{i % 37}", ua=CURL if i % 3 else CHROME, when=when))
            if i % 401 == 0:
                lines.append(BAD + f" {i}")
        return write(tmp_path / name, lines)

    first, second = log("a.log", 0, 5000), log("b.log", 2500, 5000)  # half of b repeats a
    import_ok(db, first)
    import_ok(db, second)
    conn = sqlite3.connect(db)
    by_batch = {}
    for batch_id, path in conn.execute("select id, source from import_batches"):
        by_batch[batch_id] = Path(path).read_bytes().split(b"\n")
    stored = conn.execute("select batch_id, line_no from requests order by id").fetchall()
    assert len(stored) == 7500  # b's first 2,500 lines are a's again: duplicates
    for batch_id, line_no in stored:
        assert rawlines.raw_line(conn, batch_id, line_no) == by_batch[batch_id][line_no - 1]
    cells = conn.execute("select * from window_hours order by hour, sig_id").fetchall()
    assert cells == conn.execute(
        """select ts / 3600000, sig_id, count(*), min(ts), max(ts) from requests
        group by 1, 2 order by 1, 2"""
    ).fetchall()
    assert len(cells) > 100
    assert assert_cells_exact(db) == conn.execute("select max(id) + 1 from requests").fetchone()[0]
    conn.close()


def test_hour_cells_and_checkpoints_are_done_while_the_store_waits(tmp_path, monkeypatch):
    """With a parser slower than the store, the store counts the stored requests into
    the hour cells while it waits for the next chunk (not in the chunks' transactions,
    not only at the close), and the cells end exact; the WAL is copied back beside it,
    by the checkpointer's thread, every CHECKPOINT_CHUNKS chunks."""
    from datasette_forensics import checkpointer, derived, rawlines

    monkeypatch.setenv("FORENSICS_PARSE_PROCESS", "always")
    monkeypatch.setattr(ingest, "CHUNK_LINES", 400)
    monkeypatch.setattr(ingest, "CHECKPOINT_CHUNKS", 2)
    pack = rawlines.pack

    def slow_pack(*args):  # runs in the parse process: the store waits for each chunk
        time.sleep(0.1)
        return pack(*args)

    monkeypatch.setattr(rawlines, "pack", slow_pack)
    db_path = tmp_path / "t.db"
    db = schema.connect(str(db_path))
    seen = []  # per idle call that counted: (cells' requests, requests stored, batch status)
    asked, done = [], []
    while_idle = derived.while_idle
    request, close = checkpointer.Checkpointer.request, checkpointer.Checkpointer.close

    def spy_while_idle(database):
        counted = while_idle(database)
        if counted:
            seen.append(database.execute(
                """select (select sum(requests) from window_hours), (select count(*) from requests),
                (select status from import_batches order by id desc limit 1)"""
            ).fetchone())
        return counted

    def spy_request(self):
        asked.append(db.execute("select lines_read from import_batches order by id desc limit 1").fetchone()[0])
        request(self)

    def spy_close(self):
        close(self)
        done.append((self.checkpoints, self.frames))

    monkeypatch.setattr(derived, "while_idle", spy_while_idle)
    monkeypatch.setattr(checkpointer.Checkpointer, "request", spy_request)
    monkeypatch.setattr(checkpointer.Checkpointer, "close", spy_close)
    lines = [line(i, ip=f"198.51.100.{i % 23}", when=f"01/Jul/2020:{i // 200 % 24:02d}:{i % 60:02d}:00 +0000")
             for i in range(3000)]
    ingest.import_logs(db, [str(write(tmp_path / "a.log", lines))])
    db.conn.close()
    assert len(seen) >= 3, seen
    assert all(cells == stored and status == "running" for cells, stored, status in seen), seen
    assert asked == [800, 1600, 2400, 3000]  # every second chunk (of 400 lines, then 200 and none), once committed
    ((checkpoints, frames),) = done
    assert 1 <= checkpoints <= len(asked) and frames > 0  # requests while one runs may fold into it
    assert assert_cells_exact(db_path) == 3001


def test_invalid_utf8_is_imported_and_the_exact_bytes_kept(tmp_path):
    db = tmp_path / "t.db"
    bad_ua = line(2, ua="Mozilla/5.0 XX cafY").encode().replace(b"XX", b"\xff\xfe").replace(b"cafY", b"caf\xe9")
    bad_reject = b"not a log \xc3\x28 line"
    log = tmp_path / "a.log"
    log.write_bytes(b"\n".join([line(1).encode(), bad_ua, bad_reject, line(3).encode()]) + b"\n")
    assert import_ok(db, log) == summary(log, 4, 3, 1, 0) + "\n"
    (request_line,) = rows(
        db, "select r.line_no from requests r join uris u on u.id = r.uri_id where u.uri like '%/2/'"
    )
    assert rows(db, "select line_no, raw from raw_bytes") == [(request_line[0], bad_ua)]
    assert request_line[0] == 2
    (ua,) = rows(db, "select ua from user_agents where ua like 'Mozilla/5.0 %'")
    assert ua[0] == "Mozilla/5.0 \\xff\\xfe caf\\xe9"
    assert rows(db, "select line_no, raw_bytes, raw from rejected_lines") == [
        (3, bad_reject, "not a log \\xc3( line")
    ]
    # Valid lines carry no raw_bytes copy, and the bad bytes dedupe like any other line.
    assert import_ok(db, log) == summary(log, 4, 0, 0, 4) + "\n"


def test_escaped_quotes(tmp_path):
    db = tmp_path / "t.db"
    log = write(
        tmp_path / "a.log",
        [
            line(1, ua='Foo \\"bar\\" baz'),
            line(2, ua="Foo \\x22bar\\x22 baz"),
            '192.0.2.1 - - [01/Jul/2020:02:00:00 +0000] "GET /api/0/q?x=\\"y\\" HTTP/1.1" 200 5 "-" "ok"',
        ],
    )
    assert import_ok(db, log) == summary(log, 3, 3, 0, 0) + "\n"
    uas = {ua for (ua,) in rows(db, "select ua from user_agents")}
    assert 'Foo "bar" baz' in uas
    assert rows(db, "select uri from uris where uri like '/api/0/q%'") == [('/api/0/q?x="y"',)]


def test_nginx_hex_escaped_quote_is_decoded(tmp_path):
    db = tmp_path / "t.db"
    import_ok(db, write(tmp_path / "a.log", [line(1, ua="Foo \\x22bar\\x22 baz"), line(2)]))
    assert ("Foo \"bar\" baz",) in rows(db, "select ua from user_agents")


def test_ipv6_and_host_names_in_the_client_field(tmp_path):
    db = tmp_path / "t.db"
    clients = {
        "203.0.113.77": (4, "203.0.113.0/24", "203.0.0.0/16"),
        "2001:db8:1234:5678::1": (6, "2001:db8:1234::/48", "2001:db8::/32"),
        "crawl-66-249-66-1.googlebot.com": (None, "crawl-66-249-66-1.googlebot.com", "googlebot.com"),
    }
    lines = [line(i, ip=ip) for i, ip in enumerate(clients)]
    lines.append(line(9, ip="[2001:db8:1234:5678::1]"))  # bracketed IPv6 is the same client
    log = write(tmp_path / "a.log", lines)
    assert import_ok(db, log) == summary(log, 4, 4, 0, 0) + "\n"
    stored = {ip: (v, p, p16) for ip, v, p, p16 in rows(db, "select ip, version, prefix, prefix16 from ips")}
    assert stored == clients
    assert scalar(db, "select count(distinct sig_id) from requests") == 3


def test_half_hour_offsets_are_converted_to_utc(tmp_path):
    db = tmp_path / "t.db"
    offsets = {1: "+0530", 2: "-0930", 3: "+0545", 4: "+0000"}
    log = write(
        tmp_path / "a.log", [line(i, when=f"01/Jul/2020:02:00:00 {tz}") for i, tz in offsets.items()]
    )
    import_ok(db, log)
    got = dict(
        rows(
            db,
            """select cast(rtrim(substr(u.uri, 14), '/') as integer), r.ts from requests r
            join uris u on u.id = r.uri_id""",
        )
    )

    def utc_ms(*args):
        return int(datetime.datetime(*args, tzinfo=datetime.timezone.utc).timestamp() * 1000)

    assert got == {
        1: utc_ms(2020, 6, 30, 20, 30),
        2: utc_ms(2020, 7, 1, 11, 30),
        3: utc_ms(2020, 6, 30, 20, 15),
        4: utc_ms(2020, 7, 1, 2, 0),
    }


def test_user_agent_enrichment(tmp_path):
    db = tmp_path / "t.db"
    agents = [CHROME, "python-requests/2.24.0", GOOGLEBOT, "-", ""]
    log = write(tmp_path / "a.log", [line(i, ua=ua) for i, ua in enumerate(agents)])
    import_ok(db, log)
    stored = {ua: (family, major, kind) for ua, family, major, kind in rows(
        db, "select ua, family, major, kind from user_agents"
    )}
    assert stored == {
        CHROME: ("Chrome", "84", "browser"),
        "python-requests/2.24.0": ("Python Requests", "2", "library"),
        GOOGLEBOT: ("Googlebot", "2", "bot"),
        "": (None, None, "unknown"),  # a missing UA ('-' or empty) is stored as ''
    }


def test_report_json_before_an_incident(tmp_path):
    db = tmp_path / "t.db"
    import_ok(db, write(tmp_path / "a.log", [line(i) for i in range(6)] + [BAD]))
    result = invoke("report", db, "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["incident"] is None
    assert report["funnel"] == {"lines_rejected": 1, "requests": 6, "in_scope": 0, "unexplained": 0, "out_of_scope": None}
    assert report["orgs"] == [] and report["cross_tenant_signatures"] == []


def test_library_import_matches_the_command(tmp_path):
    db_path = tmp_path / "t.db"
    log = write(tmp_path / "a.log", [line(i) for i in range(12)] + [BAD, line(3)])
    db = schema.connect(str(db_path))
    (result,) = ingest.import_logs(db, [str(log)])
    assert (result.status, result.lines_read, result.imported, result.rejected, result.duplicates) == (
        "complete", 14, 13, 1, 0,
    )
    (again,) = ingest.import_logs(db, [str(log)])
    assert (again.imported, again.duplicates) == (0, 14)
    db.conn.close()
    assert_accounted(db_path)


# --- bad input ------------------------------------------------------------------------


def dump(db_path: Path) -> str:
    conn = sqlite3.connect(db_path)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


def assert_one_sentence_error(result) -> str:
    assert result.exit_code not in (0, None)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    message = lines[0]
    assert message.startswith("Error: ")
    assert "Errno" not in message and "Exception" not in message
    return message


@pytest.fixture
def existing_db(tmp_path) -> Path:
    db = tmp_path / "existing.db"
    import_ok(db, write(tmp_path / "first.log", [line(i) for i in range(5)] + [BAD]))
    return db


def random_binary(path: Path) -> Path:
    data = bytearray(random.Random(7).randbytes(8192))
    data[0:2] = b"AB"  # not a compression magic number
    data[100:104] = b"\x00\x00\x00\x00"
    path.write_bytes(bytes(data))
    return path


BAD_INPUTS = {
    "missing": lambda tmp: tmp / "nope.log",
    "directory": lambda tmp: (tmp / "logs").mkdir() or tmp / "logs",
    "binary": lambda tmp: random_binary(tmp / "blob.log"),
    "empty": lambda tmp: write(tmp / "empty.log", []),
    "not a log": lambda tmp: write(tmp / "notes.txt", ["Dear diary,", "today I read some logs."]),
}


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_input_is_refused_and_nothing_changes(tmp_path, existing_db, kind):
    bad = BAD_INPUTS[kind](tmp_path)
    before = dump(existing_db)
    message = assert_one_sentence_error(invoke("import-logs", existing_db, bad))
    assert str(bad) in message
    assert dump(existing_db) == before


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_second_file_bad_stores_nothing_from_the_first(tmp_path, existing_db, kind):
    good = write(tmp_path / "good.log", [line(i) for i in range(100, 120)])
    bad = BAD_INPUTS[kind](tmp_path)
    before = dump(existing_db)
    message = assert_one_sentence_error(invoke("import-logs", existing_db, good, bad))
    assert str(bad) in message
    assert dump(existing_db) == before


def test_unknown_format_names_the_choices(tmp_path, existing_db):
    log = write(tmp_path / "a.log", [line(1)])
    before = dump(existing_db)
    message = assert_one_sentence_error(invoke("import-logs", existing_db, log, "--format", "xyz"))
    assert "xyz" in message
    for name in ["auto", *FORMATS]:
        assert name in message
    assert dump(existing_db) == before
    # Nothing is created for a database that did not exist.
    assert_one_sentence_error(invoke("import-logs", tmp_path / "new.db", log, "--format", "xyz"))
    assert not (tmp_path / "new.db").exists()


def test_a_file_that_is_not_a_database(tmp_path):
    not_db = tmp_path / "notes.db"
    content = b"these are my notes, not a SQLite database\n" * 50
    not_db.write_bytes(content)
    log = write(tmp_path / "a.log", [line(1)])
    message = assert_one_sentence_error(invoke("import-logs", not_db, log))
    assert str(not_db) in message and "SQLite" in message
    assert not_db.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.log", "notes.db"]


def truncated_gz(tmp_path: Path, n: int = 20_000) -> tuple[Path, int]:
    """A gzip log cut in the middle, and how many complete lines precede the cut."""
    rng = random.Random(3)
    text = "".join(
        line(i, ip=f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}") + "\n"
        for i in range(n)
    ).encode()
    data = gzip.compress(text)
    cut = data[: len(data) // 2]
    readable = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(cut)
    assert 0 < readable.count(b"\n") < n
    path = tmp_path / "cut.log.gz"
    path.write_bytes(cut)
    return path, readable.count(b"\n")


def test_truncated_gz_imports_complete_lines_and_is_incomplete(tmp_path, existing_db):
    path, complete = truncated_gz(tmp_path)
    result = invoke("import-logs", existing_db, path)
    message = assert_one_sentence_error(result)
    assert str(path) in message and "incomplete" in message
    assert result.stdout == summary(path, complete, complete, 0, 0) + "\n"
    b = batches(existing_db)[-1]
    assert (b["status"], b["lines_imported"], b["lines_read"]) == ("incomplete", complete, complete)
    assert item_numbers(existing_db) == sorted(list(range(5)) + list(range(complete)))
    assert_accounted(existing_db)


# --- interruption -------------------------------------------------------------------

BIG_LINES = 60_000
# Small transactions, so the first commit comes early and the kill lands mid-import.
SMALL_CHUNKS = dict(os.environ, FORENSICS_CHUNK_LINES="3000")


def forensics_command() -> list[str]:
    script = Path(sys.executable).parent / "datasette-forensics"
    if not script.exists():
        found = shutil.which("datasette-forensics")
        assert found, "datasette-forensics is not installed (pip install -e .)"
        script = Path(found)
    return [str(script)]


@pytest.fixture(scope="module")
def big_log(tmp_path_factory) -> tuple[Path, int]:
    """A 60k-line combined log with a rejected line every 9,973 lines."""
    path = tmp_path_factory.mktemp("big") / "big.log"
    rejected = 0
    with open(path, "w") as f:
        for i in range(BIG_LINES):
            if i % 9973 == 500:
                f.write(f"{BAD} {i}\n")
                rejected += 1
            else:
                f.write(
                    f'10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255} - - [01/Jul/2020:02:{i // 60 % 60:02d}:'
                    f'{i % 60:02d} +0000] "GET /api/0/organizations/o{i % 500}/issues/{i}/ HTTP/1.1"'
                    f' 200 {i} "-" "python-requests/2.{i % 30}.0"\n'
                )
    return path, rejected


def wait_for_first_chunk(db: Path, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                row = conn.execute("select max(lines_read) from import_batches").fetchone()
            finally:
                conn.close()
            if row and row[0]:
                return
        except sqlite3.OperationalError:
            pass  # not created yet
        time.sleep(0.02)
    process.kill()
    pytest.fail("the first chunk never committed")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_import_resumes(tmp_path, big_log, sig):
    log, rejected = big_log
    db = tmp_path / "big.db"
    command = forensics_command() + ["import-logs", str(db), str(log)]
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=SMALL_CHUNKS
    )
    wait_for_first_chunk(db, process)
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=60)

    if sig == signal.SIGINT:
        assert process.returncode == 130
        (message,) = stderr.decode().splitlines()
        assert "Traceback" not in message and "again" in message
    else:
        assert process.returncode == -signal.SIGKILL
    assert rows(db, "pragma integrity_check") == [("ok",)]
    (b,) = batches(db)
    assert b["status"] != "complete"
    assert 0 < b["lines_read"] < BIG_LINES
    assert_accounted(db)
    assert assert_cells_exact(db) <= b["lines_imported"] + 1

    again = subprocess.run(command, cwd=tmp_path, capture_output=True, timeout=300, env=SMALL_CHUNKS)
    assert again.returncode == 0, again.stderr
    assert again.stderr == b""
    assert f"(resumed after line {b['last_line']:,})" in again.stdout.decode()
    (done,) = batches(db)
    assert done["id"] == b["id"]
    assert done["status"] == "complete"
    assert (done["lines_read"], done["lines_imported"], done["lines_rejected"], done["lines_duplicate"]) == (
        BIG_LINES, BIG_LINES - rejected, rejected, 0,
    )
    assert_accounted(db)
    count, distinct = rows(
        db, "select count(*), count(distinct batch_id || ':' || line_no) from requests"
    )[0]
    assert count == distinct == BIG_LINES - rejected
    assert assert_cells_exact(db) == count + 1
    assert rows(db, "pragma integrity_check") == [("ok",)]


def test_resume_after_another_batch_keeps_every_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "CHUNK_LINES", 2)
    x = write(tmp_path / "x.log", [line(0), line(1), line(2), line(0), line(3)])
    y = write(tmp_path / "y.log", [line(0), line(10)])
    db = schema.connect(str(tmp_path / "t.db"))

    def interrupt(result, consumed):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ingest.import_logs(db, [str(x)], on_progress=interrupt)
    ingest.import_logs(db, [str(y)])
    (resumed,) = ingest.import_logs(db, [str(x)])
    assert resumed.resumed_from == 2
    db.conn.close()
    # Whatever the order, x.log's two identical lines are two requests (MODEL §1.4).
    assert item_numbers(tmp_path / "t.db") == [0, 0, 1, 2, 3, 10]
    assert rows(tmp_path / "t.db", "select count(*) from line_counts_suspended") == [(0,)]


def test_interleaved_batches_store_a_line_as_often_as_the_batch_with_most_copies(tmp_path, monkeypatch):
    """x.log holds line 0 three times, y.log twice: three copies, however the imports interleave."""
    monkeypatch.setattr(ingest, "CHUNK_LINES", 2)
    x = write(tmp_path / "x.log", [line(0), line(1), line(0), line(0)])
    y = write(tmp_path / "y.log", [line(0), line(0), line(2)])
    db = schema.connect(str(tmp_path / "t.db"))

    def interrupt(result, consumed):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # x stops after its first chunk: one copy of line 0
        ingest.import_logs(db, [str(x)], on_progress=interrupt)
    (first_y,) = ingest.import_logs(db, [str(y)])
    assert (first_y.imported, first_y.duplicates) == (2, 1)  # its first copy is x's
    assert rows(tmp_path / "t.db", "select batch_id, seen from line_counts_suspended") == [(1, 1)]
    (resumed,) = ingest.import_logs(db, [str(x)])
    assert (resumed.lines_read, resumed.imported, resumed.duplicates) == (4, 3, 1)
    (again,) = ingest.import_logs(db, [str(y)])  # a complete batch again: all duplicates
    assert (again.imported, again.duplicates) == (0, 3)
    db.conn.close()
    assert item_numbers(tmp_path / "t.db") == [0, 0, 0, 1, 2]
    assert rows(tmp_path / "t.db", "select count(*) from line_counts_suspended") == [(0,)]


# --- progress -----------------------------------------------------------------------


def test_progress_bar_on_a_terminal(tmp_path):
    log = write(tmp_path / "progress.log", [line(i) for i in range(45_000)])
    db = tmp_path / "t.db"
    master, slave = pty.openpty()
    process = subprocess.Popen(
        forensics_command() + ["import-logs", str(db), str(log)],
        stdout=subprocess.PIPE, stderr=slave, cwd=tmp_path,
    )
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            shown += data
        elif process.poll() is not None:
            break
    os.close(master)
    stdout, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    assert stdout.decode() == summary(log, 45_000, 45_000, 0, 0) + "\n"
    text = shown.decode(errors="replace")
    assert "progress.log" in text
    assert "45,000 lines" in text
    assert "lines/s" in text


def test_no_progress_output_when_stderr_is_not_a_terminal(tmp_path):
    log = write(tmp_path / "a.log", [line(i) for i in range(30_000)])
    completed = subprocess.run(
        forensics_command() + ["import-logs", str(tmp_path / "t.db"), str(log)],
        capture_output=True, cwd=tmp_path, timeout=120,
    )
    assert completed.returncode == 0
    assert completed.stderr == b""
    assert completed.stdout.decode() == summary(log, 30_000, 30_000, 0, 0) + "\n"
