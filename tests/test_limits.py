"""Limits: huge lines, many distinct values and big logs import in bounded memory.

Each import runs ``datasette-forensics import-logs`` in a fresh subprocess (through
``benchmarks/bench_limits.py``, which reports the child's peak RSS from VmHWM), so
the figure is the command's own. The benchmark runs the full sizes (a 2 GB log, a
million distinct user agents); these tests run smaller ones in well under two
minutes each and hold the command to RSS_LIMIT_MB.
"""

from __future__ import annotations

import importlib.util
import random
import sqlite3
import sys
from pathlib import Path

import pytest

from datasette_forensics import dictionaries, schema

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
RSS_LIMIT_MB = 400
TEN_MB = 10 * 2**20


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


bench = _load("bench_limits")


def imported_ok(result: dict, lines: int) -> None:
    assert result["returncode"] == 0, result["stderr"]
    assert "Traceback" not in result["stderr"]
    assert result["lines_read"] == lines == result["imported"] + result["rejected"] + result["duplicates"]
    assert result["peak_rss_mb"] is not None and result["peak_rss_mb"] < RSS_LIMIT_MB, result["peak_rss_mb"]


def big_line_fate(db: Path, line_no: int) -> tuple:
    """('imported', length of its stored user agent) or ('rejected', reason, raw length)."""
    conn = sqlite3.connect(db)
    try:
        row = conn.execute(
            """select length(a.ua) from requests r join signatures g on g.id = r.sig_id
            join user_agents a on a.id = g.ua_id where r.line_no = ?""",
            [line_no],
        ).fetchone()
        if row:
            return ("imported", row[0])
        reason, raw = conn.execute(
            "select reason, length(raw) from rejected_lines where line_no = ?", [line_no]
        ).fetchone()
        return ("rejected", reason, raw)
    finally:
        conn.close()


def test_a_10_mb_user_agent_imports_or_is_rejected_with_a_reason(tmp_path):
    log = tmp_path / "big.log"
    expected = bench.write_big_line(str(log), TEN_MB)
    result = bench.run_import(str(log), str(tmp_path / "big.db"), timeout=120)
    imported_ok(result, expected["lines"])
    fate = big_line_fate(tmp_path / "big.db", 501)
    if fate[0] == "imported":
        assert fate[1] == TEN_MB  # kept whole, byte for byte
        assert result["rejected"] == 0
    else:
        assert fate[1] and fate[2] > TEN_MB  # a reason, and the raw line kept whole
    print(f"\n10 MB user agent: {fate[:2]}, {result['seconds']:.1f}s, peak RSS {result['peak_rss_mb']:.0f} MB")


def test_five_distinct_10_mb_user_agents_stay_under_the_limit(tmp_path):
    """Memory must not grow by a copy of every huge agent (the raw pivot groups key agents by id)."""
    log = tmp_path / "five.log"
    expected = bench.write_big_line(str(log), TEN_MB, agents=5)
    db = tmp_path / "five.db"
    result = bench.run_import(str(log), str(db), timeout=180)
    imported_ok(result, expected["lines"])
    for k in range(5):
        assert big_line_fate(db, 501 + k * 1001) == ("imported", TEN_MB)
    conn = sqlite3.connect(db)
    try:
        groups = conn.execute(
            """select length(g.k1), g.gkey = json_array(a.id) from pivot_groups g
            join user_agents a on a.ua = g.k1 where g.grouping = 'raw' and length(g.k1) = ?""",
            [TEN_MB],
        ).fetchall()
    finally:
        conn.close()
    assert groups == [(TEN_MB, 1)] * 5
    print(f"\nfive 10 MB user agents: {result['seconds']:.1f}s, peak RSS {result['peak_rss_mb']:.0f} MB")


def test_a_hostile_10_mb_line_is_rejected_in_bounded_time(tmp_path):
    """Thousands of '" 1 1 "' fragments: the regexes must not backtrack for minutes."""
    log = tmp_path / "hostile.log"
    expected = bench.write_big_line(str(log), TEN_MB, hostile=True)
    result = bench.run_import(str(log), str(tmp_path / "hostile.db"), timeout=120)
    imported_ok(result, expected["lines"])
    fate = big_line_fate(tmp_path / "hostile.db", 501)
    assert fate[0] == "rejected" and fate[1], fate
    assert result["seconds"] < 60, result["seconds"]
    print(f"\nhostile 10 MB line: {fate[1]!r}, {result['seconds']:.1f}s, peak RSS {result['peak_rss_mb']:.0f} MB")


DISTINCT_UAS = 100_000  # more than a cache generation holds; the benchmark runs 1,000,000 (ua-parser runs once per distinct value)


def test_many_distinct_user_agents_keep_memory_bounded(tmp_path):
    """More distinct values than the dictionary cache holds: it rotates instead of growing."""
    assert DISTINCT_UAS > dictionaries.CACHE_LIMIT // 2, "the test must overflow the cache"
    log = tmp_path / "uas.log"
    bench.write_distinct_uas(str(log), DISTINCT_UAS)
    db = tmp_path / "uas.db"
    result = bench.run_import(str(log), str(db), timeout=300)
    imported_ok(result, DISTINCT_UAS)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("select count(*) from user_agents").fetchone()[0] == DISTINCT_UAS
        assert conn.execute("select count(*) from requests").fetchone()[0] == DISTINCT_UAS
        assert conn.execute("select count(*) from user_agents where family is null").fetchone()[0] == 0
    finally:
        conn.close()
    print(f"\n{DISTINCT_UAS:,} distinct user agents: {result['seconds']:.1f}s, peak RSS {result['peak_rss_mb']:.0f} MB")


def test_a_200_mb_log_streams_in_bounded_memory(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_import

    lines = 800_000  # ~210 MB
    log = tmp_path / "stream.log"
    bench_import.generate(str(log), lines)
    assert log.stat().st_size > 200 * 10**6
    result = bench.run_import(str(log), str(tmp_path / "stream.db"), timeout=300)
    imported_ok(result, lines)
    assert result["imported"] > lines * 0.99
    print(
        f"\n{log.stat().st_size / 2**20:.0f} MB log: {result['seconds']:.1f}s,"
        f" {lines / result['seconds']:,.0f} lines/s, peak RSS {result['peak_rss_mb']:.0f} MB"
    )


def test_dictionary_cache_stays_bounded_and_correct(tmp_path, monkeypatch):
    """Past CACHE_LIMIT the cache evicts, yet every value is stored once, under the id
    it was read with or the one the store moved that id to."""
    monkeypatch.setattr(dictionaries, "CACHE_LIMIT", 1000)
    db = schema.connect(str(tmp_path / "d.db"))
    conn = db.conn
    d = dictionaries.Dictionary(conn, "referers", ["referer"])
    moved: dict[str, dict[int, int]] = {}
    rng = random.Random(3)
    read: dict[str, set[int]] = {}
    for chunk in range(20):
        for i in range(chunk * 500, chunk * 500 + 500):
            read.setdefault(f"r{i}", set()).add(d.id(f"r{i}"))
        for i in rng.sample(range(chunk * 500 + 500), 300):  # old values, many evicted
            read[f"r{i}"].add(d.id(f"r{i}"))
        conn.execute("begin immediate")
        dictionaries.store_rows(conn, d, d.take_rows(), moved)
        conn.execute("commit")
        assert len(d.cache) + len(d.old) <= 1000 + 800
    stored = dict(conn.execute("select referer, id from referers"))
    assert len(stored) == len(read) == 10_000
    ids = moved.get("referers", {})
    assert any(len(given) > 1 for given in read.values()), "the test must hand out a value twice"
    for value, given in read.items():
        assert {ids.get(i, i) for i in given} == {stored[value]}, value
