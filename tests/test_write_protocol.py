"""The import's write protocol: staged line counts and indexes built after a first load.

A first import appends its duplicate-line counts to ``line_counts_staged`` and
loads ``requests`` without its indexes; both are settled when the batch closes.
These tests check what the database holds afterwards, and that indexes a killed
import left deferred are built by the next command, but never under a live one.
"""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from datasette_forensics import derived, dictionaries, incident, ingest, schema
from datasette_forensics.derived import aggregates, explanations, indexes, line_counts, line_filter, scope

INDEXES_SQL = (
    "select name, sql from sqlite_master where type = 'index' and tbl_name in ('requests', 'uris', 'paths')"
    " order by name"
)


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
             db.execute("select group_concat(name) from (select name from deferred_indexes order by name)")
             .fetchone()[0])
        ),
    )  # fmt: skip
    assert (result.lines_read, result.imported, result.duplicates) == (295, 295, 0)
    # While it loaded, its counts were staged, and the four requests indexes and the
    # uris and paths keys (with paths_unclassified) deferred.
    assert len(staged_while_loading) == 7  # six chunks, then the closed batch
    assert [s for s, _ in staged_while_loading[:6]] == [50, 100, 150, 200, 250, 295]  # a row per line
    deferred = "paths_path,paths_unclassified,requests_batch,requests_sig,requests_token,requests_ts,uris_uri"
    assert all(d == deferred for _, d in staged_while_loading[:6]) and staged_while_loading[6] == (0, None)
    # The uris kept one row per value throughout, with no key to hold them to it.
    assert db.execute("select count(*), count(distinct uri) from uris").fetchone() == (293, 293)
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
        assert db.execute("select count(*) from deferred_indexes").fetchone()[0] == 7
        db.conn.close()
    finally:
        live.kill()
        live.wait()
    db = schema.connect(str(tmp_path / "t.db"))  # its process is gone now
    assert db.execute(INDEXES_SQL).fetchall() == fresh_indexes(tmp_path)
    db.conn.close()


def test_another_importer_builds_the_deferred_keys_first_and_leaves_the_rest(tmp_path):
    """An importer that comes while a first import runs needs the uris and paths keys to
    tell its values from stored ones: it builds them, and only them, then imports."""
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        defer_for(tmp_path / "t.db", live.pid)
        db = schema.connect(str(tmp_path / "t.db"))
        conn = db.conn
        # The first import stored a value meanwhile, under its deferred key.
        conn.execute("insert into paths (id, path) values (1, '/api/0/items/1/')")
        conn.execute("insert into uris (id, uri, path_id) values (1, '/api/0/items/1/', 1)")
        (result,) = ingest.import_logs(db, [write_log(tmp_path / "b.log", [1, 2])])
        assert result.imported == 2
        assert sorted(r[0] for r in conn.execute("select name from deferred_indexes")) == [
            "paths_unclassified", "requests_batch", "requests_sig", "requests_token", "requests_ts",
        ]  # fmt: skip
        assert {r[0] for r in conn.execute(INDEXES_SQL)} == {"paths_path", "uris_uri"}
        # Its own line 1 found the stored uri rather than storing it twice.
        assert conn.execute("select id, uri from uris order by id").fetchall() == [
            (1, "/api/0/items/1/"), (2, "/api/0/items/2/"),
        ]  # fmt: skip
        db.conn.close()
    finally:
        live.kill()
        live.wait()


def test_a_key_with_two_rows_is_merged_when_its_index_is_built(tmp_path):
    """The key map never hands out two ids for one value; should a database hold two
    rows of one value anyway, building the key folds them (references moved), never fails."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    defer_for(tmp_path / "t.db", dead.pid)
    conn = sqlite3.connect(str(tmp_path / "t.db"))
    conn.executescript(
        """insert into paths (id, path) values (1, '/a'), (2, '/b'), (3, '/a');
        insert into uris (id, uri, path_id) values (1, '/a?x', 1), (2, '/b', 2), (3, '/a?x', 3), (4, '/a', 3);
        insert into requests (batch_id, line_no, ts, sig_id, uri_id)
        values (1, 1, 0, 1, 3), (1, 2, 0, 1, 1), (1, 3, 0, 1, 4);"""
    )
    conn.close()
    db = schema.connect(str(tmp_path / "t.db"))
    assert db.execute("select count(*) from deferred_indexes").fetchone()[0] == 0
    assert db.execute("select id, path from paths order by id").fetchall() == [(1, "/a"), (2, "/b")]
    assert db.execute("select id, uri, path_id from uris order by id").fetchall() == [
        (1, "/a?x", 1), (2, "/b", 2), (4, "/a", 1),
    ]  # fmt: skip
    assert db.execute("select line_no, uri_id from requests order by line_no").fetchall() == [(1, 1), (2, 1), (3, 4)]
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


def batch_row(conn, status: str, lines_read: int) -> int:
    return conn.execute(
        "insert into import_batches (source, started_at, status, lines_read) values ('x', '', ?, ?)",
        [status, lines_read],
    ).lastrowid


def count_in_transaction(conn, batch_id: int, hashes: list[int]):
    conn.execute("begin immediate")
    try:
        return line_counts.count(conn, batch_id, hashes)
    finally:
        conn.execute("commit")


def test_a_later_batch_keeps_its_counts_apart_and_merges_them_when_it_closes(tmp_path):
    """Every other batch finished: the batch only reads line_counts, keeps what it has
    seen in line_counts_batch, and leaves at its close the rows the shared protocol
    (another batch unfinished) leaves, line for line."""
    results = {}
    for case in ("apart", "shared"):
        db = schema.connect(str(tmp_path / f"{case}.db"))
        conn = db.conn
        first = batch_row(conn, "complete", 3)
        count_in_transaction(conn, first, [11, 12, 11])
        conn.execute("begin immediate")
        line_counts.finish_batch(conn, first)
        conn.execute("commit")
        # Another batch holding none of these lines: finished, or interrupted (shared).
        other = batch_row(conn, "complete" if case == "apart" else "interrupted", 1)
        conn.execute("insert into line_counts (h, n, batch_id, base, seen) values (99, 1, ?, 0, 1)", [other])
        second = batch_row(conn, "running", 0)
        before = conn.execute("select * from line_counts order by h").fetchall()
        # 11 is held twice: the third copy is new; 13 is new.
        assert count_in_transaction(conn, second, [11, 11, 11, 13]) == ([False, False, True, True], 2)
        conn.execute("update import_batches set lines_read = 4 where id = ?", [second])
        if case == "apart":
            assert conn.execute("select * from line_counts order by h").fetchall() == before
            assert conn.execute("select h, batch_id, seen from line_counts_batch order by h").fetchall() == [
                (11, second, 3), (13, second, 1),
            ]  # fmt: skip
        # The next chunk: 13's copies beyond the one seen are new, 12 is held once.
        assert count_in_transaction(conn, second, [13, 13, 12]) == ([True, True, False], 1)
        conn.execute("begin immediate")
        line_counts.finish_batch(conn, second)
        conn.execute("commit")
        assert conn.execute("select count(*) from line_counts_batch").fetchone()[0] == 0
        results[case] = conn.execute("select h, n, batch_id, seen from line_counts where h != 99 order by h").fetchall()
        conn.close()
    assert results["apart"] == results["shared"] == [(11, 3, 3, 3), (12, 1, 3, 1), (13, 3, 3, 3)]


def test_a_batch_that_starts_meanwhile_merges_the_counts_kept_apart(tmp_path):
    db = schema.connect(str(tmp_path / "t.db"))
    conn = db.conn
    first = batch_row(conn, "complete", 2)
    count_in_transaction(conn, first, [11, 12])
    second = batch_row(conn, "running", 0)
    assert count_in_transaction(conn, second, [11, 11, 13]) == ([False, True, True], 1)
    conn.execute("update import_batches set lines_read = 3 where id = ?", [second])
    assert conn.execute("select count(*) from line_counts_batch").fetchone()[0] == 2
    # A third batch while the second is unfinished: the counts go back to line_counts
    # first, and what the second had seen is suspended under the third's copies.
    third = batch_row(conn, "running", 0)
    assert count_in_transaction(conn, third, [11, 11, 11, 13]) == ([False, False, True, False], 3)
    assert conn.execute("select count(*) from line_counts_batch").fetchone()[0] == 0
    assert conn.execute("select h, n, batch_id, seen from line_counts order by h").fetchall() == [
        (11, 3, third, 3), (12, 1, first, 1), (13, 1, third, 1),
    ]  # fmt: skip
    assert conn.execute("select h, batch_id, seen from line_counts_suspended order by h").fetchall() == [
        (11, second, 2), (13, second, 1),
    ]  # fmt: skip
    conn.close()


@pytest.mark.parametrize("seed", range(6))
def test_batches_interrupted_and_resumed_in_any_order_store_each_line_as_often_as_its_fullest_batch(
    tmp_path, monkeypatch, seed
):
    """Small chunks, logs that share lines, imports interrupted after a random number of
    chunks and resumed later, in a random order: whatever path counted them (alone,
    apart, shared), each line is stored as many times as the log with most copies of it
    holds (MODEL §1.4), and the counts say so."""
    rng = random.Random(seed)
    monkeypatch.setattr(ingest, "CHUNK_LINES", 7)
    logs = []
    for i in range(4):
        numbers = [rng.randrange(40) for _ in range(rng.randrange(15, 60))]
        logs.append((write_log(tmp_path / f"{i}.log", numbers), numbers))
    db = schema.connect(str(tmp_path / "t.db"))
    paths_used: set[str] = set()

    def stop_after(chunks: int):
        seen = []

        def on_progress(result, _):
            paths_used.add(
                "apart" if db.execute("select exists(select 1 from line_counts_batch)").fetchone()[0]
                else "staged" if db.execute("select exists(select 1 from line_counts_staged)").fetchone()[0]
                else "shared"
            )  # fmt: skip
            seen.append(result)
            if len(seen) >= chunks:
                raise KeyboardInterrupt

        return on_progress

    pending = [0, 1, 2, 3] * 2
    rng.shuffle(pending)
    for i in pending:
        try:
            ingest.import_logs(db, [str(logs[i][0])], on_progress=stop_after(rng.randrange(1, 6)))
        except KeyboardInterrupt:
            pass
    for path, _ in logs:  # every batch to the end (a complete one is imported again: duplicates only)
        ingest.import_logs(db, [str(path)], on_progress=stop_after(10**9))
    for path, numbers in logs:  # and once more, each a new batch among finished ones: duplicates only
        (again,) = ingest.import_logs(db, [str(path)], on_progress=stop_after(10**9))
        assert (again.lines_read, again.imported, again.duplicates) == (len(numbers), 0, len(numbers))
    expected = Counter()
    for _, numbers in logs:
        for n, copies in Counter(numbers).items():
            expected[n] = max(expected[n], copies)
    uris = db.execute("select u.uri from requests r join uris u on u.id = r.uri_id").fetchall()
    stored = Counter(int(uri.rstrip("/").rsplit("/", 1)[1]) for (uri,) in uris)
    assert stored == expected
    assert sorted(n for (n,) in db.execute("select n from line_counts")) == sorted(expected.values())
    for table in ("line_counts_staged", "line_counts_batch", "line_counts_suspended"):
        assert db.execute(f"select count(*) from {table}").fetchone()[0] == 0, table
    assert {"apart", "shared", "staged"} <= paths_used
    db.conn.close()


AGGREGATES = ("sig_stats", "pivot_groups", "org_stats", "scope_days", "out_of_scope_counts", "sig_org",
              "signature_scope", "scoped", "post_patch_valid", "rule_counts", "rule_waterfall")


def derived_tables(db) -> dict:
    tables = {t: db.execute(f"select * from {t} order by 1, 2, 3").fetchall() for t in AGGREGATES}
    tables["rule_waterfall"] = [row[:-1] for row in tables["rule_waterfall"]]  # less its time of computing
    # Less a group's latest URI: between signatures whose last requests share a time, the
    # full and the per-signature refresh may pick either (on main before this change too).
    tables["pivot_groups"] = [row[:-1] for row in tables["pivot_groups"]]
    return tables


def later_log(path: Path, lines: int, seed: int) -> Path:
    from test_crash_safety import write_log as crash_log  # a log aimed at the sample incident

    crash_log(path, lines, seed)
    return path


def test_a_later_batch_adds_its_figures_to_the_aggregates_as_a_recompute_counts_them(sample_db_path, tmp_path, monkeypatch):
    db = schema.connect(str(sample_db_path))
    from datasette_forensics import rules
    from datasette_forensics.rules import actions

    actions.apply_all(db, rules.resolve_names(db, "all"), "test")  # explanations to keep current
    first = later_log(tmp_path / "first.log", 4000, 7)
    ingest.import_logs(db, [str(first)])
    # A quarter of those lines again, but POSTed: new requests of known signatures.
    again = [line.replace('"GET ', '"POST ') for line in first.read_text().splitlines()[::4]]
    (tmp_path / "later.log").write_text("".join(line + "\n" for line in again))
    full_refreshes = []
    real_refresh = aggregates.refresh
    monkeypatch.setattr(aggregates, "refresh", lambda db, sigs=None: (full_refreshes.append(sigs), real_refresh(db, sigs)))
    (result,) = ingest.import_logs(db, [str(tmp_path / "later.log")])
    assert result.imported > 900
    assert full_refreshes == []  # the batch's figures were added, not recounted
    touched = db.execute("select count(distinct sig_id) from requests where batch_id = ?", [result.batch_id]).fetchone()[0]
    assert 0 < touched < db.execute("select count(*) from signatures").fetchone()[0] / 2
    added = derived_tables(db)
    assert added["scoped"] and added["sig_stats"]
    monkeypatch.setattr(aggregates, "refresh", real_refresh)
    derived.recompute(db)
    assert derived_tables(db) == added
    db.conn.close()


def test_a_later_batch_outside_the_window_leaves_the_orgs_and_days_as_a_recompute_counts_them(
    sample_db_path, tmp_path, monkeypatch
):
    """A batch of requests before the incident adds nothing to the scope: the rules are
    not re-evaluated at its close, org_stats and scope_days not recounted, and every
    aggregate (the out-of-scope counts too) still equals a full recompute."""
    db = schema.connect(str(sample_db_path))
    from datasette_forensics import rules
    from datasette_forensics.rules import actions

    actions.apply_all(db, rules.resolve_names(db, "all"), "test")
    before = derived_tables(db)
    log = later_log(tmp_path / "july.log", 3000, 11)
    (tmp_path / "june.log").write_text(log.read_text().replace("/Jul/2020:", "/Jun/2020:"))
    recounted = []
    real = aggregates._refresh_orgs_and_days
    monkeypatch.setattr(aggregates, "_refresh_orgs_and_days", lambda db, where: (recounted.append(where), real(db, where)))
    monkeypatch.setattr(explanations, "reevaluate", lambda db, sigs=None: recounted.append(sigs))
    (result,) = ingest.import_logs(db, [str(tmp_path / "june.log")])
    assert result.imported > 2900 and recounted == []
    monkeypatch.undo()
    added = derived_tables(db)
    assert added["scoped"] == before["scoped"] and added["scope_days"] == before["scope_days"]
    assert added["sig_stats"] != before["sig_stats"]
    outside = dict(db.execute("select org_id, n from out_of_scope_counts where reason = 'outside_window'").fetchall())
    was = {row[0]: row[2] for row in before["out_of_scope_counts"] if row[1] == "outside_window"}
    assert sum(outside.values()) - sum(was.values()) == result.imported
    derived.recompute(db)
    assert derived_tables(db) == added
    db.conn.close()


def test_a_recompute_while_a_batch_is_interrupted_is_not_counted_twice_when_it_resumes(tmp_path, monkeypatch):
    """The incident set again (a recompute) while an import is interrupted counts its
    requests so far: the batch's close must not add them again (it recomputes)."""
    from conftest import SAMPLE, build_sample_db

    db = build_sample_db(tmp_path / "t.db")
    log = later_log(tmp_path / "later.log", 3000, 5)
    monkeypatch.setattr(ingest, "CHUNK_LINES", 500)
    chunks = []

    def stop(result, _):
        chunks.append(result.lines_read)
        if len(chunks) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ingest.import_logs(db, [str(log)], on_progress=stop)
    incident.set_incident(db, str(SAMPLE / "incident.toml"))
    (resumed,) = ingest.import_logs(db, [str(log)])
    assert resumed.resumed_from > 0 and resumed.status == "complete"
    closed = derived_tables(db)
    assert closed["scoped"] and closed["out_of_scope_counts"]
    derived.recompute(db)
    assert derived_tables(db) == closed
    db.conn.close()


def lookups_of(conn) -> list[str]:
    """Record the reads of line_counts' rows by hash (the statements, as run)."""
    seen: list[str] = []
    conn.set_trace_callback(lambda sql: seen.append(sql) if "from line_counts where h in" in sql else None)
    return seen


def filter_holds(conn, table: str = "line_counts") -> bool:
    """The stored filter is current (it covers line_counts' rows) and holds every hash of ``table``."""
    rows, bits = conn.execute("select rows, bits from line_filter").fetchone()
    hashes = [h for (h,) in conn.execute(f"select h from {table}")]
    return rows == conn.execute("select count(*) from line_counts").fetchone()[0] and line_filter.Filter(
        bytearray(bits), 0, 0
    ).maybe(hashes) == hashes


@pytest.mark.skipif(line_filter.bloom_add is None, reason="the compiled module is not built")
def test_a_later_batch_reads_the_counts_of_only_the_lines_the_filter_may_hold(tmp_path, monkeypatch):
    """A first import builds no filter; the first later batch builds it from line_counts,
    keeps its own lines in it, and leaves it covering line_counts at its close; a batch
    of new lines then reads no counts at all, and one of old lines finds every copy."""
    monkeypatch.setattr(ingest, "CHUNK_LINES", 40)
    db = schema.connect(str(tmp_path / "t.db"))
    conn = db.conn
    (first,) = ingest.import_logs(db, [write_log(tmp_path / "a.log", list(range(100)) + [5, 5])])
    assert (first.imported, first.duplicates) == (102, 0)  # a line's copies in one batch are all kept
    assert conn.execute("select count(*) from line_filter").fetchone()[0] == 0  # a first import: none
    lookups = lookups_of(conn)
    # 50..149: 50..99 are stored once, 120 comes three times and 0 twice (0 is held once).
    numbers = list(range(50, 150)) + [120, 120, 0, 0]
    (second,) = ingest.import_logs(db, [write_log(tmp_path / "b.log", numbers)])
    assert (second.imported, second.duplicates) == (53, 51)  # 100..149, 120 twice more, 0 once more
    assert lookups  # it read the counts of the lines the database held
    assert filter_holds(conn)
    assert conn.execute("select count(*) from line_counts").fetchone()[0] == 150
    lookups.clear()
    (new,) = ingest.import_logs(db, [write_log(tmp_path / "c.log", list(range(1000, 1100)))])
    assert (new.imported, new.duplicates) == (100, 0)
    assert lookups == []  # the filter never saw these lines: nothing to read
    assert filter_holds(conn)
    (old,) = ingest.import_logs(db, [write_log(tmp_path / "d.log", list(range(1000, 1100)) + [120] * 4 + [5] * 3)])
    assert (old.imported, old.duplicates) == (1, 106)  # 120's fourth copy only
    assert lookups and filter_holds(conn)
    conn.set_trace_callback(None)
    db.conn.close()


@pytest.mark.skipif(line_filter.bloom_add is None, reason="the compiled module is not built")
def test_a_filter_that_does_not_cover_line_counts_is_built_again_never_trusted(tmp_path):
    """A writer that did not know the filter (an older version) added a line to
    line_counts: the next batch sees the row count differ, builds the filter again,
    and counts that line as held."""
    other = schema.connect(str(tmp_path / "other.db"))
    ingest.import_logs(other, [write_log(tmp_path / "x.log", [777])])
    ((h,),) = other.execute("select h from line_counts").fetchall()
    other.conn.close()
    db = schema.connect(str(tmp_path / "t.db"))
    conn = db.conn
    ingest.import_logs(db, [write_log(tmp_path / "a.log", list(range(50)))])
    ingest.import_logs(db, [write_log(tmp_path / "b.log", list(range(50, 100)))])
    assert filter_holds(conn)
    conn.execute("insert into line_counts (h, n, batch_id, base, seen) values (?, 1, 1, 0, 1)", [h])
    conn.commit()
    assert not filter_holds(conn)
    (again,) = ingest.import_logs(db, [write_log(tmp_path / "c.log", [777, 778])])
    assert (again.imported, again.duplicates) == (1, 1)
    assert filter_holds(conn)
    db.conn.close()


def test_a_batch_that_writes_line_counts_itself_drops_the_filter(tmp_path):
    """The shared protocol and the staged merge write line_counts without the filter: they
    delete it in the same transaction (the next batch that keeps its counts apart builds it)."""
    db = schema.connect(str(tmp_path / "t.db"))
    conn = db.conn
    first = batch_row(conn, "complete", 2)
    count_in_transaction(conn, first, [11, 12])
    second = batch_row(conn, "running", 0)
    conn.execute("begin immediate")
    line_counts.count(conn, second, [11, 13], line_filter.Memo())
    conn.execute("commit")
    stored = conn.execute("select count(*) from line_filter where rows = 2").fetchone()[0]
    assert stored == (line_filter.bloom_add is not None)
    conn.execute("update import_batches set lines_read = 2 where id = ?", [second])
    third = batch_row(conn, "running", 0)  # the second is unfinished: shared
    assert count_in_transaction(conn, third, [13, 14]) == ([False, True], 1)
    assert conn.execute("select count(*) from line_filter where rows >= 0").fetchone()[0] == 0
    conn.close()


@pytest.mark.skipif(line_filter.bloom_add is None, reason="the compiled module is not built")
def test_a_writer_reads_the_filter_again_when_another_batch_wrote_line_counts_between_its_chunks(tmp_path):
    """Between two chunks of a batch, another batch ran whole (beside an unfinished one it
    writes line_counts itself and drops the filter): the writer's copy of the filter is
    stale, and its next chunk finds that batch's lines."""
    db = schema.connect(str(tmp_path / "t.db"))
    conn = db.conn
    first = batch_row(conn, "complete", 2)
    count_in_transaction(conn, first, [11, 12])
    batch = batch_row(conn, "running", 0)
    memo = line_filter.Memo()

    def chunk(hashes):
        conn.execute("begin immediate")
        try:
            return line_counts.count(conn, batch, hashes, memo)
        finally:
            conn.execute("commit")

    assert chunk([13]) == (None, 0)
    assert memo.filter is not None
    conn.execute("update import_batches set lines_read = 1 where id = ?", [batch])
    other = batch_row(conn, "running", 0)
    assert count_in_transaction(conn, other, [21, 22]) == (None, 0)  # shared: nothing held
    conn.execute("update import_batches set status = 'complete', lines_read = 2 where id = ?", [other])
    # 21 is held once (the other batch's), 13 once (this batch's own copy): the second is new.
    assert chunk([21, 13, 14]) == ([False, True, True], 1)
    conn.close()


def test_a_first_import_gives_each_uri_one_id_through_its_key_map(tmp_path, monkeypatch):
    """With the uris and paths keys deferred, values evicted from the parse side's cache
    come back through the key map (grown several times here), each read back by id:
    one row per value, and every request keeps its own URI."""
    monkeypatch.setattr(ingest, "CHUNK_LINES", 40)
    monkeypatch.setattr(dictionaries, "CACHE_LIMIT", 8)  # evicted at once
    monkeypatch.setattr(dictionaries, "KEYMAP_SLOTS", 8)  # grows from the first values
    numbers = [(i * 7919) % 150 for i in range(600)]  # 150 values, each back again and again
    db = schema.connect(str(tmp_path / "t.db"))
    mapped = []
    original = dictionaries.Dictionary._miss_mapped
    monkeypatch.setattr(
        dictionaries.Dictionary, "_miss_mapped", lambda self, key: mapped.append(key) or original(self, key)
    )
    # The keys are built from rows that never needed folding.
    monkeypatch.setattr(indexes, "_merge_duplicates", lambda conn, table: pytest.fail(f"{table} held a value twice"))
    (result,) = ingest.import_logs(db, [write_log(tmp_path / "a.log", numbers)])
    assert result.imported == 600  # a first batch keeps every copy of a line
    assert len(mapped) > 600  # the key map answered the misses
    assert db.execute("select count(*), count(distinct uri) from uris").fetchone() == (150, 150)
    assert db.execute("select count(*), count(distinct path) from paths").fetchone() == (150, 150)
    stored = [
        row[0] for row in db.execute("select u.uri from requests r join uris u on u.id = r.uri_id order by r.line_no")
    ]
    assert stored == [f"/api/0/items/{i}/" for i in numbers]
    db.conn.close()
