"""Log import benchmark: the full import against a bare loop and sqlite-utils.

Generates (once, cached under ``benchmarks/out/``) an N-line combined access log
with a realistic spread, then imports it three ways, each in a fresh subprocess
and a fresh database file, so that the peak memory is that contender's own:

- ``bare``: a compiled regex per line and ``executemany`` of the raw groups into
  one wide table of text columns, committed every 20,000 lines;
- ``insert_all``: the same parsed rows as dicts through sqlite-utils
  ``Table.insert_all`` into a wide table, as sqlite-utils does it by default:
  ``Database(path)`` (rollback journal, synchronous=full) and the default batch
  size, each batch its own transaction;
- ``insert_all_wal``: the same with the pragmas of ``schema.tune`` (WAL,
  synchronous=normal, 64 MiB cache): what insert_all costs without the commits;
- ``floor``: SQLite's share of ``full`` alone: the rows the full import stores
  for this log, already parsed and mapped (read back from an untimed import),
  written with the import's write protocol: per chunk, the new dictionary rows,
  the staged duplicate counters and the requests, then (in the closing
  transaction) the counters merged in hash order, the requests indexes built by
  a sort, and the batch's ip_info, scope and page aggregates;
- ``goaccess``: Debian's GoAccess (``goaccess LOG --log-format=COMBINED -o
  report.html``), a C log analyser that parses every line and keeps its panels'
  counts in memory: what a responder would otherwise run on the same file;
- ``full``: ``ingest.import_logs``, exactly what ``datasette-forensics import-logs``
  runs: accounting, duplicate detection, dictionaries, enrichment, and the
  ip_info, scope and aggregate updates after the batch. It reads and parses in a
  child process (``datasette_forensics.pipeline``) while it stores.
- ``full_no_geo``: ``full`` with ``FORENSICS_NO_GEO=1``: without the addresses'
  network kind, country and owner (geo.py), so ``full/full_no_geo`` is what that
  enrichment costs the import (MODEL §7 holds it under 5%).

``bare`` and ``full`` use the pragmas of ``schema.tune`` too. Seconds are
wall-clock time from opening the database to the last commit; CPU seconds (user +
system, the parse process's included) are given as well, as the wall clock of a
shared machine also measures its other work (the load average is recorded with
each run). Memory is measured by ``memory.py``: ``peak RSS`` is the largest sum of
the resident sizes of the import and its parse process (sampled every 20 ms, and
never below either one's own peak), ``peak PSS`` the same with shared pages
counted once.

Timing runs take ``--sample-ms 500``: each reading of the memory walks the smaps
of every process of the contender, in this harness, on the same cores. A
contender that keeps both cores busy (the import and its parse process) loses
that CPU, one that keeps one core busy (GoAccess) does not: sampled every 20 ms,
the 1M-line import measured 18.2-18.6 s against 17.2 s unsampled and 16.7-17.3 s
sampled every 500 ms, in turn (2 vCPU Intel Xeon). Either way each process's
own peak (VmHWM) counts, which no sampling misses.

``--repeat N`` runs the chosen contenders N times in turn (A B A B), and the
ratios compare the medians, so that a shared machine's load weighs on both sides.

Example:

    python benchmarks/bench_import.py --lines 1000000
    python benchmarks/bench_import.py --lines 1000000 --only full --only goaccess --repeat 3 --sample-ms 500
    python benchmarks/bench_import.py --lines 5000000 --only full
    python benchmarks/bench_import.py --lines 1000000 --only full --only full_no_geo --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import sqlite3
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import memory  # noqa: E402

OUT = os.path.join(HERE, "out")
RESULTS = os.path.join(HERE, "results")
CONTENDERS = ("bare", "insert_all", "insert_all_wal", "floor", "goaccess", "full", "full_no_geo")
GOACCESS = "goaccess"  # Debian's package, 1.7 when measured
GENERATOR_VERSION = 1
CHUNK = 20_000

# The bare loop's regex: the textbook combined-format pattern.
LINE = re.compile(
    r'(?P<ip>\S+) (?P<ident>\S+) (?P<user>\S+) \[(?P<time>[^\]]*)\] '
    r'"(?P<method>\S+) (?P<uri>\S+) (?P<protocol>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+|-) '
    r'"(?P<referer>[^"]*)" "(?P<ua>[^"]*)"'
)
COLUMNS = list(LINE.groupindex)


# --- the log -----------------------------------------------------------------------


def _user_agents(rng: random.Random, n: int) -> list[str]:
    oses = [
        "Windows NT 10.0; Win64; x64",
        "Macintosh; Intel Mac OS X 10_15_7",
        "X11; Linux x86_64",
        "X11; Ubuntu; Linux x86_64",
        "iPhone; CPU iPhone OS 16_5 like Mac OS X",
        "Linux; Android 13; Pixel 7",
    ]
    uas = set()
    while len(uas) < n:
        kind = rng.random()
        if kind < 0.45:
            v = f"{rng.randint(80, 126)}.0.{rng.randint(3000, 6500)}.{rng.randint(0, 200)}"
            uas.add(
                f"Mozilla/5.0 ({rng.choice(oses)}) AppleWebKit/537.36 (KHTML, like Gecko) "
                f"Chrome/{v} Safari/537.36"
            )
        elif kind < 0.6:
            v = rng.randint(90, 128)
            uas.add(f"Mozilla/5.0 ({rng.choice(oses)}; rv:{v}.0) Gecko/20100101 Firefox/{v}.0")
        elif kind < 0.68:
            uas.add(
                f"Mozilla/5.0 ({rng.choice(oses)}) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                f"Version/{rng.randint(13, 17)}.{rng.randint(0, 6)} Safari/605.1.15"
            )
        elif kind < 0.93:
            name = rng.choice(
                ["python-requests", "curl", "Go-http-client", "sentry-cli", "okhttp",
                 "axios", "node-fetch", "Apache-HttpClient", "aiohttp", "Terraform"]
            )  # fmt: skip
            uas.add(f"{name}/{rng.randint(0, 9)}.{rng.randint(0, 40)}.{rng.randint(0, 9)}")
        else:
            bot = rng.choice(["Googlebot", "bingbot", "AhrefsBot", "SemrushBot", "DataForSeoBot"])
            uas.add(f"Mozilla/5.0 (compatible; {bot}/{rng.randint(1, 9)}.{rng.randint(0, 9)}; +http://example.com/bot)")
    return sorted(uas)


def _ips(rng: random.Random, n: int) -> list[str]:
    ips = set()
    while len(ips) < n:
        if rng.random() < 0.08:
            ips.add("2001:db8:%x:%x::%x" % (rng.randrange(1 << 16), rng.randrange(1 << 16), rng.randrange(1 << 16)))
        else:
            # Clustered: a few hundred /16s, as real traffic is.
            ips.add(
                f"{rng.choice((34, 35, 52, 54, 66, 81, 93, 104, 141, 185, 203))}."
                f"{rng.randrange(40)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            )
    return sorted(ips)


def _zipf_index(rng: random.Random, n: int) -> int:
    """An index in [0, n) where low indexes are much more frequent."""
    return min(int(n * rng.random() ** 3), n - 1)


def generate(path: str, lines: int, seed: int = 20200718) -> None:
    """Write an N-line combined log with a realistic spread of values.

    ~5,000 client addresses (8% IPv6), ~500 user agents, each client using one to
    three of them; Sentry-like API URIs of which ~40% are distinct (cursors, new
    ids); a 2xx/3xx/4xx/5xx mix; times that increase with several lines a second;
    and a few scanner lines (escaped bytes) and cut-off lines to reject.
    """
    rng = random.Random(seed)
    ips = _ips(rng, 5000)
    uas = _user_agents(rng, 500)
    ua_of = [[_zipf_index(rng, len(uas)) for _ in range(rng.randint(1, 3))] for _ in ips]
    slugs = [f"org-{rng.getrandbits(32):08x}" for _ in range(2000)]
    projects = [f"project-{i}" for i in range(40)]
    templates = [
        "/api/0/organizations/{slug}/issues/{id}/",
        "/api/0/organizations/{slug}/issues/{id}/events/",
        "/api/0/organizations/{slug}/issues/",
        "/api/0/organizations/{slug}/",
        "/api/0/organizations/{slug}/members/",
        "/api/0/projects/{slug}/{project}/events/{event}/",
        "/api/0/projects/{slug}/{project}/keys/",
        "/api/0/organizations/{slug}/releases/{id}/files/",
        "/api/0/issues/{id}/",
        "/api/0/organizations/{slug}/stats_v2/",
    ]
    methods = ["GET"] * 85 + ["POST"] * 8 + ["PUT"] * 4 + ["DELETE"] * 2 + ["OPTIONS"]
    statuses = (
        ["200"] * 72 + ["201"] * 3 + ["204"] * 2 + ["304"] * 3 + ["400"] * 3 + ["401"] * 6
        + ["403"] * 4 + ["404"] * 4 + ["429"] * 2 + ["500"]
    )  # fmt: skip
    referers = ["-"] * 8 + [f"https://sentry.example.com/organizations/{s}/issues/" for s in slugs[:20]]

    def new_uri() -> str:
        t = rng.choice(templates)
        uri = t.format(
            slug=slugs[_zipf_index(rng, len(slugs))],
            id=rng.randrange(10**9, 5 * 10**9),
            project=rng.choice(projects),
            event=f"{rng.getrandbits(128):032x}",
        )
        if rng.random() < 0.7:
            uri += f"?cursor={rng.getrandbits(40)}:0:{rng.randrange(2)}&per_page=100"
        return uri

    popular = [new_uri() for _ in range(20_000)]
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    t = int(time.mktime((2020, 6, 1, 0, 0, 0, 0, 0, 0)) - time.timezone)
    stamp_at, stamp = None, ""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        out = []
        for i in range(lines):
            if rng.random() < 0.2:
                t += 1
            if t != stamp_at:
                g = time.gmtime(t)
                stamp = f"{g.tm_mday:02d}/{months[g.tm_mon - 1]}/{g.tm_year}:{g.tm_hour:02d}:{g.tm_min:02d}:{g.tm_sec:02d} +0000"
                stamp_at = t
            r = rng.random()
            if r < 0.0005:
                # A TLS scanner hitting the plain-text port: escaped bytes, status 400.
                ip = ips[rng.randrange(len(ips))]
                out.append(f'{ip} - - [{stamp}] "\\x16\\x03\\x01\\x00\\xee\\x01" 400 157 "-" "-"\n')
                continue
            if r < 0.0006:
                out.append(f'{ips[rng.randrange(len(ips))]} - - [{stamp}] "GET /api/0/organizations/\n')
                continue
            k = _zipf_index(rng, len(ips))
            ip = ips[k]
            ua = uas[rng.choice(ua_of[k])]
            uri = new_uri() if rng.random() < 0.4 else popular[_zipf_index(rng, len(popular))]
            status = rng.choice(statuses)
            size = "-" if status in ("204", "304") else str(rng.randrange(50, 60000))
            user = "-" if rng.random() < 0.97 else f"user{rng.randrange(100)}"
            out.append(
                f'{ip} - {user} [{stamp}] "{rng.choice(methods)} {uri} HTTP/1.1" {status} {size}'
                f' "{rng.choice(referers)}" "{ua}"\n'
            )
            if len(out) >= 10_000:
                f.writelines(out)
                out = []
        f.writelines(out)
    os.replace(tmp, path)


def cached_log(lines: int) -> str:
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, f"combined-{lines}-v{GENERATOR_VERSION}.log")
    if not os.path.exists(path):
        print(f"generating {path} ...", file=sys.stderr)
        started = time.monotonic()
        generate(path, lines)
        print(f"  {time.monotonic() - started:.1f}s", file=sys.stderr)
    return path


def log_stats(path: str) -> dict:
    """Distinct values of the log (cached next to it): what the dictionaries hold."""
    cache = path + ".stats.json"
    if os.path.exists(cache):
        with open(cache) as f:
            return json.load(f)
    sets = {name: set() for name in ("ip", "ua", "uri", "path")}
    ipv6 = matched = 0
    match = LINE.match
    with open(path, encoding="utf-8", errors="backslashreplace") as f:
        for line in f:
            m = match(line)
            if m is None:
                continue
            matched += 1
            ip, uri = m.group("ip"), m.group("uri")
            sets["ip"].add(ip)
            sets["ua"].add(hash(m.group("ua")))
            sets["uri"].add(hash(uri))
            sets["path"].add(hash(uri.split("?", 1)[0]))
    ipv6 = sum(1 for ip in sets["ip"] if ":" in ip)
    stats = {f"distinct_{name}s": len(values) for name, values in sets.items()}
    stats.update(ipv6_addresses=ipv6, lines_the_bare_regex_matches=matched)
    with open(cache, "w") as f:
        json.dump(stats, f)
    return stats


# --- the contenders (each runs in its own subprocess) --------------------------------


def _tune(conn: sqlite3.Connection) -> None:
    """schema.tune's pragmas (copied, so that the baselines do not import the package)."""
    conn.execute("pragma journal_mode = wal")
    conn.execute("pragma synchronous = normal")
    conn.execute("pragma busy_timeout = 30000")
    conn.execute("pragma cache_size = -65536")
    conn.execute("pragma temp_store = memory")


def _wide_table(conn: sqlite3.Connection) -> None:
    conn.execute(
        "create table lines ({})".format(", ".join(f"{c} text" for c in COLUMNS))
    )


def run_bare(log: str, db: str) -> int:
    conn = sqlite3.connect(db, isolation_level=None)
    _tune(conn)
    _wide_table(conn)
    insert = "insert into lines values ({})".format(", ".join("?" for _ in COLUMNS))
    match = LINE.match
    n = 0
    rows = []
    with open(log, encoding="utf-8", errors="backslashreplace") as f:
        for line in f:
            n += 1
            m = match(line)
            if m is not None:
                rows.append(m.groups())
            if len(rows) >= CHUNK:
                conn.execute("begin")
                conn.executemany(insert, rows)
                conn.execute("commit")
                rows = []
    conn.execute("begin")
    conn.executemany(insert, rows)
    conn.execute("commit")
    conn.close()
    return n


def run_insert_all(log: str, db: str, tuned: bool = False) -> int:
    import sqlite_utils

    if tuned:
        conn = sqlite3.connect(db)
        _tune(conn)
        database = sqlite_utils.Database(conn)
    else:
        database = sqlite_utils.Database(db)
    _wide_table(database.conn)
    count = [0]

    def rows():
        match = LINE.match
        with open(log, encoding="utf-8", errors="backslashreplace") as f:
            for line in f:
                count[0] += 1
                m = match(line)
                if m is not None:
                    yield m.groupdict()

    database["lines"].insert_all(rows())
    database.conn.close()
    return count[0]


def run_full(log: str, db: str) -> int:
    from datasette_forensics import ingest, schema

    database = schema.connect(db)
    (result,) = ingest.import_logs(database, [log], command="bench_import")
    assert result.status == "complete", result.message
    assert result.lines_read == result.imported + result.rejected + result.duplicates
    database.conn.close()
    return result.lines_read


FLOOR_TABLES = {  # dictionary table -> how to find the first line that needs each row
    "paths": "select u.path_id, min(r.line_no) from requests r join uris u on u.id = r.uri_id group by 1",
    "uris": "select uri_id, min(line_no) from requests group by 1",
    "ips": "select s.ip_id, min(r.line_no) from requests r join signatures s on s.id = r.sig_id group by 1",
    "user_agents": "select s.ua_id, min(r.line_no) from requests r join signatures s on s.id = r.sig_id group by 1",
    "referers": "select referer_id, min(line_no) from requests where referer_id is not null group by 1",
    "signatures": "select sig_id, min(line_no) from requests group by 1",
}
REQUEST_COLUMNS = "batch_id, line_no, ts, sig_id, uri_id, method, status, bytes, referer_id, token_id, org_id, extra"


def run_floor(log: str, db: str) -> int:
    """SQLite's share of the full import alone: the same rows, already parsed and mapped.

    Untimed, the log is imported once (into ``db``-source.db) and its rows read back,
    with each line's duplicate-detection hash. Timed, they are written into a fresh
    database exactly as the import writes them: per chunk of CHUNK_LINES lines, one
    transaction with the chunk's new dictionary rows, its line counts and its
    requests, then the batch's ip_info, scope and page aggregates; with the
    import's write protocol: staged line counts merged at the end, the requests
    indexes built by a sort after the last chunk (datasette_forensics/derived/).
    """
    from datasette_forensics import ingest, schema
    from datasette_forensics.derived import indexes, line_counts

    source = db + "-source.db"
    _remove_db(source)
    src = schema.connect(source)
    ingest.import_logs(src, [log])
    conn = src.conn
    tables = {}
    for table, first_lines in FLOOR_TABLES.items():
        first = dict(conn.execute(first_lines))
        columns = [r[1] for r in conn.execute(f"pragma table_info({table})")]
        rows = conn.execute(f"select {', '.join(columns)} from {table} order by id").fetchall()
        tables[table] = (columns, [(first.get(r[0], 0), r) for r in rows])
    requests = conn.execute(f"select {REQUEST_COLUMNS} from requests order by line_no").fetchall()
    conn.close()
    _remove_db(source)
    with open(log, "rb") as f:
        hashes = [ingest.line_hash(raw.rstrip(b"\n").rstrip(b"\r")) for raw in f]

    started, cpu = time.perf_counter(), time.process_time()
    database = schema.connect(db)
    conn = database.conn
    conn.execute(f"pragma wal_autocheckpoint = {ingest.CHECKPOINT_PAGES}")
    batch_id = conn.execute(
        "insert into import_batches (source, format, started_at, status) values (?, 'combined', '', 'running')",
        [log],
    ).lastrowid
    conn.execute("begin immediate")
    indexes.defer(conn, batch_id)
    conn.execute("commit")
    chunk = ingest.CHUNK_LINES
    by_line = {table: sorted(rows, key=lambda r: r[0]) for table, (_, rows) in tables.items()}
    taken = dict.fromkeys(tables, 0)
    r = 0
    for start in range(0, len(hashes), chunk):
        end = start + chunk
        conn.execute("begin immediate")
        for table, (columns, _) in tables.items():
            rows, i = by_line[table], taken[table]
            j = i
            while j < len(rows) and rows[j][0] <= end:
                j += 1
            if j > i:
                conn.executemany(
                    f"insert into {table} ({', '.join(columns)}) values ({', '.join('?' for _ in columns)})",
                    [row for _, row in rows[i:j]],
                )
            taken[table] = j
        line_counts.count(conn, batch_id, hashes[start:end])
        k = r
        while k < len(requests) and requests[k][1] <= end:
            k += 1
        conn.executemany(
            f"insert into requests ({REQUEST_COLUMNS}) values ({', '.join('?' * 12)})",
            [(batch_id, *row[1:]) for row in requests[r:k]],
        )
        conn.execute("update import_batches set lines_read = ? where id = ?", [end, batch_id])
        r = k
        conn.execute("commit")
    conn.execute("begin immediate")
    conn.execute("update import_batches set status = 'complete' where id = ?", [batch_id])
    line_counts.finish_batch(conn, batch_id)
    indexes.build(conn, batch_id)
    ingest._after_batch(database, ingest.FileResult(log, batch_id, "combined"), 1)
    conn.execute("commit")
    conn.close()
    floor_seconds[:] = [time.perf_counter() - started, time.process_time() - cpu]
    return len(hashes)


floor_seconds: list[float] = []


def peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(contender: str, log: str, db: str) -> None:
    run = {
        "bare": run_bare,
        "insert_all": run_insert_all,
        "insert_all_wal": lambda log, db: run_insert_all(log, db, tuned=True),
        "full": run_full,
        "full_no_geo": run_full,
        "floor": run_floor,
    }[contender]
    if contender == "full_no_geo":
        os.environ["FORENSICS_NO_GEO"] = "1"
    started, cpu = time.perf_counter(), cpu_seconds()
    lines = run(log, db)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    if floor_seconds:  # the timed part only
        seconds, cpu = floor_seconds
    # The import reads and parses in a child process (datasette_forensics.pipeline):
    # its CPU counts; the harness samples the memory of both (memory.py), and each
    # one's own peak, which sampling cannot miss, is reported to it here.
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"PEAK_RSS_KB {int(max(peak_rss_mb(), children) * 1024)}", file=sys.stderr)
    print(json.dumps({
        "contender": contender, "lines": lines, "seconds": seconds, "cpu_seconds": cpu,
        "own_peak_rss_mb": peak_rss_mb(), "parse_process_peak_rss_mb": children,
    }))  # fmt: skip


def cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (the parse process)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


# --- the harness -----------------------------------------------------------------------


def _remove_db(path: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ram = None
    try:
        with open("/proc/meminfo") as f:
            ram = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": ram,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }


def run_contender(contender: str, log: str, keep: bool, sample_ms: int = 20) -> dict:
    """One run of a contender in its own process: its figures, with the load before and after.

    ``sample_ms``: how often memory.py reads the contender's memory. Each reading
    walks the smaps of every process of the contender, which takes CPU: a
    contender that keeps both cores busy (the import and its parse process) loses
    it, one that keeps one core busy (GoAccess) does not, so timing runs sample
    seldom (see --sample-ms)."""
    db = os.path.join(OUT, f"bench-{contender}.db")
    _remove_db(db)
    load_before = os.getloadavg()[0]
    if contender == "goaccess":
        report = os.path.join(OUT, "goaccess-report.html")
        measured = memory.run(
            [GOACCESS, log, "--log-format=COMBINED", "-o", report, "--no-progress"], interval=sample_ms / 1000
        )
        with open(log, "rb") as f:
            lines = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
        row = {
            "contender": contender, "lines": lines, "seconds": measured["seconds"],
            "cpu_seconds": measured["cpu_seconds"], "version": goaccess_version(),
            "report_bytes": os.path.getsize(report) if measured["returncode"] == 0 else None,
        }  # fmt: skip
    else:
        measured = memory.run(
            [sys.executable, os.path.abspath(__file__), "--child", contender, log, db], interval=sample_ms / 1000
        )
        row = None
    if measured["returncode"] != 0:
        raise SystemExit(f"{contender} failed ({measured['returncode']}): {measured['stderr'][-2000:]}")
    if row is None:
        row = json.loads(measured["stdout"].strip().splitlines()[-1])
    row["peak_rss_mb"], row["peak_pss_mb"] = measured["peak_rss_mb"], measured["peak_pss_mb"]
    row["lines_per_second"] = row["lines"] / row["seconds"]
    row["lines_per_cpu_second"] = row["lines"] / row["cpu_seconds"]
    row["db_mb"] = sum(
        os.path.getsize(db + suffix) for suffix in ("", "-wal") if os.path.exists(db + suffix)
    ) / 2**20  # fmt: skip
    row["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    row["sample_ms"] = sample_ms
    if not keep:
        _remove_db(db)
    return row


def median_row(rows: list[dict]) -> dict:
    """The run with the median wall-clock time (the lower middle one of an even count)."""
    return sorted(rows, key=lambda r: r["seconds"])[(len(rows) - 1) // 2]


def goaccess_version() -> str:
    import subprocess

    out = subprocess.run([GOACCESS, "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0].strip() if out else "unknown"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines in the generated log")
    parser.add_argument("--only", action="append", choices=CONTENDERS, help="run only these (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep the databases in benchmarks/out/")
    parser.add_argument("--repeat", type=int, default=1, help="run the contenders this many times in turn")
    parser.add_argument(
        "--sample-ms",
        type=int,
        default=20,
        help="read the contenders' memory every N ms (default 20, for the memory figures; each reading"
        " costs CPU that a two-core contender loses and a one-core one does not: time with 500)",
    )
    parser.add_argument("--child", nargs=3, metavar=("CONTENDER", "LOG", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return

    log = cached_log(args.lines)
    stats = log_stats(log)
    contenders = args.only or list(CONTENDERS)
    rows = []
    for _ in range(args.repeat):
        for contender in contenders:
            row = run_contender(contender, log, args.keep, args.sample_ms)
            rows.append(row)
            print(f"  {contender}: {row['seconds']:.1f}s", file=sys.stderr)

    by_name = {name: median_row([r for r in rows if r["contender"] == name]) for name in contenders}
    ratios = {}
    if "full" in by_name:
        for other in CONTENDERS:
            if other != "full" and other in by_name:
                full, base = by_name["full"], by_name[other]
                ratios[f"full/{other}"] = {
                    "lines_per_second": full["lines_per_second"] / base["lines_per_second"],
                    "lines_per_cpu_second": full["lines_per_cpu_second"] / base["lines_per_cpu_second"],
                }

    print(
        f"\n{args.lines:,} lines, {os.path.getsize(log) / 2**20:,.0f} MB log; "
        + ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in stats.items()) + "\n"
    )
    print("| contender | lines | seconds | lines/s | CPU s | lines/CPU s | peak RSS MB | peak PSS MB | load avg |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['contender']} | {r['lines']:,} | {r['seconds']:.1f} | {r['lines_per_second']:,.0f}"
            f" | {r['cpu_seconds']:.1f} | {r['lines_per_cpu_second']:,.0f} | {r['peak_rss_mb']:.0f}"
            f" | {r['peak_pss_mb']:.0f} | {r['load_average'][0]:.1f}–{r['load_average'][1]:.1f} |"
        )
    if args.repeat > 1:
        print("\nmedians: " + ", ".join(f"{n} {r['seconds']:.1f}s" for n, r in by_name.items()))
    if ratios:
        print("\n| ratio | lines/s | lines/CPU s |\n| --- | ---: | ---: |")
        for name, value in ratios.items():
            print(f"| {name} | {value['lines_per_second']:.2f}× | {value['lines_per_cpu_second']:.2f}× |")

    os.makedirs(RESULTS, exist_ok=True)
    out = os.path.join(RESULTS, f"import-{args.lines}.json")
    with open(out, "w") as f:
        json.dump(
            {
                "command": " ".join(["python", "benchmarks/bench_import.py"] + (argv or sys.argv[1:])),
                "lines": args.lines,
                "log_bytes": os.path.getsize(log),
                "machine": machine(),
                "log": stats,
                "results": rows,
                "medians": by_name if args.repeat > 1 else None,
                "ratios": ratios,
            },
            f,
            indent=2,
        )
        f.write("\n")
    print(f"\nwritten to {os.path.relpath(out)}")


if __name__ == "__main__":
    main()
