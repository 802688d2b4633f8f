"""Limits benchmark: a 10 MB line, a million distinct user agents, a 2 GB log.

Each case runs ``datasette-forensics import-logs`` exactly as an analyst would, in a
fresh subprocess and a fresh database, and reports wall-clock seconds, lines/s and
the command's peak memory: the peak RSS of the command and its parse process
together, and their peak PSS (see ``memory.py``). Logs are generated once under ``benchmarks/out/``
(gitignored) and streamed, never held in memory.

- ``line``: a combined log of 1,000 ordinary lines around one line whose user agent
  is 10 MB; ``line-hostile`` makes that line a worst case for the parser's regexes
  (thousands of ``" 1 1 "`` fragments, never a valid line); ``lines-5`` has five
  such lines, each with a distinct 10 MB user agent.
- ``uas``: one million lines, each with a user agent of its own (and 50,000
  addresses), so every line adds a dictionary row, a signature and an enrichment.
- ``stream``: the realistic log of ``bench_import.py`` grown to ``--gb`` gigabytes.

Example:

    python benchmarks/bench_limits.py                      # all cases, a 2 GB log
    python benchmarks/bench_limits.py --only stream --gb 0.2
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import memory  # noqa: E402
OUT = os.path.join(HERE, "out")
RESULTS = os.path.join(HERE, "results")
CASES = ("line", "lines-5", "line-hostile", "uas", "stream")
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

# The child: the real command line, reporting on the way out the larger of its own
# peak RSS and its parse process's (memory.run also samples the two together).
CHILD = """
import atexit, resource, sys

def _peak():
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                sys.stderr.write("PEAK_RSS_KB %d\\n" % max(int(line.split()[1]), children))

atexit.register(_peak)
from datasette_forensics.cli import cli
cli(prog_name="datasette-forensics")
"""


def _stamp(t: int) -> str:
    g = time.gmtime(t)
    return f"{g.tm_mday:02d}/{MONTHS[g.tm_mon - 1]}/{g.tm_year}:{g.tm_hour:02d}:{g.tm_min:02d}:{g.tm_sec:02d} +0000"


def _ordinary(rng: random.Random, t: int) -> str:
    return (
        f'203.0.113.{rng.randrange(1, 255)} - - [{_stamp(t)}] "GET /api/0/organizations/acme/issues/'
        f'?cursor={rng.getrandbits(24)} HTTP/1.1" 200 {rng.randrange(50, 9000)} "-" "curl/7.68.0"'
    )


def write_big_line(
    path: str, ua_bytes: int = 10 * 2**20, hostile: bool = False, around: int = 1000, agents: int = 1
) -> dict:
    """Ordinary lines around ``agents`` lines, each with a distinct ``ua_bytes`` user
    agent (the big lines are numbered around // 2 + 1, then every around + 1 lines);
    returns what to expect."""
    rng = random.Random(7)
    t = 1595063564
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for k in range(agents):
            for i in range(around // 2):
                f.write(_ordinary(rng, t + i) + "\n")
            head = f'198.51.100.{7 + k} - - [{_stamp(t)}] "GET /api/0/organizations/acme/ HTTP/1.1" 200 1 "-" "'
            if hostile:
                piece = '" 1 1 "x" "'
                f.write(head + piece * (ua_bytes // len(piece)) + "x\n")  # unbalanced: never valid
            else:
                piece = f"Mozilla/5.0 (X11; Linux x86_64; rv:78.0) Gecko/20100101 Firefox/{78 + k}.0 "
                f.write(head + (piece * (ua_bytes // len(piece) + 1))[:ua_bytes] + '"\n')
            for i in range(around - around // 2):
                f.write(_ordinary(rng, t + i) + "\n")
    return {"lines": agents * (around + 1)}


def write_distinct_uas(path: str, n: int = 1_000_000) -> dict:
    """``n`` lines, every one with a user agent of its own."""
    rng = random.Random(11)
    ips = [f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}" for _ in range(50_000)]
    t = 1595063564
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        out = []
        for i in range(n):
            t += rng.random() < 0.2
            ua = f"Client-{i:07d}/{rng.randrange(100)}.{rng.randrange(100)} (build {rng.getrandbits(48):012x}; +https://bots.example/{i})"
            out.append(
                f'{rng.choice(ips)} - - [{_stamp(t)}] "GET /api/0/organizations/org-{rng.randrange(2000)}/ HTTP/1.1"'
                f' 200 {rng.randrange(50, 9000)} "-" "{ua}"\n'
            )
            if len(out) >= 10_000:
                f.writelines(out)
                out = []
        f.writelines(out)
    return {"lines": n}


def stream_log(gb: float) -> str:
    """The realistic log of bench_import.py, about ``gb`` gigabytes (generated once)."""
    sys.path.insert(0, HERE)
    import bench_import

    lines = max(1000, int(gb * 2**30 / 263.5))  # bench_import lines average ~263.5 bytes
    return bench_import.cached_log(lines)


def cached(name: str, write, *args) -> str:
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, name)
    if not os.path.exists(path):
        print(f"generating {path} ...", file=sys.stderr)
        write(path + ".tmp", *args)
        os.replace(path + ".tmp", path)
    return path


def run_import(log: str, db: str, *extra: str, env: dict | None = None, timeout: float | None = None) -> dict:
    """Run ``datasette-forensics import-logs DB LOG`` in a fresh process.

    Returns:
        {returncode, seconds, cpu_seconds, peak_rss_mb, peak_pss_mb, stdout, stderr,
        lines_read, imported, rejected, duplicates} (counts parsed from the command's
        summary line).
    """
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.remove(db + suffix)
    result = memory.run([sys.executable, "-c", CHILD, "import-logs", db, log, *extra], env=env, timeout=timeout)
    m = re.search(r"([\d,]+) lines read = ([\d,]+) imported \+ ([\d,]+) rejected \+ ([\d,]+) duplicates", result["stdout"])
    if m:
        for key, value in zip(("lines_read", "imported", "rejected", "duplicates"), m.groups()):
            result[key] = int(value.replace(",", ""))
    return result


def machine() -> dict:
    sys.path.insert(0, HERE)
    import bench_import

    return bench_import.machine()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=CASES, help="run only these (repeatable)")
    parser.add_argument("--gb", type=float, default=2.0, help="size of the streamed log (default 2)")
    parser.add_argument("--uas", type=int, default=1_000_000, help="distinct user agents (default 1,000,000)")
    parser.add_argument("--keep", action="store_true", help="keep the databases in benchmarks/out/")
    args = parser.parse_args(argv)

    logs = {
        "line": lambda: cached("big-line-10mb-v1.log", write_big_line),
        "lines-5": lambda: cached("big-lines-5x10mb-v1.log", write_big_line, 10 * 2**20, False, 1000, 5),
        "line-hostile": lambda: cached("big-line-10mb-hostile-v1.log", write_big_line, 10 * 2**20, True),
        "uas": lambda: cached(f"distinct-uas-{args.uas}-v1.log", write_distinct_uas, args.uas),
        "stream": lambda: stream_log(args.gb),
    }
    rows = []
    for case in args.only or CASES:
        log = logs[case]()
        db = os.path.join(OUT, f"limits-{case}.db")
        r = run_import(log, db)
        if r["returncode"] != 0:
            print(r["stderr"], file=sys.stderr)
        r.update(case=case, log_mb=os.path.getsize(log) / 2**20, db_mb=os.path.getsize(db) / 2**20)
        r["lines_per_second"] = r.get("lines_read", 0) / r["seconds"]
        if not args.keep:
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(db + suffix):
                    os.remove(db + suffix)
        rows.append(r)
        print(f"  {case}: {r['seconds']:.1f}s, peak RSS {r['peak_rss_mb']:.0f} MB", file=sys.stderr)

    print("\n| case | log MB | lines read | imported | rejected | seconds | lines/s | peak RSS MB | exit |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['case']} | {r['log_mb']:,.0f} | {r.get('lines_read', 0):,} | {r.get('imported', 0):,}"
            f" | {r.get('rejected', 0):,} | {r['seconds']:.1f} | {r['lines_per_second']:,.0f}"
            f" | {r['peak_rss_mb']:.0f} | {r['returncode']} |"
        )
    # Each case keeps its own latest figures: a run of some cases leaves the others'.
    command = " ".join(["python", "benchmarks/bench_limits.py"] + (argv if argv is not None else sys.argv[1:]))
    path = os.path.join(RESULTS, "limits.json")
    previous = {}
    if os.path.exists(path):
        with open(path) as f:
            stored = json.load(f)
        for r in stored.get("results", []):
            r.setdefault("command", stored.get("command"))
            r.setdefault("load_average_1m", stored.get("load_average_1m"))
            previous[r["case"]] = r
    for r in rows:
        previous[r["case"]] = dict(
            {k: v for k, v in r.items() if k not in ("stdout", "stderr")},
            command=command, load_average_1m=os.getloadavg()[0],
        )
    os.makedirs(RESULTS, exist_ok=True)
    with open(path, "w") as f:
        json.dump(
            {"machine": machine(), "results": [previous[c] for c in CASES if c in previous]},
            f,
            indent=2,
        )
        f.write("\n")

if __name__ == "__main__":
    main()
