"""Fuzzing the inputs an attacker or a careless export controls (hypothesis).

Every log parser, format detection, the time parser, the whole import pipeline, the
account-records importer and the incident loader get valid-looking inputs mutated
(fields swapped, quotes, backslashes, NUL, unicode, huge numbers, odd times) and raw
garbage. The only allowed outcomes are the documented ones: a well-typed record,
None, ParseError / TimeError / ForensicsError, or a one-sentence refusal; never any
other exception, never a traceback, never a half-written database.

Budgets: each test runs ``fast`` (a hundred or so examples; the whole file in well
under a minute) in a plain ``pytest`` run. Its ``deep`` variant (two to five times more,
marked ``slow``) runs when a ``-m`` expression selects it (``-m slow``, or CI's
``-m "not browser"``) or with ``FORENSICS_FUZZ=deep``; a plain run skips it.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datasette_forensics import importers, incident, records, schema, timeparse
from datasette_forensics.cli import cli
from datasette_forensics.errors import ForensicsError
from datasette_forensics.importers import RECORD_KEYS, ParseError

# Examples per run. Deep budgets are sized so that the whole suite (README's test
# command) stays under 15 minutes on the 2 vCPU Xeon it is timed on, where the deep
# tests took about 400 s at three times these budgets: a parser example feeds up to a
# few lines, a detection example a few dozen, a pipeline example runs a whole CLI import twice.
BUDGETS = {"fast": 150, "deep": 800}
PARSER_BUDGETS = {"fast": 150, "deep": 500}
DETECT_BUDGETS = {"fast": 100, "deep": 200}
PIPELINE_BUDGETS = {"fast": 60, "deep": 170}
RECORDS_BUDGETS = {"fast": 60, "deep": 350}
budget = pytest.mark.parametrize(
    "budget", ["fast", pytest.param("deep", marks=pytest.mark.slow)]
)


def examples(request, budgets=BUDGETS) -> int:
    """The example budget of a test; a deep test skips unless it was asked for."""
    level = request.node.callspec.params["budget"]
    if level == "deep" and os.environ.get("FORENSICS_FUZZ") != "deep":
        if not request.config.option.markexpr:
            pytest.skip("deep fuzzing runs with -m slow (or FORENSICS_FUZZ=deep)")
    return budgets[level]


def fuzz_settings(n: int) -> settings:
    return settings(
        max_examples=n,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# --- strategies -------------------------------------------------------------------

# Unicode without surrogates (a decoded log line never holds one) and without the
# line feed (the reader splits on it); the rest, NUL and controls included, is fair.
CHARS = st.characters(exclude_categories=("Cs",), exclude_characters="\n")
TEXT = st.text(CHARS, max_size=40)
SPECIAL = [
    '"', '\\', '\\"', "\x00", " ", "  ", "\t", "\r", "[", "]", "{", "}", ",", ":", "-", "%",
    "+", "#", "é", "\u2028", "\x85", "\x1c", "\ufeff", "\U0001f600", "\\x22", "\\u0000",
    "\\ud800", "\\udfff", "\\ud83d\\ude00", "null", "[]", "'",
]
HUGE = ["9" * 19, "9" * 25, "1" + "0" * 400, "7" * 5000, "18446744073709551616", "-1", "1e308", "1e309", "NaN"]
ODD_TIMES = [
    "18/Jul/2020:09:12:44 +0000", "18/Jul/2020:09:12:44 -1200", "1/Jul/2020:09:12:44 +05:30",
    "18/Jul/2020:09:12:44.123456 +0000", "18/Jul/2020:09:12:44." + "9" * 4400 + " +0000",
    "31/Feb/2020:09:12:44 +0000", "00/Jul/2020:09:12:44 +0000", "18/jul/2020:09:12:44 +0000",
    "18/Jul/2020:24:00:00 +0000", "18/Jul/2020:09:60:44 +0000", "18/Jul/2020:09:12:44 +9999",
    "18/Jul/1969:23:59:59 +0000", "01/Jan/2201:00:00:00 +0000", "31/Dec/2200:23:59:59 -1800",
    "18/Jul/2020:09:12:44", "18/Jul/2020:09:12:44 Z", "18/Xyz/2020:09:12:44 +0000",
    "2020-07-18T09:12:44Z", "2020-07-18 09:12:44+02:00", "2020-07-18", "2020-02-30T00:00:00Z",
    "2020-07-18T09:12:44,999999999999Z", "2020-07-18T09:12:44.5+0530", "2020-07-18T09:12:44+19:00",
    "1970-01-01T00:00:00+00:01", "9999-12-31T23:59:59Z", "0000-01-01T00:00:00Z",
    "2020-07-18T09:12:44." + "5" + "0" * 5000 + "Z", "1595063564", "1595063564.123", ".5", "0",
    "1595063564." + "0" * 5000 + "1", "0" * 5000 + "1", "1e9", "-1", "inf", "nan", "", " ",
    "[18/Jul/2020:09:12:44 +0000]", "\u0661\u0665\u0669\u0665\u0660\u0666\u0663\u0665\u0666\u0664",
]
IPS = ["203.0.113.9", "2001:db8::1", "[2001:db8::1]", "::ffff:1.2.3.4", "fe80::1%eth0", "host.example",
       "-", "", "[]", "[", "0", "999.999.999.999", "1.2.3.4:5678", "[2001:db8::1]:443"]
URIS = ["/", "/api/0/organizations/acme/issues/?cursor=1:0:0", "*", "http://evil/x", "/a b/c", "/%00",
        "/\\x22", "", "-", "/" + "a" * 3000]
UAS = ["Mozilla/5.0 (X11; Linux x86_64) Firefox/78.0", "curl/7.68.0", "-", "", 'a "quoted" ua',
       "sqlmap/1.4#stable", "<script>alert(1)</script>", "a" * 2500]

odd_time = st.one_of(st.sampled_from(ODD_TIMES), TEXT)
ip = st.one_of(st.sampled_from(IPS), TEXT)
uri = st.one_of(st.sampled_from(URIS), TEXT)
ua = st.one_of(st.sampled_from(UAS), TEXT)
number = st.one_of(st.sampled_from(["200", "404", "-", "0", "000200"] + HUGE), st.integers().map(str), TEXT)
method = st.one_of(st.sampled_from(["GET", "POST", "PROPFIND", "\\x16\\x03", "-", ""]), TEXT)
proto = st.sampled_from(["HTTP/1.1", "HTTP/2.0", "", "HTTP/", "SPDY/3"])
json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.integers(min_value=10**18, max_value=10**40),
    TEXT, st.sampled_from(ODD_TIMES + IPS + URIS + UAS + HUGE),
)
json_value = st.recursive(json_scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=6)


@st.composite
def mutated(draw, line_strategy):
    """A line, then a few edits: swapped fields, inserted specials, cuts, huge numbers."""
    line = draw(line_strategy)
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["swap", "insert", "delete", "truncate", "double", "huge", "time"]))
        n = len(line)
        if op == "swap":
            parts = line.split(" ")
            if len(parts) > 1:
                i, j = draw(st.integers(0, len(parts) - 1)), draw(st.integers(0, len(parts) - 1))
                parts[i], parts[j] = parts[j], parts[i]
                line = " ".join(parts)
        elif op == "insert":
            at = draw(st.integers(0, n))
            line = line[:at] + draw(st.one_of(st.sampled_from(SPECIAL), TEXT)) + line[at:]
        elif op == "delete" and n:
            at = draw(st.integers(0, n - 1))
            line = line[:at] + line[at + draw(st.integers(1, 8)) :]
        elif op == "truncate":
            line = line[: draw(st.integers(0, n))]
        elif op == "double" and n:
            at = draw(st.integers(0, n - 1))
            line = line[:at] + line[at:] + line[at:]
        elif op == "huge":
            digits = [m.span() for m in re.finditer(r"\d+", line)]
            if digits:
                start, end = draw(st.sampled_from(digits))
                line = line[:start] + draw(st.sampled_from(HUGE)) + line[end:]
        elif op == "time":
            line = re.sub(r"\[[^\]]*\]", lambda _: "[" + draw(st.sampled_from(ODD_TIMES)) + "]", line, count=1)
    return line.replace("\n", " ")


def q(text: str) -> str:
    """Quote a field the way Apache does (some servers do not: the mutations cover that)."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


@st.composite
def combined_line(draw):
    request = draw(st.one_of(
        st.builds(lambda m, u, p: f"{m} {u} {p}".strip(), method, uri, proto),
        st.sampled_from(["-", "", "\\x16\\x03\\x01\\x00\\xee\\x01"]), TEXT,
    ))
    user = draw(st.sampled_from(["-", "alice", "-"]))
    line = f'{draw(ip) or "-"} - {user} [{draw(odd_time)}] "{q(request)}" {draw(number)} {draw(number)}'
    shape = draw(st.sampled_from(["common", "combined", "ext"]))
    if shape != "common":
        line += f' "{q(draw(uri))}" "{q(draw(ua))}"'
    if shape == "ext":
        line += f' "{q(draw(ip))}" 0.012 0.010 "{q(draw(TEXT))}" {draw(number)}'
    return line


@st.composite
def alb_line(draw):
    time = draw(st.one_of(st.sampled_from(["2020-07-18T09:12:44.123456Z", "2020-07-18T09:12:44Z"]), odd_time))
    url = draw(st.one_of(st.sampled_from(["https://api.example.com:443/api/0/x?y=1", "http://h:80/", "h:443"]), uri))
    return (
        f'{draw(st.sampled_from(["h2 ", "https ", "", "ws "]))}{time} app/lb/1 {draw(ip)}:5678 10.0.0.1:80'
        f' 0.001 0.002 0.000 {draw(number)} {draw(number)} 34 {draw(number)}'
        f' "{q(draw(method))} {q(url)} {draw(proto)}" "{q(draw(ua))}" ECDHE TLSv1.2'
        f' arn:aws:elasticloadbalancing:x "Root=1-5f" "{q(draw(TEXT))}" "arn" 0 2020-07-18T09:12:44Z'
        ' "forward" "-" "-" "10.0.0.1:80" "200" "-" "-"'
    )


JSON_FIELDS = ["remote_addr", "http_user_agent", "request_uri", "request_method", "request", "status",
               "body_bytes_sent", "http_referer", "timestamp", "time_iso8601", "time_local", "msec",
               "auth_type", "token_id", "org_id", "host", "http_x_forwarded_for", "server_protocol"]


@st.composite
def nginx_fields(draw) -> dict:
    fields = {
        "remote_addr": draw(st.one_of(ip, json_value)),
        draw(st.sampled_from(["timestamp", "time_iso8601", "time_local", "msec"])): draw(st.one_of(odd_time, json_value)),
        "request_uri": draw(st.one_of(uri, json_value)),
    }
    for name in draw(st.lists(st.sampled_from(JSON_FIELDS), max_size=6)):
        fields[name] = draw(st.one_of(json_value, ua, number))
    for name in draw(st.lists(TEXT, max_size=2)):
        fields[name] = draw(json_value)
    removed = draw(st.lists(st.sampled_from(sorted(fields)), max_size=2))
    return {k: v for k, v in fields.items() if k not in removed}


def dumps(obj, ascii_only: bool, raw_escapes: bool = False) -> str:
    """JSON on one line; ``raw_escapes`` turns text like ``\\ud800`` into a real escape."""
    text = json.dumps(obj, ensure_ascii=ascii_only).replace("\n", "\\n")
    return text.replace("\\\\u", "\\u") if raw_escapes else text


@st.composite
def jsonl_line(draw):
    return dumps(draw(nginx_fields()), draw(st.booleans()), draw(st.booleans()))


@st.composite
def caddy_line(draw):
    request = {
        "remote_ip": draw(st.one_of(ip, json_value)),
        "client_ip": draw(st.one_of(ip, json_value)),
        "method": draw(st.one_of(method, json_value)),
        "uri": draw(st.one_of(uri, json_value)),
        "proto": draw(st.one_of(proto, json_value)),
        "host": draw(st.one_of(TEXT, json_value)),
        "remote_port": draw(st.one_of(st.just("5678"), json_value)),
        "headers": draw(st.one_of(
            st.fixed_dictionaries({"User-Agent": st.lists(ua, max_size=2), "Referer": st.lists(uri, max_size=1)}),
            json_value,
        )),
    }
    entry = {
        "level": "info", "logger": "http.log.access", "ts": draw(st.one_of(odd_time, json_value)),
        "request": draw(st.one_of(st.just(request), json_value)) if draw(st.integers(0, 9)) == 0 else request,
        "status": draw(st.one_of(st.integers(), json_value)), "size": draw(st.one_of(st.integers(), json_value)),
        "duration": draw(json_value),
    }
    removed = draw(st.lists(st.sampled_from(sorted(entry)), max_size=2))
    return dumps({k: v for k, v in entry.items() if k not in removed}, draw(st.booleans()), draw(st.booleans()))


def csv_text(row: list) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(row)
    return out.getvalue()


@st.composite
def csv_lines(draw) -> list[str]:
    header = draw(st.lists(st.one_of(st.sampled_from(JSON_FIELDS), TEXT), min_size=1, max_size=8))
    fields = [nginx_fields() for _ in range(draw(st.integers(0, 4)))]
    lines = [csv_text(header)]
    for f in fields:
        row = draw(f)
        lines.append(csv_text([str(row.get(name, draw(TEXT))) for name in header]))
    return lines


W3C_FIELDS = ["date", "time", "c-ip", "cs-method", "cs-uri-stem", "cs-uri-query", "sc-status", "sc-bytes",
              "cs(User-Agent)", "cs(Referer)", "cs-host", "x-forwarded-for", "time-taken", "cs-uri"]


@st.composite
def w3c_lines(draw) -> list[str]:
    names = draw(st.lists(st.one_of(st.sampled_from(W3C_FIELDS), TEXT.map(lambda t: t.replace(" ", ""))),
                          min_size=1, max_size=9))
    sep = draw(st.sampled_from([" ", "\t"]))
    lines = ["#Software: Microsoft Internet Information Services 10.0", "#Version: 1.0",
             f"#Date: {draw(st.sampled_from(['2020-07-18 00:00:00', '', 'garbage', '2020-13-45']))}",
             "#Fields: " + " ".join(names)]
    values = {"date": st.sampled_from(["2020-07-18", "2020-02-30", "-", "18/Jul/2020"]),
              "time": st.sampled_from(["09:12:44", "24:00:00", "09:12:44Z", "-", "9:1"]),
              "c-ip": ip, "cs-uri-stem": uri, "sc-status": number, "sc-bytes": number,
              "cs(user-agent)": ua.map(lambda u: u.replace(" ", "+"))}
    for _ in range(draw(st.integers(0, 4))):
        row = [draw(values.get(n.lower(), TEXT)) for n in names]
        lines.append(sep.join(row))
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), "#Fields: " + " ".join(draw(st.permutations(names))))
    return lines


def one_line(line_strategy):
    return st.lists(mutated(line_strategy), min_size=1, max_size=4)


def many_lines(lines_strategy):
    """A multi-line strategy (headers carry state), each line possibly mutated."""
    @st.composite
    def build(draw):
        lines = draw(lines_strategy)
        return [draw(mutated(st.just(line))) if draw(st.integers(0, 2)) == 0 else line for line in lines]
    return build()


garbage = st.lists(st.one_of(TEXT, st.text(CHARS, min_size=50, max_size=400),
                             st.binary(max_size=200).map(lambda b: b.decode("utf-8", "backslashreplace").replace("\n", " "))),
                   min_size=1, max_size=4)

LINES = {
    "combined": one_line(combined_line()),
    "common": one_line(combined_line()),
    "nginx-ext": one_line(combined_line()),
    "jsonl": one_line(jsonl_line()),
    "csv": many_lines(csv_lines()),
    "alb": one_line(alb_line()),
    "w3c": many_lines(w3c_lines()),
    "caddy": one_line(caddy_line()),
}
assert set(LINES) == set(importers.FORMATS), "a new format needs its fuzzing strategy"
any_format_lines = st.one_of(*LINES.values(), garbage)


# --- checks -------------------------------------------------------------------------

INT64 = range(-(2**63), 2**63)
TEXT_KEYS = ("ua", "method", "protocol", "referer", "token_id", "org_id", "auth_type", "host", "xff")


def storable(value) -> None:
    """A string SQLite can store: encodable as UTF-8 (no lone surrogate)."""
    value.encode("utf-8")


def check_record(rec) -> None:
    assert isinstance(rec, dict)
    assert set(rec) == set(RECORD_KEYS)
    assert type(rec["ts"]) is int and timeparse.MIN_MS <= rec["ts"] < timeparse.MAX_MS
    assert isinstance(rec["ip"], str) and rec["ip"], rec["ip"]
    assert isinstance(rec["uri"], str)
    for key in ("status", "bytes"):
        assert rec[key] is None or (type(rec[key]) is int and rec[key] in INT64), (key, rec[key])
    for key in TEXT_KEYS:
        assert rec[key] is None or isinstance(rec[key], str), (key, rec[key])
    for key in ("ip", "uri") + TEXT_KEYS:
        if rec[key] is not None:
            storable(rec[key])
    assert rec["extra"] is None or isinstance(rec["extra"], dict)
    if rec["extra"]:
        storable(json.dumps(rec["extra"], ensure_ascii=False))  # what ingest stores


def check_parse(parser, line: str) -> None:
    try:
        rec = parser.parse(line)
    except ParseError as exc:
        assert str(exc), "a rejection needs a reason"
        storable(str(exc))
        return
    if rec is not None:
        check_record(rec)


# --- parsers ------------------------------------------------------------------------


@budget
@pytest.mark.parametrize("fmt", sorted(importers.FORMATS))
def test_parser_returns_record_none_or_parse_error(fmt, budget, request):
    @fuzz_settings(examples(request, PARSER_BUDGETS))
    @given(lines=st.one_of(LINES[fmt], LINES[fmt], any_format_lines))
    def run(lines):
        parser = importers.FORMATS[fmt].Parser()  # one parser: header state carries over
        for line in lines:
            check_parse(parser, line)

    run()


@budget
def test_detect_format_never_raises(budget, request):
    @fuzz_settings(examples(request, DETECT_BUDGETS))
    @given(lines=st.lists(any_format_lines, min_size=1, max_size=3).map(lambda ls: [x for l in ls for x in l][:20]))
    def run(lines):
        module = importers.detect_format(lines)
        assert module is None or module in importers.FORMATS.values()

    run()


# Lines the fuzzers found that once raised, returned a bad record, or stopped a whole
# import at the database insert (one attacker line must never do that).
T = "[18/Jul/2020:09:12:44 +0000]"
FOUND = [
    ("combined", f'1.2.3.4 - - {T} "GET / HTTP/1.1" 99999999999999999999999 1 "-" "x"'),
    ("combined", f'1.2.3.4 - - {T} "GET / HTTP/1.1" 200 {"7" * 5000} "-" "x"'),
    ("combined", f'[] - - {T} "GET / HTTP/1.1" 200 1 "-" "x"'),
    ("combined", f'\ufeff - - {T} "GET / HTTP/1.1" 200 1 "-" "x"'),
    ("combined", f'1.2.3.4 - - [18/Jul/2020:09:12:44.{"0" * 5000} +0000] "GET / HTTP/1.1" 200 1 "-" "x"'),
    ("jsonl", '{"remote_addr": "1.2.3.4", "msec": 1595063564, "request_uri": "/\\ud800"}'),
    ("jsonl", '{"remote_addr": "1.2.3.4", "msec": 1595063564, "request_uri": "/", "x\\udfff": ["\\ud800"]}'),
    ("jsonl", '{"remote_addr": "[]", "msec": 1595063564, "request_uri": "/"}'),
    ("jsonl", '{"remote_addr": "1.2.3.4", "msec": 1e306, "request_uri": "/"}'),
    ("jsonl", '{"remote_addr": "1.2.3.4", "msec": "1595063564.' + "0" * 5000 + '1", "request_uri": "/"}'),
    ("jsonl", '{"remote_addr": "1.2.3.4", "msec": "' + "0" * 5000 + '1", "request_uri": "/"}'),
    ("jsonl", '{"remote_addr": "1.2.3.4", "msec": 1595063564, "request_uri": "/", "status": 1e300}'),
    ("caddy", '{"ts": 1595063564, "request": {"remote_ip": "1.1.1.1", "uri": "/", "method": [], "proto": {"a": 1}, "host": 5}}'),
    ("caddy", '{"ts": 1e306, "request": {"remote_ip": "1.1.1.1", "uri": "/"}}'),
    ("caddy", '{"ts": 1595063564, "request": {"remote_ip": "1.1.1.1", "uri": "/\\udfff", "headers": {"User-Agent": ["\\ud83d"]}}}'),
    ("jsonl", "[" * 100_000),
    ("jsonl", '{"remote_addr": "1.2.3.4", "msec": 1595063564, "request_uri": "/", "x": ' + "[" * 990 + '"\\ud800"' + "]" * 990 + "}"),
    ("caddy", '{"ts": 1595063564, "request": ' * 50_000),
    ("combined", f'1.2.3.4 - - {T} "GET / HTTP/1.1" 200 1 "-" "' + "\\x16\\x03" * 200_000 + '" "x" 1 "'),
    ("combined", f'1.2.3.4 - - {T} "GET / HTTP/1.1" 200 1 "-" "' + '" 1 1 "x" "' * 200_000 + "x"),
    ("alb", 'h2 2020-07-18T09:12:44Z app/lb []:80 - 0.1 0.1 0.1 200 200 1 1 "GET https://h:443/ HTTP/1.1" "ua" - -'),
    ("alb", 'h2 2020-07-18T09:12:44Z app/lb 1.2.3.4:80 - 0.1 0.1 0.1 200 200 1 ' + "9" * 30 + ' "GET / HTTP/1.1" "ua" - -'),
]
GOOD = {
    "combined": f'1.2.3.4 - - {T} "GET /ok HTTP/1.1" 200 1 "-" "curl/7.68.0"',
    "jsonl": '{"remote_addr": "1.2.3.4", "msec": 1595063564, "request_uri": "/ok"}',
    "caddy": '{"ts": 1595063564, "request": {"remote_ip": "1.1.1.1", "uri": "/ok"}}',
    "alb": 'h2 2020-07-18T09:12:44Z app/lb 1.2.3.4:80 - 0.1 0.1 0.1 200 200 1 1 "GET https://h:443/ok HTTP/1.1" "ua" - -',
}


@pytest.mark.parametrize("fmt,line", FOUND, ids=[f"{fmt}-{i}" for i, (fmt, _) in enumerate(FOUND)])
def test_found_lines_parse_or_are_rejected(fmt, line):
    check_parse(importers.FORMATS[fmt].Parser(), line)


@pytest.mark.parametrize("fmt,line", FOUND, ids=[f"{fmt}-{i}" for i, (fmt, _) in enumerate(FOUND)])
def test_found_lines_never_stop_an_import(fmt, line, tmp_path):
    log = tmp_path / "access.log"
    log.write_text(f"{GOOD[fmt]}\n{line}\n{GOOD[fmt]}\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["import-logs", str(tmp_path / "f.db"), str(log), "--format", fmt])
    assert result.exit_code == 0, result.output
    assert "3 lines read = " in result.output, result.output
    conn = sqlite3.connect(tmp_path / "f.db")
    stored = conn.execute("select count(*) from requests").fetchone()[0]
    rejected = conn.execute("select count(*) from rejected_lines").fetchone()[0]
    assert stored + rejected == 3 and stored >= 2


# --- times -------------------------------------------------------------------------


@budget
def test_parse_time_gives_milliseconds_or_time_error(budget, request):
    iso = st.builds(
        "{:04d}-{:02d}-{:02d}{}{:02d}:{:02d}:{:02d}{}{}".format,
        st.integers(0, 9999), st.integers(0, 99), st.integers(0, 99), st.sampled_from(["T", " ", "t"]),
        st.integers(0, 99), st.integers(0, 99), st.integers(0, 99),
        st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=30).map(lambda d: "." + d)),
        st.sampled_from(["", "Z", "+00:00", "-12:00", "+0530", "+05", "+19:00", "+05:99", " Z"]),
    )
    value = st.one_of(
        odd_time, iso, st.integers(), st.integers(-10**30, 10**30), st.floats(), st.booleans(), st.none(),
        st.text("0123456789.", max_size=30), st.lists(st.integers(), max_size=2),
        st.sampled_from([10**5000, -(10**5000), 1e306, -1e306, 1e15, 7258118400.0, 7258118399.9995]),
    )

    @fuzz_settings(examples(request))
    @given(value=value)
    def run(value):
        try:
            ms = timeparse.parse_time(value)
        except timeparse.TimeError:
            return
        assert type(ms) is int and timeparse.MIN_MS <= ms < timeparse.MAX_MS

    run()


# --- the whole import pipeline --------------------------------------------------------

GOOD_LINE = '203.0.113.9 - - [18/Jul/2020:09:12:44 +0000] "GET / HTTP/1.1" 200 1 "-" "curl/7.68.0"'


@pytest.fixture(scope="module")
def empty_db_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fuzz") / "empty.db"
    schema.connect(str(path)).conn.close()
    return path


def counted_lines(data: bytes) -> int:
    """Lines that must be accounted for: not blank once decoded (MODEL §1.1)."""
    if data.startswith(b"\x1f\x8b"):
        data = gzip.decompress(data)
    pieces = data.split(b"\n")
    if pieces and pieces[-1] == b"":
        pieces.pop()
    n = 0
    for raw in pieces:
        raw = raw[:-1] if raw.endswith(b"\r") else raw
        if raw.strip() and raw.decode("utf-8", "backslashreplace").strip():
            n += 1
    return n


def table_counts(path: Path) -> dict:
    conn = sqlite3.connect(path)
    try:
        return {t: conn.execute(f"select count(*) from {t}").fetchone()[0]
                for t in ("requests", "rejected_lines", "import_batches", "line_counts")}
    finally:
        conn.close()


def refusal(result) -> None:
    """A refusal: exit 1, no traceback, one line 'Error: <one sentence>'."""
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("Error: ") and lines[-1].rstrip().endswith((".", "?")), result.output


@st.composite
def log_file(draw) -> bytes:
    """Valid, mutated and garbage combined lines, blank lines, CRLF, bad UTF-8; sometimes gzipped."""
    pieces = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.integers(0, 9))
        if kind < 3:
            text = GOOD_LINE
        elif kind < 6:
            text = draw(mutated(combined_line()))
        elif kind < 7:
            text = draw(st.sampled_from(["", " ", "\t", "\r", "\x0b", "\u3000"]))
        else:
            text = draw(TEXT)
        data = text.encode("utf-8")
        if draw(st.integers(0, 9)) == 0:
            data += draw(st.binary(max_size=8)).replace(b"\n", b"")
        pieces.append(data + draw(st.sampled_from([b"\n", b"\r\n"])))
    body = b"".join(pieces)
    if draw(st.booleans()):
        body += draw(st.binary(max_size=60))  # a last line without its newline, or binary junk
    if draw(st.integers(0, 9)) == 0:
        body = gzip.compress(body)
    return body


@budget
def test_import_pipeline_accounts_for_every_line_or_refuses(budget, request, empty_db_template):
    runner = CliRunner()

    @fuzz_settings(examples(request, PIPELINE_BUDGETS))
    @given(data=log_file(), fmt=st.sampled_from(["combined", "combined", "auto"]))
    def run(data, fmt):
        with tempfile.TemporaryDirectory() as tmp:
            db, log = Path(tmp) / "f.db", Path(tmp) / "access.log"
            shutil.copy(empty_db_template, db)
            log.write_bytes(data)
            result = runner.invoke(cli, ["import-logs", str(db), str(log), "--format", fmt])
            counts = table_counts(db)
            if result.exit_code != 0:
                refusal(result)
                assert counts == {"requests": 0, "rejected_lines": 0, "import_batches": 0, "line_counts": 0}
                return
            assert result.exception is None, result.output
            m = re.search(r"([\d,]+) lines read = ([\d,]+) imported \+ ([\d,]+) rejected \+ ([\d,]+) duplicates", result.output)
            assert m, result.output
            read, imported, rejected, duplicates = (int(g.replace(",", "")) for g in m.groups())
            assert read == imported + rejected + duplicates == counted_lines(data)
            assert duplicates == 0
            assert (counts["requests"], counts["rejected_lines"]) == (imported, rejected)
            # The same file again adds nothing: every line is now a duplicate.
            again = runner.invoke(cli, ["import-logs", str(db), str(log), "--format", fmt])
            assert again.exit_code == 0, again.output
            assert f"{read:,} lines read = 0 imported + 0 rejected + {read:,} duplicates" in again.output
            assert table_counts(db)["requests"] == imported

    run()


# --- account records ------------------------------------------------------------------

RECORD_VALUES = st.one_of(
    st.sampled_from([
        "", " ", "1", "0", "yes", "No", "TRUE", "maybe", "org-1", "acme", "2020-07-18T09:12:44Z",
        "18/Jul/2020:09:12:44 +0000", "1595063564", "2020-02-30", "203.0.113.0/24", "10.1.2.3/24",
        "2001:db8::/32", "1.2.3.4/33", "^python-requests/", "(unclosed", "a{99999999999}", "(?P<x>",
        "\x00", "\\ud800", "x" * 300,
    ] + HUGE + ODD_TIMES[:8]),
    TEXT,
)


def dump(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


@st.composite
def records_file(draw) -> tuple[str, str, str]:
    kind = draw(st.sampled_from(sorted(records.KINDS)))
    spec = records.KINDS[kind]
    known = list(spec.columns)
    columns = draw(st.lists(st.one_of(st.sampled_from(known), st.sampled_from(["Extra", "note", "rowid", "1bad", "a b", "ID"]), TEXT),
                            max_size=7, unique_by=str.lower))
    if draw(st.booleans()):
        columns = list(dict.fromkeys(list(spec.required) + columns))
    rows = [[draw(RECORD_VALUES) for _ in columns] for _ in range(draw(st.integers(0, 5)))]
    as_json = draw(st.booleans())
    if as_json:
        lines = []
        for row in rows:
            obj = {c: (draw(json_value) if draw(st.integers(0, 5)) == 0 else v) for c, v in zip(columns, row)}
            text = dumps(obj, draw(st.booleans()))
            if draw(st.integers(0, 6)) == 0:
                text = text.replace("\\\\ud800", "\\ud800")  # a lone surrogate escape in the JSON itself
            lines.append(draw(mutated(st.just(text))) if draw(st.integers(0, 5)) == 0 else text)
        return kind, "\n".join(lines) + "\n", ".jsonl"
    lines = [csv_text(columns)] + [csv_text(r) for r in rows]
    lines = [draw(mutated(st.just(l))) if draw(st.integers(0, 5)) == 0 else l for l in lines]
    return kind, draw(st.sampled_from(["\n", "\r\n"])).join(lines) + "\n", ".csv"


# Values each column type accepts, so that a good share of the files are valid and
# their import is checked for what it stored; ids overlap the sample's, so rows update too.
VALID_VALUES = {
    records.TEXT: st.one_of(
        st.sampled_from(["101", "102", "201", "666", "acme", "globex", "Acme Corp", "é x"]),
        st.from_regex(r"[a-z0-9][a-z0-9_.@-]{0,10}", fullmatch=True),
    ),
    records.EXACT: st.one_of(st.sampled_from(["curl/7.68.0", "Mozilla/5.0 (X11)", ""]), st.text(CHARS, min_size=1, max_size=20)),
    records.BOOL: st.sampled_from(["yes", "No", "1", "0", "TRUE", "false", ""]),
    records.CIDR: st.sampled_from(["203.0.113.0/24", "10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32", "198.51.100.20"]),
    records.REGEX: st.sampled_from(["^python-requests/", "curl", r"Terraform/\d+", ""]),
}
STARTS = ["2019-03-04T10:00:00Z", "1572775200", "2020-07-01 00:00:00+02:00", "18/Jul/2020:09:12:44 +0000"]
ENDS = ["", "2020-07-20T14:04:00Z", "2021-01-01T00:00:00Z"]


@st.composite
def valid_records_file(draw) -> tuple[str, str, str]:
    """A records file of one kind that should import: required columns, values of the
    columns' types, periods in order, each key once."""
    kind = draw(st.sampled_from(sorted(records.KINDS)))
    spec = records.KINDS[kind]
    optional = [c for c in spec.columns if c not in spec.required]
    columns = list(spec.required) + draw(st.lists(st.sampled_from(optional), unique=True)) if optional else list(spec.required)
    if draw(st.booleans()):
        columns.append("note")
    ends = {end for _, end in spec.periods}
    rows, keys = [], set()
    for _ in range(draw(st.integers(1, 5))):
        row = {}
        for column in columns:
            kind_of = spec.columns.get(column, records.TEXT)
            if kind_of == records.TIME:
                row[column] = draw(st.sampled_from(ENDS if column in ends else STARTS))
            else:
                row[column] = draw(VALID_VALUES[kind_of])
                if column in spec.required and column not in spec.may_be_empty and not row[column].strip():
                    row[column] = "x"
        key = tuple(row.get(c, "") for c in spec.key)
        if key not in keys:
            keys.add(key)
            rows.append(row)
    if draw(st.booleans()):
        return kind, "".join(dumps(row, draw(st.booleans())) + "\n" for row in rows), ".jsonl"
    lines = [csv_text(columns)] + [csv_text([row[c] for c in columns]) for row in rows]
    return kind, "\n".join(lines) + "\n", ".csv"


@pytest.fixture(scope="module")
def records_db_template(tmp_path_factory) -> Path:
    """A database with one row of every kind, so that imports also update."""
    path = tmp_path_factory.mktemp("fuzz-records") / "records.db"
    db = schema.connect(str(path))
    sample = Path(__file__).resolve().parents[1] / "sample_data"
    for kind in records.KINDS:
        (source,) = sample.glob(f"{kind}.*")
        records.import_records(db, kind, str(source))
    db.conn.close()
    return path


def stored_records(db, kind: str) -> dict:
    """The rows of a records table by key: {key values: {column: value}}."""
    key = records.KINDS[kind].key
    cursor = db.execute(f"select * from [{kind}]")
    columns = [d[0] for d in cursor.description]
    rows = {}
    for values in cursor.fetchall():
        row = dict(zip(columns, values))
        rows[tuple(row[c] for c in key)] = row
    return rows


def assert_stored(db, kind: str, file, before: dict, added: int, updated: int) -> None:
    """What a successful import stored: every row of the file under its key, with every
    value it gave; the rows it did not name unchanged; added and updated counted right."""
    after = stored_records(db, kind)
    key = records.KINDS[kind].key
    given = {tuple(row.values.get(c) for c in key): row.values for row in file.rows}
    assert len(given) == len(file.rows), "a file with a key twice must be refused"
    for k, values in given.items():
        assert k in after, f"{kind}: the row keyed {k!r} was not stored"
        for column, value in values.items():
            assert after[k][column] == value, (kind, k, column, after[k][column], value)
    for k, row in before.items():
        if k not in given:  # unchanged; a column the file added is empty there
            assert after[k] == {**{c: None for c in after[k]}, **row}, f"{kind}: a row the file did not name changed: {k!r}"
    assert added == len(set(given) - set(before)) == len(after) - len(before)
    assert updated == sum(
        1 for k in given if k in before and {**{c: None for c in after[k]}, **before[k]} != after[k]
    )


@budget
def test_import_records_succeeds_or_refuses_leaving_db_unchanged(budget, request, records_db_template):
    @fuzz_settings(examples(request, RECORDS_BUDGETS))
    @given(spec=st.one_of(records_file(), valid_records_file()))
    def run(spec):
        kind, text, suffix = spec
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"records{suffix}"
            path.write_text(text, encoding="utf-8")
            db_path = Path(tmp) / "r.db"
            shutil.copy(records_db_template, db_path)
            before = dump(db_path)
            db = schema.connect(str(db_path))
            stored_before = stored_records(db, kind)
            try:
                added, updated = records.import_records(db, kind, str(path))
            except ForensicsError as exc:
                assert str(exc).rstrip().endswith("."), str(exc)
                db.conn.close()
                assert dump(db_path) == before
                return
            try:
                assert_stored(db, kind, records.read_records(kind, str(path)), stored_before, added, updated)
            finally:
                db.conn.close()
            stored.append(added + updated)

    stored: list[int] = []
    run()
    # The checks above ran on imports that stored something, not only on refusals.
    assert sum(1 for n in stored if n) >= 5, stored


# --- the incident -----------------------------------------------------------------------


def toml_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


toml_scalar = st.one_of(
    TEXT.map(toml_string),
    st.sampled_from(ODD_TIMES[:30]).map(toml_string),
    st.sampled_from(["1979-05-27T07:32:00Z", "2020-07-01T00:00:00", "2020-07-01", "07:32:00",
                     "0001-01-01T00:00:00Z", "9999-12-31T23:59:59-23:59", "inf", "nan", "-inf",
                     "true", "false", "1595063564", "1e306", "-1", "9223372036854775807", "1595063564.5",
                     "'^/api/0/'", "'(?P<org>[^/]+)'", "'(unclosed'", "'a{99999999999}'", "''"]),
    st.integers(-2**63, 2**63 - 1).map(str),
)
toml_value = st.one_of(toml_scalar, st.lists(toml_scalar, max_size=3).map(lambda v: "[" + ", ".join(v) + "]"))
INCIDENT_KEYS = list(incident.KEYS) + ["extra", "Name"]
VALID_INCIDENT = {
    "name": '"Integration token auth bypass"',
    "introduced_at": '"2020-07-01T00:00:00Z"',
    "patched_at": '"2020-07-20T14:04:00Z"',
    "scope_paths": "['^/api/0/']",
    "org_routes": "['^/api/0/organizations/(?P<org>[^/]+)/']",
    "require_integration": "true",
}


@st.composite
def incident_toml(draw) -> str:
    values = dict(VALID_INCIDENT)
    for key in draw(st.lists(st.sampled_from(INCIDENT_KEYS), max_size=3)):
        values[key] = draw(toml_value)
    for key in draw(st.lists(st.sampled_from(sorted(values)), max_size=2)):
        values.pop(key, None)
    text = "".join(f"{k} = {v}\n" for k, v in values.items())
    if draw(st.integers(0, 4)) == 0:
        text = draw(mutated(st.just(text.replace("\n", "\x1e")))).replace("\x1e", "\n")
    if draw(st.integers(0, 9)) == 0:
        text = draw(TEXT)
    return text


@budget
def test_incident_loader_gives_incident_or_forensics_error(budget, request):
    @fuzz_settings(examples(request))
    @given(text=incident_toml())
    def run(text):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "incident.toml"
            path.write_text(text, encoding="utf-8")
            try:
                loaded = incident.load_incident(str(path))
            except ForensicsError as exc:
                assert str(exc).rstrip().endswith((".", ")")), str(exc)
                return
        assert loaded["introduced_ms"] < loaded["patched_ms"]
        assert loaded["scope_paths"] and loaded["org_routes"]
        for pattern in loaded["org_routes"]:
            assert "org" in re.compile(pattern).groupindex

    run()
