"""Hostile strings from logs and records, imported through the CLI, on every page and output.

Pages must show them escaped (never as markup, never evaluated as templates), JSON
must carry them intact, the notification CSV must neutralise spreadsheet formulas,
and the command line must never hand a raw control or bidi character to a terminal.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import sqlite3
from html.parser import HTMLParser
from urllib.parse import quote

import pytest
import pytest_asyncio
from click.testing import CliRunner
from datasette.app import Datasette
from datasette.utils import tilde_encode

import hostile_corpus as corpus
from conftest import RECORD_KINDS, sample_record_file
from datasette_forensics import report, schema, terminal
from datasette_forensics.cli import cli

DB = "hostile"
BASE = f"/{DB}/-/forensics"
PIVOTS = {
    "ips": ["ip", "cidr24", "cidr16", "asn", "provider", "rdns"],
    "user-agents": ["raw", "family", "family_major", "os", "kind"],
}
# What a terminal must never receive: C0 (but newline) and C1 controls, DEL, bidi controls.
TERMINAL_UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
SIZE = "size=1000"


def run(*args, **kwargs):
    """The CLI as a terminal would get it: color=True keeps click from stripping ANSI codes."""
    result = CliRunner().invoke(cli, [str(a) for a in args], color=True, **kwargs)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def assert_terminal_safe(text: str) -> None:
    found = TERMINAL_UNSAFE.findall(text)
    assert not found, f"raw control characters {found!r} in: {text[:500]!r}"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The hostile database, built with the CLI; the files and the CLI output of each step."""
    directory = tmp_path_factory.mktemp("hostile")
    files = corpus.write_world(directory)
    db = directory / f"{DB}.db"
    outputs = {}
    for kind in RECORD_KINDS:
        run("import-records", db, kind, sample_record_file(kind))
    outputs["orgs"] = run("import-records", db, "orgs", files["orgs"])
    run("import-records", db, "integrations", files["integrations"])
    outputs["incident"] = run("incident", db, files["incident"])
    outputs["import"] = run("import-logs", db, files["combined"], files["jsonl"])
    assert outputs["import"].exit_code == 0, outputs["import"].output
    return {"db": db, "files": files, "outputs": outputs, "dir": directory}


@pytest.fixture
def db_path(world, tmp_path):
    """A copy of the hostile database a test may change (through SQLite: the WAL too)."""
    path = tmp_path / f"{DB}.db"
    source, target = sqlite3.connect(str(world["db"])), sqlite3.connect(str(path))
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    return path


@pytest_asyncio.fixture(scope="module")
async def ds(world):
    datasette = Datasette([str(world["db"])])
    await datasette.invoke_startup()
    return datasette


class MarkupChecker(HTMLParser):
    """Everything in a page that would run: event handlers, script URLs, scripts, payload tags."""

    PAYLOAD_TAGS = {"math", "mtext", "mglyph", "x", "b"}
    # Datasette's own markup, not a payload: Datasette 1.0's table page opens its
    # column chooser from a button.
    HOST_HANDLERS = {("button", "onclick", "openColumnChooser()")}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.problems: list = []
        self.script = None

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name.startswith("on") and (tag, name, value) not in self.HOST_HANDLERS:
                self.problems.append((tag, name, value))
            if name in ("href", "src", "action", "formaction") and value and re.match(
                r"\s*(javascript|vbscript|data):", value, re.I
            ):
                self.problems.append((tag, name, value[:80]))
        if tag in self.PAYLOAD_TAGS:
            self.problems.append((tag, attrs))
        if tag == "script":
            self.script = dict(attrs)

    def handle_endtag(self, tag):
        if tag == "script":
            self.script = None

    def handle_data(self, data):
        if self.script is not None and self.script.get("type") != "application/json" and "alert" in data:
            self.problems.append(("script", data[:100]))


def markup_problems(html: str) -> list:
    checker = MarkupChecker()
    checker.feed(html)
    checker.close()
    return checker.problems + [m for m in corpus.RAW_MARKUP if m in html]


def test_the_checker_finds_injected_markup():
    for payload in ('"><svg onload=alert(1)>', "<script>alert(1)</script>", "<a href=' javascript:x'>x</a>",
                    "<b>x</b>", "<p title=x onclick=alert(1)>"):
        assert markup_problems(f"<p>{payload}</p>"), payload
    assert markup_problems('<script type="application/json">["&lt;script&gt;alert(1)"]</script>') == []


def test_corpus_covers_the_kinds_of_hostile_string():
    assert len(corpus.PAYLOADS) + len(corpus.INVALID_UTF8) >= 50
    joined = "".join(corpus.PAYLOADS)
    for needle in ("<script>", "onerror=", "javascript:", '"><svg onload=alert(1)>', "'-alert(1)-'", "{{7*7}}",
                   "{% raw %}", "${7*7}", "\x1b[31m", "\x1b]0;", "\x1b[2J", "\x00", "\u202e", "\u200b",
                   "=HYPERLINK(", "+cmd", "-2+3", "@SUM(1)", "' or 1=1 --", "</script>", "\u2028"):
        assert needle in joined, needle
    assert len(corpus.BIG) >= 100_000


def test_import_keeps_every_line_and_prints_only_safe_text(world):
    output = world["outputs"]["import"].output
    assert_terminal_safe(output)
    combined = len(corpus.combined_lines())
    jsonl = len(corpus.jsonl_lines())
    assert f"{combined:,} lines read = {combined:,} imported + 0 rejected + 0 duplicates" in output
    assert f"{jsonl:,} lines read = {jsonl:,} imported + 0 rejected + 0 duplicates" in output
    for step in ("orgs", "incident"):
        assert_terminal_safe(world["outputs"][step].output)


def test_payloads_are_stored_exactly(world):
    db = schema.connect(str(world["db"]))
    try:
        uas = {r[0] for r in db.execute("select ua from user_agents")}
        paths = {r[0] for r in db.execute("select path from paths")}
    finally:
        db.conn.close()
    for payload in corpus.PAYLOADS:
        assert payload in uas, payload[:60]
        uri = corpus.ORG_PATH.format(slug="acme") + payload
        assert uri.partition("?")[0] in paths, payload[:60]  # the query string is kept apart
    # Invalid UTF-8 arrives as visible escapes of its bytes.
    assert "bad\\xff\\xfeutf8" in uas


# --- pages ----------------------------------------------------------------------


def page_urls(org_ids) -> list[str]:
    urls = [BASE, f"{BASE}/signatures?{SIZE}", f"{BASE}/rules", f"{BASE}/orgs?{SIZE}"]
    for page, groupings in PIVOTS.items():
        urls += [f"{BASE}/{page}?by={by}&{SIZE}" for by in groupings]
    urls += [f"{BASE}/orgs/{tilde_encode(org_id)}?{SIZE}" for org_id in org_ids]
    urls += [f"/{DB}/requests_view?_size=max", f"/{DB}/requests_view?_size=max&org_id=9001"]
    urls += [f"/{DB}/{table}" for table in ("orgs", "user_agents", "paths", "rejected_lines")]
    return urls


@pytest_asyncio.fixture(scope="module")
async def org_ids(ds):
    data = json.loads((await ds.client.get(f"{BASE}/orgs.json?{SIZE}")).text)
    ids = [row["org_id"] for row in data["rows"]]
    assert {"101", "9001", "9002", "9003"} <= set(ids)
    return ids


@pytest.mark.asyncio
async def test_every_page_escapes_every_payload(ds, org_ids):
    escaped_script_pages = []
    for url in page_urls(org_ids):
        response = await ds.client.get(url)
        assert response.status_code == 200, url
        assert markup_problems(response.text) == [], url
        if "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text:
            escaped_script_pages.append(url)
    # The payloads are on the pages, escaped: the pages that list user agents show them.
    for url in (f"{BASE}/signatures?{SIZE}", f"{BASE}/user-agents?by=raw&{SIZE}", f"{BASE}/ips?by=ip&{SIZE}",
                f"{BASE}/orgs/9001?{SIZE}", f"/{DB}/requests_view?_size=max"):
        assert url in escaped_script_pages, url


@pytest.mark.asyncio
async def test_hostile_org_records_are_escaped(ds):
    for url in (f"{BASE}/orgs?{SIZE}", f"{BASE}/orgs/9002"):
        text = (await ds.client.get(url)).text
        assert "&lt;b&gt;x&lt;/b&gt;&lt;script&gt;alert(" in text, url
        assert "<b>x</b>" not in text


@pytest.mark.asyncio
async def test_template_syntax_is_shown_not_evaluated(ds):
    acme = corpus.ORG_PATH.format(slug="acme")
    response = await ds.client.get(f"/{DB}/requests_view?_size=max&user_agent={quote('{{7*7}}')}")
    text = response.text
    assert f"{acme}{{{{7*7}}}}" in text  # the path, literally
    assert f"{acme}49" not in text and ">49<" not in text
    ua_page = (await ds.client.get(f"{BASE}/user-agents?by=raw&{SIZE}")).text
    assert '<code class="forensics-log">{{7*7}}</code>' in ua_page
    assert "{% raw %}{{7*7}}{% endraw %}" in ua_page
    assert "${7*7}" in ua_page and "#{7*7}" in ua_page
    assert '<code class="forensics-log">49</code>' not in ua_page


REFLECTED = '"><svg onload=alert(1)><script>alert(1)</script>{{7*7}}'


@pytest.mark.asyncio
@pytest.mark.parametrize("page", ["", "/ips", "/user-agents", "/orgs", "/signatures", "/orgs/101"])
async def test_hostile_query_parameters_are_escaped(ds, page):
    keys = ["by", "org", "status", "cross_tenant", "cidr", "ip", "cidr24", "ua", "kind", "asn", "rdns",
            "family", "os", "from", "to", "sort", "page", "size"]
    for key in keys:
        response = await ds.client.get(f"{BASE}{page}?{key}={quote(REFLECTED)}")
        assert response.status_code in (200, 400), (key, response.status_code)
        assert markup_problems(response.text) == [], key
        assert "&lt;/script&gt;49" not in response.text and "</script>49" not in response.text
    response = await ds.client.get(f"{BASE}/orgs/{tilde_encode(REFLECTED)}")
    assert response.status_code == 404 and markup_problems(response.text) == []


# --- JSON -----------------------------------------------------------------------


def json_urls(org_ids) -> list[str]:
    urls = [f"{BASE}.json", f"{BASE}/signatures.json?{SIZE}", f"{BASE}/rules.json", f"{BASE}/orgs.json?{SIZE}",
            f"{BASE}/report.json"]
    for page, groupings in PIVOTS.items():
        urls += [f"{BASE}/{page}.json?by={by}&{SIZE}" for by in groupings]
    return urls + [f"{BASE}/orgs/{tilde_encode(o)}.json?{SIZE}" for o in org_ids]


@pytest.mark.asyncio
async def test_json_endpoints_are_valid_and_carry_payloads_intact(ds, org_ids):
    for url in json_urls(org_ids):
        response = await ds.client.get(url)
        assert response.status_code == 200, url
        assert response.headers["content-type"].startswith("application/json")
        assert "<" not in response.text and ">" not in response.text, url  # escaped as \u003c, \u003e
        json.loads(response.text)
    signatures = json.loads((await ds.client.get(f"{BASE}/signatures.json?{SIZE}")).text)["rows"]
    uas = {row["user_agent"] for row in signatures}
    assert set(corpus.PAYLOADS) <= uas  # the jsonl log carries every payload exactly
    for payload in (corpus.BIG, "\x1b[31mred\x1b[0m", "nul\x00byte", "admin\u202etxt.exe",
                    "line\u2028sep\u2029para", "</script><script>alert(1)</script>", '\\"}]},{"x":"'):
        assert payload in uas, payload[:40]
    raw = json.loads((await ds.client.get(f"{BASE}/user-agents.json?by=raw&{SIZE}")).text)["rows"]
    template = next(r for r in raw if r["key"] == "{{7*7}}")
    assert template["last_path"].endswith("/{{7*7}}") and template["top_user_agent"] == "{{7*7}}"
    orgs = {r["org_id"]: r for r in json.loads((await ds.client.get(f"{BASE}/orgs.json?{SIZE}")).text)["rows"]}
    for org in corpus.HOSTILE_ORGS:
        assert {k: orgs[org["id"]][k] for k in ("slug", "name", "contact_email")} == {
            k: org[k] for k in ("slug", "name", "contact_email")
        }


@pytest.mark.asyncio
async def test_datasette_requests_view_json_round_trips(ds):
    for payload in ("<script>alert(1)</script>", "\x1b]0;pwned title\x07", "' or 1=1 --", "{{7*7}}"):
        response = await ds.client.get(
            f"/{DB}/requests_view.json?_shape=array&user_agent={quote(payload)}"
        )
        rows = json.loads(response.text)
        assert rows and {r["user_agent"] for r in rows} == {payload}
        assert corpus.ORG_PATH.format(slug="acme") + payload in {r["path"] for r in rows}


# --- the notification CSV --------------------------------------------------------


def assert_neutralised(text: str) -> list[list[str]]:
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == report.CSV_COLUMNS
    for row in rows[1:]:
        for cell in row:
            assert not cell.startswith(FORMULA_START), (row, cell)
    by_id = {row[0]: dict(zip(rows[0], row)) for row in rows[1:]}
    for org in corpus.HOSTILE_ORGS:
        assert by_id[org["id"]]["status"] == "exposed"
        for column in ("slug", "name", "contact_email"):
            value = terminal.visible(org[column])  # controls and bidi as visible escapes
            assert by_id[org["id"]][column] == ("'" + value if value.startswith(FORMULA_START) else value)
        assert not TERMINAL_UNSAFE.search(",".join(by_id[org["id"]].values()))
    assert by_id["9001"]["name"] == "'=cmd|' /C calc'!A0"
    return rows


@pytest.mark.asyncio
async def test_report_csv_neutralises_formulas_on_the_web_and_the_cli(ds, world, tmp_path):
    response = await ds.client.get(f"{BASE}/report.csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    assert_neutralised(response.text)
    out = tmp_path / "notify.csv"
    assert run("report", world["db"], "--format", "csv", "-o", out).exit_code == 0
    file_text = out.read_bytes().decode("utf-8")
    assert file_text == response.text
    assert_neutralised(file_text)
    # Piped (not a terminal): the same bytes, ANSI sequences included (click.echo would strip them).
    piped = CliRunner().invoke(cli, ["report", str(world["db"]), "--format", "csv"])
    assert piped.exit_code == 0
    assert piped.stdout_bytes.decode("utf-8") == file_text


def test_neutralise_prefixes_every_formula_start_and_shows_controls():
    for value in ("=1+1", "+cmd", "-2+3", "@SUM(1)"):
        assert report.neutralise(value) == "'" + value
    # A leading tab or carriage return is shown as an escape: no longer a formula start.
    assert report.neutralise("\t=1") == "\\x09=1"
    assert report.neutralise("\r=1") == "\\x0d=1"
    assert report.neutralise("=\x1b[31mred\u202e") == "'=\\x1b[31mred\\u202e"
    for value in ("acme", "a=b", "", 5, None):
        assert report.neutralise(value) == value


def test_report_csv_on_a_terminal_shows_controls_as_escapes(world, monkeypatch):
    monkeypatch.setattr(terminal, "is_terminal", lambda stream: True)
    result = run("report", world["db"], "--format", "csv")
    assert result.exit_code == 0
    assert_terminal_safe(result.output)
    assert "\\x1b]0;pwned\\x07 Org" in result.output and "\\x1b[31mred\\x1b[0m\\u202eslug" in result.output


# --- the command line ---------------------------------------------------------------


def test_report_json_is_terminal_safe_and_lossless(world):
    result = run("report", world["db"])
    assert result.exit_code == 0
    assert_terminal_safe(result.output)
    assert "\u202e" not in result.output and "\\u202e" in result.output
    db = schema.connect(str(world["db"]))
    try:
        assert json.loads(result.output) == report.build_report(db)
    finally:
        db.conn.close()


def test_rules_output_naming_hostile_orgs_is_terminal_safe(db_path):
    added = run("rules", db_path, "--add", "hostile_org", "--filter", '{"org_id": "9003"}',
                "--description", "\x1b[2Jclears \u202e", "--actor", "analyst")
    assert added.exit_code == 0, added.output
    listed = run("rules", db_path, "--list")
    applied = run("rules", db_path, "--apply", "hostile_org", "--actor", "analyst")
    undone = run("rules", db_path, "--undo", "hostile_org", "--actor", "analyst")
    for result in (added, listed, applied, undone):
        assert result.exit_code == 0, result.output
        assert_terminal_safe(result.output)
    assert "org 9003 (\\x1b[31mred\\x1b[0m\\u202eslug): exposed -> cleared" in applied.output
    assert "org 9003 (\\x1b[31mred\\x1b[0m\\u202eslug): cleared -> exposed" in undone.output
    assert "\\x1b[2Jclears \\u202e" in listed.output


def test_file_names_and_errors_are_terminal_safe(world, tmp_path):
    hostile = tmp_path / "evil\x1b]0;pwned\x07\u202e.jsonl"
    shutil.copy(world["files"]["jsonl"], hostile)
    db = tmp_path / "names.db"
    result = run("import-logs", db, hostile)
    assert result.exit_code == 0
    assert_terminal_safe(result.output)
    assert "evil\\x1b]0;pwned\\x07\\u202e.jsonl:" in result.output
    missing = run("import-logs", db, tmp_path / "gone\x1b[2J.log")
    assert missing.exit_code != 0
    assert_terminal_safe(missing.output)
    assert "gone\\x1b[2J.log" in missing.output


def test_safe_shows_controls_and_keeps_text():
    assert terminal.safe("a\x1b[31mb\x07\x00\x9b\u202e\u200b\nz\u00e9\u4e2d") == (
        "a\\x1b[31mb\\x07\\x00\\x9b\\u202e\\u200b\nz\u00e9\u4e2d"
    )
    assert terminal.safe("\U000e0041") == "\\U000e0041"
    text = json.dumps({"k": "\u202e\x9b\U000e0041é"}, ensure_ascii=False)
    assert json.loads(terminal.json_safe(text)) == {"k": "\u202e\x9b\U000e0041é"}
    assert_terminal_safe(terminal.json_safe(text))
