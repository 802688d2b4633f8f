"""partner: the signature lies in an authorised service partner's range and client pattern."""

import ipaddress
import re

from .common import build_pair_windows, in_pair_window, ms_rows

NAME = "partner"
DESCRIPTION = (
    "The ip lies in a partner's CIDR, the user agent matches that row's pattern, "
    "and the org had authorised the partner at the request's time."
)


def _networks(db) -> list[tuple]:
    """Partner rows as (name, version, network int, mask int, compiled pattern or None)."""
    rows = []
    for name, cidr, pattern in db.execute("select name, cidr, user_agent_pattern from partners"):
        try:
            network = ipaddress.ip_network(cidr, strict=False)
            regex = re.compile(pattern) if pattern else None
        except (ValueError, re.error):
            continue  # refused at import; defensive against hand-edited rows
        rows.append((name, network.version, int(network.network_address), int(network.netmask), regex))
    return rows


def prepare(db) -> None:
    """Match in-scope signatures to partner rows (once per signature), and authorisation windows.

    An address matches a row when it lies in the row's network (IPv4 or IPv6; an
    IPv4-mapped IPv6 address counts as its IPv4 address); the user agent matches
    when the row's pattern is empty or ``re.search`` finds it.
    """
    partners = _networks(db)
    matches = set()
    if partners:
        ip_rows: dict[str, list] = {}
        ua_hits: dict[tuple, bool] = {}
        for sig_id, ip, ua in db.execute(
            """select g.id, i.ip, a.ua from signature_scope ss
            join signatures g on g.id = ss.sig_id
            join ips i on i.id = g.ip_id join user_agents a on a.id = g.ua_id
            where i.version is not null"""
        ):
            rows = ip_rows.get(ip)
            if rows is None:
                try:
                    address = ipaddress.ip_address(ip)
                except ValueError:
                    address = None
                if address is not None and address.version == 6 and address.ipv4_mapped:
                    address = address.ipv4_mapped
                rows = ip_rows[ip] = [] if address is None else [
                    p for p in partners
                    if p[1] == address.version and int(address) & p[3] == p[2]
                ]
            for name, _, _, _, regex in rows:
                if regex is None:
                    matches.add((sig_id, name))
                    continue
                key = (regex.pattern, ua)
                hit = ua_hits.get(key)
                if hit is None:
                    hit = ua_hits[key] = regex.search(ua) is not None
                if hit:
                    matches.add((sig_id, name))
    db.execute("drop table if exists temp.rule_partner_sigs")
    db.execute("create temp table rule_partner_sigs (sig_id integer, partner text)")
    db.conn.executemany("insert into temp.rule_partner_sigs values (?, ?)", sorted(matches))
    db.execute("drop table if exists temp.rule_partner_windows")
    db.execute("create temp table rule_partner_windows (partner text, org_id text, from_ms integer, to_ms integer)")
    db.conn.executemany(
        "insert into temp.rule_partner_windows values (?, ?, ?, ?)",
        ms_rows(db, "select partner, org_id, authorized_at, revoked_at from partner_orgs", (2, 3)),
    )
    build_pair_windows(
        db,
        "rule_partner_sig_windows",
        """select ps.sig_id, w.org_id, w.from_ms, w.to_ms
        from temp.rule_partner_sigs ps join temp.rule_partner_windows w on w.partner = ps.partner""",
    )


def match_sql() -> str:
    """A SQL condition on an in-scope request ``s`` (a row of scoped): true when the rule explains it."""
    return in_pair_window("rule_partner_sig_windows", open_start=True)
