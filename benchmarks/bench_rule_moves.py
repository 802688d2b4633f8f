"""What a large rule change costs the kept aggregates: undo and re-apply a rule on a
copy of a database, inside a savepoint that is rolled back, and print the CPU and
wall seconds of each (the rule's requests are moved in every derived table).

    PYTHONPATH=CODE python benchmarks/bench_rule_moves.py COPY.db [RULE ...]

Run it with each code (PYTHONPATH at a checkout of that commit) in turn on copies of
the same database to compare them.
"""

from __future__ import annotations

import json
import resource
import sys
import time

from datasette_forensics import schema
from datasette_forensics.rules import actions


def main(path: str, rules: list[str]) -> dict:
    db = schema.connect(path)
    out = {}
    for name in rules:
        db.conn.execute("savepoint bench")
        before, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        actions.undo(db, name, actor="bench")
        actions.apply(db, name, actor="bench")
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        out[name] = {"wall": round(time.perf_counter() - t, 2), "cpu": round(cpu, 2)}
        db.conn.execute("rollback to bench")
        db.conn.execute("release bench")
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2:] or ["post_patch_valid", "staff"])))
