"""Rules benchmark: apply the six built-in rules to 5,000,000 in-scope requests, then undo them.

Builds (once, cached under ``benchmarks/out/``) a forensic database with N in-scope
requests (5,000,000 by default) plus 20% more outside the window (most of them after
the patch), written directly as SQL rows: ~200,000 signatures over ~120,000 addresses
(5% IPv6) and 3,000 user agents, 3,000 orgs with an integration and a token each, 3%
cross-tenant signatures, a quarter of the signatures known as user sessions (staff,
current members, members who left or joined inside the window), 10 partners with an
IPv4 and an IPv6 range each and a user-agent pattern, authorised (some revoked) by
~300 orgs, and a token on a quarter of the requests. The scope tables (``scoped``,
``post_patch_valid``, ``signature_scope``, ``sig_org``) are filled by the library's
own SQL.

Then it times ``actions.apply`` for each built-in in the order of ``--apply all``, then
``actions.undo`` for each, last applied first, plus a full ``explanations.reevaluate``, the
report, the rules page's data, and a custom filter rule. It prints the figures and
writes ``benchmarks/results/rules-<N>.json``.

Example:

    python benchmarks/bench_rules.py                    # 5,000,000 in-scope requests
    python benchmarks/bench_rules.py --requests 200000  # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")
RESULTS = os.path.join(HERE, "results")
GENERATOR_VERSION = 1

sys.path.insert(0, os.path.dirname(HERE))

from datasette_forensics import report, rules, schema  # noqa: E402
from datasette_forensics.derived import explanations, rule_counts, scope, waterfall  # noqa: E402
from datasette_forensics.rules import actions  # noqa: E402
from datasette_forensics.timeparse import format_ms, parse_time  # noqa: E402
from datasette_forensics.views import rules_page  # noqa: E402

INTRODUCED_MS = parse_time("2020-07-01T00:00:00Z")
PATCHED_MS = parse_time("2020-07-20T14:04:00Z")
WINDOW_MS = PATCHED_MS - INTRODUCED_MS
DAY = 86_400_000
N_ORGS = 3000
N_UAS = 3000
N_PARTNERS = 10
PATHS_PER_ORG = 4


def sizes(n_requests: int) -> dict:
    n_sigs = max(2000, min(200_000, n_requests // 25))
    return {"sigs": n_sigs, "ips": max(1000, n_sigs * 3 // 5), "partner_sigs": max(100, n_sigs // 100)}


def home_org(sig: int) -> int:
    """The org a signature mostly calls; the SQL below uses the same formula."""
    return 1 + (sig * 7919) % N_ORGS


def iso(ms: int) -> str:
    return format_ms(ms)


def build(path: str, n_requests: int) -> dict:
    """Write the benchmark database; returns the seconds each stage took."""
    timings = {}
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    db = schema.connect(path)
    conn = db.conn
    size = sizes(n_requests)
    n_sigs, n_ips, n_partner_sigs = size["sigs"], size["ips"], size["partner_sigs"]

    t = time.perf_counter()
    conn.execute("begin")
    # Addresses: partner ranges first (100.64.P.x and 2001:db8:P::x), then the rest.
    ips = []
    for s in range(1, n_partner_sigs + 1):
        p = (s - 1) % N_PARTNERS
        ips.append(f"100.64.{p}.{s // N_PARTNERS % 250 + 1}" if s % 4 else f"2001:db8:{p:x}::{s:x}")
    ips = list(dict.fromkeys(ips))
    n_partner_ips = len(ips)
    i = 0
    while len(ips) < n_ips:
        i += 1
        ips.append(f"2001:db8:f{i % 4096:03x}::{i:x}" if i % 20 == 0 else f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}")
    conn.executemany(
        "insert into ips (id, ip, version, prefix, prefix16) values (?, ?, ?, ?, ?)",
        [
            (n + 1, ip, 6 if ":" in ip else 4, ip.rsplit(".", 1)[0] + ".0/24" if ":" not in ip else ip, None)
            for n, ip in enumerate(ips)
        ],
    )
    uas = [f"PartnerClient{p}/2.0 (+https://partner{p}.example)" for p in range(N_PARTNERS)]
    uas += [f"curl/7.{n}" if n % 3 == 0 else f"python-requests/2.{n}" if n % 3 == 1 else f"Mozilla/5.0 Browser/{n}" for n in range(N_UAS - N_PARTNERS)]
    conn.executemany(
        "insert into user_agents (id, ua, kind) values (?, ?, ?)",
        [(n + 1, ua, "library" if not ua.startswith("Mozilla") else "browser") for n, ua in enumerate(uas)],
    )
    # Signatures: the partner ones (90% with the partner's client), then (ip, ua) pairs.
    sigs = []
    for s in range(1, n_partner_sigs + 1):
        p = (s - 1) % N_PARTNERS
        ip_id = 1 + (s - 1) % n_partner_ips
        sigs.append((ip_id, p + 1 if s % 10 else N_PARTNERS + 1 + s % 50))
    seen = set(sigs)
    k = 0
    while len(sigs) < n_sigs:
        k += 1
        pair = (n_partner_ips + 1 + k % (n_ips - n_partner_ips), N_PARTNERS + 1 + (k * 31 + k // n_ips) % (N_UAS - N_PARTNERS))
        if pair not in seen:
            seen.add(pair)
            sigs.append(pair)
    conn.executemany("insert into signatures (id, ip_id, ua_id) values (?, ?, ?)", [(n + 1, a, b) for n, (a, b) in enumerate(sigs)])
    paths = [
        (((o - 1) * PATHS_PER_ORG) + k + 1, f"/api/0/organizations/org{o}/{name}/", f"org{o}", str(o))
        for o in range(1, N_ORGS + 1)
        for k, name in enumerate(("issues", "events", "members", "projects"))
    ]
    conn.executemany(
        "insert into paths (id, path, scope_match, slug, org_static, slug_timed) values (?, ?, 1, ?, ?, 0)", paths
    )
    conn.executemany("insert into uris (id, uri, path_id) values (?, ?, ?)", [(p[0], p[1], p[0]) for p in paths])
    conn.execute(
        "insert into import_batches (id, name, source, format, started_at, status) "
        "values (1, 'bench', 'generated', 'jsonl', '2020-07-26T00:00:00Z', 'complete')"
    )
    conn.execute("commit")
    timings["dictionaries"] = time.perf_counter() - t

    # Requests: n in the window (cross-tenant signatures reach random orgs), 20% more
    # after the patch (60% of signatures, 90% 2xx, their home org) or before the window.
    t = time.perf_counter()
    params = {
        "n": n_requests, "sigs": n_sigs, "orgs": N_ORGS, "intro": INTRODUCED_MS, "window": WINDOW_MS,
        "patched": PATCHED_MS, "extra": n_requests // 5, "per_org": PATHS_PER_ORG,
    }
    conn.execute("begin")
    conn.execute(
        """
        with recursive c(i) as (select 1 union all select i + 1 from c where i < :n)
        insert into requests (id, batch_id, line_no, ts, sig_id, uri_id, method, status, bytes, token_id)
        select i, 1, i, :intro + h3 % :window, sig,
            (case when sig % 33 = 0 then 1 + (h2 / 7) % :orgs else home end - 1) * :per_org + h2 % :per_org + 1,
            'GET', case when h2 % 20 = 0 then 403 else 200 end, 1000,
            case when h2 % 4 = 0 then 't' || home end
        from (
            select i, sig, 1 + (sig * 7919) % :orgs as home, h2, h3
            from (
                select i, 1 + (i * 2654435761) % 4294967291 % :sigs as sig,
                    (i * 40503 + 12345) % 2147483647 as h2,
                    (i * 1103515245 + 7) % 4294967291 as h3
                from c
            )
        )
        """,
        params,
    )
    conn.execute(
        """
        with recursive c(i) as (select 1 union all select i + 1 from c where i < :extra)
        insert into requests (id, batch_id, line_no, ts, sig_id, uri_id, method, status, bytes)
        select :n + i, 1, :n + i,
            case when i % 8 = 0 then :intro - 1 - h3 % (5 * 86400000) else :patched + h3 % (6 * 86400000) end,
            sig, (1 + (sig * 7919) % :orgs - 1) * :per_org + h2 % :per_org + 1,
            'GET', case when h2 % 10 = 0 then 401 else 200 end, 1000
        from (
            select i, 1 + ((i * 2654435761) % 4294967291 % (:sigs * 6 / 10)) * 10 / 6 as sig,
                (i * 40503 + 12345) % 2147483647 as h2,
                (i * 1103515245 + 7) % 4294967291 as h3
            from c
        )
        """,
        params,
    )
    total = conn.execute("select count(*) from requests").fetchone()[0]
    conn.execute("update import_batches set lines_read = ?, lines_imported = ?, last_line = ? where id = 1", [total] * 3)
    conn.execute("commit")
    timings["requests"] = time.perf_counter() - t

    # Account records, as the records importer stores them.
    t = time.perf_counter()
    conn.execute("begin")
    conn.executemany(
        "insert into orgs (id, slug, name, contact_email) values (?, ?, ?, ?)",
        [(str(o), f"org{o}", f"Org {o}", f"security@org{o}.example") for o in range(1, N_ORGS + 1)],
    )
    conn.executemany(
        "insert into integrations (id, org_id, name, created_at) values (?, ?, 'sync', '2020-01-01T00:00:00.000Z')",
        [(f"i{o}", str(o)) for o in range(1, N_ORGS + 1)],
    )
    conn.executemany(
        "insert into tokens (id, org_id, integration_id, created_at) values (?, ?, ?, '2020-01-01T00:00:00.000Z')",
        [(f"t{o}", str(o), f"i{o}") for o in range(1, N_ORGS + 1)],
    )
    users, sessions, memberships = [], [], []
    for s in range(n_partner_sigs + 1, n_sigs + 1, 4):  # a quarter of the signatures are sessions
        ip_id, ua_id = sigs[s - 1]
        user = f"u{s}"
        users.append((user, f"{user}@example.com", 1 if s % 499 == 0 else 0))
        sessions.append((user, ips[ip_id - 1], uas[ua_id - 1]))
        roll = s % 10
        joined = iso(INTRODUCED_MS + (s % 19) * DAY) if roll == 1 else "2019-06-01T00:00:00.000Z"
        left = iso(INTRODUCED_MS + (s % 17) * DAY) if roll in (2, 3) else None
        if roll != 9:  # a few sessions belong to no member
            memberships.append((user, str(home_org(s)), joined, left))
    conn.executemany("insert into users (id, email, is_staff) values (?, ?, ?)", users)
    conn.executemany(
        "insert into sessions (user_id, ip, user_agent, first_seen, last_seen) "
        "values (?, ?, ?, '2020-06-01T00:00:00.000Z', '2020-07-25T00:00:00.000Z')",
        sessions,
    )
    conn.executemany(
        "insert into memberships (user_id, org_id, role, joined_at, left_at) values (?, ?, 'member', ?, ?)", memberships
    )
    partners = []
    for p in range(N_PARTNERS):
        partners.append((f"partner{p}", f"100.64.{p}.0/24", f"^PartnerClient{p}/"))
        partners.append((f"partner{p}", f"2001:db8:{p:x}::/48", f"^PartnerClient{p}/"))
    conn.executemany("insert into partners (name, cidr, user_agent_pattern) values (?, ?, ?)", partners)
    partner_orgs = {}
    for s in range(1, n_partner_sigs + 1):
        p, org = (s - 1) % N_PARTNERS, home_org(s)
        if (p, org) in partner_orgs or len(partner_orgs) >= 300:
            continue
        authorized = None if s % 3 == 0 else "2020-01-01T00:00:00.000Z" if s % 3 == 1 else iso(INTRODUCED_MS + 5 * DAY)
        revoked = iso(INTRODUCED_MS + 12 * DAY) if s % 5 == 0 else None
        partner_orgs[(p, org)] = (f"partner{p}", str(org), authorized, revoked)
    conn.executemany("insert into partner_orgs (partner, org_id, authorized_at, revoked_at) values (?, ?, ?, ?)", list(partner_orgs.values()))
    conn.execute(
        """insert into incident (id, name, introduced_at, patched_at, introduced_ms, patched_ms,
        scope_paths, org_routes, require_integration, set_at) values (1, 'bench', ?, ?, ?, ?, ?, ?, 1, ?)""",
        [
            iso(INTRODUCED_MS), iso(PATCHED_MS), INTRODUCED_MS, PATCHED_MS, json.dumps(["^/api/0/"]),
            json.dumps(["^/api/0/organizations/(?P<org>[^/]+)/"]), "2020-07-26T00:00:00Z",
        ],
    )
    conn.execute("commit")
    timings["records"] = time.perf_counter() - t

    # Scope: the library's own SQL (every path is an org path with a static org).
    t = time.perf_counter()
    with db.atomic():
        scope.rebuild_windows(db)
        p = {"introduced": INTRODUCED_MS, "patched": PATCHED_MS, "require_integration": 1}
        db.execute(scope.INSERT_SCOPED.format(candidates=scope.CANDIDATES.format(restrict="", requests="requests r not indexed")), p)
        db.execute(scope.INSERT_POST_PATCH.format(post_patch=scope.POST_PATCH.format(restrict="", requests="requests r not indexed")), p)
        scope.refresh_signatures(db)
        rules.ensure_rules(db)
        waterfall.refresh(db)
    timings["scope"] = time.perf_counter() - t
    t = time.perf_counter()
    conn.execute("analyze")
    conn.execute("pragma wal_checkpoint(truncate)")
    timings["analyze"] = time.perf_counter() - t
    conn.close()
    return timings


CPU: dict = {}


def timed(fn, *args, **kwargs):
    """Wall seconds (returned) and this process's CPU seconds (kept in CPU[fn name])."""
    t, c = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    CPU["last"] = time.process_time() - c
    return time.perf_counter() - t, result


def run(path: str) -> dict:
    db = schema.connect(path)
    # Start from a clean state: nothing applied, no custom rule, an empty ledger.
    for name in reversed(rules.applied_names(db)):
        actions.undo(db, name, "bench")
    for row in rules.list_rules(db):
        if not row["builtin"]:
            actions.delete_custom_rule(db, row["name"], "bench")
    db.execute("delete from rule_ledger")
    figures = db.execute(
        """select (select count(*) from requests), (select count(*) from scoped),
        (select count(*) from signature_scope), (select sum(cross_tenant) from signature_scope),
        (select count(*) from sig_org), (select count(*) from sessions), (select count(*) from orgs)"""
    ).fetchone()
    out = {
        "database": dict(zip(("requests", "in_scope", "signatures_in_scope", "cross_tenant", "sig_org_rows", "sessions", "orgs"), figures)),
        "apply": {},
        "undo": {},
        "other": {},
    }
    names = rules.resolve_names(db, "all")
    for name in names:
        seconds, result = timed(actions.apply, db, name, "bench")
        out["apply"][name] = {"seconds": round(seconds, 2), "cpu_seconds": round(CPU["last"], 2), "requests_explained": result["requests_explained"], "orgs_changed": len(result["orgs_changed"])}
        print(f"apply {name:<18} {seconds:7.2f} s ({CPU['last']:6.2f} s CPU)  {result['requests_explained']:>10,} explained, {len(result['orgs_changed']):,} orgs changed", flush=True)
    out["apply_total_seconds"] = round(sum(v["seconds"] for v in out["apply"].values()), 2)
    out["apply_total_cpu_seconds"] = round(sum(v["cpu_seconds"] for v in out["apply"].values()), 2)
    out["unexplained_after_all"] = db.execute("select sum(unexplained) from sig_org").fetchone()[0]

    seconds, _ = timed(explanations.reevaluate, db)
    out["other"]["reevaluate (all six applied, full)"] = round(seconds, 2)
    seconds, built = timed(report.build_report, db)
    out["other"]["report.build_report"] = round(seconds, 2)
    seconds, _ = timed(rules_page.page_data, db)
    out["other"]["rules page data (cached waterfall)"] = round(seconds, 3)
    seconds, _ = timed(rule_counts.breakdown, db, "1")
    out["other"]["rule_counts.breakdown one org"] = round(seconds, 3)
    actions.create_custom_rule(db, "bench_filter", {"filter": {"cidr": "10.0.0.0/16", "status": "2xx", "ua_kind": "library"}}, "bench")
    seconds, result = timed(actions.apply, db, "bench_filter", "bench")
    out["other"]["custom filter rule apply"] = round(seconds, 2)
    seconds, _ = timed(actions.delete_custom_rule, db, "bench_filter", "bench")
    out["other"]["custom filter rule undo+delete"] = round(seconds, 2)
    actions.create_custom_rule(db, "bench_sql", {"sql": "ip like '10.1.%' and path like '%/events/'"}, "bench")
    seconds, result = timed(actions.apply, db, "bench_sql", "bench")
    out["other"]["custom sql rule apply"] = round(seconds, 2)
    actions.delete_custom_rule(db, "bench_sql", "bench")
    out["statuses_after_all"] = {
        status: sum(1 for o in built["orgs"] if o["status"] == status) for status in ("exposed", "review", "cleared")
    }

    for name in reversed(names):
        seconds, result = timed(actions.undo, db, name, "bench")
        out["undo"][name] = {"seconds": round(seconds, 2), "cpu_seconds": round(CPU["last"], 2), "requests_unexplained": result["requests_unexplained"]}
        print(f"undo  {name:<18} {seconds:7.2f} s ({CPU['last']:6.2f} s CPU)  {result['requests_unexplained']:>10,} no longer explained", flush=True)
    out["undo_total_seconds"] = round(sum(v["seconds"] for v in out["undo"].values()), 2)
    out["undo_total_cpu_seconds"] = round(sum(v["cpu_seconds"] for v in out["undo"].values()), 2)
    assert db.execute("select count(*) from scoped where explained != 0").fetchone()[0] == 0
    db.conn.close()
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=5_000_000, help="in-scope requests")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the cached database")
    args = parser.parse_args(argv)
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(OUT, f"rules-{args.requests}-v{GENERATOR_VERSION}.db")
    build_timings = None
    if args.rebuild or not os.path.exists(path):
        print(f"Building {path} ...", flush=True)
        build_timings = {k: round(v, 1) for k, v in build(path, args.requests).items()}
        print("build:", build_timings, flush=True)
    out = run(path)
    out["build_seconds"] = build_timings
    out["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "sqlite": sqlite3.sqlite_version, "platform": platform.platform()}
    out["target_seconds"] = 20
    out["load_average_at_end"] = os.getloadavg()
    print(
        f"apply all six: {out['apply_total_seconds']:.2f} s ({out['apply_total_cpu_seconds']:.2f} s CPU); "
        f"undo all six: {out['undo_total_seconds']:.2f} s ({out['undo_total_cpu_seconds']:.2f} s CPU); "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print("other:", json.dumps(out["other"]))
    label = "5m" if args.requests == 5_000_000 else str(args.requests)
    with open(os.path.join(RESULTS, f"rules-{label}.json"), "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
