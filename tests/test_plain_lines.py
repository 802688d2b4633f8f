"""The import's fast path for plain lines stores exactly what the general path stores.

``ingest._file_chunks`` takes a line that a parser's ``plain`` pattern matches
without building a record. These tests import the same lines with the fast path
and with it switched off, and compare everything stored; and they check, line by
line, that whatever the pattern matches, ``Parser.parse`` reads the same fields.
"""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datasette_forensics import ingest, schema
from datasette_forensics.importers import combined, common, nginx_ext

GOOD = '{ip} - - [{when}] "{method} {uri} HTTP/1.1" {status} {size} "{referer}" "{ua}"'
LINES = [
    GOOD.format(ip="192.0.2.1", when="01/Jul/2020:02:00:00 +0000", method="GET", uri="/a?x=1", status=200,
                size=5, referer="-", ua="curl/7.68.0"),
    GOOD.format(ip="192.0.2.1", when="01/Jul/2020:02:00:00 +0000", method="GET", uri="/a?x=1", status=200,
                size=5, referer="-", ua="curl/7.68.0"),  # a duplicate
    GOOD.format(ip="2001:db8::1", when="01/Jul/2020:02:00:01 +0200", method="POST", uri="/a?x=2", status="-",
                size="-", referer="https://example.com/", ua="-"),
    GOOD.format(ip="host.example.com", when="31/Dec/2019:23:59:59 -0530", method="PROPFIND", uri="/b",
                status=404, size=0, referer="-", ua=""),
    GOOD.format(ip="192.0.2.9", when="32/Jul/2020:02:00:00 +0000", method="GET", uri="/bad-day", status=200,
                size=1, referer="-", ua="x"),  # rejected: bad timestamp
    GOOD.format(ip="192.0.2.9", when="01/Jul/2020:02:00:00", method="GET", uri="/no-offset", status=200,
                size=1, referer="-", ua="x"),  # the slow time path
    GOOD.format(ip="[2001:db8::2]", when="01/Jul/2020:02:00:00 +0000", method="GET", uri="/bracketed",
                status=200, size=1, referer="-", ua="x"),
    "\ufeff" + GOOD.format(ip="192.0.2.3", when="01/Jul/2020:02:00:00 +0000", method="GET", uri="/bom",
                           status=200, size=1, referer="-", ua="x"),
    '192.0.2.4 ident alice [01/Jul/2020:02:00:00 +0000] "GET /user HTTP/1.1" 200 1 "-" "x"',
    '192.0.2.4 - bob [01/Jul/2020:02:00:00 +0000] "GET /user HTTP/1.1" 200 1 "-" "x"',
    '192.0.2.4 "id" "b\u00f6b" [01/Jul/2020:02:00:00 +0000] "GET /user HTTP/1.1" 200 1 "-" "x"',
    '192.0.2.5 - - [01/Jul/2020:02:00:00 +0000] "GET /esc HTTP/1.1" 200 1 "-" "say \\"hi\\" \\x22"',
    '192.0.2.6 - - [01/Jul/2020:02:00:00 +0000] "-" 400 0 "-" "-"',
    '192.0.2.7 - - [01/Jul/2020:02:00:00 +0000] "GET /common HTTP/1.1" 200 1',
    '192.0.2.8 - - [01/Jul/2020:02:00:00 +0000] "GET /tail HTTP/1.1" 200 1 "-" "x" "10.0.0.1" 0.1',
    '192.0.2.8 - - [01/Jul/2020:02:00:00 +0000] "GET /spaces HTTP/1.1" 200 1 "-" "x"   ',
    '192.0.2.8 - - [01/Jul/2020:02:00:00 +0000] "GET /ünïcode HTTP/1.1" 200 1 "-" "Mözilla"',
    '192.0.2.8 - - [01/Jul/2020:02:00:00 +0000] "GET /cut HTTP/1.1" 200 1 "-" "x',
    '192.0.2.8 - - [01/Jul/2020:02:00:00 +0000] "GET /digits HTTP/1.1" \u0662\u0660\u0660 7 "-" "x"',
    "   ",
    "not a log line",
]


def _dump(path) -> dict:
    conn = sqlite3.connect(path)
    requests = conn.execute(
        """select r.line_no, r.ts, ip.ip, ip.version, ip.prefix, ua.ua, ua.kind, u.uri, p.path, r.method,
        r.status, r.bytes, ref.referer, r.token_id, r.org_id, r.extra
        from requests r join signatures s on s.id = r.sig_id join ips ip on ip.id = s.ip_id
        join user_agents ua on ua.id = s.ua_id join uris u on u.id = r.uri_id join paths p on p.id = u.path_id
        left join referers ref on ref.id = r.referer_id order by r.line_no"""
    ).fetchall()
    rejected = conn.execute("select line_no, raw, raw_bytes, reason from rejected_lines order by line_no").fetchall()
    batch = conn.execute(
        "select lines_read, lines_imported, lines_rejected, lines_duplicate from import_batches order by id"
    ).fetchall()
    counts = conn.execute("select h, n from line_counts order by h").fetchall()
    raw = conn.execute("select * from raw_chunks order by batch_id, first_line").fetchall()
    conn.close()
    return {"requests": requests, "rejected": rejected, "batch": batch, "counts": counts, "raw_chunks": raw}


def _import(tmp_path, name: str, data: bytes, fmt: str) -> dict:
    log = tmp_path / f"{name}.log"
    log.write_bytes(data)
    db = schema.connect(str(tmp_path / f"{name}.db"))
    ingest.import_logs(db, [str(log)], fmt=fmt)
    ingest.import_logs(db, [str(log)], fmt=fmt, batch_name="again")  # a second batch: only duplicates
    db.conn.close()
    return _dump(tmp_path / f"{name}.db")


@pytest.mark.parametrize("fmt", ["combined", "common", "nginx-ext"])
def test_fast_path_stores_what_the_general_path_stores(tmp_path, monkeypatch, fmt):
    monkeypatch.setenv("FORENSICS_PARSE_PROCESS", "never")
    data = "".join(line + "\n" for line in LINES).encode() + b'192.0.2.9 - - [01/Jul/2020:02:00:00 +0000] "GET /\xff HTTP/1.1" 200 1 "-" "x"\n'
    fast = _import(tmp_path, "fast", data, fmt)
    monkeypatch.setattr(combined.Parser, "plain", None)
    slow = _import(tmp_path, "slow", data, fmt)
    assert fast == slow
    # The lines above exercise both paths: plain lines, rejected ones, records with extras.
    (read, imported, rejected, duplicates), again = fast["batch"]
    assert imported >= 10 and rejected >= 2 and duplicates == 0 and again == (read, 0, 0, read)
    assert any(r[15] for r in fast["requests"]) and any(r[10] is None for r in fast["requests"])
    assert fast["raw_chunks"], "every imported line's bytes are kept (rawlines.py)"


_ODD = st.text(st.sampled_from('ab -"\\[]/:?=+0123456789\ufeffé\u0663'), max_size=12)


def _field(*usual: str):
    """Mostly a usual value (nine times in ten), sometimes odd text."""
    return st.tuples(st.integers(0, 9), st.sampled_from(usual), _ODD).map(lambda t: t[2] if t[0] == 0 else t[1])


@settings(max_examples=400, deadline=None)
@given(
    ip=_field("192.0.2.1", "::1", "a.example"),
    when=_field("01/Jul/2020:02:00:00 +0000", "1/Jul/2020:02:00:00 +0000", "31/Feb/2020:02:00:00 +0000"),
    method=_field("GET", "post"), uri=_field("/a?b=c", "*"), status=_field("200", "-"), size=_field("0", "-"),
    referer=_field("-", "https://x/"), ua=_field("-", "", "curl/1"), tail=_field("", "  ", ' "x"'),
    ident=_field("-", "-", "id"), user=_field("-", "-", "alice"),
)
def test_what_the_plain_pattern_matches_parses_to_its_groups(
    ip, when, method, uri, status, size, referer, ua, tail, ident, user
):
    text = f'{ip} {ident} {user} [{when}] "{method} {uri} HTTP/1.1" {status} {size} "{referer}" "{ua}"{tail}'
    m = combined.PLAIN(text)
    if m is None:
        return
    ip_, ident_, user_, time_, method_, uri_, protocol, status_, size_, referer_, ua_ = m.groups()
    extra = {k: v for k, v in (("ident", ident_), ("remote_user", user_)) if v != "-"} or None
    for parser in (combined.Parser(), common.Parser(), nginx_ext.Parser()):
        try:
            rec = parser.parse(text)
        except Exception:
            # The fast path hands a line whose time does not parse to parse(), which rejects it.
            assert ingest._Times().parse(time_) is None
            continue
        assert rec == {
            "ts": rec["ts"], "ip": ip_, "ua": None if ua_ in ("-", "") else ua_, "uri": uri_,
            "method": method_, "protocol": protocol, "status": None if status_ == "-" else int(status_),
            "bytes": None if size_ == "-" else int(size_), "referer": None if referer_ == "-" else referer_,
            "token_id": None, "org_id": None, "auth_type": None, "host": None, "xff": None, "extra": extra,
        }  # fmt: skip
        assert rec["ts"] == ingest._Times().parse(time_)
