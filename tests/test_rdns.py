"""enrich-rdns (MODEL §7): PTR names from the test's own DNS server on 127.0.0.1.

Nothing here reaches any other network: the server is dns_server.DnsServer, and a
plain import is checked to open no socket at all."""

from __future__ import annotations

import socket
import sqlite3

import pytest
from click.testing import CliRunner

from datasette_forensics import rdns
from datasette_forensics.cli import cli

from conftest import make_datasette
from dns_server import EMPTY, GARBAGE, NXDOMAIN, SERVFAIL, SILENT, DnsServer

TABLE = {
    "192.0.2.1": "one.example",
    "192.0.2.2": NXDOMAIN,
    "192.0.2.3": SILENT,
    "192.0.2.4": GARBAGE,
    "192.0.2.5": EMPTY,
    "192.0.2.6": SERVFAIL,
    "2001:db8::1": "v6.example",
    "198.51.100.7": "<b>bold</b>.example",  # the owner of an address writes its PTR name
}
NAMED_BY_IP_INFO = "203.0.113.9"
LINE = '{ip} - - [04/Dec/2026:10:00:{s:02d} +0000] "GET /x HTTP/1.1" 200 5 "-" "curl/8"\n'


@pytest.fixture
def db_path(tmp_path):
    log = tmp_path / "access.log"
    log.write_text("".join(LINE.format(ip=ip, s=s) for s, ip in enumerate([*TABLE, NAMED_BY_IP_INFO, "crawler.example.com"])))
    path = str(tmp_path / "r.db")
    result = CliRunner().invoke(cli, ["import-logs", path, str(log)])
    assert result.exit_code == 0, result.output
    ip_info = tmp_path / "ip_info.csv"
    ip_info.write_text(f"cidr,asn,provider,rdns\n{NAMED_BY_IP_INFO}/32,,,named.by.records\n")
    result = CliRunner().invoke(cli, ["import-records", path, "ip_info", str(ip_info)])
    assert result.exit_code == 0, result.output
    return path


def enrich(db_path, server, *options):
    return CliRunner().invoke(cli, ["enrich-rdns", db_path, "--resolver", server.address, "--timeout", "0.3", *options])


def ptrs(db_path) -> dict:
    conn = sqlite3.connect(db_path)
    try:
        return {ip: rest for ip, *rest in conn.execute("select ip, ptr, ptr_status, rdns from ips")}
    finally:
        conn.close()


def test_names_outcomes_and_times(db_path):
    from datasette_forensics.timeparse import utcnow

    before = utcnow()
    with DnsServer(TABLE) as server:
        result = enrich(db_path, server, "--concurrency", "3")
    after = utcnow()
    assert result.exit_code == 0, result.output
    assert "8 of 8 addresses looked up" in result.output
    assert "2 error, 1 no_answer, 1 nxdomain, 3 ok, 1 timeout" in result.output
    assert sorted(server.queries) == sorted(TABLE)  # not the address ip_info names, not the host name
    assert ptrs(db_path) == {
        "192.0.2.1": ["one.example", "ok", "one.example"],
        "192.0.2.2": [None, "nxdomain", None],
        "192.0.2.3": [None, "timeout", None],
        "192.0.2.4": [None, "error", None],
        "192.0.2.5": [None, "no_answer", None],
        "192.0.2.6": [None, "error", None],
        "2001:db8::1": ["v6.example", "ok", "v6.example"],
        "198.51.100.7": ["<b>bold</b>.example", "ok", "<b>bold</b>.example"],
        NAMED_BY_IP_INFO: [None, None, "named.by.records"],
        "crawler.example.com": [None, None, None],
    }
    conn = sqlite3.connect(db_path)
    times = [t for (t,) in conn.execute("select ptr_at from ips where ptr_status is not null")]
    assert len(times) == 8 and all(before <= t <= after for t in times)
    # The rdns groups follow, and nothing is left to finish.
    groups = dict(conn.execute("select k1, requests from pivot_groups where grouping = 'rdns'"))
    assert groups == {"one.example": 1, "v6.example": 1, "<b>bold</b>.example": 1, "named.by.records": 1, None: 6}
    assert conn.execute("select count(*) from derived_state").fetchone() == (0,)
    assert conn.execute("select rdns from requests_view where ip = '192.0.2.1'").fetchone() == ("one.example",)


def test_failures_are_asked_again_only_with_retry_failed(db_path):
    with DnsServer(TABLE) as server:
        assert enrich(db_path, server).exit_code == 0
        first = len(server.queries)
        result = enrich(db_path, server)
        assert result.exit_code == 0, result.output
        assert "0 of 0 addresses" in result.output and len(server.queries) == first
        server.table.update({"192.0.2.2": "two.example", "192.0.2.3": "three.example"})
        result = enrich(db_path, server, "--retry-failed")
        assert result.exit_code == 0, result.output
    assert sorted(server.queries[first:]) == ["192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5", "192.0.2.6"]
    found = ptrs(db_path)
    assert found["192.0.2.2"] == ["two.example", "ok", "two.example"]
    assert found["192.0.2.3"] == ["three.example", "ok", "three.example"]
    assert found["192.0.2.1"] == ["one.example", "ok", "one.example"]  # not asked again


@pytest.mark.parametrize(
    "mode,sentence",
    [
        (SILENT, "did not answer any of 4 PTR queries within 0.3 s: nothing was stored."),
        (GARBAGE, "answered 4 PTR queries with data that is not a DNS reply to them: nothing was stored."),
    ],
)
def test_a_resolver_that_says_nothing_usable_stores_nothing(db_path, mode, sentence):
    with DnsServer(mode=mode) as server:
        result = enrich(db_path, server, "--concurrency", "4")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == f"Error: The resolver {server.address} {sentence}"
    assert all(status is None for _, status, _ in ptrs(db_path).values())


def test_an_unreachable_resolver(db_path):
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    result = CliRunner().invoke(cli, ["enrich-rdns", db_path, "--resolver", f"127.0.0.1:{port}", "--timeout", "0.2"])
    assert result.exit_code == 1
    assert "nothing was stored" in result.output and "Traceback" not in result.output
    assert all(status is None for _, status, _ in ptrs(db_path).values())


def test_a_resolver_that_stops_answering_keeps_what_was_looked_up(db_path):
    """The server answers two queries, then goes silent: four silent look-ups in a row
    (a group, with one worker) stop the run; the two answers are stored, nothing else."""
    table = {ip: f"n{k}.example" for k, ip in enumerate(TABLE)}
    with DnsServer(table, answer_first=2) as server:
        result = enrich(db_path, server, "--concurrency", "1")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"Error: The resolver {server.address} did not answer any of 4 PTR queries within 0.3 s: "
        "the 2 look-ups before are stored; run the command again to go on."
    )
    assert len(server.queries) == 6  # the last two addresses were never asked
    statuses = [status for _, status, _ in ptrs(db_path).values()]
    assert statuses.count("ok") == 2 and statuses.count(None) == 8


def test_a_few_timeouts_do_not_hold_the_others(db_path):
    """A slow answer holds one worker: with four workers, one silent address among
    seven answered ones costs about one timeout, not one per group."""
    with DnsServer({**{ip: "x.example" for ip in TABLE}, "192.0.2.3": SILENT}) as server:
        result = CliRunner().invoke(
            cli, ["enrich-rdns", db_path, "--resolver", server.address, "--timeout", "1", "--concurrency", "4"]
        )
    assert result.exit_code == 0, result.output
    assert "8 of 8 addresses looked up" in result.output and "7 ok, 1 timeout" in result.output
    assert ptrs(db_path)["192.0.2.3"] == [None, "timeout", None]


@pytest.mark.parametrize(
    "options,message",
    [
        (["--resolver", "dns.example"], "is not an address with an optional port"),
        (["--resolver", "127.0.0.1:99999"], "is not an address with an optional port"),
        (["--resolver", "[::1]x"], "is not an address with an optional port"),
    ],
)
def test_bad_options_are_refused_before_the_database_is_opened(tmp_path, options, message):
    db_path = tmp_path / "none.db"
    result = CliRunner().invoke(cli, ["enrich-rdns", str(db_path), *options])
    assert result.exit_code == 1 and message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not db_path.exists()


def test_bounds_on_concurrency_and_timeout(tmp_path):
    for options in (["--concurrency", "0"], ["--concurrency", "1000"], ["--timeout", "0"]):
        result = CliRunner().invoke(cli, ["enrich-rdns", str(tmp_path / "x.db"), "--resolver", "127.0.0.1", *options])
        assert result.exit_code == 2, options


def test_resolver_forms():
    assert rdns.parse_resolver("192.0.2.53") == ("192.0.2.53", 53)
    assert rdns.parse_resolver("192.0.2.53:5353") == ("192.0.2.53", 5353)
    assert rdns.parse_resolver("[2001:db8::53]:5353") == ("2001:db8::53", 5353)
    assert rdns.parse_resolver("2001:db8::53") == ("2001:db8::53", 53)


def test_a_plain_import_makes_no_network_call(tmp_path, monkeypatch):
    """Enrichment at import is offline: no socket may even be created."""

    def refuse(*args, **kwargs):
        raise AssertionError("the import opened a socket")

    monkeypatch.setenv("FORENSICS_PARSE_PROCESS", "never")
    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    log = tmp_path / "a.log"
    log.write_text(LINE.format(ip="8.8.8.8", s=1))
    result = CliRunner().invoke(cli, ["import-logs", str(tmp_path / "n.db"), str(log)])
    assert result.exit_code == 0, result.output
    conn = sqlite3.connect(tmp_path / "n.db")
    assert conn.execute("select provider, rdns, ptr_status from ips").fetchone() == ("GOOGLE", None, None)


@pytest.mark.asyncio
async def test_names_show_escaped_on_the_rdns_pivot(db_path):
    with DnsServer(TABLE) as server:
        assert enrich(db_path, server).exit_code == 0
    ds = make_datasette([db_path])
    response = await ds.client.get("/r/-/forensics/ips?by=rdns")
    assert response.status_code == 200
    assert "&lt;b&gt;bold&lt;/b&gt;.example" in response.text and "<b>bold</b>" not in response.text
    data = (await ds.client.get("/r/-/forensics/ips.json?by=rdns")).json()
    assert {r["key"]: r["requests"] for r in data["rows"]}["one.example"] == 1
