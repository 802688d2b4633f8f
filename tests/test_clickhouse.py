"""import-logs --from-clickhouse and clickhouse-scope, against a real ClickHouse server.

The server is Debian's clickhouse-server (18.16 works), started once per session as
a plain process (tests/clickhouse_server.py) in the Europe/Berlin time zone, so that
a time read in the server's zone instead of UTC shows up as a wrong figure.

The sample incident is loaded twice: from the files in sample_data/, the normal way,
and through ClickHouse: its stored requests are exported into a MergeTree table with
the jsonl column names and pulled back with --from-clickhouse into a database with
the same records and incident. Both must give the same report.
"""

from __future__ import annotations

import datetime
import json
import os
import sqlite3
from pathlib import Path

from test_sample_story import OUT_OF_SCOPE
import pytest
from click.testing import CliRunner
from conftest import build_sample_db
from hypothesis import given, settings
from hypothesis import strategies as st

from datasette_forensics import clickhouse, report, schema, timeparse
from datasette_forensics.derived import scope
from datasette_forensics.cli import cli
from datasette_forensics.errors import ForensicsError

from clickhouse_server import ClickHouseServer, find_binary, free_port

from conftest import import_or_skip_unless_ci  # noqa: E402

clickhouse_driver = import_or_skip_unless_ci("clickhouse_driver", "pip install clickhouse-driver")

TABLE = "logs"
COLUMNS = """
    id UInt64,
    timestamp DateTime,
    remote_addr String,
    http_user_agent String,
    request_method Nullable(String),
    request_uri String,
    status Nullable(UInt16),
    body_bytes_sent Nullable(UInt64),
    http_referer Nullable(String),
    token_id Nullable(String),
    org_id Nullable(String),
    auth_type Nullable(String),
    host Nullable(String),
    http_x_forwarded_for Nullable(String)
"""
# What a pull selects: everything but the SQLite id, which only the scope test needs.
PULL = (
    "SELECT timestamp, remote_addr, http_user_agent, request_method, request_uri, status,"
    " body_bytes_sent, http_referer, token_id, org_id, auth_type, host, http_x_forwarded_for FROM logs"
)

EXPORT = """
select r.id, r.ts, i.ip, a.ua, r.method, u.uri, r.status, r.bytes, rf.referer,
    r.token_id, r.org_id, r.extra
from requests r
join signatures g on g.id = r.sig_id
join ips i on i.id = g.ip_id
join user_agents a on a.id = g.ua_id
join uris u on u.id = r.uri_id
left join referers rf on rf.id = r.referer_id
order by r.id
"""


# --- the server and the data ---------------------------------------------------------


@pytest.fixture(scope="session")
def ch_server(tmp_path_factory):
    """A ClickHouse server for the session, in Europe/Berlin; skipped if not installed."""
    if find_binary() is None:
        reason = "clickhouse-server is not installed (apt-get install clickhouse-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    server = ClickHouseServer(tmp_path_factory.mktemp("clickhouse"), timezone="Europe/Berlin")
    server.start(timeout=60)
    yield server
    server.stop()


def _export_rows(db_path: Path) -> list[tuple]:
    conn = sqlite3.connect(db_path)
    rows = []
    for rid, ts, ip, ua, method, uri, status, size, referer, token_id, org_id, extra in conn.execute(EXPORT):
        extra = json.loads(extra) if extra else {}
        rows.append(
            (rid, ts // 1000, ip, ua, method, uri, status, size, referer, token_id, org_id,
             extra.get("auth_type"), extra.get("host"), extra.get("xff"))
        )
    conn.close()
    return rows


@pytest.fixture(scope="session")
def ch_sample(ch_server, sample_db_template):
    """The sample's stored requests in ClickHouse table ``logs``; returns the rows."""
    client = ch_server.client()
    client.execute(f"DROP TABLE IF EXISTS {TABLE}")
    client.execute(f"CREATE TABLE {TABLE} ({COLUMNS}) ENGINE = MergeTree ORDER BY (timestamp, id)")
    rows = _export_rows(sample_db_template)
    assert len(rows) == 166  # sample_data/README.md: 166 requests
    client.execute(f"INSERT INTO {TABLE} VALUES", rows)
    return rows


def _records_db(path: Path):
    """The sample's records and incident, no logs."""
    return build_sample_db(path, with_logs=False)


def _invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def _pull(db: Path, url: str, *args: str):
    return _invoke("import-logs", db, "--from-clickhouse", url, *args)


def _without_rejected(rep: dict) -> dict:
    rep = json.loads(json.dumps(rep))
    del rep["funnel"]["lines_rejected"]
    return rep


def _batches(path: Path) -> list[tuple]:
    conn = sqlite3.connect(path)
    rows = conn.execute(
        "select id, source, format, status, lines_read, lines_imported, lines_rejected, lines_duplicate,"
        " command from import_batches order by id"
    ).fetchall()
    conn.close()
    return rows


# --- the whole story through ClickHouse ------------------------------------------------

pytestmark = pytest.mark.clickhouse


def test_pull_gives_the_same_report_as_the_files(ch_server, ch_sample, sample_db_path, tmp_path):
    """The sample through ClickHouse reports exactly what the files report.

    Only funnel.lines_rejected differs: the 3 broken lines of the files were
    rejected on import and never became rows, so they never reached ClickHouse.
    """
    files_db = schema.connect(str(sample_db_path))
    ch_path = tmp_path / "ch.db"
    _records_db(ch_path).conn.close()
    result = _pull(ch_path, ch_server.url, "--query", PULL)
    assert result.exit_code == 0, result.output
    assert result.output == (
        f"{ch_server.url}: 166 rows read = 166 imported + 0 rejected + 0 duplicates\n"
    )
    ch_db = schema.connect(str(ch_path))
    files_report, ch_report = report.build_report(files_db), report.build_report(ch_db)
    assert files_report["funnel"]["lines_rejected"] == 3
    assert ch_report["funnel"]["lines_rejected"] == 0
    assert _without_rejected(ch_report) == _without_rejected(files_report)
    assert ch_report["funnel"] == {
        "lines_rejected": 0, "requests": 166, "in_scope": 123, "unexplained": 123, "out_of_scope": OUT_OF_SCOPE,
    }

    # And after every rule: the same statuses, signatures and rule order.
    for path in (sample_db_path, ch_path):
        applied = _invoke("rules", path, "--apply", "all")
        assert applied.exit_code == 0, applied.output
    files_report = report.build_report(schema.connect(str(sample_db_path)))
    ch_report = report.build_report(schema.connect(str(ch_path)))
    assert _without_rejected(ch_report) == _without_rejected(files_report)
    assert ch_report["funnel"]["unexplained"] == 26
    assert [o["org_id"] for o in ch_report["orgs"] if o["status"] == "exposed"] == ["101", "107", "108"]

    # Provenance: the batch names the server (no credentials) and the query.
    (batch,) = _batches(ch_path)
    assert batch[1:] == (f"clickhouse://127.0.0.1:{ch_server.tcp_port}/default", "clickhouse", "complete",
                         166, 166, 0, 0, PULL)


def test_pulling_again_adds_nothing(ch_server, ch_sample, tmp_path):
    path = tmp_path / "again.db"
    _records_db(path).conn.close()
    first = _pull(path, ch_server.url, "--table", TABLE)
    assert first.exit_code == 0, first.output
    before = report.build_report(schema.connect(str(path)))
    # The same rows, columns in another order and under other names: still duplicates.
    again = _pull(
        path, ch_server.url,
        "--query", "SELECT request_uri AS u, remote_addr AS ip, id, timestamp, http_user_agent, request_method,"
        " status, body_bytes_sent, http_referer, token_id, org_id, auth_type, host, http_x_forwarded_for"
        " FROM logs ORDER BY id DESC",
        "--map", "request_uri=u", "--map", "remote_addr=ip",
    )
    assert again.exit_code == 0, again.output
    assert again.output.endswith("166 rows read = 0 imported + 0 rejected + 166 duplicates\n")
    assert report.build_report(schema.connect(str(path))) == before
    batches = _batches(path)
    assert [b[4:8] for b in batches] == [(166, 166, 0, 0), (166, 0, 0, 166)]
    # Two identical rows in one pull are two requests (as two identical lines in a file):
    # the database holds one copy, so the first is a duplicate and the second is new.
    twice = _pull(path, ch_server.url, "--query", "SELECT * FROM logs WHERE id = 1 UNION ALL SELECT * FROM logs WHERE id = 1")
    assert twice.output.endswith("2 rows read = 1 imported + 0 rejected + 1 duplicates\n"), twice.output
    other = tmp_path / "twice.db"
    fresh = _pull(other, ch_server.url, "--query", "SELECT * FROM logs WHERE id = 1 UNION ALL SELECT * FROM logs WHERE id = 1")
    assert fresh.output.endswith("2 rows read = 2 imported + 0 rejected + 0 duplicates\n"), fresh.output


def _sqlite_candidates(db) -> set[int]:
    incident = scope.get_incident(db)
    sql = scope.CANDIDATES.format(restrict="", requests="requests r")
    return {row[0] for row in db.execute(sql, {"introduced": incident["introduced_ms"], "patched": incident["patched_ms"]})}


def test_clickhouse_scope_selects_the_sqlite_candidates(ch_server, ch_sample, sample_db_path, tmp_path):
    """The first cut in ClickHouse keeps exactly SQLite's candidates, plus post-patch evidence."""
    result = _invoke("clickhouse-scope", sample_db_path, "--table", TABLE)
    assert result.exit_code == 0, result.output
    sql = result.output
    assert "match(splitByChar('?', ifNull(`request_uri`, ''))[1], '^/api/0/organizations/(?P<org>[^/]+)/')" in sql
    # Times as epoch seconds: the driver's naive datetimes would be in the server's zone.
    got = dict(ch_server.client().execute(f"SELECT id, toUInt32(timestamp) FROM ({sql})"))
    got_ids = set(got)

    db = schema.connect(str(sample_db_path))
    incident = scope.get_incident(db)
    in_window = {rid for rid, t in got.items() if t * 1000 < incident["patched_ms"]}
    candidates = _sqlite_candidates(db)
    assert in_window == candidates
    # 123 in scope, `doesnotexist` (unknown org) and the 16 without a live integration.
    assert len(candidates) == 140
    in_scope = {row[0] for row in db.execute("select request_id from scoped")}
    assert len(in_scope) == 123 and in_scope <= got_ids
    # The rest are the 2xx requests at or after the patch that name an org.
    post_patch = {
        row[0]
        for row in db.execute(
            """select r.id from requests r join uris u on u.id = r.uri_id join paths p on p.id = u.path_id
            where r.ts >= ? and r.status between 200 and 299 and (r.org_id is not null or p.slug is not null)""",
            [incident["patched_ms"]],
        )
    }
    assert post_patch and got_ids - in_window == post_patch
    # Times agree too: ClickHouse's instants are SQLite's, to the second the export kept.
    for rid, ts in db.execute("select id, ts from requests"):
        if rid in got:
            assert got[rid] == ts // 1000


def test_two_stage_workflow_gives_the_same_statuses(ch_server, ch_sample, sample_db_path, tmp_path):
    """clickhouse-scope | import-logs --query: the drill-down database reaches the same verdicts."""
    sql = _invoke("clickhouse-scope", sample_db_path, "--table", TABLE).output
    drill = tmp_path / "drill.db"
    _records_db(drill).conn.close()
    pulled = _pull(drill, ch_server.url, "--query", sql)
    assert pulled.exit_code == 0, pulled.output
    for path in (sample_db_path, drill):
        assert _invoke("rules", path, "--apply", "all").exit_code == 0
    full = report.build_report(schema.connect(str(sample_db_path)))
    cut = report.build_report(schema.connect(str(drill)))
    # Everything but the request count: only candidates were pulled.
    assert cut["funnel"]["requests"] < full["funnel"]["requests"]
    for key in ("incident", "orgs", "cross_tenant_signatures", "rules_applied"):
        assert cut[key] == full[key], key
    assert cut["funnel"]["in_scope"] == full["funnel"]["in_scope"] == 123
    assert cut["funnel"]["unexplained"] == full["funnel"]["unexplained"] == 26


# --- conversions ---------------------------------------------------------------------


def test_time_columns_are_read_as_utc(ch_server, tmp_path):
    """DateTime without a zone (server in Europe/Berlin, incl. the repeated DST hour),
    DateTime with a zone, ISO text, nginx time_local and epoch seconds."""
    # 2020-10-25 00:30Z and 01:30Z are both 02:30 on a Berlin wall clock.
    cases = [1593561600, 1603585800, 1603589400, 1595253839]
    for zone, offset in (("", 0), (", 'America/New_York'", 10)):
        query = " UNION ALL ".join(
            f"SELECT {n + offset} AS id, '192.0.2.1' AS remote_addr, '/x' AS request_uri, 200 AS status,"
            f" toDateTime({s}{zone}) AS timestamp"
            for n, s in enumerate(cases)
        )
        result = _pull(tmp_path / "times.db", ch_server.url, "--query", query)
        assert result.exit_code == 0, result.output
    conn = sqlite3.connect(tmp_path / "times.db")
    stored = sorted(conn.execute("select json_extract(extra, '$.id'), ts from requests"))
    assert stored == sorted([(n, s * 1000) for n, s in enumerate(cases)] + [(n + 10, s * 1000) for n, s in enumerate(cases)])

    other = tmp_path / "texts.db"
    result = _pull(
        other, ch_server.url, "--query",
        "SELECT '192.0.2.1' AS remote_addr, '/x' AS request_uri, '2020-07-18T09:12:44+02:00' AS time_iso8601,"
        " 200 AS status UNION ALL SELECT '192.0.2.1', '/y', '18/Jul/2020:09:12:44 +0000', 200"
        " UNION ALL SELECT '192.0.2.1', '/z', '1595063564.123', 200",
    )
    # One column takes one name: the 2nd and 3rd rows also land in time_iso8601, which reads them all.
    assert result.exit_code == 0, result.output
    conn = sqlite3.connect(other)
    assert sorted(r[0] for r in conn.execute("select ts from requests")) == sorted(
        [1595056364000, 1595063564000, 1595063564123]
    )


def test_unconvertible_rows_are_rejected_with_the_row_as_json(ch_server, tmp_path):
    path = tmp_path / "bad.db"
    query = (
        "SELECT '192.0.2.1' AS remote_addr, '/ok' AS request_uri, toDateTime(1594728000) AS timestamp, '200' AS status"
        " UNION ALL SELECT '', '/no-ip', toDateTime(1594728000), '200'"
        " UNION ALL SELECT '192.0.2.1', '/bad-status', toDateTime(1594728000), 'OK'"
        " UNION ALL SELECT '192.0.2.1', '', toDateTime(1594728000), '200'"
    )
    result = _pull(path, ch_server.url, "--query", query)
    assert result.exit_code == 0, result.output
    assert result.output.endswith("4 rows read = 1 imported + 3 rejected + 0 duplicates\n")
    conn = sqlite3.connect(path)
    rejected = conn.execute("select raw, reason from rejected_lines order by raw").fetchall()
    assert {json.loads(raw)["request_uri"]: reason for raw, reason in rejected} == {
        "/no-ip": "missing field remote_addr",
        "/bad-status": "bad status: 'OK'",
        "": "missing field request_uri",
    }
    for raw, _ in rejected:  # canonical JSON: sorted keys, compact, times in UTC
        fields = json.loads(raw)
        assert raw == json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert fields["timestamp"] == "2020-07-14T12:00:00Z"
    # A rejected row seen again is a duplicate, not a second rejection.
    again = _pull(path, ch_server.url, "--query", query)
    assert again.output.endswith("4 rows read = 0 imported + 0 rejected + 4 duplicates\n")


def test_map_renames_columns_and_unknown_ones_are_kept_as_extra(ch_server, tmp_path):
    path = tmp_path / "map.db"
    result = _pull(
        path, ch_server.url, "--query",
        "SELECT '198.51.100.7' AS client_ip, 'GET' AS verb, '/api/0/projects/acme/?q=1' AS url,"
        " toDateTime(1594728000) AS event_time, 201 AS code, 'eu-1' AS region",
        "--map", "remote_addr=client_ip", "--map", "request_method=verb", "--map", "request_uri=url",
        "--map", "timestamp=event_time", "--map", "status=code",
    )
    assert result.exit_code == 0, result.output
    conn = sqlite3.connect(path)
    row = conn.execute("select ip, method, uri, path, ts, status, line_no from requests_view").fetchone()
    assert row == ("198.51.100.7", "GET", "/api/0/projects/acme/?q=1", "/api/0/projects/acme/", 1594728000000, 201, 1)
    assert json.loads(conn.execute("select extra from requests").fetchone()[0]) == {"region": "eu-1"}


def test_a_failure_mid_stream_keeps_the_rows_before_and_marks_the_batch_incomplete(ch_server, tmp_path):
    path = tmp_path / "broken.db"
    query = (
        "SELECT concat('192.0.2.', toString(number % 200)) AS remote_addr, concat('/p/', toString(number)) AS request_uri,"
        " toDateTime(1594728000 + number) AS timestamp, 200 AS status, throwIf(number = 250000) AS boom"
        " FROM numbers(300000)"
    )
    result = _pull(path, ch_server.url, "--query", query)
    assert result.exit_code == 1
    assert "failed after row" in result.output and "marked incomplete" in result.output
    assert "throwIf" in result.output
    (batch,) = _batches(path)
    status, read, imported = batch[3], batch[4], batch[5]
    assert status == "incomplete" and read == imported and 0 < read < 250000


# --- errors: one sentence, non-zero exit, database unchanged -----------------------------


def test_connection_refused(tmp_path):
    port = free_port()
    path = tmp_path / "never.db"
    result = _pull(path, f"clickhouse://127.0.0.1:{port}/default", "--query", "SELECT 1")
    assert result.exit_code == 1
    assert result.output == f"Error: Cannot connect to ClickHouse at 127.0.0.1:{port}: connection refused.\n"
    assert not path.exists()


def test_unknown_database_or_user(ch_server, tmp_path):
    path = tmp_path / "never.db"
    address = f"127.0.0.1:{ch_server.tcp_port}"
    result = _pull(path, f"clickhouse://{address}/nosuch", "--query", "SELECT 1")
    assert result.output == f"Error: Cannot connect to ClickHouse at {address}: Database nosuch doesn't exist.\n"
    result = _pull(path, f"clickhouse://mallory:secret@{address}/default", "--query", "SELECT 1")
    assert result.output == f"Error: Cannot connect to ClickHouse at {address}: Unknown user mallory.\n"
    assert "secret" not in result.output
    assert not path.exists()


def test_bad_query_gives_the_servers_first_line(ch_server, ch_sample, sample_db_path):
    before = _batches(sample_db_path)
    result = _pull(sample_db_path, ch_server.url, "--query", "SELECT nosuch FROM logs")
    assert result.exit_code == 1
    assert result.output.startswith("Error: ClickHouse rejected the query: ")
    assert "nosuch" in result.output and "Stack trace" not in result.output
    assert result.output.count("\n") == 1
    assert _batches(sample_db_path) == before


def test_missing_mapped_column_is_named_with_the_available_ones(ch_server, ch_sample, tmp_path):
    path = tmp_path / "never.db"
    result = _pull(path, ch_server.url, "--table", TABLE, "--map", "remote_addr=client_ip")
    assert result.exit_code == 1
    assert result.output.startswith(
        "Error: The ClickHouse result has no column client_ip (--map remote_addr=client_ip); "
        "its columns are: id, timestamp, remote_addr, http_user_agent,"
    )
    assert not path.exists()
    result = _pull(path, ch_server.url, "--query", "SELECT id, timestamp FROM logs")
    assert result.output.startswith("Error: The ClickHouse result has no remote_addr column; its columns are: id, timestamp")
    assert not path.exists()


def test_pulls_are_read_only(ch_server, tmp_path):
    client = ch_server.client()
    client.execute("CREATE TABLE IF NOT EXISTS keep_me (x UInt8) ENGINE = Memory")
    result = _pull(tmp_path / "never.db", ch_server.url, "--query", "DROP TABLE keep_me")
    assert result.exit_code == 1 and "readonly" in result.output
    assert client.execute("EXISTS TABLE keep_me") == [(1,)]


def test_table_and_where(ch_server, ch_sample, tmp_path):
    path = tmp_path / "where.db"
    result = _pull(path, ch_server.url, "--table", TABLE, "--where", "remote_addr = '192.0.2.66'")
    assert result.exit_code == 0, result.output
    expected = sum(1 for row in ch_sample if row[2] == "192.0.2.66")
    assert result.output.endswith(f"{expected} rows read = {expected} imported + 0 rejected + 0 duplicates\n")
    assert _batches(path)[0][-1] == "SELECT * FROM `logs` WHERE (remote_addr = '192.0.2.66')"


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "Give the log FILES to import, or --from-clickhouse URL with --query or --table."),
        (["x.log", "--from-clickhouse", "clickhouse://h"], "Give either log FILES or --from-clickhouse, not both."),
        (["--from-clickhouse", "clickhouse://h"], "--from-clickhouse needs exactly one of --query SQL or --table T."),
        (["--from-clickhouse", "clickhouse://h", "--query", "q", "--table", "t"],
         "--from-clickhouse needs exactly one of --query SQL or --table T."),
        (["--from-clickhouse", "clickhouse://h", "--query", "q", "--where", "x"],
         "--where only goes with --table (put the condition in your --query)."),
        (["--query", "SELECT 1"], "--query, --table, --where and --map only go with --from-clickhouse URL."),
        (["--from-clickhouse", "clickhouse://h", "--table", "t", "--map", "ip=client_ip"],
         "--map ip=client_ip: 'ip' is not a jsonl field name"),
        (["--from-clickhouse", "http://h:8123", "--table", "t"], "'http://h:8123' is not a ClickHouse URL"),
        (["--from-clickhouse", "clickhouse://h", "--table", "t", "--map", "host=x", "--map", "remote_addr=x"],
         "--map reads column x twice (as host and as remote_addr)."),
    ],
)
def test_option_errors_are_one_sentence(tmp_path, args, message):
    path = tmp_path / "never.db"
    result = _invoke("import-logs", path, *args)
    assert result.exit_code != 0
    assert result.output.startswith("Error: " + message), result.output
    assert result.output.count("\n") == 1
    assert not path.exists()


def test_clickhouse_scope_needs_an_incident(tmp_path):
    path = tmp_path / "empty.db"
    schema.connect(str(path)).conn.close()
    result = _invoke("clickhouse-scope", path)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {path} has no incident yet: set one with datasette-forensics incident {path} FILE.toml.\n"
    )
    missing = _invoke("clickhouse-scope", tmp_path / "nope.db")
    assert missing.output == f"Error: No such database: {tmp_path / 'nope.db'}\n"


# --- the scope SQL, piece by piece ----------------------------------------------------------


def test_scope_sql_literals_survive_clickhouse(ch_server):
    client = ch_server.client()
    for text in ["^/api/0/", r"^/a\d+/(?P<org>[^/']+)/", "it's", "back\\slash\\", "\\'", "é/ü"]:
        assert client.execute(f"SELECT {clickhouse.quote_string(text)}") == [(text,)]


def test_re2_patterns():
    assert clickhouse.re2_pattern("^/api/0/(?P<org>[^/]+)/") == "^/api/0/(?P<org>[^/]+)/"
    assert clickhouse.re2_pattern(r"^/x\Z") == r"^/x\z"
    assert clickhouse.re2_pattern(r"[\Z]") == r"[\Z]"
    assert clickhouse.re2_pattern(r"(?i)^/API/") == r"(?i)^/API/"
    for bad, what in [
        ("^/api/(?!internal)", "negative lookahead"),
        (r"^/(a)\1", "backreference"),
        ("^(?P<org>x)(?P=org)", "named backreference"),
        ("(?x) ^/api", "inline flag"),
    ]:
        with pytest.raises(ForensicsError, match=what):
            clickhouse.re2_pattern(bad)


def test_scope_sql_matches_like_python(ch_server):
    """RE2 in ClickHouse and Python's re agree on the sample's regexes, on tricky paths."""
    patterns = ["^/api/0/", "^/api/0/organizations/(?P<org>[^/]+)/", "^/api/0/projects/(?P<org>[^/]+)/"]
    paths = [
        "/api/0/", "/api/0/organizations/acme/", '/api/0/organizations/acme/"><img src=x onerror=alert(1)>',
        "/api/0/organizations/", "/api/0/organizations//", "/API/0/", "/x/api/0/", "/api/0/projects/a%2Fb/x",
        "/api/0/organizations/é/", "",
    ]
    import re

    client = ch_server.client()
    for pattern in patterns:
        literal = clickhouse.quote_string(clickhouse.re2_pattern(pattern))
        for path in paths:
            (got,) = client.execute(f"SELECT match({clickhouse.quote_string(path)}, {literal})")[0]
            assert bool(got) == bool(re.search(pattern, path)), (pattern, path)


def test_scope_sql_time_bounds_are_half_open_on_whole_seconds():
    incident = {
        "name": 'x"\nDROP TABLE logs', "introduced_ms": 1593561600000, "patched_ms": 1595253840500,
        "scope_paths": ["^/api/"], "org_routes": ["^/o/(?P<org>[^/]+)/"],
    }
    sql = clickhouse.scope_sql(incident, "db.logs", {"timestamp": "event_time"}, org_id=False)
    assert "`event_time` >= toDateTime(1593561600) AND `event_time` < toDateTime(1595253841)" in sql
    assert "FROM `db`.`logs`" in sql and "org_id" not in sql
    assert "\nDROP TABLE" not in sql  # the incident name cannot leave its comment
    assert "`msec` >= 1593561600.0" in clickhouse.scope_sql(incident, "t", {"msec": "msec"})


# --- the fast row path agrees with the reference ----------------------------------------------

_COLUMNS = [
    ("timestamp", "DateTime"),
    ("remote_addr", "String"),
    ("http_user_agent", "Nullable(String)"),
    ("request_uri", "String"),
    ("request_method", "LowCardinality(String)"),
    ("status", "UInt16"),
    ("body_bytes_sent", "Nullable(UInt64)"),
    ("token_id", "Nullable(String)"),
    ("org_id", "Nullable(UInt32)"),
    ("msec", "Nullable(Float64)"),
    ("region", "String"),
    ("tags", "Array(String)"),
    ('we%s"ird\\', "Enum8('a' = 1)"),
]
_text = st.one_of(st.sampled_from(["", "-", "[::1]", "/api/0/", "é"]), st.text(max_size=12))
_values = st.tuples(
    st.datetimes(
        min_value=datetime.datetime(1960, 1, 1), max_value=datetime.datetime(2300, 1, 1),
        timezones=st.sampled_from([None, datetime.timezone.utc, datetime.timezone(datetime.timedelta(hours=-5))]),
    ),
    st.one_of(_text, st.binary(max_size=4)),
    st.one_of(st.none(), _text),
    st.one_of(_text, st.binary(max_size=4)),
    _text,
    st.integers(0, 65535),
    st.one_of(st.none(), st.integers(0, 2**64 - 1)),
    st.one_of(st.none(), _text),
    st.one_of(st.none(), st.integers(0, 2**32 - 1)),
    st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False), st.just(float("nan"))),
    _text,
    st.lists(_text, max_size=2),
    _text,
)


def _unusual(columns, row) -> bool:
    """A value the fast path leaves to the general way: bytes for a String, a time out of range."""
    for (_, ch_type), value in zip(columns, row):
        if isinstance(value, bytes) and "String" in ch_type:
            return True
        if isinstance(value, datetime.datetime):
            if value.tzinfo is not None:
                value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
            ms = round((value - datetime.datetime(1970, 1, 1)) / datetime.timedelta(milliseconds=1))
            if not timeparse.MIN_MS <= ms < timeparse.MAX_MS:
                return True
    return False


@settings(max_examples=400, deadline=None)
@given(row=_values, order=st.permutations(range(len(_COLUMNS))))
def test_fast_path_equals_jsonl_from_fields(row, order):
    columns = [_COLUMNS[i] for i in order]
    row = tuple(row[i] for i in order)
    converter = clickhouse.RowConverter(columns, {})
    raw, record, reason = converter.convert(row)
    assert (raw, record, reason) == converter.convert_general(row)
    # The fast path itself, not the fallback, converted every row it is meant for: it
    # leaves only a String the driver gave as bytes, or a time out of range, to the
    # general way, and raises nothing else.
    try:
        line, fast_record, fast_reason = converter._fast(row)
    except clickhouse._Unusual:
        assert _unusual(columns, row), f"the fast path gave up on an ordinary row {row!r}"
    else:  # (a time out of range is only read once the row is not rejected before)
        assert (line.encode(), fast_record, fast_reason) == (raw, record, reason)
    # The raw line is the canonical JSON whatever the column order.
    fields = converter.fields(row)
    assert raw == json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_a_fast_path_defect_is_not_hidden_by_the_fallback():
    """Only _Unusual sends a row the general way: any other error in the fast path stops
    the conversion, so a broken fast path cannot pass the tests by falling back."""
    converter = clickhouse.RowConverter(_COLUMNS[:6], {})
    row = (datetime.datetime(2020, 7, 14, 12), "192.0.2.1", "curl/7.68.0", "/api/0/", "GET", 200)
    line, record, reason = converter._fast(row)
    assert record["ip"] == "192.0.2.1" and record["status"] == 200 and reason is None

    def broken(row):
        raise TypeError("a defect")

    converter._fast = broken
    with pytest.raises(TypeError, match="a defect"):
        converter.convert(row)
