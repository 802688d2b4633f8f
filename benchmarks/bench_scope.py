"""Scope benchmark (issue "Account records, the incident and its scope").

Two measurements, in one run:

1. ``derived.recompute`` over the 5,000,000-request database that
   ``bench_pages.py`` builds (cached under ``benchmarks/out/``; built here if
   missing), on a copy: the whole scope (org resolution through slug history,
   integration windows, post-patch evidence, cross-tenant signatures), the
   re-evaluation of the applied rules and the page aggregates. Target: <= 30 s.
2. Importing the 1,000,000-line combined log of ``bench_import.py`` into a
   database that already holds account records (an org and an integration for
   every org slug in the log, ~2,900 orgs) and an incident whose window covers
   part of the log, so the incremental scope runs after the batch.
   Target: >= 200,000 lines/s.
3. Importing the same log as a later batch into a copy of the 5,000,000-request
   database of (1), which holds account records, an incident, its scope and
   rules, with one duplicate-line count per stored request, as the import of
   those requests would have left: the indexes are live, and every chunk reads
   and writes counts among millions. The database has no line counts' filter
   (derived/line_filter.py), so the batch builds it, as the first later batch
   does; ``--line-filter`` builds it before the timer, as that batch leaves it
   for the next ones. ``--only`` picks measurements.

Example:

    python benchmarks/bench_scope.py
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")
RESULTS = os.path.join(HERE, "results")
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

INCIDENT = """
name = "benchmark"
introduced_at = "2020-06-01T12:00:00Z"
patched_at = "2020-06-02T12:00:00Z"
scope_paths = ['^/api/0/']
org_routes = ['^/api/0/organizations/(?P<org>[^/]+)/', '^/api/0/projects/(?P<org>[^/]+)/']
"""
SLUG = re.compile(rb"/api/0/(?:organizations|projects)/([^/ ?]+)/")


def recompute(requests: int) -> dict:
    import bench_pages

    from datasette_forensics import derived, schema

    cached = os.path.join(OUT, f"pages-{requests}-v{bench_pages.GENERATOR_VERSION}.db")
    if not os.path.exists(cached):
        bench_pages.build(cached, requests)
    work = os.path.join(OUT, "scope-recompute.db")
    shutil.copy(cached, work)
    db = schema.connect(work)
    in_scope_before = db.execute("select count(*) from scoped").fetchone()[0]
    start = time.perf_counter()
    cpu = time.process_time()
    derived.recompute(db)
    seconds = time.perf_counter() - start
    result = {
        "requests": db.execute("select count(*) from requests").fetchone()[0],
        "in_scope": db.execute("select count(*) from scoped").fetchone()[0],
        "seconds": round(seconds, 2),
        "cpu_seconds": round(time.process_time() - cpu, 2),
    }
    assert result["in_scope"] == in_scope_before, "recompute changed the scope of an unchanged database"
    db.conn.close()
    os.remove(work)
    return result


def import_with_records(lines: int) -> dict:
    import bench_import

    from datasette_forensics import incident, ingest, records, schema

    log = bench_import.cached_log(lines)
    slugs = set()
    with open(log, "rb") as f:
        for line in f:
            m = SLUG.search(line)
            if m:
                slugs.add(m.group(1).decode())
    work = os.path.join(OUT, "scope-import.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(work + suffix):
            os.remove(work + suffix)
    orgs = os.path.join(OUT, "scope-orgs.csv")
    integrations = os.path.join(OUT, "scope-integrations.csv")
    toml = os.path.join(OUT, "scope-incident.toml")
    with open(orgs, "w") as f:
        f.write("id,slug,name\n" + "".join(f"{i},{s},{s}\n" for i, s in enumerate(sorted(slugs), 1)))
    with open(integrations, "w") as f:
        f.write("id,org_id,created_at\n" + "".join(f"i{i},{i},2020-05-01T00:00:00Z\n" for i in range(1, len(slugs) + 1)))
    with open(toml, "w") as f:
        f.write(INCIDENT)
    db = schema.connect(work)
    records.import_records(db, "orgs", orgs)
    records.import_records(db, "integrations", integrations)
    incident.set_incident(db, toml)
    start = time.perf_counter()
    cpu = bench_import.cpu_seconds()  # the parse process's CPU too
    (result,) = ingest.import_logs(db, [log])
    seconds = time.perf_counter() - start
    out = {
        "lines": result.lines_read,
        "orgs": len(slugs),
        "in_scope": db.execute("select count(*) from scoped").fetchone()[0],
        "seconds": round(seconds, 2),
        "cpu_seconds": round(bench_import.cpu_seconds() - cpu, 2),
        "lines_per_second": round(result.lines_read / seconds),
    }
    db.conn.close()
    return out


def import_into_large(requests: int, lines: int, line_filter: bool = False) -> dict:
    import bench_import
    import bench_pages

    from datasette_forensics import ingest, schema

    log = bench_import.cached_log(lines)
    cached = os.path.join(OUT, f"pages-{requests}-v{bench_pages.GENERATOR_VERSION}.db")
    if not os.path.exists(cached):
        bench_pages.build(cached, requests)
    work = os.path.join(OUT, "scope-import-large.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(work + suffix):
            os.remove(work + suffix)
    shutil.copy(cached, work)
    db = schema.connect(work)
    before = db.execute("select count(*) from requests").fetchone()[0]
    if not db.execute("select count(*) from line_counts").fetchone()[0]:
        # bench_pages writes requests without their lines: give each one the count an
        # import would have left (distinct hashes in hash order, as a merge writes them).
        rng = random.Random(requests)
        hashes = sorted({rng.getrandbits(64) - (1 << 63) for _ in range(before)})
        with db.conn:
            db.conn.executemany(
                "insert into line_counts (h, n, batch_id, base, seen) values (?, 1, 1, 0, 1)", ((h,) for h in hashes)
            )
        del hashes
    if line_filter:  # as a previous later batch leaves it (the first one builds it)
        from datasette_forensics.derived import line_filter as filters

        with db.conn:
            filters.usable(db.conn, 0, filters.Memo())
    db.execute("pragma wal_checkpoint(truncate)")
    start = time.perf_counter()
    cpu = bench_import.cpu_seconds()
    (result,) = ingest.import_logs(db, [log])
    seconds = time.perf_counter() - start
    out = {
        "lines": result.lines_read,
        "requests_before": before,
        "line_counts_before": before,
        "line_filter_before": line_filter,
        "in_scope": db.execute("select count(*) from scoped").fetchone()[0],
        "seconds": round(seconds, 2),
        "cpu_seconds": round(bench_import.cpu_seconds() - cpu, 2),
        "lines_per_second": round(result.lines_read / seconds),
    }
    db.conn.close()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(work + suffix):
            os.remove(work + suffix)
    return out


MEASUREMENTS = ("recompute", "import_with_records", "import_into_large")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5_000_000)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--only", action="append", choices=MEASUREMENTS, help="run only these (repeatable)")
    parser.add_argument(
        "--line-filter",
        action="store_true",
        help="import_into_large: the line counts' filter is there before the batch, as a previous later batch leaves it",
    )
    args = parser.parse_args(argv)
    only = args.only or MEASUREMENTS
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(RESULTS, exist_ok=True)
    results = {
        "command": " ".join(["python", "benchmarks/bench_scope.py"] + (sys.argv[1:] if argv is None else argv)),
        "load_average_start": os.getloadavg()[0],
    }
    if "recompute" in only:
        results["recompute"] = recompute(args.requests)
    if "import_with_records" in only:
        results["import_with_records"] = import_with_records(args.lines)
    if "import_into_large" in only:
        results["import_into_large"] = import_into_large(args.requests, args.lines, args.line_filter)
    results["load_average_end"] = os.getloadavg()[0]
    print(json.dumps(results, indent=2))
    name = "scope.json" if args.only is None else f"scope-{'-'.join(only)}.json"
    with open(os.path.join(RESULTS, name), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
