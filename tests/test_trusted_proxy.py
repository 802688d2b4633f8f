"""import-logs --trusted-proxy (MODEL §7): behind a trusted peer, the client is the
right-most X-Forwarded-For hop outside every trusted range; the peer stays stored."""

from __future__ import annotations

import json
import sqlite3

import pytest
from click.testing import CliRunner

from datasette_forensics import proxies
from datasette_forensics.cli import cli
from datasette_forensics.errors import ForensicsError

TRUSTED = ["--trusted-proxy", "10.0.0.0/8", "--trusted-proxy", "2001:db8:ffff::/48"]

# (peer, X-Forwarded-For, expected client, expected stored peer), one line each.
CHAIN = [
    # two proxies of ours, then the client; the left-most hop is the client's own claim
    ("10.0.0.1", "198.51.100.9, 203.0.113.7, 10.0.0.2", "203.0.113.7", "10.0.0.1"),
    # the peer is not ours: its header proves nothing
    ("192.0.2.50", "203.0.113.99", "192.0.2.50", None),
    # no header: the peer stays the client
    ("10.0.0.1", None, "10.0.0.1", None),
    # every hop is ours: the left-most one
    ("10.0.0.1", "10.0.0.3, 10.0.0.2", "10.0.0.3", "10.0.0.1"),
    # IPv6 behind an IPv6 proxy, a hop with brackets and a port
    ("2001:db8:ffff::1", "[2001:db8::7]:443", "2001:db8::7", "2001:db8:ffff::1"),
    # a hop with a port, then garbage a client wrote: the walk stops at the last trusted hop
    ("10.0.0.1", "<script>, 10.0.0.4:8080", "10.0.0.4", "10.0.0.1"),
    # garbage right behind the peer: the peer stays
    ("10.0.0.1", "unknown", "10.0.0.1", None),
]

UA = "curl/8.1"


def nginx_ext(peer, xff, n):
    return (
        f'{peer} - - [18/Jul/2020:09:12:{n:02d} +0000] "GET /api/0/x/{n} HTTP/1.1" 200 5 "-" "{UA}" '
        f'"{xff or "-"}" 0.012'
    )


def jsonl(peer, xff, n):
    fields = {"remote_addr": peer, "time_iso8601": f"2020-07-18T09:12:{n:02d}Z", "request_uri": f"/api/0/x/{n}",
              "http_user_agent": UA, "status": 200}
    if xff:
        fields["http_x_forwarded_for"] = xff
    return json.dumps(fields)


def csv_row(peer, xff, n):
    return f'{peer},2020-07-18T09:12:{n:02d}Z,/api/0/x/{n},{UA},200,"{xff or ""}"'


def caddy(peer, xff, n):
    headers = {"User-Agent": [UA]}
    if xff:
        headers["X-Forwarded-For"] = [xff]
    return json.dumps({
        "ts": 1595063520 + n, "status": 200, "size": 5,
        "request": {"remote_ip": peer, "client_ip": peer, "method": "GET", "uri": f"/api/0/x/{n}", "headers": headers},
    })


def w3c(peer, xff, n):
    return f"2020-07-18 09:12:{n:02d} {peer} GET /api/0/x/{n} 200 {UA} {(xff or '-').replace(' ', '')}"


FORMATS = {
    "nginx-ext": ([], nginx_ext),
    "jsonl": ([], jsonl),
    "csv": (["remote_addr,time_iso8601,request_uri,http_user_agent,status,http_x_forwarded_for"], csv_row),
    "caddy": ([], caddy),
    "w3c": (["#Version: 1.0", "#Fields: date time c-ip cs-method cs-uri-stem sc-status cs(User-Agent) x-forwarded-for"], w3c),
}


def write_log(tmp_path, fmt):
    header, make = FORMATS[fmt]
    path = tmp_path / f"access.{fmt}.log"
    path.write_text("\n".join(header + [make(peer, xff, n) for n, (peer, xff, _, _) in enumerate(CHAIN)]) + "\n")
    return str(path)


def stored(db_path):
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute("select ip, peer from requests_view order by line_no").fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_chain_of_trusted_and_untrusted_hops(tmp_path, fmt):
    log = write_log(tmp_path, fmt)
    db_path = str(tmp_path / "p.db")
    result = CliRunner().invoke(cli, ["import-logs", db_path, log, "--format", fmt, *TRUSTED])
    assert result.exit_code == 0, result.output
    assert f"{len(CHAIN)} imported" in result.output
    assert stored(db_path) == [(client, peer) for _, _, client, peer in CHAIN]
    conn = sqlite3.connect(db_path)
    # The header itself is kept as logged; the new clients are enriched like any address.
    assert conn.execute("select json_extract(extra, '$.xff') from requests order by line_no limit 1").fetchone()[0]
    assert conn.execute("select network from ips where ip = '203.0.113.7'").fetchone() == ("documentation",)
    conn.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_without_trusted_proxies_the_peer_is_the_client(tmp_path, fmt):
    log = write_log(tmp_path, fmt)
    db_path = str(tmp_path / "p.db")
    result = CliRunner().invoke(cli, ["import-logs", db_path, log, "--format", fmt])
    assert result.exit_code == 0, result.output
    assert stored(db_path) == [(peer, None) for peer, _, _, _ in CHAIN]


def test_alb_logs_carry_no_forwarded_header(tmp_path):
    """An ALB log line names the balancer's own peer (the client): nothing to resolve."""
    line = (
        'https 2020-07-18T09:12:44.123456Z app/my-lb/50dc6c495c0c9188 10.0.0.9:2817 10.0.0.1:80 '
        '0.000 0.001 0.000 200 200 34 366 "GET https://api.example.com:443/v1/orgs?x=1 HTTP/1.1" '
        '"curl/7.46.0" ECDHE-RSA-AES128-GCM-SHA256 TLSv1.2 '
        'arn:aws:elasticloadbalancing:us-east-2:123456789012:targetgroup/my-targets/73e2d6bc24d8a067 '
        '"Root=1-58337262-36d228ad5d99923122bbe354" "api.example.com" "arn:aws:acm:cert" 0 '
        '2020-07-18T09:12:44.100000Z "forward" "-" "-" "10.0.0.1:80" "200" "-" "-" TID_abc\n'
    )
    log = tmp_path / "alb.log"
    log.write_text(line)
    db_path = str(tmp_path / "a.db")
    result = CliRunner().invoke(cli, ["import-logs", db_path, str(log), *TRUSTED])
    assert result.exit_code == 0, result.output
    assert stored(db_path) == [("10.0.0.9", None)]


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "not-a-network", "10.0.0.0/8/9", ""])
def test_an_unparseable_cidr_is_refused_before_anything_is_written(tmp_path, bad):
    log = write_log(tmp_path, "jsonl")
    db_path = tmp_path / "never.db"
    result = CliRunner().invoke(cli, ["import-logs", str(db_path), log, "--trusted-proxy", "10.0.0.0/8", "--trusted-proxy", bad])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: --trusted-proxy {bad!r} is not a network: give a CIDR such as 10.0.0.0/8 or an address."
    ]
    assert not db_path.exists()


def test_the_sqlite_utils_command_takes_it_too(tmp_path):
    from sqlite_utils.cli import cli as sqlite_utils_cli

    log = write_log(tmp_path, "jsonl")
    db_path = str(tmp_path / "s.db")
    result = CliRunner().invoke(sqlite_utils_cli, ["import-logs", db_path, log, *TRUSTED])
    assert result.exit_code == 0, result.output
    assert stored(db_path) == [(client, peer) for _, _, client, peer in CHAIN]
    result = CliRunner().invoke(sqlite_utils_cli, ["import-logs", db_path, log, "--trusted-proxy", "10.0.0.0/33"])
    assert result.exit_code == 1 and "is not a network" in result.output


def test_single_addresses_and_mapped_peers():
    trusted = proxies.TrustedProxies.from_cidrs(["10.0.0.1"])
    assert trusted.client("::ffff:10.0.0.1", "203.0.113.7") == "203.0.113.7"
    assert trusted.client("10.0.0.2", "203.0.113.7") is None
    assert proxies.TrustedProxies.from_cidrs([]) is None
    with pytest.raises(ForensicsError):
        proxies.parse_networks(["10.0.0.0/8", "300.0.0.0/8"])


def test_a_log_field_called_peer_does_not_replace_the_real_peer():
    trusted = proxies.TrustedProxies.from_cidrs(["10.0.0.0/8"])
    rec = {"ip": "10.0.0.1", "xff": "203.0.113.7", "extra": {"peer": "forged"}}
    assert trusted.resolve(rec) == {"ip": "203.0.113.7", "xff": "203.0.113.7", "extra": {"peer": "10.0.0.1"}}
    assert rec["ip"] == "10.0.0.1"  # the parser's record is not changed in place


def test_in_the_parse_process_too(tmp_path, monkeypatch):
    """Large inputs are parsed in a forked child (pipeline.py): it resolves clients the same way."""
    monkeypatch.setenv("FORENSICS_PARSE_PROCESS", "always")
    log = write_log(tmp_path, "nginx-ext")
    db_path = str(tmp_path / "c.db")
    result = CliRunner().invoke(cli, ["import-logs", db_path, log, *TRUSTED])
    assert result.exit_code == 0, result.output
    assert stored(db_path) == [(client, peer) for _, _, client, peer in CHAIN]
