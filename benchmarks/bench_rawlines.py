"""What the requests pages' additions cost the import: the raw lines
(datasette_forensics.rawlines), the m019_pages indexes and the window hour cells.

One import of ``bench_import.py``'s cached N-line combined log (1,000,000 lines by
default) into a fresh database, exactly as ``ingest.import_logs`` runs it, with the
additions (``--pages on``, the product) or without them (``--pages off``:
``rawlines.pack`` replaced by one that packs nothing, before the parse process
forks, and the indexes of m019_pages put back as they were before: ``requests_sig``
on ``sig_id`` alone, no /24, /16, family or kind index, and the window hour cells'
build, counts while the store waits and at the close, and per-batch recount,
``derived.window_hours.refresh``, ``catch_up`` and ``refresh_scoped``, replaced by
no-ops). It prints the seconds, the CPU seconds, and the raw lines' stored bytes per line (the ``raw_chunks`` table's
pages, by ``dbstat``, over the lines imported).

Time the two in the same run, in turn (A B A B ...), and compare them pair by pair:
``python benchmarks/bench_rawlines.py --pages on`` against ``--pages off``; and the
timelines' index (m026) alone: ``--timelines-index on`` against ``off``.
"""

from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from bench_import import cached_log  # noqa: E402
from datasette_forensics import ingest, rawlines, schema  # noqa: E402
from datasette_forensics.derived import window_hours  # noqa: E402


BEFORE_PAGES = """
drop index requests_sig;
create index requests_sig on requests(sig_id);
drop index ips_prefix;
drop index ips_prefix16;
drop index user_agents_family;
drop index user_agents_kind;
"""


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--pages", choices=("on", "off"), default="on")
    parser.add_argument("--timelines-index", choices=("on", "off"), default="on",
                        help="off: without m026's window_scoped_hours_org (its cost alone, paired with on)")
    args = parser.parse_args(argv)
    log = cached_log(args.lines)
    if args.pages == "off":
        rawlines.pack = lambda batch_id, line_nos, lines: []
        window_hours.refresh = lambda db, *args, **kwargs: None
        window_hours.catch_up = lambda conn, *args, **kwargs: False
        window_hours.refresh_scoped = lambda db, *args, **kwargs: None
    with tempfile.TemporaryDirectory(dir=os.path.join(HERE, "out")) as tmp:
        path = os.path.join(tmp, "import.db")
        started, cpu = time.monotonic(), cpu_seconds()
        db = schema.connect(path)
        if args.pages == "off":
            db.executescript(BEFORE_PAGES)
        if args.timelines_index == "off":
            db.execute("drop index window_scoped_hours_org")
        ingest.import_logs(db, [log])
        db.conn.close()
        seconds, cpu = time.monotonic() - started, cpu_seconds() - cpu
        conn = sqlite3.connect(path)
        imported = conn.execute("select count(*) from requests").fetchone()[0]
        stored = conn.execute("select coalesce(sum(pgsize), 0) from dbstat where name = 'raw_chunks'").fetchone()[0]
        cells = conn.execute("select (select count(*) from window_hours) + (select count(*) from window_scoped_hours)").fetchone()[0]
        conn.close()
    per_line = stored / imported if imported else 0
    print(f"pages={args.pages} timelines_index={args.timelines_index} lines={imported} seconds={seconds:.2f} cpu={cpu:.2f} raw_chunks_bytes={stored} bytes_per_line={per_line:.1f} window_cells={cells}")


if __name__ == "__main__":
    main()
