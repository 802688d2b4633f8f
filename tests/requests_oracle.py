"""The rows a requests-page URL stands for, by a plain query of requests_view, and
the story database the requests-page tests read.

The oracle is written from the filters' meaning (docs of views/requests.py),
independently of the page's own SQL: the tests compare the page's counts and rows
with it.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import sqlite_utils

from datasette_forensics import demo
from datasette_forensics.rules import actions
from datasette_forensics.timeparse import parse_time

SIGNATURE_COLUMNS = {
    "ip": "ip", "cidr24": "cidr24", "cidr16": "cidr16", "ua": "user_agent", "kind": "ua_kind",
    "asn": "asn", "provider": "provider", "rdns": "rdns", "family": "ua_family", "major": "ua_major", "os": "ua_os",
    "country": "country", "network": "network",
}
NULLABLE = {"asn", "provider", "rdns", "family", "major", "os", "country", "network"}
IGNORED = {"size", "next", "page", "sort", "by"}
# Filters that are one column's equality: parameter -> (requests_view column, its type).
EQUALS = {"sig": ("sig_id", int), "batch": ("batch_id", int), "method": ("method", str)}


def oracle(conn, query: str) -> list[int]:
    """The request ids (latest first) a requests-page query string selects."""
    bits = dict(conn.execute("select name, bit from rules"))
    where, params = [], []
    in_scope = False
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in SIGNATURE_COLUMNS:
            if key == "kind" and value == "":
                continue
            column = SIGNATURE_COLUMNS[key]
            if value == "" and key in NULLABLE:
                where.append(f"{column} is null")
            else:
                where.append(f"{column} = ?")
                params.append(value)
        elif key == "q":
            continue  # the filter bar's search, which the page turns into ip/cidr/ua
        elif key in EQUALS:
            column, convert = EQUALS[key]
            where.append(f"{column} = ?")
            params.append(convert(value))
        elif key == "org":
            where.append("org_id = ?")
            params.append(value)
            in_scope = True
        elif key == "scope":
            if value == "in":
                in_scope = True
            elif value == "out":
                where.append("in_scope = 0")
        elif key == "status":
            if value == "all":
                continue
            where.append("unexplained = ?")
            params.append(1 if value == "unexplained" else 0)
            in_scope = True
        elif key in ("rule", "not_by"):
            mask = sum(bits[n] for n in value.split(","))
            where.append(f"(explained & {mask}) {'!=' if key == 'rule' else '='} 0")
            in_scope = True
        elif key == "reason":
            where.append("out_of_scope = ?")
            params.append(value)
        elif key == "named_org":
            where.append("in_scope = 0 and coalesce(named_org_id, '') = ?")
            params.append(value)
        elif key in ("from", "to"):
            where.append("ts >= ?" if key == "from" else "ts < ?")
            params.append(parse_time(value))
        elif key == "code":
            lo = int(value[0]) * 100 if value.endswith("xx") else int(value)
            where.append("status >= ? and status < ?")
            params += [lo, lo + (100 if value.endswith("xx") else 1)]
        elif key == "path":
            where.append("substr(path, 1, length(?)) = ?")
            params += [value, value]
        elif key == "cidr":
            net = ipaddress.ip_network(value, strict=False)
            ips = [
                ip for (ip,) in conn.execute("select ip from ips where version = ?", [net.version])
                if ipaddress.ip_address(ip) in net
            ]
            where.append("ip in (select value from json_each(?))")
            params.append(json.dumps(ips))
        elif key == "tag":
            # The signature, its address, any network holding the address, or its agent carries the tag.
            live = "select kind, target from notes where deleted_at is null and tag = ?"
            notes = conn.execute(live, [value]).fetchall()
            nets = [ipaddress.ip_network(t, strict=False) for k, t in notes if k == "cidr"]
            ips = {t for k, t in notes if k == "ip"} | {
                ip for (ip,) in conn.execute("select ip from ips where version is not null")
                if any(ipaddress.ip_address(ip) in n for n in nets if n.version == ipaddress.ip_address(ip).version)
            }
            where.append(
                "(ip in (select value from json_each(?)) or user_agent in (select value from json_each(?))"
                " or json_array(ip, user_agent) in (select value from json_each(?)))"
            )
            params += [
                json.dumps(sorted(ips)), json.dumps([t for k, t in notes if k == "user_agent"]),
                json.dumps([t for k, t in notes if k == "signature"]),
            ]
        elif key in IGNORED:
            continue
        else:
            raise AssertionError(f"the oracle has no rule for ?{key}=")
    if in_scope:
        where.append("in_scope = 1")
    sql = "select id from requests_view where " + (" and ".join(where) or "1") + " order by ts desc, id desc"
    return [r[0] for r in conn.execute(sql, params)]


def build_story_db(path: Path) -> Path:
    """The demo incident (records, logs, a verdict, notes and tags) with three rules applied."""
    demo.build(str(path), with_case_work=True)
    db = sqlite_utils.Database(str(path))
    for name in ("staff", "member_current", "token_owner"):
        actions.apply(db, name, "test")
    db.conn.close()
    return path


async def every_row(ds, url: str, size: int = 7) -> list[int]:
    """Every row id of a requests page, following its next links (keyset pages)."""
    ids: list[int] = []
    split = urlsplit(url)
    next_url = split.path + ".json?" + (split.query + "&" if split.query else "") + f"size={size}"
    while next_url:
        response = await ds.client.get(next_url)
        assert response.status_code == 200, (next_url, response.text[:300])
        ids += [r["id"] for r in response.json()["rows"]]
        next_url = response.json()["next_url"]
    return ids


def generous_time(monkeypatch) -> None:
    """The requests page's time budgets, raised for tests of what it shows: on a
    loaded machine a 50 ms walk or a 25 ms count may stop early, which is right at
    scale but would make a correctness test flaky (the budgets have their own test)."""
    from datasette_forensics.views import requests

    monkeypatch.setattr(requests, "BUDGET_S", 10.0)
    monkeypatch.setattr(requests, "STEP_LIMIT_MS", 5_000)
    monkeypatch.setattr(requests, "COUNT_STEPS", ((1_000, 5_000), (10_000, 5_000)))
