"""Verdict benchmark (MODEL §6.3): making and withdrawing a verdict against applying ``staff``.

Uses bench_rules.py's generated database (cached under ``benchmarks/out/``) with N
in-scope requests, and times, in the same run: ``actions.apply("staff")``, then a
verdict for every org on the signature with the most in-scope requests (the worst
case), a verdict for one org, and their withdrawals. Prints the figures and writes
``benchmarks/results/verdict-<N>.json``.

Example:

    python benchmarks/bench_verdict.py --requests 5000000
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import bench_rules
from bench_rules import OUT, RESULTS, timed

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datasette_forensics import schema, verdicts  # noqa: E402
from datasette_forensics.rules import actions  # noqa: E402

BIGGEST = """
select i.ip, a.ua, so.org_id, ss.requests from signature_scope ss
join signatures g on g.id = ss.sig_id join ips i on i.id = g.ip_id join user_agents a on a.id = g.ua_id
join sig_org so on so.sig_id = ss.sig_id
order by ss.requests desc, so.requests desc limit 1
"""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=5_000_000, help="in-scope requests")
    args = parser.parse_args(argv)
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, f"rules-{args.requests}-v{bench_rules.GENERATOR_VERSION}.db")
    if not os.path.exists(path):
        bench_rules.build(path, args.requests)
    db = schema.connect(path)
    for name in ("staff", "verdict"):
        if name in [r[0] for r in db.execute("select name from rules where applied = 1")]:
            actions.undo(db, name, "bench")
    db.execute("delete from verdicts")
    ip, ua, org, sig_requests = db.execute(BIGGEST).fetchone()
    out = {"in_scope": db.execute("select count(*) from scoped").fetchone()[0], "signature_in_scope": sig_requests}
    out["apply_staff"], _ = timed(actions.apply, db, "staff", "bench")
    out["verdict_every_org"], made = timed(verdicts.make, db, ip, ua, None, "bench", "bench")
    out["withdraw_every_org"], _ = timed(verdicts.withdraw, db, ip, ua, None, "bench")
    out["verdict_one_org"], _ = timed(verdicts.make, db, ip, ua, org, "bench", "bench")
    out["withdraw_one_org"], _ = timed(verdicts.withdraw, db, ip, ua, org, "bench")
    out["verdict_requests_explained"] = made["requests_explained"]
    actions.undo(db, "staff", "bench")
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"verdict-{args.requests}.json"), "w") as f:
        json.dump(out, f, indent=2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
