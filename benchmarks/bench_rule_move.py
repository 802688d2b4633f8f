"""A rule move: undo one applied rule, then apply it again, timed, with the code of a given checkout.

For a same-run comparison of two versions of the derived tables' upkeep (say a
branch against ``main``), run it with ``benchmarks/ab.py`` on two copies of a database with
the rules applied (``bench_rules.py``'s, after an ``--apply all``):

    python benchmarks/ab.py -n 5 --vs 'python benchmarks/bench_rule_move.py --code /tmp/main --db /tmp/b.db' \\
        -- python benchmarks/bench_rule_move.py --code . --db /tmp/a.db

It prints the undo's and the apply's wall and CPU seconds and the requests moved.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--code", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), help="a checkout of datasette-forensics")
    parser.add_argument("--db", required=True, help="a database with the rule applied (it is changed in place)")
    parser.add_argument("--rule", default="post_patch_valid")
    args = parser.parse_args(argv)
    code = os.path.abspath(args.code)
    sys.path.insert(0, code)
    import datasette_forensics
    from datasette_forensics import schema
    from datasette_forensics.rules import actions

    if not datasette_forensics.__file__.startswith(code):
        raise SystemExit(f"datasette_forensics came from {datasette_forensics.__file__}, not {code}")
    db = schema.connect(args.db)
    c0, t0 = time.process_time(), time.perf_counter()
    undone = actions.undo(db, args.rule, "bench")
    c1, t1 = time.process_time(), time.perf_counter()
    applied = actions.apply(db, args.rule, "bench")
    c2, t2 = time.process_time(), time.perf_counter()
    print(
        f"{code} undo {t1 - t0:.2f}s ({c1 - c0:.2f} cpu) apply {t2 - t1:.2f}s ({c2 - c1:.2f} cpu) "
        f"{undone['requests_unexplained']} {applied['requests_explained']}",
        flush=True,
    )


if __name__ == "__main__":
    main()
