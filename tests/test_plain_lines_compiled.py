"""The compiled fast path (_plainlines.c) stores exactly what the Python loop stores.

The same files are imported with the compiled module and with it switched off
(``ingest._take_plain = None``), and everything stored is compared: requests,
dictionaries, rejected lines, accounting, line counts and raw lines. The module's
pattern and digest are also checked against PLAIN and hashlib directly.
"""

from __future__ import annotations

import hashlib
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datasette_forensics import ingest
from datasette_forensics.importers import combined

from test_plain_lines import LINES, _import

try:
    from datasette_forensics import _plainlines
except ImportError:  # pragma: no cover - the build failed
    _plainlines = None

if _plainlines is None and os.environ.get("CI") == "true":
    pytest.fail("the compiled module datasette_forensics._plainlines is not built (setup.py)", pytrace=False)
pytestmark = pytest.mark.skipif(_plainlines is None, reason="datasette_forensics._plainlines is not built")

G = '{ip} {ident} {user} [{when}] "{method} {uri} {proto}" {status} {size} "{referer}" "{ua}"{tail}'
USUAL = dict(
    ip="192.0.2.1", ident="-", user="-", when="01/Jul/2020:02:00:00 +0000", method="GET", proto="HTTP/1.1",
    status=200, size=1, referer="-", ua="x", tail="",
)  # fmt: skip


def _line(**fields) -> str:
    """A combined line: a plain one, but for ``fields``."""
    return G.format(**{**USUAL, **fields})


TRICKY = [
    *LINES,
    _line(uri="/crlf", tail="\r"),
    _line(method="G" * 32, uri="/m32"),
    _line(method="G" * 33, uri="/m33"),
    _line(uri="/big", status="0099", size="1" * 19),
    _line(uri="/big", status="099", size="9" * 18),
    _line(uri="/huge", referer="r" * 300_000, ua="u" * 500_000),
    _line(uri="/tab\tx", referer="a\x1cb", ua="\x00"),
    _line(ip="192.0.2.1\x1c", uri="/fs"),
    _line(uri="/http", proto="HTTPS/1.1"),
    _line(when="01/Jul/2020:02:00:00 +0000]", uri="/br"),
    _line(when="", uri="/notime"),
    _line(when="01/Jul/1970:00:00:00 +0000", uri="/epoch"),
    _line(ip="::ffff:192.0.2.1", ident="i-d", user="u ser", uri="/space-user"),
    _line(uri="/q\\"),
    _line(uri="/cr", ua="a\rb"),
    _line(ip="[2001:db8::1]", uri="/bracket"),
    "",
    "\t",
    '192.0.2.1 - - [01/Jul/2020:02:00:00 +0000] "GET / HTTP/1.1" 200 1 "-"',
    '192.0.2.1 - - [01/Jul/2020:02:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "x" ',
    '192.0.2.1 - - [01/Jul/2020:02:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "x"x',
]
NON_UTF8 = [
    b'192.0.2.9 - - [01/Jul/2020:02:00:00 +0000] "GET /\xff HTTP/1.1" 200 1 "-" "x"',
    b'192.0.2.9 - - [01/Jul/2020:02:00:00 +0000] "GET /ok HTTP/1.1" 200 1 "\xc3" "x"',
]


def _data(lines: list[str], raw: list[bytes] = ()) -> bytes:
    return b"".join(line.encode() + b"\n" for line in lines) + b"".join(r + b"\n" for r in raw)


def _both(tmp_path, monkeypatch, data: bytes, fmt: str = "combined") -> dict:
    monkeypatch.setenv("FORENSICS_PARSE_PROCESS", "never")
    compiled = _import(tmp_path, "compiled", data, fmt)
    monkeypatch.setattr(ingest, "_take_plain", None)
    python = _import(tmp_path, "python", data, fmt)
    assert compiled == python
    return compiled


def _random_line(rnd: random.Random) -> str:
    def pick(*usual):
        if rnd.random() < 0.9:
            return rnd.choice(usual)
        return "".join(rnd.choice('ab -"\\[]/:?=+0123456789\t\x1c\ufeffé') for _ in range(rnd.randint(0, 8)))

    return G.format(
        ip=pick("192.0.2.1", "::1", "10.0.0.%d" % rnd.randint(0, 300), "[::1]"), ident=pick("-", "-", "id"),
        user=pick("-", "-", "alice"), when=pick("01/Jul/2020:02:00:%02d +0000" % rnd.randint(0, 60), "01/Jul/2020:02:01:00 +0000", "1/Jul/2020"),
        method=pick("GET", "post", "M-_1"), uri=pick("/a?b=%d" % rnd.randint(0, 50), "*", "/"),
        proto=pick("HTTP/1.1", "HTTP/2.0"), status=pick("200", "-", "404", "1234"), size=pick("0", "-", "17"),
        referer=pick("-", "https://x/", ""), ua=pick("-", "", "curl/%d" % rnd.randint(0, 40)),
        tail=pick("", "", "  ", ' "x"'),
    )  # fmt: skip


@pytest.mark.parametrize("fmt", ["combined", "nginx-ext", "common"])
def test_compiled_path_stores_what_the_python_path_stores(tmp_path, monkeypatch, fmt):
    stored = _both(tmp_path, monkeypatch, _data(TRICKY, NON_UTF8), fmt)
    (read, imported, rejected, duplicates), _again = stored["batch"]
    assert imported >= 20 and rejected >= 5 and duplicates == 0


def test_compiled_path_on_random_lines_and_small_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "CHUNK_LINES", 37)  # many chunk ends, mid-block and at block ends
    rnd = random.Random(13)
    lines = [_random_line(rnd) for _ in range(3000)]
    stored = _both(tmp_path, monkeypatch, _data(lines + lines[:100]))
    (read, imported, rejected, duplicates), again = stored["batch"]
    assert read == 3100 and imported > 800 and rejected > 500 and duplicates == 0 and again == (3100, 0, 0, 3100)


def test_the_compiled_path_takes_plain_lines(tmp_path, monkeypatch):
    """Without this, a take() that never took a line would pass the comparisons above."""
    calls = []
    real = ingest._take_plain

    def counting(block, i, line_no, *args):
        result = real(block, i, line_no, *args)
        calls.append(result[1] - line_no)
        return result

    monkeypatch.setattr(ingest, "_take_plain", counting)
    monkeypatch.setenv("FORENSICS_PARSE_PROCESS", "never")
    _import(tmp_path, "counted", _data(LINES[:4] * 50), "combined")
    assert sum(calls) == 200 * 2  # every line of both batches, none by the Python loop


@settings(max_examples=500, deadline=None)
@given(st.text(st.sampled_from('ab -"\\[]/:?=HTTP0123456789\t\x1c\x00\r\ufeff'), max_size=60))
def test_match_is_plain(text):
    head = '1.2.3.4 - - [01/Jul/2020:02:00:00 +0000] "GET /x HTTP/1.1" 200 1 "-" "'
    for line in (text, head + text, head[: len(head) // 2] + text):
        m = combined.PLAIN(line)
        got = _plainlines.match(line.encode())
        if not line.isascii():
            assert got is None
        else:
            assert got == (m.groups() if m else None), line


@pytest.mark.parametrize("seed", range(3))
def test_match_is_plain_on_random_lines(seed):
    rnd = random.Random(seed)
    matched = 0
    for _ in range(3000):
        line = _random_line(rnd)
        m = combined.PLAIN(line)
        expected = m.groups() if m is not None and line.isascii() else None
        assert _plainlines.match(line.encode()) == expected, line
        matched += expected is not None
    assert matched > 300


def test_digest_is_blake2b():
    rnd = random.Random(7)
    for n in [*range(0, 300), 1023, 1024, 1025, 100_000]:
        data = rnd.randbytes(n)
        assert _plainlines.digest(data) == hashlib.blake2b(data, digest_size=8).digest(), n


def test_the_bloom_filter_holds_every_hash_it_was_given():
    """bloom_add (ints or rows) and bloom_add_text (group_concat's text) set the same bits;
    bloom_maybe keeps every hash added (no false negative) and few others."""
    rng = random.Random(7)
    added = [rng.getrandbits(64) - (1 << 63) for _ in range(20_000)] + [-(1 << 63), (1 << 63) - 1, 0, -1, 1]
    from_ints, from_rows, from_text = bytearray(1 << 16), bytearray(1 << 16), bytearray(1 << 16)
    assert _plainlines.bloom_add(from_ints, added) == len(added)
    assert _plainlines.bloom_add(from_rows, [(h,) for h in added]) == len(added)
    assert _plainlines.bloom_add_text(from_text, ",".join(map(str, added))) == len(added)
    assert from_ints == from_rows == from_text
    assert _plainlines.bloom_maybe(from_ints, added) == added
    others = [rng.getrandbits(64) - (1 << 63) for _ in range(20_000)]
    assert len(_plainlines.bloom_maybe(from_ints, others)) < 200  # 26 bits a hash: well under 1%
    for bad in ("1,,2", "x", "12345678901234567890"):
        with pytest.raises(ValueError):
            _plainlines.bloom_add_text(bytearray(64), bad)
    with pytest.raises(ValueError):
        _plainlines.bloom_maybe(bytes(100), [1])  # not a power of two
