"""Workbench page benchmark: each pivot page's JSON against a raw GROUP BY over requests.

Builds (once, cached under ``benchmarks/out/``) a forensic database of N requests
(5,000,000 by default) with a realistic spread: ~50,000 signatures over ~40,000
addresses and ~3,000 user agents, ~3,000 orgs, a 19-day incident window inside a
30-day log, a few percent of cross-tenant signatures, members, tokens and a
partner. The requests and dictionaries are written as SQL rows directly (no log
parsing); the account records, the incident, the scope, the rules and the page
aggregates go through the real library functions (``derived.recompute``,
``actions.apply``, ``aggregates.refresh``), so their cost at this size is measured too.

Then, in this process, each pivot's JSON is requested 20 times through
``datasette.client`` (the first, cold request is reported apart), and the same
grouping is run as a plain GROUP BY over ``requests_view`` on a sqlite3
connection (once by default: it is slow). It prints a table and writes
``benchmarks/results/pages-<N>.json``.

Example:

    python benchmarks/bench_pages.py                     # 5,000,000 requests
    python benchmarks/bench_pages.py --requests 200000 --runs 5
    python benchmarks/bench_pages.py --windows-only --runs 10   # window pivots at 5M
    python benchmarks/bench_pages.py --report-only       # report.json, report.csv, evidence
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sqlite3
import statistics
import sys
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")
RESULTS = os.path.join(HERE, "results")
GENERATOR_VERSION = 2
DAY = 86_400_000
LOG_START = 1_593_043_200_000  # 2020-06-25T00:00:00Z
LOG_DAYS = 30
INTRODUCED = "2020-07-01T00:00:00Z"
PATCHED = "2020-07-20T14:04:00Z"
PATCHED_MS = 1_595_253_840_000

sys.path.insert(0, os.path.dirname(HERE))

from datasette_forensics import derived, schema  # noqa: E402
from datasette_forensics.derived import aggregates  # noqa: E402
from datasette_forensics.rules import actions  # noqa: E402
from datasette_forensics.enrich import classify_ip, classify_user_agent  # noqa: E402


# --- the database ------------------------------------------------------------------


def _user_agents(rng: random.Random, n: int) -> list[str]:
    oses = [
        "Windows NT 10.0; Win64; x64",
        "Macintosh; Intel Mac OS X 10_15_7",
        "X11; Linux x86_64",
        "X11; Ubuntu; Linux x86_64",
        "Linux; Android 10; Pixel 3",
        "iPhone; CPU iPhone OS 13_5 like Mac OS X",
    ]
    libraries = [
        "python-requests/2.{}.{}",
        "Go-http-client/1.1",
        "curl/7.{}.{}",
        "okhttp/4.{}.{}",
        "Apache-HttpClient/4.5.{} (Java/11.0.{})",
        "axios/0.{}.{}",
        "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
        "Faraday v1.{}.{}",
        "aiohttp/3.{}.{}",
    ]
    bots = ["Googlebot/2.1 (+http://www.google.com/bot.html)", "zgrab/0.x", "masscan/1.{}", "Nuclei - Open-source project"]
    uas: set[str] = set()
    while len(uas) < n:
        roll = rng.random()
        if roll < 0.6:
            os_ = rng.choice(oses)
            browser = rng.random()
            if browser < 0.5:
                v = rng.randint(70, 85)
                uas.add(f"Mozilla/5.0 ({os_}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.{rng.randint(3000, 4200)}.{rng.randint(0, 200)} Safari/537.36")
            elif browser < 0.8:
                v = rng.randint(68, 80)
                uas.add(f"Mozilla/5.0 ({os_}; rv:{v}.0) Gecko/20100101 Firefox/{v}.0")
            else:
                uas.add(f"Mozilla/5.0 ({os_}) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.{rng.randint(0, 1)}.{rng.randint(0, 3)} Safari/605.1.15")
        elif roll < 0.95:
            uas.add(rng.choice(libraries).format(rng.randint(0, 30), rng.randint(0, 20)))
        else:
            uas.add(rng.choice(bots).format(rng.randint(0, 9)) + ("" if rng.random() < 0.5 else f" {rng.randint(1, 999)}"))
    return sorted(uas)


def _ips(rng: random.Random, n: int) -> list[str]:
    ips: set[str] = set()
    slash16 = [(rng.randint(11, 220), rng.randint(0, 255)) for _ in range(800)]
    slash24 = [(a, b, rng.randint(0, 255)) for a, b in (rng.choice(slash16) for _ in range(6000))]
    while len(ips) < n:
        if rng.random() < 0.05:
            ips.add(f"2001:db8:{rng.randint(0, 0xffff):x}::{rng.randint(1, 0xffff):x}")
        else:
            a, b, c = rng.choice(slash24)
            ips.add(f"{a}.{b}.{c}.{rng.randint(1, 254)}")
    return sorted(ips)


def build(path: str, n_requests: int, seed: int = 5) -> dict:
    """Write the benchmark database; returns the seconds each stage took."""
    rng = random.Random(seed)
    timings: dict[str, float] = {}
    if os.path.exists(path):
        os.remove(path)
    db = schema.connect(path)
    conn = db.conn
    t = time.perf_counter()

    n_sigs = max(200, n_requests // 100)
    n_orgs = max(30, min(3000, n_requests // 1600))
    n_ips = int(n_sigs * 0.8)
    n_uas = max(50, min(3000, n_sigs // 16))
    uas = _user_agents(rng, n_uas)
    ips = _ips(rng, n_ips)

    conn.execute("begin")
    conn.executemany(
        "insert into ips (id, ip, version, prefix, prefix16, asn, provider, rdns) values (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                i + 1, ip, (c := classify_ip(ip))["version"], c["prefix"], c["prefix16"],
                f"AS{64500 + zlib.crc32(c['prefix16'].encode()) % 400}",
                f"provider-{zlib.crc32(c['prefix16'].encode()) % 120}",
                f"host-{i}.example" if i % 3 == 0 else None,
            )
            for i, ip in enumerate(ips)
        ],
    )
    conn.executemany(
        "insert into user_agents (id, ua, family, major, os, device, kind) values (?, ?, ?, ?, ?, ?, ?)",
        [
            (i + 1, ua, (c := classify_user_agent(ua))["family"], c["major"], c["os"], c["device"], c["kind"])
            for i, ua in enumerate(uas)
        ],
    )
    # Signatures: most addresses carry one user agent, some several; popular UAs dominate.
    ua_weights = [1 / (i + 1) ** 0.9 for i in range(len(uas))]
    sigs: set[tuple[int, int]] = set()
    ip_ids = list(range(1, len(ips) + 1))
    while len(sigs) < n_sigs:
        ip_id = ip_ids[len(sigs) % len(ip_ids)] if len(sigs) < len(ip_ids) else rng.choice(ip_ids)
        ua_id = rng.choices(range(1, len(uas) + 1), ua_weights)[0]
        sigs.add((ip_id, ua_id))
    sig_list = sorted(sigs)
    conn.executemany("insert into signatures (id, ip_id, ua_id) values (?, ?, ?)", [(i + 1, a, b) for i, (a, b) in enumerate(sig_list)])

    # Orgs, slugs, paths.
    orgs = [str(1000 + i) for i in range(n_orgs)]
    paths = []
    for o in range(n_orgs):
        for suffix in ("issues/", "events/", "members/", "integrations/"):
            paths.append(f"/api/0/organizations/org-{o}/{suffix}")
        paths.append(f"/api/0/projects/org-{o}/web/")
    extra_paths = ["/", "/static/app.js", "/_health/", "/api/0/organizations/", "/login/", "/api/0/organizations/unknown-org/issues/"]
    n_org_paths = len(paths)
    paths += extra_paths
    conn.executemany("insert into paths (id, path) values (?, ?)", [(i + 1, p) for i, p in enumerate(paths)])
    conn.executemany("insert into uris (id, uri, path_id) values (?, ?, ?)", [(i + 1, p, i + 1) for i, p in enumerate(paths)])
    conn.execute(
        "insert into import_batches (id, name, source, format, started_at, finished_at, status) "
        "values (1, 'bench', 'generated', 'combined', '2020-07-26T00:00:00Z', '2020-07-26T00:00:00Z', 'complete')"
    )

    # Each signature: a home org, an activity level (heavy-tailed), 3% cross-tenant.
    org_weights = [1 / (i + 1) ** 0.7 for i in range(n_orgs)]
    home = rng.choices(range(n_orgs), org_weights, k=n_sigs)
    cross = [rng.random() < 0.03 for _ in range(n_sigs)]
    activity = [rng.paretovariate(1.3) for _ in range(n_sigs)]
    scale = n_requests / sum(activity)
    counts = [max(1, int(a * scale)) for a in activity]
    # Adjust to exactly n_requests.
    diff = n_requests - sum(counts)
    order = sorted(range(n_sigs), key=lambda i: -counts[i])
    i = 0
    while diff != 0:
        k = order[i % n_sigs]
        if diff > 0:
            counts[k] += 1
            diff -= 1
        elif counts[k] > 1:
            counts[k] -= 1
            diff += 1
        i += 1
    # Each signature is active over a span of days; some stop at the patch.
    span_start = [rng.randint(0, LOG_DAYS - 1) for _ in range(n_sigs)]
    stops = [rng.random() < 0.3 for _ in range(n_sigs)]

    insert = "insert into requests (batch_id, line_no, ts, sig_id, uri_id, method, status, bytes, token_id) values (1, ?, ?, ?, ?, ?, ?, ?, ?)"
    rows = []
    line = 0
    for s in range(n_sigs):
        start = LOG_START + span_start[s] * DAY
        end = min(LOG_START + LOG_DAYS * DAY, start + rng.randint(1, LOG_DAYS) * DAY)
        if stops[s]:
            end = min(end, PATCHED_MS)
        if end <= start:
            start = LOG_START
        targets = [home[s]] + ([rng.randrange(n_orgs) for _ in range(rng.randint(1, 12))] if cross[s] else [])
        token = f"t{home[s]}" if rng.random() < 0.2 else None
        for _ in range(counts[s]):
            line += 1
            roll = rng.random()
            if roll < 0.88:
                org = targets[0] if len(targets) == 1 or rng.random() < 0.5 else rng.choice(targets)
                path_id = org * 5 + rng.randrange(5) + 1
            else:
                path_id = n_org_paths + rng.randrange(len(extra_paths)) + 1
            status = 200 if rng.random() < 0.9 else rng.choice((401, 403, 404, 500))
            rows.append((line, rng.randrange(start, end), s + 1, path_id, "GET", status, rng.randrange(100, 20000), token))
            if len(rows) >= 100_000:
                conn.executemany(insert, rows)
                rows = []
    conn.executemany(insert, rows)
    conn.execute("update import_batches set lines_read = ?, lines_imported = ?, last_line = ? where id = 1", [line, line, line])
    conn.execute("commit")
    timings["requests"] = time.perf_counter() - t

    # Records, through the tables the records importer writes.
    t = time.perf_counter()
    conn.execute("begin")
    conn.executemany(
        "insert into orgs (id, slug, name, created_at, contact_email) values (?, ?, ?, '2019-01-01T00:00:00.000Z', ?)",
        [(org, f"org-{o}", f"Org {o}", f"security@org-{o}.example") for o, org in enumerate(orgs)],
    )
    conn.executemany(
        "insert into integrations (id, org_id, name, created_at, deleted_at) values (?, ?, 'sync', ?, ?)",
        [
            (f"i{o}", org, "2020-01-01T00:00:00.000Z", "2020-07-10T00:00:00.000Z" if o % 37 == 0 else None)
            for o, org in enumerate(orgs)
            if o % 11 != 0
        ],
    )
    conn.executemany(
        "insert into tokens (id, org_id, integration_id, created_at) values (?, ?, ?, '2020-01-01T00:00:00.000Z')",
        [(f"t{o}", org, f"i{o}") for o, org in enumerate(orgs)],
    )
    users = []
    sessions = []
    memberships = []
    for s in range(0, n_sigs, 4):  # a quarter of the signatures are known user sessions
        ip_id, ua_id = sig_list[s]
        user = f"u{s}"
        users.append((user, f"{user}@example.com", "1" if s % 997 == 0 else "0"))
        sessions.append((user, ips[ip_id - 1], uas[ua_id - 1]))
        memberships.append((user, orgs[home[s]], "2019-06-01T00:00:00.000Z"))
    conn.executemany("insert into users (id, email, is_staff) values (?, ?, ?)", users)
    conn.executemany(
        "insert into sessions (user_id, ip, user_agent, first_seen, last_seen) values (?, ?, ?, '2020-06-01T00:00:00.000Z', '2020-07-25T00:00:00.000Z')",
        sessions,
    )
    conn.executemany("insert into memberships (user_id, org_id, role, joined_at) values (?, ?, 'member', ?)", memberships)
    conn.execute(
        """insert into incident (id, name, introduced_at, patched_at, introduced_ms, patched_ms,
        scope_paths, org_routes, require_integration, set_at) values (1, 'bench', ?, ?, ?, ?, ?, ?, 1, ?)""",
        [
            INTRODUCED, PATCHED, 1_593_561_600_000, PATCHED_MS, json.dumps(["^/api/0/"]),
            json.dumps(["^/api/0/organizations/(?P<org>[^/]+)/", "^/api/0/projects/(?P<org>[^/]+)/"]),
            "2020-07-26T00:00:00Z",
        ],
    )
    conn.execute("commit")
    timings["records"] = time.perf_counter() - t

    t = time.perf_counter()
    derived.recompute(db)  # includes aggregates.refresh
    timings["derived.recompute"] = time.perf_counter() - t
    t = time.perf_counter()
    aggregates.refresh(db)
    timings["aggregates.refresh"] = time.perf_counter() - t
    for name in ("staff", "member_current", "post_patch_valid", "token_owner"):
        t = time.perf_counter()
        actions.apply(db, name, actor="bench")
        timings[f"rules.apply {name}"] = time.perf_counter() - t
    t = time.perf_counter()
    conn.execute("analyze")
    timings["analyze"] = time.perf_counter() - t
    conn.execute("pragma wal_checkpoint(truncate)")
    conn.close()
    return timings


# --- the timings --------------------------------------------------------------------

# (label, page path with query, raw GROUP BY equivalent over requests_view)
KIND_MIX = ", ".join(f"sum(ua_kind = '{k}')" for k in ("browser", "library", "bot", "unknown"))
RAW_FIGURES = (
    "count(*), sum(in_scope), sum(unexplained), count(distinct case when in_scope then org_id end), "
    f"count(distinct sig_id), count(distinct user_agent), min(ts), max(ts), {KIND_MIX}"
)
CASES = [
    ("overview", ".json", "select date(time), sum(in_scope), sum(unexplained) from requests_view group by 1"),
    ("ips by=ip", "/ips.json?by=ip", f"select ip, {RAW_FIGURES} from requests_view group by ip order by 4 desc limit 50"),
    ("ips by=cidr24", "/ips.json?by=cidr24", f"select cidr24, {RAW_FIGURES} from requests_view group by cidr24 order by 4 desc limit 50"),
    ("ips by=cidr16", "/ips.json?by=cidr16", f"select cidr16, {RAW_FIGURES} from requests_view group by cidr16 order by 4 desc limit 50"),
    ("ips by=asn", "/ips.json?by=asn", f"select asn, {RAW_FIGURES} from requests_view group by asn order by 4 desc limit 50"),
    ("ips by=provider", "/ips.json?by=provider", f"select provider, {RAW_FIGURES} from requests_view group by provider order by 4 desc limit 50"),
    ("ips by=rdns", "/ips.json?by=rdns", f"select rdns, {RAW_FIGURES} from requests_view group by rdns order by 4 desc limit 50"),
    ("user-agents by=raw", "/user-agents.json?by=raw", f"select user_agent, {RAW_FIGURES} from requests_view group by user_agent order by 4 desc limit 50"),
    ("user-agents by=family", "/user-agents.json?by=family", f"select ua_family, {RAW_FIGURES} from requests_view group by ua_family order by 4 desc limit 50"),
    ("user-agents by=family_major", "/user-agents.json?by=family_major", f"select ua_family, ua_major, {RAW_FIGURES} from requests_view group by ua_family, ua_major order by 5 desc limit 50"),
    ("user-agents by=os", "/user-agents.json?by=os", f"select ua_os, {RAW_FIGURES} from requests_view group by ua_os order by 4 desc limit 50"),
    ("user-agents by=kind", "/user-agents.json?by=kind", f"select ua_kind, {RAW_FIGURES} from requests_view group by ua_kind order by 4 desc limit 50"),
    (
        "orgs",
        "/orgs.json",
        """select org_id, count(*), sum(unexplained), count(distinct case when unexplained = 1 then sig_id end)
        from requests_view where in_scope = 1 group by org_id order by 3 desc limit 100""",
    ),
    ("orgs?status=exposed", "/orgs.json?status=exposed", None),
    ("org page", "/orgs/{org}.json", None),
    (
        "signatures",
        "/signatures.json",
        """select sig_id, count(*), sum(in_scope), sum(unexplained), count(distinct case when in_scope then org_id end),
        min(ts), max(ts) from requests_view group by sig_id order by 5 desc, 4 desc limit 50""",
    ),
]


def _percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


async def _workbench(path: str, engine_mb: float | None = None):
    """A started Datasette serving ``path``, and the path of its workbench pages."""
    from datasette.app import Datasette

    from datasette_forensics import permissions
    from datasette_forensics.windows import database as window_database

    config = None if engine_mb is None else {"plugins": {"datasette-forensics": {"window_engine_mb": engine_mb}}}
    ds = Datasette([path], **permissions.datasette_kwargs(config, None))
    await ds.invoke_startup()
    # The server loads the window engine's cells in the background at startup (window
    # pivots wait for it, the timelines read the SQL path meanwhile): wait for it, so
    # every kind is timed on a warm server, and report how long it took.
    t = time.perf_counter()
    for task in list(window_database.warming.values()):
        await task
    print(f"window engine load at startup (background): {time.perf_counter() - t:.2f} s", file=sys.stderr)
    return ds, f"/{os.path.splitext(os.path.basename(path))[0]}/-/forensics"


def _busiest_org(path: str) -> str:
    """The org with the most in-scope requests."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute("select org_id from org_stats order by in_scope desc limit 1").fetchone()[0]
    finally:
        conn.close()


async def _time_pages(path: str, runs: int) -> dict:
    ds, base = await _workbench(path)
    conn = sqlite3.connect(path)
    org = conn.execute("select org_id from sig_org group by org_id order by sum(requests) desc limit 1").fetchone()[0]
    conn.close()
    results = {}
    for label, page, _ in CASES:
        url = base + page.format(org=org)
        results[label] = await _time_url(ds, url, runs)
    return results


async def _time_url(ds, url: str, runs: int, label: str = "") -> dict:
    """``url`` requested ``runs`` + 1 times through ``ds.client``: the first (cold) one
    apart, the p50 and p95 of the warm ones, and the slowest of all; any answer but
    200 stops the benchmark."""
    timings = []
    for _ in range(runs + 1):
        t = time.perf_counter()
        response = await ds.client.get(url)
        timings.append((time.perf_counter() - t) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"{label + ': ' if label else ''}{url}: HTTP {response.status_code}\n{response.text[:500]}")
    warm = timings[1:]
    return {
        "url": url,
        "first_ms": round(timings[0], 1),
        "p50_ms": round(statistics.median(warm), 1),
        "p95_ms": round(_percentile(warm, 0.95), 1),
        "max_ms": round(max(timings), 1),
        "warm_max_ms": round(max(warm), 1),
    }


def _time_raw(path: str, runs: int) -> dict:
    conn = sqlite3.connect(path)
    conn.execute("pragma cache_size = -65536")
    results = {}
    for label, _, sql in CASES:
        if sql is None:
            continue
        timings = []
        for _ in range(runs):
            t = time.perf_counter()
            conn.execute(sql).fetchall()
            timings.append((time.perf_counter() - t) * 1000)
        results[label] = {"p50_ms": round(statistics.median(timings), 1), "runs": runs}
    conn.close()
    return results


# --- pages: every link kind of the workbench, at this size (issue #14) -------------------

LINK_P95_MS = 150  # the target: warm p95 of every link kind
LINK_MAX_MS = 500  # and no single request above this


def _requests_links_in(data, found: list) -> list:
    """Every workbench requests-page or request-page URL in a page's JSON."""
    if isinstance(data, dict):
        for value in data.values():
            _requests_links_in(value, found)
    elif isinstance(data, list):
        for value in data:
            _requests_links_in(value, found)
    elif isinstance(data, str) and "/-/forensics/requests" in data:
        found.append(data)
    return found


def _link_kind(url: str) -> str:
    """A link's kind: the request page, or the requests page's set of filter names."""
    from urllib.parse import parse_qsl, urlsplit

    split = urlsplit(url)
    if "/-/forensics/requests/" in split.path:
        return "request page"
    keys = sorted({k for k, _ in parse_qsl(split.query)} - {"size"})
    return "requests " + ("&".join(keys) if keys else "(all)")


async def _link_urls(ds, path: str, org: str) -> dict:
    """The links to time, one (the first found) per kind: collected from the workbench
    pages' JSON (overview funnel and waterfall, rules page, orgs, org page incl. latest
    requests, signatures, pivots), plus one URL per filter of the requests page."""
    import re
    from urllib.parse import quote

    base = f"/{os.path.splitext(os.path.basename(path))[0]}/-/forensics"
    kinds: dict[str, str] = {}
    sources = [
        ".json", "/orgs.json", f"/orgs/{org}.json", "/signatures.json", "/ips.json", "/ips.json?by=cidr24",
        "/ips.json?by=cidr16", "/user-agents.json?by=family", "/user-agents.json?by=kind", "/user-agents.json?by=raw",
    ]
    for source in sources:
        data = (await ds.client.get(base + source)).json()
        for url in _requests_links_in(data, []):
            kinds.setdefault(f"{source.split('.json')[0] or 'overview'}: {_link_kind(url)}", url)
    rules_html = (await ds.client.get(base + "/rules")).text
    for url in re.findall(r'href="([^"]*/-/forensics/requests[^"]*)"', rules_html):
        url = url.replace("&amp;", "&")
        kinds.setdefault(f"rules: {_link_kind(url)}", url)
    first = (await ds.client.get(base + f"/requests.json?org={quote(org)}&size=1")).json()
    conn = sqlite3.connect(path)
    ip, ua, cidr24, cidr16, family, sig, batch, day = conn.execute(
        """select i.ip, a.ua, i.prefix, i.prefix16, a.family, st.sig_id, 1, date(st.last_ts / 1000, 'unixepoch')
        from sig_stats st join ips i on i.id = st.ip_id join user_agents a on a.id = st.ua_id
        where st.in_scope > 0 order by st.requests desc limit 1"""
    ).fetchone()
    rare_sig = conn.execute("select sig_id from sig_stats order by requests limit 1").fetchone()[0]
    conn.close()
    q = quote
    own = {
        "requests (all)": "",
        "requests org": f"org={q(org)}",
        "requests org&status=unexplained": f"org={q(org)}&status=unexplained",
        "requests org&status=explained": f"org={q(org)}&status=explained",
        "requests scope=in": "scope=in",
        "requests scope=out": "scope=out",
        "requests status=unexplained": "status=unexplained",
        "requests rule": "rule=member_current",
        "requests org&rule": f"org={q(org)}&rule=token_owner",
        "requests not_by (waterfall)": "not_by=staff,member_current,post_patch_valid,token_owner",
        "requests sig (busiest)": f"sig={sig}",
        "requests sig (rarest)": f"sig={rare_sig}",
        "requests ip": f"ip={q(ip)}",
        "requests cidr24": f"cidr24={q(cidr24)}",
        "requests cidr16": f"cidr16={q(cidr16)}",
        "requests ua": f"ua={q(ua)}",
        "requests family": f"family={q(family or '')}",
        "requests kind": "kind=library",
        "requests kind=bot&scope=in": "kind=bot&scope=in",
        "requests path prefix": "path=%2Fapi%2F0%2Forganizations%2Fo1",
        "requests code=404": "code=404",
        "requests code=2xx&org": f"code=2xx&org={q(org)}",
        "requests from/to (one day)": f"from={day}&to={day}T23:59:59Z",
        "requests org&from/to (one day)": f"org={q(org)}&from={day}&to={day}T23:59:59Z",
        "requests batch": f"batch={batch}",
        "requests reason": "reason=path_not_in_scope",
        "requests next page (keyset)": (first["next_url"] or "").split("?", 1)[-1],
    }
    for label, query in own.items():
        kinds[label] = f"{base}/requests" + (f"?{query}" if query else "")
    kinds["request page"] = f"{base}/requests/{first['rows'][0]['id']}" if first["rows"] else f"{base}/requests/1"
    kinds["org page (its signatures)"] = f"{base}/orgs/{q(org)}"
    return kinds


async def time_links(path: str, runs: int) -> dict:
    """Each link kind's HTML page: the first request, then ``runs`` warm ones."""
    ds, _ = await _workbench(path)
    org = _busiest_org(path)
    results = {}
    for label, url in (await _link_urls(ds, path, org)).items():
        results[label] = await _time_url(ds, url, runs, label)
    return results


# --- the report: report.json, report.csv and one org's evidence (issue #14 item 5) ----------


async def time_report(path: str, runs: int) -> dict:
    """The report's downloads and the org evidence file of the org with most in-scope
    requests (its per-rule breakdown comes from the same kept counts), as the link kinds."""
    ds, base = await _workbench(path)
    org = _busiest_org(path)
    urls = {
        "report.json": f"{base}/report.json",
        "report.csv": f"{base}/report.csv",
        "org evidence.html (busiest org)": f"{base}/orgs/{org}/evidence.html",
    }
    return {label: await _time_url(ds, url, runs, label) for label, url in urls.items()}


def report_links(results: dict) -> dict:
    """Print the link timings; returns the summary against the targets."""
    print(f"{'link kind':<58} {'first':>8} {'p50':>8} {'p95':>8} {'max':>8}")
    for label, r in results.items():
        flag = " !" if r["p95_ms"] > LINK_P95_MS or r["max_ms"] > LINK_MAX_MS else ""
        print(f"{label[:58]:<58} {r['first_ms']:>8.1f} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} {r['max_ms']:>8.1f}{flag}")
    p95s = [r["p95_ms"] for r in results.values()]
    summary = {
        "kinds": len(results),
        "worst_p95_ms": max(p95s),
        "p95_over_target": sorted(k for k, r in results.items() if r["p95_ms"] > LINK_P95_MS),
        "over_max": sorted(k for k, r in results.items() if r["max_ms"] > LINK_MAX_MS),
        # The warm requests only: the first one of a kind may read pages from disk.
        "warm_over_max": sorted(k for k, r in results.items() if r["warm_max_ms"] > LINK_MAX_MS),
        "target": {"p95_ms": LINK_P95_MS, "max_ms": LINK_MAX_MS},
    }
    print(json.dumps(summary))
    return summary


# --- time windows: every pivot kind over one day and the incident window (issue #14 item 4) ---

WINDOWS = {
    "one day": ("2020-07-05T00:00:00Z", "2020-07-06T00:00:00Z"),
    "incident": (INTRODUCED, "2020-07-20T00:00:00Z"),
    "cut hours": ("2020-07-05T10:17:00Z", "2020-07-06T13:42:00Z"),
}


def _window_pages() -> dict:
    """Label -> page path (with its query) of every pivot kind that takes a window."""
    from datasette_forensics.views.pivot import PIVOTS

    pages = {f"{page} by {by}": f"/{page}.json?by={by}" for page, (_, groupings, _) in PIVOTS.items() for by in groupings}
    pages.update({"orgs": "/orgs.json?", "signatures": "/signatures.json?", "org page": "/orgs/{org}.json?"})
    pages["overview"] = ".json?"  # its timeline honours the window (the rest of it is the whole log's)
    return pages


# The timelines' pages without a window too (their timelines read the hour cells either way).
TIMELINE_PAGES = ("overview", "org page")


async def time_windows(path: str, runs: int, engine_mb: float | None = None, timelines_only: bool = False) -> dict:
    """Each window pivot's JSON: the first request, then ``runs`` warm ones (``engine_mb``:
    the window_engine_mb setting; 0 times the SQL path over the cells)."""
    from urllib.parse import quote

    ds, base = await _workbench(path, engine_mb)
    org = _busiest_org(path)
    results = {}
    for window, (start, end) in WINDOWS.items():
        for label, page in _window_pages().items():
            if timelines_only and label not in TIMELINE_PAGES:
                continue
            url = base + page.format(org=quote(org, safe="")) + f"&from={start}&to={end}"
            url = url.replace("?&", "?")
            results[f"{label} ({window})"] = await _time_url(ds, url, runs, label)
    for label in TIMELINE_PAGES:
        url = (base + _window_pages()[label].format(org=quote(org, safe=""))).rstrip("?")
        results[f"{label} (no window)"] = await _time_url(ds, url, runs, label)
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5_000_000)
    parser.add_argument("--runs", type=int, default=20, help="warm requests per page")
    parser.add_argument("--raw-runs", type=int, default=1, help="runs of each raw GROUP BY (slow)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the cached database")
    parser.add_argument("--links-only", action="store_true", help="time only the links of the workbench pages")
    parser.add_argument("--windows-only", action="store_true", help="time only the window pivots (one day, the incident)")
    parser.add_argument("--window-engine-mb", type=float, default=None,
                        help="with --windows-only: the window_engine_mb setting (0: the SQL path over the cells)")
    parser.add_argument("--timelines-only", action="store_true", help="with --windows-only: the overview and org page only")
    parser.add_argument("--report-only", action="store_true", help="time only report.json, report.csv and evidence")
    args = parser.parse_args(argv)

    os.makedirs(OUT, exist_ok=True)
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(OUT, f"pages-{args.requests}-v{GENERATOR_VERSION}.db")
    timings_path = path + ".build.json"  # the build's timings, kept with the cached database
    if args.rebuild or not os.path.exists(path):
        print(f"building {path} ...", file=sys.stderr)
        build_timings = build(path + ".tmp", args.requests)
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        os.rename(path + ".tmp", path)
        with open(timings_path, "w") as f:
            json.dump(build_timings, f)
        for stage, seconds in build_timings.items():
            print(f"  {stage}: {seconds:.1f} s", file=sys.stderr)
    build_timings = json.load(open(timings_path)) if os.path.exists(timings_path) else None
    conn = sqlite3.connect(path)
    sizes = dict(
        zip(
            ("requests", "signatures", "orgs", "in_scope", "sig_org", "ips", "user_agents"),
            conn.execute(
                """select (select count(*) from requests), (select count(*) from signatures),
                (select count(*) from orgs), (select count(*) from scoped), (select count(*) from sig_org),
                (select count(*) from ips), (select count(*) from user_agents)"""
            ).fetchone(),
        )
    )
    conn.close()
    for only, kind, timer in (
        (args.report_only, "report", time_report), (args.links_only, "links", time_links), (args.windows_only, "windows", time_windows)
    ):
        if only:  # one part alone: its URLs timed against the link targets
            extra = {"engine_mb": args.window_engine_mb, "timelines_only": args.timelines_only} if kind == "windows" else {}
            timed = asyncio.run(timer(path, args.runs, **extra))
            result = {"requests": args.requests, "sizes": sizes, "runs": args.runs, kind: timed, "summary": report_links(timed)}
            suffix = ("" if extra.get("engine_mb") is None else f"-engine{args.window_engine_mb:g}mb") + (
                "-timelines" if extra.get("timelines_only") else "")
            with open(os.path.join(RESULTS, f"pages-{kind}-{args.requests}{suffix}.json"), "w") as f:
                json.dump(dict(result, load=os.getloadavg(), cpus=os.cpu_count(), sqlite=sqlite3.sqlite_version), f, indent=2)
            return
    pages = asyncio.run(_time_pages(path, args.runs))
    raw = _time_raw(path, args.raw_runs)

    print(f"{'page':<30} {'first':>8} {'p50':>8} {'p95':>8} {'raw p50':>10} {'speed-up':>9}")
    for label, page in pages.items():
        r = raw.get(label)
        speedup = round(r["p50_ms"] / page["p50_ms"], 1) if r else None
        page["raw_group_by_p50_ms"] = r["p50_ms"] if r else None
        page["speedup"] = speedup
        print(
            f"{label:<30} {page['first_ms']:>8.1f} {page['p50_ms']:>8.1f} {page['p95_ms']:>8.1f} "
            f"{(r['p50_ms'] if r else float('nan')):>10.1f} {(speedup or float('nan')):>8.1f}x"
        )
    result = {
        "requests": args.requests,
        "sizes": sizes,
        "runs": args.runs,
        "raw_runs": args.raw_runs,
        "build_seconds": {k: round(v, 1) for k, v in build_timings.items()} if build_timings else None,
        "pages": pages,
        "target": {"p95_ms": 150, "speedup": 3},
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    out = os.path.join(RESULTS, f"pages-{args.requests // 1_000_000}m.json" if args.requests % 1_000_000 == 0 else f"pages-{args.requests}.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
