"""ClickHouse pull benchmark: ``import-logs --from-clickhouse`` on millions of rows.

Starts a throwaway ClickHouse server (tests/clickhouse_server.py), generates N rows
inside it with ``numbers()`` into a MergeTree table with the jsonl column names (a
spread like benchmarks/bench_import.py: 5,000 addresses, 500 user agents, 60% of
requests on 20,000 popular URIs and 40% on new ones, two user agents per address,
a token on one request in five), then times two contenders, each in its own
subprocess so that its peak memory is its own (``memory.py``: the import and its
parse process together):

- ``pull``: ``clickhouse.open_rows`` and the row path alone (driver, conversion to
  records, canonical JSON), nothing stored: the ClickHouse side of the import;
- ``import``: ``datasette-forensics import-logs DB --from-clickhouse URL --table
  bench``, exactly what an analyst runs: the row path plus the shared SQLite write
  path (accounting, duplicate detection, dictionaries, enrichment, scope).

Wall seconds run from starting the subprocess to its exit; CPU seconds are the
subprocess's own and its parse process's (user + system), without the ClickHouse
server's. On a shared
machine the wall figures depend on the load, which the results record.

Example:

    python benchmarks/bench_clickhouse.py --rows 5000000
    python benchmarks/bench_clickhouse.py --rows 200000 --only pull
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "out")
RESULTS = os.path.join(HERE, "results")
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, HERE)

import bench_import  # noqa: E402
import bench_limits  # noqa: E402
import memory  # noqa: E402
from clickhouse_server import ClickHouseServer  # noqa: E402

CONTENDERS = ("pull", "import")
TARGET = {"rows_per_second": 150_000, "peak_rss_mb": 400}

CREATE = """
CREATE TABLE bench (
    timestamp DateTime,
    remote_addr String,
    http_user_agent String,
    request_method String,
    request_uri String,
    status UInt16,
    body_bytes_sent UInt64,
    token_id Nullable(String),
    host String
) ENGINE = MergeTree ORDER BY timestamp
"""

# 20 days from 2020-07-01, in order; hashes of the row number pick the values.
GENERATE = """
INSERT INTO bench
SELECT
    toDateTime(1593561600 + intDiv(number * 1728000, {rows})),
    IPv4NumToString(toUInt32(3325256704 + (intHash32(number) % 5000 AS ip))),
    concat('Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/',
           toString(80 + (intHash32(ip) + number % 2) % 500), '.0.4147.89 Safari/537.36'),
    arrayElement(['GET', 'GET', 'GET', 'GET', 'GET', 'GET', 'GET', 'POST', 'PUT', 'DELETE'], number % 10 + 1),
    if(intHash32(number * 5) % 5 < 3,
       concat('/api/0/organizations/org-', toString(intHash32(number * 7) % 20000 % 2000),
              '/issues/', toString(intHash32(number * 7) % 20000), '/'),
       concat('/api/0/organizations/org-', toString(intHash32(number * 11) % 2000),
              '/issues/', toString(1000000000 + number), '/?cursor=', toString(intHash32(number * 13)))),
    toUInt16(arrayElement([200, 200, 200, 200, 200, 200, 201, 304, 403, 404], number % 10 + 1)),
    toUInt64(50 + intHash32(number * 17) % 60000),
    if(number % 5 = 0, toString(700 + number % 200), NULL),
    'api.example.com'
FROM numbers({rows})
"""

PULL_CHILD = """
import sys, time
from datasette_forensics import clickhouse
url, query = sys.argv[1], sys.argv[2]
started = time.perf_counter()
source = clickhouse.open_rows(url, query)
rows = rejected = 0
for _, raw, record, reason in source.rows:
    rows += 1
    rejected += record is None
print(rows, rejected)
"""


def machine() -> dict:
    """The machine facts every benchmark records (one definition, in bench_import)."""
    return bench_import.machine()


def loadavg() -> list[float]:
    try:
        return [float(x) for x in open("/proc/loadavg").read().split()[:3]]
    except OSError:
        return []


def run_child(args: list[str]) -> tuple[float, float, float, str]:
    """Run a subprocess; (wall s, CPU s with its children's, peak RSS MB, stdout).

    The peak is memory.run's: the import and its parse process together."""
    result = memory.run(args)
    if result["returncode"] != 0:
        raise SystemExit(f"{args[:3]} failed ({result['returncode']}): {result['stderr'][-2000:]}")
    return result["seconds"], result["cpu_seconds"], result["peak_rss_mb"], result["stdout"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--only", choices=CONTENDERS, action="append")
    parser.add_argument("--no-write", action="store_true", help="Print the results, do not write them.")
    options = parser.parse_args(argv)
    contenders = options.only or list(CONTENDERS)
    os.makedirs(OUT, exist_ok=True)
    root = tempfile.mkdtemp(prefix="bench-clickhouse-", dir=OUT)
    server = ClickHouseServer(root)
    results = []
    try:
        server.start()
        client = server.client()
        client.execute(CREATE)
        started = time.perf_counter()
        client.execute(GENERATE.format(rows=options.rows))
        print(f"generated {options.rows:,} rows in ClickHouse in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        (stored,) = client.execute("SELECT count() FROM bench")[0]
        assert stored == options.rows, stored
        query = "SELECT * FROM bench"
        for contender in contenders:
            load_before = loadavg()
            if contender == "pull":
                wall, cpu, rss, out = run_child([sys.executable, "-c", PULL_CHILD, server.url, query])
                rows, rejected = map(int, out.split())
                assert (rows, rejected) == (options.rows, 0), out
                extra = {}
            else:
                db = os.path.join(OUT, "bench-clickhouse.db")
                for suffix in ("", "-wal", "-shm"):
                    if os.path.exists(db + suffix):
                        os.remove(db + suffix)
                wall, cpu, rss, out = run_child(
                    [sys.executable, "-c", bench_limits.CHILD,
                     "import-logs", db, "--from-clickhouse", server.url, "--table", "bench"]
                )
                expected = f"{options.rows:,} rows read = {options.rows:,} imported + 0 rejected + 0 duplicates"
                assert expected in out, out
                conn = sqlite3.connect(db)
                (requests,) = conn.execute("select count(*) from requests").fetchone()
                conn.close()
                assert requests == options.rows, requests
                extra = {"db_mb": round(os.path.getsize(db) / 2**20, 1), "output": out.strip()}
            result = {
                "contender": contender,
                "rows": options.rows,
                "seconds": round(wall, 2),
                "cpu_seconds": round(cpu, 2),
                "rows_per_second": round(options.rows / wall),
                "rows_per_cpu_second": round(options.rows / cpu),
                "peak_rss_mb": round(rss, 1),
                "loadavg_before": load_before,
                "loadavg_after": loadavg(),
                **extra,
            }
            print(json.dumps(result), file=sys.stderr)
            results.append(result)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    by_name = {r["contender"]: r for r in results}
    summary = {
        "command": "python benchmarks/bench_clickhouse.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "rows": options.rows,
        "machine": machine(),
        "clickhouse": "18.16 (Debian clickhouse-server), native protocol, max_block_size 100000",
        "target": TARGET,
        "results": results,
    }
    if "import" in by_name:
        r = by_name["import"]
        summary["target_met"] = {
            "rows_per_second": r["rows_per_second"] >= TARGET["rows_per_second"],
            "peak_rss_mb": r["peak_rss_mb"] < TARGET["peak_rss_mb"],
        }
    text = json.dumps(summary, indent=2) + "\n"
    if options.no_write:
        print(text)
        return
    os.makedirs(RESULTS, exist_ok=True)
    name = f"clickhouse-{options.rows // 1_000_000}m.json" if options.rows % 1_000_000 == 0 else f"clickhouse-{options.rows}.json"
    with open(os.path.join(RESULTS, name), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
