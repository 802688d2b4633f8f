"""Atomic changes: SIGKILL `incident`, `import-records` and `rules --apply/--undo` at many
moments; the report afterwards is the report of the old inputs or of the new ones.

Each command runs in a forked child of this process (the package already imported,
so a kill lands in the command, not in Python's start-up), on a fresh copy of the
sample database, and is killed with SIGKILL after a delay spread evenly over the
time the command takes to finish (and a little beyond). After each kill the
database passes SQLite's integrity check, its report equals the old or the new
one, and every derived table equals a full recomputation from the base tables.
Both outcomes must be seen, so the kills are known to land before and after the
commit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from datasette_forensics import derived, report, schema
from datasette_forensics.cli import cli
from datasette_forensics.rules import actions, resolve_names


KILLS = 25

# Every derived table, as rows sorted (computed_at is a timestamp, not a figure).
DERIVED = {
    "scoped": "select sig_id, org_id, request_id, ts, explained from scoped order by 1, 2, 3",
    "sig_org": "select * from sig_org order by sig_id, org_id",
    "signature_scope": "select * from signature_scope order by sig_id",
    "post_patch_valid": "select * from post_patch_valid order by sig_id, org_id",
    "sig_stats": "select * from sig_stats order by sig_id",
    "pivot_groups": "select * from pivot_groups order by grouping, gkey",
    "org_stats": "select * from org_stats order by org_id",
    "scope_days": "select * from scope_days order by org_id, day",
    "rule_waterfall": "select position, rule, remaining, explained from rule_waterfall order by position",
    "paths": "select id, scope_match, slug, org_static, slug_timed from paths order by id",
    "ips": "select id, asn, provider, rdns from ips order by id",
}

OTHER_INCIDENT = """
name = "The same bug, a shorter window"
introduced_at = "2020-07-05T00:00:00Z"
patched_at = "2020-07-18T00:00:00Z"
scope_paths = ['^/api/0/']
org_routes = ['^/api/0/organizations/(?P<org>[^/]+)/', '^/api/0/projects/(?P<org>[^/]+)/']
require_integration = false
"""

# A staff session from the cross-tenant attacker's address and agent: the staff
# rule (applied) now explains the attacker's requests.
SESSIONS = (
    '{"user_id": "900", "ip": "192.0.2.66", "user_agent": "curl/7.68.0", '
    '"first_seen": "2020-06-01T00:00:00Z", "last_seen": "2020-08-01T00:00:00Z"}\n'
)

# Globex Gaming's integration existed a week earlier: more of its requests are in scope.
INTEGRATIONS = "id,org_id,name,created_at,deleted_at\n503,103,Globex Gaming bot,2020-07-01T00:00:00Z,\n"


@pytest.fixture(scope="module")
def applied_template(sample_db_template, tmp_path_factory) -> Path:
    """The sample database with two rules applied, so every change re-evaluates rules."""
    path = tmp_path_factory.mktemp("atomic") / "applied.db"
    shutil.copy(sample_db_template, path)
    db = schema.connect(str(path))
    for name in ("staff", "member_current"):
        actions.apply(db, name, "setup")
    db.conn.close()
    return path


@pytest.fixture(scope="module")
def all_applied_template(sample_db_template, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("atomic") / "all.db"
    shutil.copy(sample_db_template, path)
    db = schema.connect(str(path))
    for name in resolve_names(db, "all"):
        actions.apply(db, name, "setup")
    db.conn.close()
    return path


def report_of(path: Path) -> str:
    """The report as JSON text, read the way a command reads it (migrations, then
    any unfinished derived work)."""
    db = schema.connect(str(path))
    try:
        return json.dumps(report.build_report(db), sort_keys=True)
    finally:
        db.conn.close()


def snapshot(conn) -> dict:
    return {name: conn.execute(sql).fetchall() for name, sql in DERIVED.items()}


def assert_derived_current(path: Path) -> None:
    """Every derived table equals a full recomputation from the base tables."""
    db = schema.connect(str(path))
    try:
        kept = snapshot(db.conn)
        db.conn.execute("begin")
        derived.recompute(db)
        fresh = snapshot(db.conn)
        db.conn.execute("rollback")
        for name in DERIVED:
            assert kept[name] == fresh[name], f"{name} differs from a full recompute"
    finally:
        db.conn.close()


def run_forked(args: list[str], delay: float | None) -> float:
    """Run the CLI in a forked child; SIGKILL it after ``delay`` seconds (None: let it
    finish). Returns the seconds until the child ended."""
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: run the command, never return into pytest
        code = 1
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            cli.main(args, standalone_mode=False)
            code = 0
        finally:
            os._exit(code)
    if delay is not None:
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if delay is None:
        assert os.waitstatus_to_exitcode(status) == 0, f"{args} failed"
    return time.perf_counter() - started


SCENARIOS = {
    "incident": ("applied", lambda db, d: ["incident", db, str(d / "other.toml")]),
    "import-records sessions": ("applied", lambda db, d: ["import-records", db, "sessions", str(d / "s.jsonl")]),
    "import-records integrations": ("applied", lambda db, d: ["import-records", db, "integrations", str(d / "i.csv")]),
    "rules --apply all": ("plain", lambda db, d: ["rules", db, "--apply", "all", "--actor", "kill"]),
    "rules --undo all": ("all", lambda db, d: ["rules", db, "--undo", "all", "--actor", "kill"]),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_kill_leaves_old_or_new_report(scenario, tmp_path, sample_db_template, applied_template, all_applied_template):
    base_kind, command = SCENARIOS[scenario]
    base = {"plain": sample_db_template, "applied": applied_template, "all": all_applied_template}[base_kind]
    (tmp_path / "other.toml").write_text(OTHER_INCIDENT)
    (tmp_path / "s.jsonl").write_text(SESSIONS)
    (tmp_path / "i.csv").write_text(INTEGRATIONS)
    work = tmp_path / "work.db"

    def fresh() -> str:
        for suffix in ("-wal", "-shm"):
            Path(str(work) + suffix).unlink(missing_ok=True)
        shutil.copy(base, work)
        return str(work)

    old = report_of(base)
    duration = run_forked(command(fresh(), tmp_path), None)
    new = report_of(work)
    assert old != new, f"{scenario} should change the report"
    seen = {"old": 0, "new": 0}
    # Delays from 0 to a little beyond the measured run; on a busy machine a run can
    # take longer than measured, so later kills follow until one lands after the commit.
    delays = [duration * 1.1 * i / (KILLS - 1) for i in range(KILLS)]
    delays += [duration * (1.5 + i) for i in range(10)]
    for i, delay in enumerate(delays):
        if i >= KILLS and seen["new"]:
            break
        path = fresh()
        run_forked(command(path, tmp_path), delay)
        conn = sqlite3.connect(path)
        assert conn.execute("pragma integrity_check").fetchall() == [("ok",)]
        conn.close()
        got = report_of(work)
        assert got in (old, new), f"{scenario}: the kill after {delay:.3f}s left a report that is neither the old nor the new one"
        seen["old" if got == old else "new"] += 1
        assert_derived_current(work)
    assert seen["old"] and seen["new"], f"{scenario}: every kill gave the same outcome {seen}"
