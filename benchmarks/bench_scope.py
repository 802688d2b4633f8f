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

Example:

    python benchmarks/bench_scope.py
"""

from __future__ import annotations

import argparse
import json
import os
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5_000_000)
    parser.add_argument("--lines", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(RESULTS, exist_ok=True)
    results = {
        "command": "python benchmarks/bench_scope.py" + ("" if argv is None else " " + " ".join(argv)),
        "load_average_start": os.getloadavg()[0],
        "recompute": recompute(args.requests),
        "import_with_records": import_with_records(args.lines),
        "load_average_end": os.getloadavg()[0],
    }
    print(json.dumps(results, indent=2))
    with open(os.path.join(RESULTS, "scope.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
