"""ip_info records onto client addresses: longest-prefix match, IPv4 and IPv6."""

from __future__ import annotations

import ipaddress
import random

import pytest

from datasette_forensics import ipinfo, records, schema
from datasette_forensics.enrich import classify_ip

IP_INFO = """cidr,asn,provider,rdns
10.0.0.0/8,AS1,BigNet,
10.1.0.0/16,AS2,MidNet,
10.1.2.3/32,AS3,Host,one.example
2001:db8::/32,AS4,V6Net,
2001:db8:1::/48,AS5,V6Sub,
2001:db8:1::5/128,AS6,V6Host,five.example
"""

EXPECTED = {
    "10.9.9.9": ("AS1", "BigNet", None),
    "10.1.5.5": ("AS2", "MidNet", None),
    "10.1.2.3": ("AS3", "Host", "one.example"),
    "10.1.2.4": ("AS2", "MidNet", None),
    "11.0.0.1": (None, "DNIC-AS-00749", None),  # no network: the shipped owner name (geo.py)
    "2001:db8:2::1": ("AS4", "V6Net", None),
    "2001:db8:1::7": ("AS5", "V6Sub", None),
    "2001:db8:1::5": ("AS6", "V6Host", "five.example"),
    "2001:db9::1": (None, None, None),
    "::ffff:10.1.2.3": ("AS3", "Host", "one.example"),
    "crawler.example.com": (None, None, None),
}


def add_ips(db, ips):
    for ip in ips:
        info = classify_ip(ip)
        db.conn.execute(
            "insert into ips (ip, version, prefix, prefix16) values (?, ?, ?, ?)",
            [ip, info["version"], info["prefix"], info["prefix16"]],
        )


def enrichment(db) -> dict:
    return {ip: (asn, provider, rdns) for ip, asn, provider, rdns in db.conn.execute(
        "select ip, asn, provider, rdns from ips"
    )}


@pytest.fixture
def db(tmp_path):
    return schema.connect(str(tmp_path / "ip.db"))


def test_import_applies_longest_prefix(db, tmp_path):
    add_ips(db, EXPECTED)
    path = tmp_path / "ip_info.csv"
    path.write_text(IP_INFO)
    assert records.import_records(db, "ip_info", str(path)) == (6, 0)
    assert enrichment(db) == EXPECTED


def test_recompute_clears_stale_and_min_id_limits_work(db, tmp_path):
    add_ips(db, ["10.1.5.5", "192.0.2.1"])
    path = tmp_path / "ip_info.csv"
    path.write_text(IP_INFO)
    records.import_records(db, "ip_info", str(path))
    assert enrichment(db)["10.1.5.5"] == ("AS2", "MidNet", None)
    # A corrected file: 10.1/16 now names another owner.
    path.write_text("cidr,asn,provider\n10.1.0.0/16,AS9,NewOwner\n")
    assert records.import_records(db, "ip_info", str(path)) == (0, 1)
    assert enrichment(db)["10.1.5.5"] == ("AS9", "NewOwner", None)
    # Rows removed by hand: a full recompute clears what no network gives any more.
    db.conn.execute("delete from ip_info where cidr like '10.%'")
    assert ipinfo.apply_ip_info(db) == 1
    assert enrichment(db)["10.1.5.5"] == (None, None, None)
    # min_ip_id: only rows after it are looked at.
    db.conn.execute("update ips set asn = 'stale' where ip = '192.0.2.1'")
    before = db.conn.execute("select max(id) from ips").fetchone()[0]
    add_ips(db, ["2001:db8:1::9"])
    assert ipinfo.apply_ip_info(db, min_ip_id=before) == 1
    data = enrichment(db)
    assert data["2001:db8:1::9"] == ("AS5", "V6Sub", None)
    assert data["192.0.2.1"] == ("stale", None, None)
    assert ipinfo.apply_ip_info(db) == 1
    assert enrichment(db)["192.0.2.1"] == (None, None, None)


def test_empty_ip_info_clears_everything(db):
    add_ips(db, ["10.0.0.1"])
    db.conn.execute("update ips set asn = 'x', rdns = 'y'")
    assert ipinfo.apply_ip_info(db) == 1
    assert enrichment(db) == {"10.0.0.1": (None, None, None)}
    assert ipinfo.apply_ip_info(db) == 0  # nothing left to change


def v6(rng) -> int:
    """An address in 2001:db8::/32 varying in a few bits at /40, /56, /64 and /128."""
    return (
        (0x20010DB8 << 96) | rng.getrandbits(3) << 88 | rng.getrandbits(2) << 72
        | rng.getrandbits(2) << 64 | rng.getrandbits(3)
    )


def test_matches_brute_force(db):
    rng = random.Random(7)
    networks = {}
    for _ in range(300):
        version = rng.choice((4, 6))
        # Cluster addresses in a small space so that networks nest and overlap.
        base = (10 << 24) if version == 4 else (0x20010DB8 << 96)
        length = rng.choice([12, 16, 20, 24, 28, 32] if version == 4 else [40, 48, 56, 64, 128])
        address = base | rng.getrandbits(24) if version == 4 else v6(rng)
        net = ipaddress.ip_network((address, length), strict=False)
        networks[str(net)] = (f"AS{len(networks)}", None, None)
    ips = set()
    for _ in range(2000):
        if rng.random() < 0.5:
            ips.add(str(ipaddress.IPv4Address((10 << 24) | rng.getrandbits(24))))
        else:
            ips.add(str(ipaddress.IPv6Address(v6(rng))))
    add_ips(db, sorted(ips))
    db.conn.executemany(
        "insert into ip_info (cidr, asn) values (?, ?)", [(c, v[0]) for c, v in networks.items()]
    )
    ipinfo.apply_ip_info(db)
    parsed = [(ipaddress.ip_network(c), v) for c, v in networks.items()]
    for ip, got in enrichment(db).items():
        address = ipaddress.ip_address(ip)
        best = max(
            ((net.prefixlen, v) for net, v in parsed if net.version == address.version and address in net),
            default=(None, (None, None, None)),
        )[1]
        assert got == best, ip
