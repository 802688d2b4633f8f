"""enrich-rdns benchmark: PTR look-ups of N stored addresses against a local DNS server.

A database gets N distinct addresses (IPv4 and 8% IPv6, as bench_import's log
has), then ``rdns.enrich`` looks them all up, once per concurrency given, each
time in a fresh copy. The server (tests/dns_server.py) runs in its own process
on 127.0.0.1 and answers from memory: 80% a name, 15% NXDOMAIN, 5% NOERROR with
no answer, so the figures are the client's own cost (building and reading
messages, threads, the database writes), not a real resolver's. With
``--silent PCT`` that share of queries gets no answer at all, which shows what
timeouts cost.

Example:

    python benchmarks/bench_rdns.py --addresses 10000 --concurrency 1 --concurrency 16 --concurrency 64
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import sys
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
OUT = os.path.join(HERE, "out")
RESULTS = os.path.join(HERE, "results")


def addresses(n: int, seed: int = 20200718) -> list[str]:
    rng = random.Random(seed)
    found = set()
    while len(found) < n:
        if rng.random() < 0.08:
            found.add("2001:db8:%x:%x::%x" % (rng.randrange(1 << 16), rng.randrange(1 << 16), rng.randrange(1 << 16)))
        else:
            found.add(f"{rng.choice((34, 35, 52, 54, 66, 81, 93, 104, 141, 185))}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}")
    return sorted(found)


def answer(silent: float):
    from dns_server import EMPTY, NXDOMAIN, SILENT

    def decide(ip: str):
        r = (zlib.crc32(ip.encode()) % 10_000) / 10_000
        if r < silent:
            return SILENT
        r = (r - silent) / (1 - silent) if silent < 1 else 0
        if r < 0.80:
            return "host-" + ip.replace(".", "-").replace(":", "-") + ".example"
        return NXDOMAIN if r < 0.95 else EMPTY

    return decide


def serve(conn, silent: float) -> None:
    """The DNS server's process: tell the parent its port, serve until told to stop."""
    from dns_server import DnsServer

    with DnsServer(default=answer(silent)) as server:
        conn.send(server.port)
        conn.recv()  # blocks until the parent is done


def build(path: str, ips: list[str]) -> None:
    from datasette_forensics import schema
    from datasette_forensics.enrich import classify_ip

    db = schema.connect(path)
    with db.conn:
        db.conn.executemany(
            "insert into ips (ip, version, prefix, prefix16) values (?, ?, ?, ?)",
            [(ip, *(lambda c: (c["version"], c["prefix"], c["prefix16"]))(classify_ip(ip))) for ip in ips],
        )
    db.conn.close()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--addresses", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, action="append", help="repeatable (default 1, 16, 64)")
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--silent", type=float, default=0.0, help="percent of queries never answered")
    args = parser.parse_args(argv)
    from datasette_forensics import rdns, schema

    os.makedirs(OUT, exist_ok=True)
    template = os.path.join(OUT, f"rdns-{args.addresses}.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(template + suffix):
            os.remove(template + suffix)
    build(template, addresses(args.addresses))
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=serve, args=(child, args.silent / 100), daemon=True)
    server.start()
    port = parent.recv()
    rows = []
    try:
        for concurrency in args.concurrency or [1, 16, 64]:
            path = os.path.join(OUT, "rdns-run.db")
            shutil.copy(template, path)
            for suffix in ("-wal", "-shm"):
                if os.path.exists(path + suffix):
                    os.remove(path + suffix)
            db = schema.connect(path)
            load = os.getloadavg()[0]
            started = time.perf_counter()
            summary = rdns.enrich(db, ("127.0.0.1", port), concurrency, args.timeout)
            seconds = time.perf_counter() - started
            db.conn.close()
            rows.append({
                "concurrency": concurrency, "addresses": summary.looked_up, "seconds": round(seconds, 2),
                "per_second": round(summary.looked_up / seconds), "outcomes": summary.outcomes,
                "stopped": summary.stopped, "load_average": [round(load, 2), round(os.getloadavg()[0], 2)],
            })  # fmt: skip
            print(f"  concurrency {concurrency}: {seconds:.1f}s", file=sys.stderr)
    finally:
        parent.send("stop")
        server.join(5)
    print(f"\n{args.addresses:,} addresses, timeout {args.timeout:g} s, {args.silent:g}% silent; {os.cpu_count()} cores\n")
    print("| concurrency | looked up | seconds | look-ups/s | outcomes | load avg |\n| ---: | ---: | ---: | ---: | --- | ---: |")
    for r in rows:
        outcomes = ", ".join(f"{n:,} {k}" for k, n in sorted(r["outcomes"].items()))
        print(f"| {r['concurrency']} | {r['addresses']:,} | {r['seconds']:.1f} | {r['per_second']:,} | {outcomes} | {r['load_average'][0]:.1f}–{r['load_average'][1]:.1f} |")
    os.makedirs(RESULTS, exist_ok=True)
    out = os.path.join(RESULTS, f"rdns-{args.addresses}" + (f"-silent{args.silent:g}" if args.silent else "") + ".json")
    with open(out, "w") as f:
        json.dump({
            "command": " ".join(["python", "benchmarks/bench_rdns.py"] + (argv or sys.argv[1:])),
            "cores": os.cpu_count(), "results": rows,
        }, f, indent=2)  # fmt: skip
        f.write("\n")
    print(f"\nwritten to {os.path.relpath(out)}")


if __name__ == "__main__":
    main()
