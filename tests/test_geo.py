"""Who owns each address, offline (MODEL §7): network kind, country and owner name from
geoip2fast's shipped data, ip_info overriding it, the pivot groups and requests_view
columns they feed, and the upgrade that fills a database imported before them.

The expected owners and countries are what the shipped data (GeoLite2, 2024-06-18)
gives, looked up by hand once."""

from __future__ import annotations

import sqlite3
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from click.testing import CliRunner

from datasette_forensics import geo, ipinfo, records, schema
from datasette_forensics.cli import cli

from conftest import make_datasette


@pytest.mark.parametrize(
    "ip,country,owner",
    [
        ("8.8.8.8", "US", "GOOGLE"),
        ("1.1.1.1", "AU", "CLOUDFLARENET"),
        ("52.95.110.1", "US", "AMAZON-02"),
        ("2001:4860:4860::8888", "US", "GOOGLE"),
        ("::ffff:8.8.8.8", "US", "GOOGLE"),  # an IPv4-mapped address is looked up as its IPv4 address
    ],
)
def test_public_addresses_get_country_and_owner(ip, country, owner):
    assert geo.lookup(ip) == ("public", country, owner)


@pytest.mark.parametrize(
    "ip,kind",
    [
        ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("fd00::1", "private"),
        ("127.0.0.1", "loopback"), ("::1", "loopback"),
        ("169.254.1.1", "link_local"), ("fe80::1", "link_local"),
        ("100.64.1.1", "cgnat"), ("100.127.255.254", "cgnat"),
        ("192.0.2.5", "documentation"), ("198.51.100.7", "documentation"),
        ("203.0.113.9", "documentation"), ("2001:db8::1", "documentation"), ("3fff::1", "documentation"),
        ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"), ("0.0.0.0", "reserved"), ("::", "reserved"), ("64:ff9b::1.2.3.4", "reserved"),
        ("9.9.9.9", "public"), ("2606:4700:4700::1111", "public"),
        ("::ffff:10.0.0.1", "private"), ("::ffff:100.64.0.1", "cgnat"),
    ],
)
def test_network_kind(ip, kind):
    assert geo.network_kind(ip) == kind


def test_only_public_addresses_get_an_owner():
    assert geo.lookup("10.0.0.1") == ("private", None, None)
    assert geo.lookup("100.64.0.1") == ("cgnat", None, None)
    assert geo.lookup("2001:db8::1") == ("documentation", None, None)
    assert geo.lookup("crawler.example.com") == (None, None, None)


def test_the_benchmark_switch_skips_the_enrichment(monkeypatch):
    monkeypatch.setenv(geo.DISABLE_ENV, "1")
    assert geo.lookup("8.8.8.8") == (None, None, None)


def test_data_source_is_dated():
    assert geo.data_source() == "MAXMIND:GeoLite2-CountryASN-IPv4IPv6-en-20240618"


# --- stored addresses ---------------------------------------------------------------------

LINE = '{ip} - - [04/Dec/2026:10:00:{s:02d} +0000] "GET /api/0/x/ HTTP/1.1" 200 5 "-" "curl/8.{s}"\n'
ADDRESSES = [
    "8.8.8.8", "8.8.4.4", "1.1.1.1", "2001:4860:4860::8888", "10.0.0.1", "192.0.2.5",
    "100.64.0.1", "fe80::1", "::1", "crawler.example.com",
]
OWNERS = "select ip, network, country, as_name, asn, provider, rdns from ips order by ip"


def import_log(tmp_path, addresses=ADDRESSES, name="f.db") -> str:
    log = tmp_path / "access.log"
    log.write_text("".join(LINE.format(ip=ip, s=s) for s, ip in enumerate(addresses)))
    db_path = str(tmp_path / name)
    result = CliRunner().invoke(cli, ["import-logs", db_path, str(log)])
    assert result.exit_code == 0, result.output
    return db_path


def read(path, sql, params=()):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


EXPECTED_OWNERS = [
    # ip, network, country, as_name, asn (no number without ip_info), provider (the owner name), rdns
    ("1.1.1.1", "public", "AU", "CLOUDFLARENET", None, "CLOUDFLARENET", None),
    ("10.0.0.1", "private", None, None, None, None, None),
    ("100.64.0.1", "cgnat", None, None, None, None, None),
    ("192.0.2.5", "documentation", None, None, None, None, None),
    ("2001:4860:4860::8888", "public", "US", "GOOGLE", None, "GOOGLE", None),
    ("8.8.4.4", "public", "US", "GOOGLE", None, "GOOGLE", None),
    ("8.8.8.8", "public", "US", "GOOGLE", None, "GOOGLE", None),
    ("::1", "loopback", None, None, None, None, None),
    ("crawler.example.com", None, None, None, None, None, None),
    ("fe80::1", "link_local", None, None, None, None, None),
]


def test_import_fills_the_owner_columns(tmp_path):
    assert read(import_log(tmp_path), OWNERS) == EXPECTED_OWNERS


def test_requests_view_has_the_owner_columns(tmp_path):
    db_path = import_log(tmp_path)
    rows = read(
        db_path,
        "select ip, network, country, as_name, asn, provider, peer from requests_view where ip in ('8.8.8.8', '10.0.0.1') order by ip",
    )
    assert rows == [
        ("10.0.0.1", "private", None, None, None, None, None),
        ("8.8.8.8", "public", "US", "GOOGLE", None, "GOOGLE", None),
    ]


def test_ip_info_overrides_most_specific_first_and_its_removal_restores_the_shipped_owner(tmp_path):
    db_path = import_log(tmp_path)
    ip_info = tmp_path / "ip_info.csv"
    ip_info.write_text(
        "cidr,asn,provider,rdns\n"
        "8.8.0.0/16,AS15169,Google LLC,\n"
        "8.8.8.0/24,AS15169,Google Public DNS,\n"
        "8.8.8.8/32,,,dns.google\n"  # names only the host: provider falls back to the shipped owner
        "10.0.0.0/8,AS64512,CorpNet,\n"
    )
    result = CliRunner().invoke(cli, ["import-records", db_path, "ip_info", str(ip_info)])
    assert result.exit_code == 0, result.output
    owners = {r[0]: r[1:] for r in read(db_path, OWNERS)}
    assert owners["8.8.8.8"] == ("public", "US", "GOOGLE", None, "GOOGLE", "dns.google")
    assert owners["8.8.4.4"] == ("public", "US", "GOOGLE", "AS15169", "Google LLC", None)
    assert owners["10.0.0.1"] == ("private", None, None, "AS64512", "CorpNet", None)
    assert owners["1.1.1.1"] == ("public", "AU", "CLOUDFLARENET", None, "CLOUDFLARENET", None)
    # The groups follow at once.
    groups = dict(read(db_path, "select k1, requests from pivot_groups where grouping = 'asn'"))
    assert groups == {"AS15169": 1, "AS64512": 1, None: 8}
    db = schema.connect(db_path)
    db.execute("delete from ip_info")
    ipinfo.apply_ip_info(db)
    assert read(db_path, OWNERS) == EXPECTED_OWNERS


def test_records_api_override(tmp_path):
    db = schema.connect(str(tmp_path / "o.db"))
    db.conn.execute("insert into ips (ip, version) values ('8.8.8.8', 4)")
    ip_info = tmp_path / "ip_info.csv"
    ip_info.write_text("cidr,asn,provider,rdns\n8.8.8.0/24,AS15169,Google DNS,dns.google\n")
    records.import_records(db, "ip_info", str(ip_info))
    row = "select network, country, as_name, asn, provider, rdns from ips where ip = '8.8.8.8'"
    assert db.conn.execute(row).fetchone() == ("public", "US", "GOOGLE", "AS15169", "Google DNS", "dns.google")


def test_an_upgrade_fills_stored_addresses_in_batches(tmp_path, monkeypatch):
    """A database imported before m021: the migration adds the columns, and the
    addresses are looked up before anything reads, CHUNK ids at a time."""
    db_path = import_log(tmp_path)
    conn = sqlite3.connect(db_path)
    # Back to the layout before m021 (its columns, view and groups gone).
    conn.executescript(
        """drop view requests_view;
        alter table ips drop column network; alter table ips drop column country;
        alter table ips drop column as_name; alter table ips drop column ptr;
        alter table ips drop column ptr_status; alter table ips drop column ptr_at;
        update ips set provider = null;
        delete from pivot_groups where grouping in ('country', 'network', 'provider');
        delete from _sqlite_migrations where name = 'm021_geo_ip_owners';"""
    )
    conn.execute("create view requests_view as select 1 as old")
    conn.close()
    monkeypatch.setattr(ipinfo, "CHUNK", 3)
    batches = []
    real = ipinfo.owner
    monkeypatch.setattr(ipinfo, "owner", lambda *a: batches.append(a[0]) or real(*a))
    schema.connect(db_path).conn.close()
    assert read(db_path, OWNERS) == EXPECTED_OWNERS
    assert sorted(batches) == sorted(ADDRESSES)
    assert read(db_path, "select count(*) from derived_state") == [(0,)]
    groups = dict(read(db_path, "select k1, requests from pivot_groups where grouping = 'network'"))
    assert groups == {
        "public": 4, "private": 1, "cgnat": 1, "documentation": 1, "loopback": 1, "link_local": 1, None: 1,
    }
    assert read(db_path, "select country from requests_view where ip = '1.1.1.1'") == [("AU",)]


# --- pages ------------------------------------------------------------------------------


async def get_json(ds, url):
    response = await ds.client.get(url)
    assert response.status_code == 200, (url, response.text[:500])
    return response.json()


async def rows_behind(ds, url: str) -> int:
    """The count of requests_view rows a drill-down link leads to."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + [("_size", "max"), ("_extra", "count")]
    data = await get_json(ds, f"{parts.path}.json?{urlencode(query)}")
    return data["filtered_table_rows_count"] if "filtered_table_rows_count" in data else data["count"]


@pytest.mark.asyncio
async def test_country_network_and_provider_groupings(tmp_path):
    db_path = import_log(tmp_path, name="g.db")
    ds = make_datasette([db_path])
    data = await get_json(ds, "/g/-/forensics/ips.json?by=country")
    assert {"country", "network"} <= set(data["groupings"])
    assert {r["key"]: r["requests"] for r in data["rows"]} == {"US": 3, "AU": 1, None: 6}
    data = await get_json(ds, "/g/-/forensics/ips.json?by=network")
    network = {r["key"]: r for r in data["rows"]}
    assert {k: r["requests"] for k, r in network.items()} == {
        "public": 4, "private": 1, "cgnat": 1, "documentation": 1, "loopback": 1, "link_local": 1, None: 1,
    }
    assert network["public"]["ips"] == 4
    data = await get_json(ds, "/g/-/forensics/ips.json?by=provider")
    assert {r["key"]: r["requests"] for r in data["rows"]} == {"GOOGLE": 3, "CLOUDFLARENET": 1, None: 6}
    # Each count leads to its requests; a filter by country narrows every page.
    for by in ("country", "network", "provider"):
        data = await get_json(ds, f"/g/-/forensics/ips.json?by={by}")
        for row in data["rows"]:
            assert await rows_behind(ds, row["links"]["requests"]) == row["requests"], (by, row["key"])
        windowed = await get_json(ds, f"/g/-/forensics/ips.json?by={by}&from=2000-01-01&to=2100-01-01")
        strip = lambda rows: [{k: v for k, v in r.items() if k != "links"} for r in rows]  # noqa: E731
        assert strip(windowed["rows"]) == strip(data["rows"]), by
    data = await get_json(ds, "/g/-/forensics/ips.json?by=ip&country=US")
    assert sorted(r["key"] for r in data["rows"]) == ["2001:4860:4860::8888", "8.8.4.4", "8.8.8.8"]
    data = await get_json(ds, "/g/-/forensics/signatures.json?network=cgnat")
    assert [(r["ip"], r["network"]) for r in data["rows"]] == [("100.64.0.1", "cgnat")]
    html = (await ds.client.get("/g/-/forensics/ips?by=network")).text
    assert "Network kind" in html and "documentation" in html
    html = (await ds.client.get("/g/-/forensics/signatures?ip=8.8.8.8")).text
    assert "public · US · GOOGLE" in html
    data = await get_json(ds, "/g/-/forensics/signatures.json?ip=8.8.8.8")
    assert [(r["network"], r["country"], r["provider"]) for r in data["rows"]] == [("public", "US", "GOOGLE")]
