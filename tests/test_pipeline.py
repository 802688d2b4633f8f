"""Reading in a child process while another importer writes: ids, translation, equal results.

The reader hands out dictionary ids without the write lock (dictionaries.py);
when another import stores values in between, the store must move the reader's
ids to the stored ones, and every request must still point at its own line's
values. Each test runs with the reader here and in a child process.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from conftest import dump, sample_log_files
from datasette_forensics import dictionaries, ingest, schema

CURL = "curl/7.68.0"


def line(i: int, ip: str, ua: str = CURL, referer: str = "-") -> str:
    return f'{ip} - - [01/Jul/2020:02:00:{i % 60:02d} +0000] "GET /api/0/items/{i}/?q={i % 7} HTTP/1.1" 200 {i} "{referer}" "{ua}"'


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(item + "\n" for item in lines))
    return path


def stored_lines(db_path: Path, batch_id: int) -> list[str]:
    """Each request of a batch rebuilt from the dictionaries, in line order."""
    conn = sqlite3.connect(db_path)
    try:
        return [
            f'{ip} - - [01/Jul/2020:02:00:{int(status) % 60:02d} +0000] "GET {uri} HTTP/1.1" 200 {size}'
            f' "{referer or "-"}" "{ua}"'
            for ip, ua, uri, status, size, referer in conn.execute(
                """select i.ip, a.ua, u.uri, r.bytes, r.bytes, f.referer from requests r
                join signatures s on s.id = r.sig_id join ips i on i.id = s.ip_id
                join user_agents a on a.id = s.ua_id join uris u on u.id = r.uri_id
                left join referers f on f.id = r.referer_id
                where r.batch_id = ? order by r.line_no""",
                [batch_id],
            )
        ]
    finally:
        conn.close()


@pytest.mark.parametrize("mode", ["never", "always"], ids=["here", "child"])
def test_an_import_in_between_moves_the_readers_ids(tmp_path, monkeypatch, mode):
    """Batch b is imported whole between two chunks of batch a, sharing and adding values."""
    monkeypatch.setenv("FORENSICS_PARSE_PROCESS", mode)
    monkeypatch.setattr(ingest, "CHUNK_LINES", 50)
    # a brings a new address every 20 lines; b shares a's later values (not yet
    # stored when b runs: a's reader has handed out ids for them) and adds its own.
    a_lines = [line(i, f"10.0.0.{i // 20}", referer=f"https://a.example/{i % 5}") for i in range(200)]
    b_lines = [line(i, f"10.0.0.{i // 20}", ua=(CURL, "agent")[i % 2]) for i in range(150, 260)]
    a = write(tmp_path / "a.log", a_lines)
    b = write(tmp_path / "b.log", b_lines)
    db_path = tmp_path / "t.db"
    db = schema.connect(str(db_path))
    other = schema.connect(str(db_path))
    moved_tables: set[str] = set()
    store_rows = dictionaries.store_rows

    def spy(conn, d, rows, moved):
        store_rows(conn, d, rows, moved)
        moved_tables.update(table for table, ids in moved.items() if ids)

    monkeypatch.setattr(ingest, "store_rows", spy)
    ran = []

    def import_b_once(result, progress):
        if not ran:
            ran.append(ingest.import_logs(other, [str(b)]))

    (result_a,) = ingest.import_logs(db, [str(a)], on_progress=import_b_once)
    db.conn.close()
    other.conn.close()
    (result_b,) = ran[0]
    assert (result_a.imported, result_b.imported) == (200, 110)
    # a's reader had handed out ids that b stored first: the store moved them.
    assert {"uris", "paths", "ips", "signatures"} <= moved_tables
    assert stored_lines(db_path, result_a.batch_id) == a_lines
    assert stored_lines(db_path, result_b.batch_id) == b_lines
    conn = sqlite3.connect(db_path)
    # One row per value, and no value nobody's request needs.
    assert conn.execute("select count(*) from uris").fetchone()[0] == 260
    assert conn.execute("select count(*), count(distinct ip) from ips").fetchone() == (13, 13)
    assert conn.execute("select count(*) from signatures").fetchone()[0] == 13 + 6
    assert conn.execute("select count(*) from referers").fetchone()[0] == 5
    conn.close()


def test_child_and_here_build_the_same_database(tmp_path, monkeypatch):
    """The sample logs imported with the reader in a child process and here: equal dumps."""
    dumps = []
    for mode in ("never", "always"):
        monkeypatch.setenv("FORENSICS_PARSE_PROCESS", mode)
        db = schema.connect(str(tmp_path / f"{mode}.db"))
        results = ingest.import_logs(db, sample_log_files())
        assert all(r.status == "complete" for r in results)
        db.execute("update import_batches set started_at = '', finished_at = '', pid = null")
        db.conn.commit()
        db.conn.close()
        text = dump(tmp_path / f"{mode}.db").replace(str(tmp_path), "")
        # The migrations' own times differ; everything else must not.
        dumps.append("\n".join(s for s in text.split("\n") if "_sqlite_migrations" not in s))
    assert dumps[0] == dumps[1]


@pytest.mark.parametrize("mode", ["never", "always"], ids=["here", "child"])
def test_values_evicted_from_the_cache_are_found_not_handed_out_again(tmp_path, monkeypatch, mode):
    """With one importer nothing moves: an evicted value is looked up below the watermark."""
    monkeypatch.setenv("FORENSICS_PARSE_PROCESS", mode)
    monkeypatch.setattr(ingest, "CHUNK_LINES", 40)
    monkeypatch.setattr(dictionaries, "CACHE_LIMIT", 30)
    # 300 distinct URIs, each seen again 100 lines later (evicted by then).
    lines = [line(i % 100 + 1000 * (i // 200), f"10.0.{i % 50}.1") for i in range(600)]
    log = write(tmp_path / "a.log", lines)
    moved_tables: set[str] = set()
    store_rows = dictionaries.store_rows

    def spy(conn, d, rows, moved):
        landed = store_rows(conn, d, rows, moved)
        moved_tables.update(table for table, ids in moved.items() if ids)
        return landed

    monkeypatch.setattr(ingest, "store_rows", spy)
    db = schema.connect(str(tmp_path / "t.db"))
    (result,) = ingest.import_logs(db, [str(log)])
    db.conn.close()
    assert result.imported == 600
    assert moved_tables == set()
    assert stored_lines(tmp_path / "t.db", result.batch_id) == lines
    conn = sqlite3.connect(tmp_path / "t.db")
    assert conn.execute("select count(*) from uris").fetchone()[0] == 300
    assert conn.execute("select count(*) from dictionary_watermarks").fetchone()[0] == 0
    conn.close()


def test_no_process_to_spare_reads_here(tmp_path, monkeypatch):
    """fork() failing (EAGAIN) is not an error: the import reads in its own process."""
    monkeypatch.setenv("FORENSICS_PARSE_PROCESS", "always")

    def no_fork():
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr("os.fork", no_fork)
    lines = [line(i, "10.0.0.1") for i in range(30)]
    log = write(tmp_path / "a.log", lines)
    db = schema.connect(str(tmp_path / "t.db"))
    (result,) = ingest.import_logs(db, [str(log)])
    db.conn.close()
    assert (result.status, result.imported) == ("complete", 30)
    assert stored_lines(tmp_path / "t.db", result.batch_id) == lines


def test_a_database_whose_path_holds_uri_characters_is_read_in_a_child(tmp_path, monkeypatch):
    """The child and the tally open the database read-only by URI: ?, # and % in its path stay in the name."""
    monkeypatch.setenv("FORENSICS_PARSE_PROCESS", "always")
    monkeypatch.setattr(ingest, "CHUNK_LINES", 50)
    folder = tmp_path / "case ?2#3 100%"
    folder.mkdir()
    db = schema.connect(str(folder / "t?.db"))
    lines = [line(i, f"10.0.0.{i // 20}") for i in range(200)]
    (result,) = ingest.import_logs(db, [str(write(tmp_path / "a.log", lines))])
    assert result.status == "complete" and result.imported == 200
    assert stored_lines(folder / "t?.db", result.batch_id) == lines
