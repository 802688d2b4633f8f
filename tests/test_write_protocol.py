"""The import's write protocol: staged line counts and indexes built after a first load.

A first import appends its duplicate-line counts to ``line_counts_staged`` and
loads ``requests`` without its indexes; both are settled when the batch closes.
These tests check what the database holds afterwards, and that indexes a killed
import left deferred are built by the next command, but never under a live one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from datasette_forensics import ingest, schema
from datasette_forensics.derived import indexes, line_counts, scope

INDEXES_SQL = "select name, sql from sqlite_master where type = 'index' and tbl_name = 'requests' order by name"


def write_log(path: Path, numbers: list[int]) -> Path:
    path.write_text(
        "".join(
            f'192.0.2.{i % 7 + 1} - - [01/Jul/2020:02:00:{i % 60:02d} +0000] "GET /api/0/items/{i}/ HTTP/1.1"'
            f' 200 {i} "-" "curl/7.{i % 3}"\n'
            for i in numbers
        )
    )
    return path


def fresh_indexes(tmp_path: Path) -> list[tuple]:
    db = schema.connect(str(tmp_path / "fresh.db"))
    try:
        return db.execute(INDEXES_SQL).fetchall()
    finally:
        db.conn.close()


def test_first_import_settles_its_counts_and_indexes(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "CHUNK_LINES", 50)  # several chunks, each staging its counts
    log = write_log(tmp_path / "a.log", [1, 2, 3, 2, 2] + list(range(10, 300)))
    db = schema.connect(str(tmp_path / "t.db"))
    staged_while_loading = []
    (result,) = ingest.import_logs(
        db, [log],
        on_progress=lambda r, _: staged_while_loading.append(
            (db.execute("select count(*) from line_counts_staged").fetchone()[0],
             db.execute("select count(*) from deferred_indexes").fetchone()[0])
        ),
    )  # fmt: skip
    assert (result.lines_read, result.imported, result.duplicates) == (295, 295, 0)
    # While it loaded, its counts were staged and the four requests indexes deferred.
    assert len(staged_while_loading) == 7  # six chunks, then the closed batch
    assert [s for s, _ in staged_while_loading[:6]] == [50, 100, 150, 200, 250, 295]  # a row per line
    assert all(d == 4 for _, d in staged_while_loading[:6]) and staged_while_loading[6] == (0, 0)
    assert db.execute("select count(*) from line_counts_staged").fetchone()[0] == 0
    assert db.execute("select count(*) from deferred_indexes").fetchone()[0] == 0
    assert db.execute(INDEXES_SQL).fetchall() == fresh_indexes(tmp_path)
    # Line 2 came three times: one counter holds all three copies.
    assert db.execute("select n, seen from line_counts where n > 1").fetchall() == [(3, 3)]
    assert db.execute("select sum(n), count(*) from line_counts").fetchone() == (295, 293)
    plan = db.execute("explain query plan select * from requests where sig_id = 1").fetchall()
    assert "requests_sig" in str(plan)
    db.conn.close()


def test_a_second_batch_merges_the_staged_counts_before_it_reads_them(tmp_path):
    db = schema.connect(str(tmp_path / "t.db"))
    conn = db.conn
    first = conn.execute(
        "insert into import_batches (source, started_at, status, lines_read) values ('a', '', 'interrupted', 3)"
    ).lastrowid
    conn.execute("begin immediate")
    assert line_counts.count(conn, first, [11, 12, 11]) == (None, 0)  # alone: staged
    conn.execute("commit")
    assert conn.execute("select count(*) from line_counts").fetchone()[0] == 0
    second = conn.execute("insert into import_batches (source, started_at) values ('b', '')").lastrowid
    conn.execute("begin immediate")
    # The database holds 11 twice and 12 once: the second batch's copies beyond those are new.
    assert line_counts.count(conn, second, [11, 11, 11, 12, 13]) == ([False, False, True, False, True], 3)
    conn.execute("commit")
    assert conn.execute("select count(*) from line_counts_staged").fetchone()[0] == 0
    assert conn.execute("select h, n, batch_id, seen from line_counts order by h").fetchall() == [
        (11, 3, second, 3), (12, 1, second, 1), (13, 1, second, 1),
    ]  # fmt: skip
    # The first batch is unfinished: what it had seen waits for its resumption.
    assert conn.execute("select batch_id, h, seen from line_counts_suspended order by h").fetchall() == [
        (first, 11, 2), (first, 12, 1),
    ]  # fmt: skip
    conn.close()


def defer_for(db_path: Path, pid: int) -> None:
    db = schema.connect(str(db_path))
    conn = db.conn
    batch = conn.execute(
        "insert into import_batches (source, started_at, status, pid) values ('a', '', 'running', ?)", [pid]
    ).lastrowid
    conn.execute("begin immediate")
    assert indexes.defer(conn, batch)
    conn.execute("commit")
    assert conn.execute(INDEXES_SQL).fetchall() == []
    conn.close()


def test_indexes_a_killed_import_deferred_are_built_by_the_next_command(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    defer_for(tmp_path / "t.db", dead.pid)
    db = schema.connect(str(tmp_path / "t.db"))
    assert db.execute(INDEXES_SQL).fetchall() == fresh_indexes(tmp_path)
    assert db.execute("select count(*) from deferred_indexes").fetchone()[0] == 0
    db.conn.close()


def test_indexes_stay_deferred_while_their_import_runs(tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        defer_for(tmp_path / "t.db", live.pid)
        db = schema.connect(str(tmp_path / "t.db"))
        assert db.execute(INDEXES_SQL).fetchall() == []
        assert db.execute("select count(*) from deferred_indexes").fetchone()[0] == 4
        db.conn.close()
    finally:
        live.kill()
        live.wait()
    db = schema.connect(str(tmp_path / "t.db"))  # its process is gone now
    assert db.execute(INDEXES_SQL).fetchall() == fresh_indexes(tmp_path)
    db.conn.close()


def test_a_later_batch_reads_its_own_requests_through_their_index_despite_old_statistics(tmp_path):
    """ANALYZE after one batch rates batch_id = ? as the whole table; the scope, the
    reasons out of scope and the aggregates of a later batch still read it through
    requests_batch (a planner walking requests_ts read every request in the window)."""
    db = schema.connect(str(tmp_path / "t.db"))
    ingest.import_logs(db, [write_log(tmp_path / "a.log", list(range(1, 400)))])
    db.execute("analyze")
    assert indexes.batch_requests(db.conn) == "requests r indexed by requests_batch"
    candidates = scope.CANDIDATES.format(restrict="and r.batch_id = :batch_id", requests=indexes.batch_requests(db.conn))
    plan = str(db.execute(f"explain query plan {candidates}", dict(introduced=0, patched=1, batch_id=2)).fetchall())
    assert "requests_batch" in plan and "requests_ts" not in plan
    (later,) = ingest.import_logs(db, [write_log(tmp_path / "b.log", list(range(400, 500)))])
    assert later.imported == 100
    # While a first import defers the index, the plain table.
    db.execute("drop index requests_batch")
    assert indexes.batch_requests(db.conn) == "requests r"
    db.conn.close()
