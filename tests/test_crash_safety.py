"""Crash safety: SIGKILL an import at random moments; the database stays consistent.

A 100k-line combined log (valid lines, cut-off lines to reject, repeated lines,
blank lines) is imported by ``datasette-forensics import-logs`` in a subprocess,
which is killed with SIGKILL 20 times (seeded): right at startup, after the batch row
exists but before its first commit, at random points of the run, and after the
last chunk (while the scope and aggregates are brought up to date). Each run resumes
the batch the previous one left. After every kill the database is intact and every
batch's counters equal its stored rows; after a final run to completion, every line
is stored exactly once and the derived tables (scope, aggregates, ip_info) equal a
full recompute, as if the import had never been interrupted.

Commits are every FORENSICS_CHUNK_LINES lines (5,000 here instead of 100,000) so that
kills land both between and inside chunks.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from datasette_forensics import derived as derived_data, ipinfo, schema

from conftest import SAMPLE, build_sample_db

pytestmark = pytest.mark.slow

LINES = 100_000  # 20 chunks of CHUNK lines (200,000 before: the suite must stay under 15 minutes)
CHUNK = 5_000
KILLS = 20
SEED = 20200718
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def write_log(path: Path, lines: int, seed: int) -> dict:
    """A combined log aimed at the sample incident; returns the expected counts."""
    rng = random.Random(seed)
    slugs = [line.split(",")[1] for line in (SAMPLE / "orgs.csv").read_text().splitlines()[1:]]
    slugs += ["no-such-org", "globex"]
    ips = [f"192.0.2.{i}" for i in range(1, 120)] + [f"198.51.100.{i}" for i in range(1, 60)]
    ips += [f"203.0.113.{i}" for i in range(1, 250)] + [f"2001:db8:c1ab::{i:x}" for i in range(1, 40)]
    ips += [f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}" for _ in range(3000)]
    uas = [f"python-requests/2.{i}" for i in range(30)] + [f"Mozilla/5.0 (X11; Linux x86_64) Firefox/{i}.0" for i in range(60, 130)]
    uas += [f"Terraform/{i}.{j}" for i in range(1, 9) for j in range(10)]
    t = 1594339200  # 2020-07-10T00:00:00Z; the incident runs 07-01 .. 07-20 14:04
    valid = rejected = blank = 0
    previous: list[str] = []
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for _ in range(lines):
            t += rng.random() < 0.35
            r = rng.random()
            if r < 0.004:
                f.write("\n" if rng.random() < 0.5 else "  \r\n")
                blank += 1
                continue
            if r < 0.014 and previous:
                line = rng.choice(previous)  # the same line again: a second request
            else:
                g = time.gmtime(t)
                stamp = f"{g.tm_mday:02d}/{MONTHS[g.tm_mon - 1]}/{g.tm_year}:{g.tm_hour:02d}:{g.tm_min:02d}:{g.tm_sec:02d} +0000"
                slug = rng.choice(slugs)
                uri = rng.choice([
                    f"/api/0/organizations/{slug}/issues/?cursor={rng.getrandbits(20)}",
                    f"/api/0/projects/{slug}/backend/events/",
                    f"/api/0/organizations/{slug}/",
                    "/api/0/users/me/",
                    "/static/app.js",
                ])
                status = rng.choice(["200", "200", "200", "201", "401", "403", "404", "-"])
                line = (
                    f'{rng.choice(ips)} - - [{stamp}] "GET {uri} HTTP/1.1" {status} {rng.randrange(50, 9000)}'
                    f' "-" "{rng.choice(uas)}"'
                )
            if r > 0.99:
                line = line[: rng.randrange(30, 60)]  # cut off inside the request: rejected
                rejected += 1
            else:
                valid += 1
                if len(previous) < 500:
                    previous.append(line)
            f.write(line + "\n")
    return {"valid": valid, "rejected": rejected, "blank": blank, "counted": valid + rejected}


def command(db: Path, log: Path) -> list[str]:
    exe = shutil.which("datasette-forensics")
    if exe:
        return [exe, "import-logs", str(db), str(log)]
    return [sys.executable, "-c", "from datasette_forensics.cli import cli; cli()", "import-logs", str(db), str(log)]


def run_env() -> dict:
    return dict(os.environ, FORENSICS_CHUNK_LINES=str(CHUNK))


def query(db: Path, sql: str, params=()) -> list[tuple]:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def progress(db: Path) -> tuple[int, int]:
    """(batches, lines read by the latest batch), as committed."""
    try:
        row = query(db, "select count(*), coalesce(max(id), 0) from import_batches")[0]
        if not row[0]:
            return 0, -1
        return row[0], query(db, "select lines_read from import_batches where id = ?", [row[1]])[0][0]
    except sqlite3.OperationalError:
        return 0, -1  # schema not created yet


def started_batch(db: Path, pid: int) -> bool:
    try:
        return bool(query(db, "select 1 from import_batches where pid = ? and status = 'running'", [pid]))
    except sqlite3.OperationalError:
        return False


def writing(db: Path) -> bool:
    """Whether a writer holds the database (the importer, once its lines are all in:
    bringing scope, ip_info and aggregates up to date)."""
    conn = sqlite3.connect(db, timeout=0, isolation_level=None)
    try:
        conn.execute("begin immediate")
        conn.execute("rollback")
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        conn.close()


def check_consistent(db: Path) -> dict:
    """The invariants that must hold after any kill; returns the batch totals."""
    conn = sqlite3.connect(db, timeout=30)
    try:
        assert conn.execute("pragma integrity_check").fetchall() == [("ok",)]
        totals = {"read": 0, "imported": 0, "rejected": 0, "duplicate": 0}
        for batch_id, read, imported, rejected, duplicate, last_line in conn.execute(
            """select id, lines_read, lines_imported, lines_rejected, lines_duplicate, last_line
            from import_batches"""
        ).fetchall():
            stored = conn.execute("select count(*) from requests where batch_id = ?", [batch_id]).fetchone()[0]
            kept = conn.execute("select count(*) from rejected_lines where batch_id = ?", [batch_id]).fetchone()[0]
            assert (imported, rejected) == (stored, kept), f"batch {batch_id}: counters {imported}/{rejected}, rows {stored}/{kept}"
            assert read == imported + rejected + duplicate
            beyond = conn.execute(
                """select (select count(*) from requests where batch_id = :b and line_no > :l)
                + (select count(*) from rejected_lines where batch_id = :b and line_no > :l)""",
                {"b": batch_id, "l": last_line},
            ).fetchone()[0]
            assert beyond == 0, f"batch {batch_id} holds lines after its last_line {last_line}"
            totals["read"] += read
            totals["imported"] += imported
            totals["rejected"] += rejected
            totals["duplicate"] += duplicate
        copies = conn.execute(  # the counts staged or kept apart are merged when their batch closes
            """select (select coalesce(sum(n), 0) from line_counts where h not in (select h from line_counts_batch))
            + (select coalesce(sum(max(b.seen, coalesce(c.n, 0))), 0) from line_counts_batch b left join line_counts c using (h))
            + (select coalesce(sum(n), 0) from line_counts_staged)"""
        ).fetchone()[0]
        rows = conn.execute("select (select count(*) from requests) + (select count(*) from rejected_lines)").fetchone()[0]
        assert copies == rows, f"line_counts holds {copies} copies for {rows} stored lines"
        return totals
    finally:
        conn.close()


DERIVED = {
    "scoped": "select org_id, count(*), total(request_id), total(explained) from scoped group by org_id order by org_id",
    "sig_org": "select count(*), total(requests), total(unexplained), total(first_ts), total(last_ts) from sig_org",
    "signature_scope": "select count(*), total(orgs), total(requests), total(cross_tenant) from signature_scope",
    "post_patch_valid": "select count(*), total(requests) from post_patch_valid",
    "sig_stats": "select count(*), total(requests), total(ok), total(after_patch), total(in_scope), total(last_uri_id) from sig_stats",
    "ips": "select count(*), count(asn), count(provider), count(rdns) from ips",
}


def derived(db) -> dict:
    return {name: db.execute(sql).fetchall() for name, sql in DERIVED.items()}


def kill_plan(rng: random.Random, counted: int) -> list[tuple[str, float]]:
    """(mode, value) per kill, in run order: early kills first, then ever later progress."""
    plan = [("startup", rng.uniform(0.0, 0.4)), ("no-commit", 0.0), ("startup", rng.uniform(0.2, 0.8)), ("no-commit", 0.0)]
    targets = sorted(rng.sample(range(counted // 50, counted * 19 // 20), KILLS - 6))
    plan += [("progress", t) for t in targets]
    plan += [("finishing", rng.uniform(0.0, 0.3)), ("finishing", rng.uniform(0.3, 1.0))]
    assert len(plan) == KILLS
    return plan


def run_and_kill(db: Path, log: Path, after: float | None, kill_now) -> tuple[subprocess.Popen, int, bytes]:
    """Import ``log`` in a subprocess and SIGKILL it after ``after`` seconds, or once
    ``kill_now(proc)`` says so; returns the process, the lines read at the kill, stderr."""
    proc = subprocess.Popen(command(db, log), env=run_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if after is not None:
            time.sleep(after)
        else:
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline and not kill_now(proc):
                time.sleep(0.003)
        _, read_at_kill = progress(db)
        proc.send_signal(signal.SIGKILL)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc, read_at_kill, stderr


def test_sigkill_at_random_moments_keeps_the_database_consistent(tmp_path):
    rng = random.Random(SEED)
    log = tmp_path / "access.log"
    expected = write_log(log, LINES, SEED)
    db = tmp_path / "crash.db"
    build_sample_db(db, with_logs=False).conn.close()  # records and incident: scope is live
    started = time.monotonic()
    seen = {"no commit yet": 0, "mid-way": 0, "after the last chunk": 0, "finished first": 0}
    for mode, value in kill_plan(rng, expected["counted"]):

        def kill_now(proc) -> bool:
            if mode == "no-commit" and started_batch(db, proc.pid):
                return True  # this run has its batch (new or resumed), not yet its next chunk
            batches, read = progress(db)
            if mode == "progress" and read >= value:
                time.sleep(rng.uniform(0, 0.04))  # land inside the next chunk
                return True
            if mode == "finishing" and read >= expected["counted"] and writing(db):
                time.sleep(value)  # inside the work after the last chunk
                return True
            return False

        proc, read_at_kill, stderr = run_and_kill(db, log, value if mode == "startup" else None, kill_now)
        if proc.returncode == -signal.SIGKILL:
            if read_at_kill <= 0:
                seen["no commit yet"] += 1
            elif read_at_kill < expected["counted"]:
                seen["mid-way"] += 1
            else:
                seen["after the last chunk"] += 1
        else:
            assert proc.returncode == 0, stderr.decode()
            seen["finished first"] += 1
        assert b"Traceback" not in stderr, stderr.decode()
        check_consistent(db)

    assert seen["no commit yet"] >= 2 and seen["mid-way"] >= 10, seen

    final = subprocess.run(command(db, log), env=run_env(), capture_output=True, timeout=300)
    assert final.returncode == 0, final.stderr.decode()
    totals = check_consistent(db)
    requests, distinct, rejected = query(
        db,
        """select (select count(*) from requests), (select count(distinct batch_id || ':' || line_no) from requests),
        (select count(*) from rejected_lines)""",
    )[0]
    assert requests == distinct == totals["imported"] == expected["valid"]
    assert rejected == totals["rejected"] == expected["rejected"]
    statuses = query(db, "select status, count(*) from import_batches group by status")
    assert statuses[0][0] == "complete" and len(statuses) == 1, statuses
    # Interrupted or not, the derived tables are what a full recompute gives.
    conn = schema.connect(str(db))
    try:
        before = derived(conn)
        assert before["scoped"], "the generated log should put requests in scope"
        derived_data.recompute(conn)
        ipinfo.apply_ip_info(conn)
        assert derived(conn) == before
    finally:
        conn.conn.close()
    print(f"\n{KILLS} kills: {seen}; {time.monotonic() - started:.1f}s")


LATER_KILLS = 8


def test_sigkill_of_a_later_batch_keeps_its_counts_and_the_earlier_batch_s(tmp_path):
    """A second log, sharing lines with a first one already imported, is killed at
    random moments while it counts its lines apart from line_counts (the first batch is
    finished), then run to the end: every line is stored as often as the log with most
    copies of it holds, and the counts say so."""
    rng = random.Random(SEED + 1)
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    write_log(first, 40_000, SEED + 2)
    write_log(second, 60_000, SEED + 3)
    shared = [line for line in first.read_text().splitlines() if line.strip()][::40]
    with open(second, "a", encoding="utf-8", newline="\n") as f:  # 1,000 lines of the first log, some twice
        f.writelines(line + "\n" for line in shared + shared[::3])
    db = tmp_path / "later.db"
    build_sample_db(db, with_logs=False).conn.close()
    done = subprocess.run(command(db, first), env=run_env(), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    counted = query(db, "select lines_read from import_batches")[0][0]
    second_lines = sum(1 for line in second.read_text().splitlines() if line.strip())
    targets = sorted(rng.sample(range(second_lines // 20, second_lines * 19 // 20), LATER_KILLS))
    midway = 0
    for target in targets:

        def kill_now(proc) -> bool:
            batches, read = progress(db)
            if batches == 2 and read >= target:
                time.sleep(rng.uniform(0, 0.04))  # land inside the next chunk
                return True
            return False

        proc, read_at_kill, stderr = run_and_kill(db, second, None, kill_now)
        assert b"Traceback" not in stderr, stderr.decode()
        if proc.returncode == -signal.SIGKILL and 0 < read_at_kill < second_lines:
            midway += 1
        check_consistent(db)
    assert midway >= LATER_KILLS // 2
    final = subprocess.run(command(db, second), env=run_env(), capture_output=True, timeout=300)
    assert final.returncode == 0, final.stderr.decode()
    check_consistent(db)
    assert query(db, "select status, lines_read from import_batches order by id") == [
        ("complete", counted), ("complete", second_lines)
    ]
    # Each distinct line, stored as often as the log with most copies of it holds.
    copies = [Counter(line for line in path.read_text().splitlines() if line.strip()) for path in (first, second)]
    expected = sum(max(copies[0][line], copies[1][line]) for line in copies[0].keys() | copies[1].keys())
    stored = query(db, "select (select count(*) from requests) + (select count(*) from rejected_lines)")[0][0]
    assert stored == expected
    assert query(db, "select sum(n) from line_counts")[0][0] == expected
    for table in ("line_counts_staged", "line_counts_batch", "line_counts_suspended"):
        assert query(db, f"select count(*) from {table}") == [(0,)], table
