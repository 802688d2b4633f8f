"""Where a first import's time goes: the chunk phase on two processes, then the close on one.

Imports the cached N-line combined log of ``bench_import.py`` into a fresh
database, in this process (the parse process forks from it as usual), and times,
from outside the code (wrapping its functions, nothing in the package changes):

- the chunk phase, from the start to the last chunk stored, and in it the store's
  busy time per part (dictionary rows per table, duplicate-line counts, the
  ``requests`` rows and the rest, the commits), the store's idle-time work (hour
  cells and WAL checkpoints while it waits for the parser) and its waits for the
  next chunk (the pipe and unpickling);
- the parse process's CPU seconds;
- the close, the one transaction that marks the batch finished, per part: the
  duplicate-line counts merged, the deferred indexes built, ip_info, the scope and
  the aggregates.

So the figures say which side bounds the chunk phase and how long the serial close
is: what a faster import has to cut. Runs ``--repeat`` times and writes every run to
``benchmarks/results/phases-N.json``.

Example:

    python benchmarks/bench_phases.py --lines 1000000 --repeat 3
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_import  # noqa: E402

RESULTS = os.path.join(HERE, "results")


def run_once(log: str) -> dict:
    """One import in this process, its phases timed (call in a fresh process)."""
    from multiprocessing.connection import Connection

    from datasette_forensics import derived, ingest, ipinfo, schema
    from datasette_forensics.derived import aggregates, indexes, line_counts

    spent: collections.Counter = collections.Counter()
    marks: dict[str, float] = {}

    def timed(owner, name: str, key: str, after=None) -> None:
        function = getattr(owner, name)

        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - started
                if after:
                    after()

        setattr(owner, name, wrapper)

    in_store = [False]
    store_rows = ingest.store_rows

    def store_rows_timed(conn, d, rows, moved):
        started = time.perf_counter()
        try:
            return store_rows(conn, d, rows, moved)
        finally:
            spent[f"store: {d.table} rows"] += time.perf_counter() - started

    ingest.store_rows = store_rows_timed
    write_transaction = ingest.write_transaction

    @contextlib.contextmanager
    def write_transaction_timed(db):
        with contextlib.ExitStack() as stack:
            stack.enter_context(write_transaction(db))
            yield
            started = time.perf_counter()
            stack.close()  # the commit
            if in_store[0]:
                spent["store: commits"] += time.perf_counter() - started

    ingest.write_transaction = write_transaction_timed
    store = ingest.BatchWriter.store

    def store_timed(self, chunk, result):
        in_store[0] = True
        started = time.perf_counter()
        try:
            return store(self, chunk, result)
        finally:
            in_store[0] = False
            spent["store: busy"] += time.perf_counter() - started
            marks["last_stored"] = time.perf_counter()

    ingest.BatchWriter.store = store_timed
    timed(ingest.BatchWriter, "idle", "store: idle-time work")
    timed(Connection, "recv", "store: waiting for a chunk (and unpickling it)")
    timed(line_counts, "count", "store: duplicate-line counts")
    timed(ingest, "_close_batch", "close")
    timed(line_counts, "finish_batch", "close: line counts merged")
    timed(indexes, "build", "close: deferred indexes built")
    timed(ipinfo, "apply_ip_info", "close: ip_info")
    timed(derived.scope, "after_batch", "close: scope")
    timed(aggregates, "refresh_batch", "close: aggregates")
    timed(derived.window_hours, "catch_up", "hour cells counted (idle time and close)")
    os.makedirs(bench_import.OUT, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=bench_import.OUT) as tmp:
        db = schema.connect(os.path.join(tmp, "phases.db"))
        started, cpu = time.perf_counter(), time.process_time()
        (result,) = ingest.import_logs(db, [log], command="bench_phases")
        seconds = time.perf_counter() - started
        main_cpu = time.process_time() - cpu
        db.conn.close()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    parts = {key: round(value, 3) for key, value in sorted(spent.items())}
    parts["store: requests and the rest"] = round(
        spent["store: busy"] - spent["store: commits"] - spent["store: duplicate-line counts"]
        - sum(v for k, v in spent.items() if k.endswith(" rows")), 3,
    )  # fmt: skip
    return {
        "lines": result.lines_read,
        "seconds": round(seconds, 3),
        "chunk_phase_seconds": round(marks["last_stored"] - started, 3),
        "close_seconds": round(spent["close"], 3),
        "importer_cpu_seconds": round(main_cpu, 3),
        "parse_process_cpu_seconds": round(children.ru_utime + children.ru_stime, 3),
        "parts": parts,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_once(args.child)))
        return
    log = bench_import.cached_log(args.lines)
    runs = []
    for _ in range(args.repeat):
        load = os.getloadavg()[0]
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child", log], check=True, capture_output=True, text=True
        ).stdout
        run = json.loads(out.strip().splitlines()[-1])
        run["load_average_before"] = round(load, 2)
        runs.append(run)
        print(
            f"{run['seconds']:.2f} s: chunk phase {run['chunk_phase_seconds']:.2f} s, close {run['close_seconds']:.2f} s;"
            f" CPU: importer {run['importer_cpu_seconds']:.2f} s, parse process {run['parse_process_cpu_seconds']:.2f} s"
            f" (load {load:.2f})"
        )
        for key, value in run["parts"].items():
            print(f"    {key:50} {value:7.2f}")
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"phases-{args.lines}.json")
    with open(path, "w") as f:
        json.dump({"command": "python benchmarks/bench_phases.py " + " ".join(argv or sys.argv[1:]),
                   "machine": bench_import.machine(), "runs": runs}, f, indent=2)  # fmt: skip
    print(f"written to {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
