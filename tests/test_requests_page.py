"""The requests page (every filter against a direct SQL count, keyset paging, the CSV
stream) and the request page (the raw line as imported, from a file and from standard
input, after the file is gone; hostile text escaped)."""

from __future__ import annotations

import csv
import io
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from datasette_forensics import rawlines, schema
from datasette_forensics.derived import indexes
from datasette_forensics.cli import cli
from datasette_forensics.views import requests as requests_view

from conftest import make_datasette
from requests_oracle import build_story_db, every_row, generous_time, oracle

pytestmark = pytest.mark.asyncio


@pytest.fixture(autouse=True)
def _generous_time(monkeypatch):
    generous_time(monkeypatch)


@pytest.fixture(scope="module")
def story_db(tmp_path_factory):
    return build_story_db(tmp_path_factory.mktemp("requests") / "story.db")


async def datasette(path):
    ds = make_datasette([path])
    await ds.invoke_startup()
    return ds


def filter_cases(conn) -> list[str]:
    """One query string per filter kind, with values the story holds."""
    org = conn.execute("select org_id from org_stats order by unexplained desc limit 1").fetchone()[0]
    sig, ip, ua, cidr24, cidr16, family = conn.execute(
        """select r.sig_id, ip, user_agent, cidr24, cidr16, ua_family from requests_view r
        where in_scope = 1 group by sig_id order by count(*) desc limit 1"""
    ).fetchone()
    batch = conn.execute("select max(id) from import_batches where source like '%.log'").fetchone()[0]
    named = conn.execute("select named_org_id from requests_view where named_org_id is not null limit 1").fetchone()[0]
    q = lambda s: s.replace("/", "%2F").replace(" ", "+").replace(";", "%3B").replace("(", "%28").replace(")", "%29")
    return [
        "", f"org={org}", "scope=in", "scope=out", "status=unexplained", "status=explained",
        f"org={org}&status=unexplained", f"org={org}&status=explained", "rule=staff", "rule=verdict",
        f"org={org}&rule=member_current", "not_by=staff,member_current", "rule=token_owner&not_by=staff",
        f"sig={sig}", f"sig={sig}&scope=in", f"ip={ip}", f"cidr24={q(cidr24)}", f"cidr16={q(cidr16)}",
        f"ua={q(ua)}", f"family={q(family)}", "kind=library", "kind=bot&scope=in", "network=documentation", "country=", "network=private&status=unexplained", "path=%2Fapi%2F0%2Forganizations%2F",
        "code=404", "code=2xx", "code=2xx&scope=in", "from=2020-07-10T00:00:00Z", "from=2020-07-04&to=2020-07-12T12:00:00Z",
        f"org={org}&from=2020-07-10T00:00:00Z", f"batch={batch}", "method=POST", "reason=path_not_in_scope",
        "reason=outside_window", f"named_org={named}", f"ip={ip}&status=unexplained&from=2020-07-05",
        "cidr=192.0.2.0/25", "ua=no+such+agent", "family=", f"org={org}&kind=library", f"ip={ip}&ip=192.0.2.1",
        f"cidr={q(cidr24)}&scope=out", "tag=cloud",
    ]


@pytest.mark.parametrize("listed", [5000, 0], ids=["signatures-listed", "signatures-joined"])
async def test_each_filter_is_a_direct_sql_count_and_pages_by_key(story_db, listed, monkeypatch):
    # 0: every signature filter checked row by row, as for a whole agent kind at scale.
    monkeypatch.setattr(requests_view, "SIG_LIST_MAX", listed)
    ds = await datasette(story_db)
    conn = sqlite3.connect(str(story_db))
    base = f"/{story_db.stem}/-/forensics/requests"
    nonempty = 0
    for query in filter_cases(conn):
        expected = oracle(conn, query)
        response = await ds.client.get(f"{base}.json?{query}")
        assert response.status_code == 200, (query, response.text[:300])
        data = response.json()
        assert data["count_exact"] and data["count"] == len(expected), (query, data["count"], len(expected))
        # Keyset pages of 4: every row once, none lost, in (time, id) order, latest first.
        assert await every_row(ds, f"{base}?{query}", 4) == expected, query
        nonempty += bool(expected)
        html = await ds.client.get(f"{base}?{query}")
        assert html.status_code == 200 and "<table" in html.text
    assert nonempty >= 30


async def test_pages_never_use_offset_and_say_the_filters(story_db):
    ds = await datasette(story_db)
    base = f"/{story_db.stem}/-/forensics/requests"
    first = (await ds.client.get(f"{base}.json?size=5&scope=in")).json()
    assert "next=" in first["next_url"] and "page=" not in first["next_url"] and "offset" not in first["next_url"]
    second = (await ds.client.get(first["next_url"])).json()
    assert not {r["id"] for r in first["rows"]} & {r["id"] for r in second["rows"]}
    assert second["first_url"] and "next=" not in second["first_url"]
    html = (await ds.client.get(f"{base}?scope=in&kind=library")).text
    assert 'name="kind" value="library" checked' in html  # the filter bar shows the state
    assert "_nocount=1&amp;_nosuggest=1" in html  # Datasette's own table, for ad-hoc filtering


@pytest.mark.parametrize(
    "query, sentence",
    [("code=abc", "?code= must be"), ("rule=nope", "?rule= must name rules"), ("batch=x", "?batch= must be"),
     ("next=zz", "?next= must be"), ("scope=sideways", "?scope= must be one of"), ("reason=why", "?reason= must be")],
)
async def test_bad_filters_are_one_sentence(story_db, query, sentence):
    ds = await datasette(story_db)
    response = await ds.client.get(f"/{story_db.stem}/-/forensics/requests?{query}")
    assert response.status_code == 400 and sentence in response.text


async def test_csv_streams_every_matching_request(story_db):
    ds = await datasette(story_db)
    conn = sqlite3.connect(str(story_db))
    for query in ("scope=in", "kind=library&code=2xx", ""):
        response = await ds.client.get(f"/{story_db.stem}/-/forensics/requests.csv?{query}")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
        table = list(csv.reader(io.StringIO(response.text)))
        assert table[0][:3] == ["id", "time", "ip"]
        assert [int(r[0]) for r in table[1:]] == oracle(conn, query), query


def import_cli(db: Path, *args, input=None):
    result = CliRunner().invoke(cli, ["import-logs", str(db), *map(str, args)], input=input)
    assert result.exit_code == 0, result.output
    return result


HOSTILE_UA = "<script>alert(1)</script>\x1b[31m\u202eevil"
LINES = [
    f'192.0.2.{i} - - [01/Jul/2020:02:00:0{i} +0000] "GET /api/0/items/{i}/?q=<b>x</b> HTTP/1.1" 200 {i} "-" "{HOSTILE_UA if i == 3 else "curl/7.68.0"}"'
    for i in range(1, 8)
]


async def test_raw_line_from_a_deleted_file_and_from_standard_input(tmp_path):
    db = tmp_path / "raw.db"
    log = tmp_path / "a.log"
    log.write_bytes(("\n".join(LINES[:4]) + "\n").encode())
    import_cli(db, log)
    log.unlink()  # the file is gone: the request page still has its lines
    import_cli(db, "-", input=("\n".join(LINES[4:]) + "\n").encode())
    conn = sqlite3.connect(str(db))
    ds = await datasette(db)
    stored = conn.execute(
        "select r.id, r.batch_id, r.line_no, b.source from requests r join import_batches b on b.id = r.batch_id order by r.id"
    ).fetchall()
    assert len(stored) == 7 and {s[3] for s in stored} == {str(log), "-"} | ({"<stdin>"} & {s[3] for s in stored})
    for (request_id, batch_id, line_no, _), line in zip(stored, LINES):
        assert rawlines.raw_line(conn, batch_id, line_no) == line.encode()
        data = (await ds.client.get(f"/{db.stem}/-/forensics/requests/{request_id}.json")).json()
        assert data["raw_line"] == line and data["raw_line_kept"]
        assert data["provenance"]["line_no"] == line_no and data["provenance"]["batch_id"] == batch_id
    # Hostile text: escaped as HTML, and shown with visible escapes, on both pages.
    hostile_id = stored[2][0]
    page = (await ds.client.get(f"/{db.stem}/-/forensics/requests/{hostile_id}")).text
    listing = (await ds.client.get(f"/{db.stem}/-/forensics/requests")).text
    for text in (page, listing):
        assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
        assert "\x1b" not in text and "\u202e" not in text and "\\x1b" in text
    assert "&lt;b&gt;x&lt;/b&gt;" in page
    missing = await ds.client.get(f"/{db.stem}/-/forensics/requests/999999")
    assert missing.status_code == 404


async def test_request_page_of_a_database_without_raw_lines_says_so(tmp_path):
    db = tmp_path / "old.db"
    (tmp_path / "a.log").write_text(LINES[0] + "\n")
    import_cli(db, tmp_path / "a.log")
    conn = sqlite3.connect(str(db))
    conn.execute("delete from raw_chunks")  # as imported before raw lines were kept
    conn.commit()
    ds = await datasette(db)
    data = (await ds.client.get(f"/{db.stem}/-/forensics/requests/1.json")).json()
    assert data["raw_line"] is None and not data["raw_line_kept"] and data["uri"] == "/api/0/items/1/?q=<b>x</b>"
    assert "before raw lines were kept" in (await ds.client.get(f"/{db.stem}/-/forensics/requests/1")).text


def test_pack_and_read_back_blocks():
    """Blocks numbered without a gap, with gaps (rejected or duplicate lines), and with a
    line that holds a newline (a value from a query can) all read back line by line."""
    from datasette_forensics.schema import PAGES_RAW_CHUNKS

    conn = sqlite3.connect(":memory:")
    conn.executescript(PAGES_RAW_CHUNKS)
    nos = list(range(3, 3 + 1200, 1))
    lines = [f"line {n} \xe9".encode() if n % 7 else b"" for n in nos]
    rows = rawlines.pack(9, nos.__getitem__, lines)
    assert len(rows) == 3 and rows[0][1:3] == (3, 3 + rawlines.BLOCK_LINES - 1)
    assert {r[3] for r in rows} == {rawlines.CONSECUTIVE}
    # gaps: every third line missing; and one block whose lines hold newlines
    gapped = [n for n in range(1, 2000) if n % 3]
    gapped_lines = [f"gapped {n}".encode() for n in gapped]
    gapped_rows = rawlines.pack(10, gapped.__getitem__, gapped_lines)
    assert all(r[3].startswith(rawlines.OFFSETS) for r in gapped_rows)
    newline_lines = [b"a\nb", b"", b"c\n", b"\nd"]
    newline_rows = rawlines.pack(11, [5, 6, 8, 9].__getitem__, newline_lines)
    assert newline_rows[0][3] not in (rawlines.CONSECUTIVE,) and not newline_rows[0][3].startswith(rawlines.OFFSETS)
    for r in (rows, gapped_rows, newline_rows):
        rawlines.store(conn, r)
    for batch, numbers, texts in ((9, nos, lines), (10, gapped, gapped_lines), (11, [5, 6, 8, 9], newline_lines)):
        for n, line in zip(numbers, texts):
            assert rawlines.raw_line(conn, batch, n) == line
    assert rawlines.raw_line(conn, 9, 2) is None and rawlines.raw_line(conn, 8, 3) is None
    assert rawlines.raw_line(conn, 10, 3) is None and rawlines.raw_line(conn, 10, 1997) == b"gapped 1997"
    assert rawlines.raw_line(conn, 11, 7) is None


def test_blocks_kept_by_earlier_versions_zlib_still_read():
    """Raw lines stored before the Zstandard codec (zlib streams) still show, beside new blocks."""
    import zlib
    from array import array

    from datasette_forensics.schema import PAGES_RAW_CHUNKS

    old_lines = [b"old line one \xff", b"old line two"]
    meta = array("I", [0, 2] + [len(line) for line in old_lines]).tobytes()
    conn = sqlite3.connect(":memory:")
    conn.executescript(PAGES_RAW_CHUNKS)
    rawlines.store(conn, [(1, 10, 12, zlib.compress(meta, 1), zlib.compress(b"".join(old_lines), 1))])
    rawlines.store(conn, rawlines.pack(2, [10, 11].__getitem__, [b"new one", b"new two"]))
    assert not conn.execute("select lines from raw_chunks where batch_id = 2").fetchone()[0].startswith(b"\x78")
    assert rawlines.raw_line(conn, 1, 10) == b"old line one \xff"
    assert rawlines.raw_line(conn, 1, 12) == b"old line two"
    assert rawlines.raw_line(conn, 1, 11) is None
    assert rawlines.raw_line(conn, 2, 11) == b"new two"


def test_org_signature_list_is_an_index_range_read(story_db):
    """The org page reads its signatures in sig_org_rank's order: no sort of them all."""
    from datasette_forensics.views import org

    conn = sqlite3.connect(str(story_db))
    sql = org.SIGNATURES.format(conds="1", status="so.unexplained > 0")
    plan = " ".join(r[-1] for r in conn.execute("explain query plan " + sql, {"org": "101", "cross_tenant": 1, "limit": 500}))
    assert "sig_org_rank" in plan and "TEMP B-TREE" not in plan, plan


async def test_a_page_cut_short_by_its_budget_goes_on_from_there(story_db, monkeypatch):
    """No time at all: each page walks one step, says how far it searched and links on;
    following the links still gives every row once, in order."""
    monkeypatch.setattr(requests_view, "BUDGET_S", 0.0)
    monkeypatch.setattr(requests_view, "STEP_MS", 600_000)
    ds = await datasette(story_db)
    conn = sqlite3.connect(str(story_db))
    base = f"/{story_db.stem}/-/forensics/requests"
    for query in ("scope=in", "status=unexplained", "code=404", "org=101"):
        first = (await ds.client.get(f"{base}.json?{query}")).json()
        assert first["searched_to"] and first["next_url"], query
        assert "go on from there" in (await ds.client.get(f"{base}?{query}")).text
        assert await every_row(ds, f"{base}?{query}", 5) == oracle(conn, query), query


@pytest.mark.asyncio
async def test_while_a_first_import_loads_the_page_says_so(tmp_path):
    """A first import builds the requests indexes when it closes; meanwhile the page,
    which reads requests only through them, answers 503 with a sentence, not a 500."""
    path = tmp_path / "loading.db"
    db = schema.connect(str(path))
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        conn = db.conn
        batch = conn.execute(
            "insert into import_batches (source, started_at, status, pid) values ('a.log', '', 'running', ?)",
            [live.pid],
        ).lastrowid
        conn.execute("begin immediate")
        assert indexes.defer(conn, batch)
        conn.execute("commit")
        conn.close()
        ds = make_datasette([str(path)])
        for url in ("/loading/-/forensics/requests", "/loading/-/forensics/requests.json?sig=1"):
            response = await ds.client.get(url)
            assert response.status_code == 503, url
            assert "A first import is still loading this database" in response.text
        assert (await ds.client.get("/loading/-/forensics/signatures")).status_code == 200
    finally:
        live.kill()
        live.wait()
