"""The parsers on real logs nobody here wrote (../shared/real_logs, see its README)."""

from datetime import datetime, timedelta, timezone

import pytest
from real_logs import read_lines, real_logs_dir

from datasette_forensics.importers import ParseError, detect_format

EXPECTED_FORMAT = {
    "elastic-apache-combined.log.gz": "combined",
    "niels-hackers-combined.log.gz": "combined",
    "zanbil-nginx-combined-xff.log": "nginx-ext",
    "nasa-aug95-clf.log": "common",
    "caddy-json-access.jsonl": "caddy",
}
# Lines that are genuinely broken, and why.
EXPECTED_REJECTS = {
    "elastic-apache-combined.log.gz": {8899: "line cut off inside a quoted field"},
}
MAX_REJECTED = 0.002


def ms(*args, offset_hours=0.0) -> int:
    tz = timezone(timedelta(hours=offset_hours))
    return int(datetime(*args, tzinfo=tz).timestamp() * 1000)


def parse_file(name: str):
    """(format module, {line number: record}, {line number: rejection reason}, line count)."""
    lines = read_lines(real_logs_dir() / name)
    head = [line for line in lines if line.strip()][:20]
    module = detect_format(head)
    assert module is not None, f"{name}: no format detected"
    parser = module.Parser()
    records, rejected = {}, {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = parser.parse(line)
        except ParseError as exc:
            rejected[number] = str(exc)
            continue
        if record is not None:
            records[number] = record
    return module, records, rejected, len(lines)


@pytest.fixture(scope="module")
def parsed():
    real_logs_dir()
    return {name: parse_file(name) for name in EXPECTED_FORMAT}


def test_every_real_log_is_listed():
    names = {p.name for p in real_logs_dir().iterdir() if p.name != "README.md"}
    assert names == set(EXPECTED_FORMAT)


@pytest.mark.parametrize("name", sorted(EXPECTED_FORMAT))
def test_format_detected(parsed, name):
    module, _, _, _ = parsed[name]
    assert module.NAME == EXPECTED_FORMAT[name]


@pytest.mark.parametrize("name", sorted(EXPECTED_FORMAT))
def test_every_line_accounted_for_and_few_rejected(parsed, name):
    _, records, rejected, count = parsed[name]
    assert len(records) + len(rejected) == count
    assert len(rejected) <= MAX_REJECTED * count
    assert rejected == EXPECTED_REJECTS.get(name, {})


@pytest.mark.parametrize("name", sorted(EXPECTED_FORMAT))
def test_every_record_has_the_required_fields(parsed, name):
    _, records, _, _ = parsed[name]
    for record in records.values():
        assert isinstance(record["ts"], int)
        assert record["ip"] and " " not in record["ip"]
        assert isinstance(record["uri"], str) and record["uri"]
        assert record["status"] is None or 100 <= record["status"] < 600


def test_elastic(parsed):
    _, records, rejected, count = parsed["elastic-apache-combined.log.gz"]
    assert count == 10_000
    assert 8899 not in records and "cut off" in rejected[8899]
    first = records[1]
    assert first["ip"] == "83.149.9.216"
    assert first["ts"] == ms(2015, 5, 17, 10, 5, 3)
    assert first["uri"] == "/presentations/logstash-monitorama-2013/images/kibana-search.png"
    assert (first["method"], first["protocol"], first["status"], first["bytes"]) == ("GET", "HTTP/1.1", 200, 203023)
    assert first["referer"] == "http://semicomplete.com/presentations/logstash-monitorama-2013/"
    assert first["ua"] == (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_9_1) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/32.0.1700.77 Safari/537.36"
    )
    # '-' bytes: 669 lines, per the README.
    assert sum(1 for r in records.values() if r["bytes"] is None) == 669
    assert records[77]["bytes"] is None and records[77]["uri"] == "/robots.txt"
    # \xe4-escaped bytes are kept as written.
    assert records[5851]["referer"] == r"http://\xe4\xe5\xe3\xf2\xff\xf0\xed\xee\xe5-\xec\xfb\xeb\xee.\xf0\xf4/"
    assert records[5851]["ua"] == "Mozilla/5.0 (Windows NT 6.1; rv:11.0) Gecko/20100101 Firefox/11.0"
    assert sum(1 for r in records.values() if r["referer"] and "\\x" in r["referer"]) == 3


def test_niels(parsed):
    _, records, _, count = parsed["niels-hackers-combined.log.gz"]
    assert count == 3456
    first = records[1]
    assert (first["ip"], first["ts"], first["uri"], first["status"], first["bytes"]) == (
        "195.154.46.135",
        ms(2015, 10, 25, 4, 11, 25, offset_hours=1),
        "/linux/doing-pxe-without-dhcp-control",
        200,
        24323,
    )
    v6 = records[2577]
    assert (v6["ip"], v6["ts"], v6["uri"], v6["referer"]) == (
        "2001:41d0:8:f69::1",
        ms(2015, 10, 29, 5, 47, 36),
        "/",
        "http://niels.basjes.nl/",
    )
    assert len({r["ip"] for r in records.values() if ":" in r["ip"]}) >= 1
    assert sum(1 for r in records.values() if ":" in r["ip"]) == 12


def test_zanbil(parsed):
    _, records, _, count = parsed["zanbil-nginx-combined-xff.log"]
    assert count == 1000
    first = records[1]
    assert first["ip"] == "54.36.149.41"
    assert first["ts"] == ms(2019, 1, 22, 3, 56, 14, offset_hours=3.5) == ms(2019, 1, 22, 0, 26, 14)
    assert first["uri"].startswith("/filter/27|13%20%D9%85%DA%AF") and first["uri"].endswith(",p53")
    assert first["ua"] == "Mozilla/5.0 (compatible; AhrefsBot/6.1; +http://ahrefs.com/robot/)"
    assert (first["status"], first["bytes"], first["referer"], first["xff"], first["extra"]) == (
        200, 30577, None, None, None,
    )
    assert records[648]["xff"] == "103.28.132.65"
    assert records[648]["ip"] == "66.249.83.1" and records[648]["status"] == 302
    assert sum(1 for r in records.values() if r["xff"]) == 13


def test_nasa(parsed):
    _, records, _, count = parsed["nasa-aug95-clf.log"]
    assert count == 1880
    first = records[1]
    assert (first["ip"], first["ts"], first["uri"], first["status"], first["bytes"], first["ua"]) == (
        "in24.inetnebr.com",
        ms(1995, 8, 1, 4, 0, 1),
        "/shuttle/missions/sts-68/news/sts-68-mcc-05.txt",
        200,
        1839,
        None,
    )
    # HTTP/0.9 request line: no protocol.
    assert (records[914]["method"], records[914]["uri"], records[914]["protocol"]) == ("GET", "/ksc.html", None)
    assert records[914]["ip"] == "columbia.acc.brad.ac.uk"
    assert any(r["bytes"] is None for r in records.values())


def test_caddy(parsed):
    _, records, _, count = parsed["caddy-json-access.jsonl"]
    assert count == 4
    first = records[1]
    assert first["ip"] == "10.10.10.117"  # client_ip, not the proxy's remote_ip
    assert first["extra"]["remote_ip"] == "10.5.1.1"
    assert first["ts"] == 1716723772601
    assert first["uri"] == "/gentoo/gentoo-distfiles/distfiles/9b/tl-hrlatex.source-2021.tar.xz"
    assert first["ua"] == "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)"
    assert (first["method"], first["protocol"], first["status"], first["bytes"], first["host"]) == (
        "GET", "HTTP/2.0", 200, 3768, "mirrors.tnonline.net:400",
    )
    last = records[4]
    assert last["ip"] == "240e:1:1::1234"
    assert last["referer"] == "https://mirrors.tnonline.net/gentoo/gentoo-portage/app-dicts/aspell-lt/"
    assert last["ts"] == 1716732963415


def test_missing_real_logs_skip_locally_and_fail_on_ci(monkeypatch, tmp_path):
    import real_logs

    monkeypatch.setattr(real_logs, "REAL_LOGS", tmp_path / "absent")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="real access logs not found"):
        real_logs.real_logs_dir()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required when CI=true"):
        real_logs.real_logs_dir()
