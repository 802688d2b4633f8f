"""Account records (MODEL §1.2): import, validation, re-import, the sqlite-utils command."""

from __future__ import annotations

import gzip
import json
import sqlite3

import pytest
from click.testing import CliRunner

from datasette_forensics import records, schema
from datasette_forensics.cli import cli
from datasette_forensics.errors import ForensicsError

# One sample per kind: CSV text, and rows as they must be stored (sorted by key).
SAMPLES = {
    "orgs": (
        "id,slug,name,created_at,contact_email\n"
        "12,acme,Acme Corp,2019-03-04T10:00:00Z,sec@acme.example\n"
        "007,globex,,,\n",
        [
            {"id": "007", "slug": "globex", "name": None, "created_at": None, "contact_email": None},
            {"id": "12", "slug": "acme", "name": "Acme Corp",
             "created_at": "2019-03-04T10:00:00.000Z", "contact_email": "sec@acme.example"},
        ],
    ),
    "org_slugs": (
        "org_id,slug,valid_from,valid_to\n"
        "102,globex,2018-03-01T00:00:00Z,2020-07-10 11:30:00+02:00\n"
        "103,globex,2020-07-14T12:00:00Z,\n",
        [
            {"org_id": "102", "slug": "globex", "valid_from": "2018-03-01T00:00:00.000Z",
             "valid_to": "2020-07-10T09:30:00.000Z"},
            {"org_id": "103", "slug": "globex", "valid_from": "2020-07-14T12:00:00.000Z", "valid_to": None},
        ],
    ),
    "integrations": (
        "id,org_id,name,created_at,deleted_at\n"
        "501,101,CI notifier,2020-01-15T09:00:00Z,\n"
        "502,102,Issue sync,1572775200,18/Jul/2020:09:12:44 +0000\n",
        [
            {"id": "501", "org_id": "101", "name": "CI notifier",
             "created_at": "2020-01-15T09:00:00.000Z", "deleted_at": None},
            {"id": "502", "org_id": "102", "name": "Issue sync",
             "created_at": "2019-11-03T10:00:00.000Z", "deleted_at": "2020-07-18T09:12:44.000Z"},
        ],
    ),
    "tokens": (
        "id,org_id,integration_id,created_at,revoked_at\n"
        "701,101,501,2020-01-15T09:00:00Z,\n"
        "702,102,,,\n",
        [
            {"id": "701", "org_id": "101", "integration_id": "501",
             "created_at": "2020-01-15T09:00:00.000Z", "revoked_at": None},
            {"id": "702", "org_id": "102", "integration_id": None, "created_at": None, "revoked_at": None},
        ],
    ),
    "users": (
        "id,email,name,is_staff\n"
        "201,alice@acme.example,Alice,YES\n"
        "202,bob@example.com,,False\n"
        "203,carol@example.com,Carol,\n",
        [
            {"id": "201", "email": "alice@acme.example", "name": "Alice", "is_staff": 1},
            {"id": "202", "email": "bob@example.com", "name": None, "is_staff": 0},
            {"id": "203", "email": "carol@example.com", "name": "Carol", "is_staff": None},
        ],
    ),
    "memberships": (
        "user_id,org_id,role,joined_at,left_at\n"
        "201,101,admin,2019-06-01,\n"
        "202,109,,2019-02-01T00:00:00Z,2020-07-15T00:00:00Z\n",
        [
            {"user_id": "201", "org_id": "101", "role": "admin",
             "joined_at": "2019-06-01T00:00:00.000Z", "left_at": None},
            {"user_id": "202", "org_id": "109", "role": None,
             "joined_at": "2019-02-01T00:00:00.000Z", "left_at": "2020-07-15T00:00:00.000Z"},
        ],
    ),
    "sessions": (
        "user_id,ip,user_agent,first_seen,last_seen\n"
        '201,198.51.100.20,"Mozilla/5.0 (X11; Linux x86_64) Firefox/78.0 ",2020-06-22T08:01:00Z,1595322000\n'
        "202,2001:db8::7,,2020-06-25 11:00:00+02:00,2020-07-14 23:59:00Z\n",
        [
            {"user_id": "201", "ip": "198.51.100.20", "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/78.0 ",
             "first_seen": "2020-06-22T08:01:00.000Z", "last_seen": "2020-07-21T09:00:00.000Z"},
            {"user_id": "202", "ip": "2001:db8::7", "user_agent": "",
             "first_seen": "2020-06-25T09:00:00.000Z", "last_seen": "2020-07-14T23:59:00.000Z"},
        ],
    ),
    "partners": (
        "name,cidr,user_agent_pattern\n"
        "Clubhouse,203.0.113.7/26,^Apache-HttpClient/4\\.5\n"
        "Clubhouse,2001:DB8:C1AB::/48,\n",
        [
            {"name": "Clubhouse", "cidr": "2001:db8:c1ab::/48", "user_agent_pattern": None},
            {"name": "Clubhouse", "cidr": "203.0.113.0/26", "user_agent_pattern": "^Apache-HttpClient/4\\.5"},
        ],
    ),
    "partner_orgs": (
        "partner,org_id,authorized_at,revoked_at\n"
        "Clubhouse,106,2020-03-01T00:00:00Z,\n"
        "Clubhouse,107,,2020-07-12 02:00:00+02:00\n",
        [
            {"partner": "Clubhouse", "org_id": "106", "authorized_at": "2020-03-01T00:00:00.000Z",
             "revoked_at": None},
            {"partner": "Clubhouse", "org_id": "107", "authorized_at": None,
             "revoked_at": "2020-07-12T00:00:00.000Z"},
        ],
    ),
    "ip_info": (
        "cidr,asn,provider,rdns\n"
        "192.0.2.0/24,AS64500,ExampleCloud,\n"
        "192.0.2.66,AS64500,ExampleCloud,vps-66.example\n",
        [
            {"cidr": "192.0.2.0/24", "asn": "AS64500", "provider": "ExampleCloud", "rdns": None},
            {"cidr": "192.0.2.66/32", "asn": "AS64500", "provider": "ExampleCloud", "rdns": "vps-66.example"},
        ],
    ),
}


def csv_to_jsonl(text: str) -> str:
    """The same rows as JSON lines, leaving empty optional values out (as an exporter would)."""
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(text)))
    return "".join(json.dumps({k: v for k, v in row.items() if v != "" or k == "user_agent"}) + "\n" for row in rows)


@pytest.fixture
def db_path(tmp_path):
    path = tmp_path / "forensics.db"
    schema.connect(str(path)).conn.close()
    return str(path)


def run(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def table(db_path: str, name: str) -> list[dict]:
    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    try:
        return sorted(
            (dict(r) for r in conn.execute(f'select * from "{name}"')),
            key=lambda r: json.dumps([r[c] for c in records.KINDS[name].key] if name in records.KINDS else r),
        )
    finally:
        conn.close()


def dump(db_path: str) -> list[str]:
    conn = sqlite3.connect(db_path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def write(tmp_path, name: str, content) -> str:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return str(path)


def test_tables_match_kinds(db_path):
    conn = sqlite3.connect(db_path)
    for name, kind in records.KINDS.items():
        columns = [row[1] for row in conn.execute(f"pragma table_info({name})")]
        assert columns == list(kind.columns), name
        unique = [
            row[1] for row in conn.execute(f"pragma index_list({name})") if row[2]
        ]
        assert unique == [f"{name}_key"], name


@pytest.mark.parametrize("kind", sorted(SAMPLES))
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_every_kind_imports(db_path, tmp_path, kind, fmt):
    text, expected = SAMPLES[kind]
    content = text if fmt == "csv" else csv_to_jsonl(text)
    path = write(tmp_path, f"{kind}.{fmt}", content)
    result = run("import-records", db_path, kind, path)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{kind}: {len(expected)} added, 0 updated\n"
    stored = table(db_path, kind)
    assert stored == expected


def test_jsonl_detected_by_content_and_stdin(db_path):
    text, expected = SAMPLES["users"]
    result = run("import-records", db_path, "users", "-", input=csv_to_jsonl(text))
    assert result.exit_code == 0, result.output
    assert table(db_path, "users") == expected


def test_csv_from_stdin_and_gzip(db_path, tmp_path):
    text, expected = SAMPLES["orgs"]
    result = run("import-records", db_path, "orgs", "-", input=text)
    assert result.stdout == "orgs: 2 added, 0 updated\n"
    path = write(tmp_path, "orgs.csv.gz", gzip.compress(text.replace("Acme Corp", "Acme").encode()))
    result = run("import-records", db_path, "orgs", path)
    assert result.stdout == "orgs: 0 added, 1 updated\n", result.output
    assert [r["name"] for r in table(db_path, "orgs")] == [None, "Acme"]


def test_json_array_file(db_path, tmp_path):
    path = write(tmp_path, "users.json", json.dumps([{"id": 1, "email": "a@x"}, {"id": 2, "email": "b@x"}]))
    assert run("import-records", db_path, "users", path).stdout == "users: 2 added, 0 updated\n"
    assert [r["id"] for r in table(db_path, "users")] == ["1", "2"]


def test_csv_with_bom_and_crlf(db_path, tmp_path):
    path = write(tmp_path, "users.csv", "\ufeffid,email\r\n1,a@x\r\n".encode("utf-8"))
    assert run("import-records", db_path, "users", path).exit_code == 0
    assert table(db_path, "users") == [{"id": "1", "email": "a@x", "name": None, "is_staff": None}]


def test_extra_columns_kept(db_path, tmp_path):
    path = write(
        tmp_path, "orgs.csv",
        "id,slug,Plan,region_2\n1,acme,business,eu\n2,globex,,\n",
    )
    assert run("import-records", db_path, "orgs", path).exit_code == 0
    path = write(
        tmp_path, "orgs.jsonl",
        '{"id": "3", "slug": "initech", "plan": "free", "tags": ["a", "b"], "seats": 12}\n',
    )
    assert run("import-records", db_path, "orgs", path).exit_code == 0
    rows = {r["id"]: r for r in table(db_path, "orgs")}
    assert rows["1"]["plan"] == "business" and rows["1"]["region_2"] == "eu"
    assert rows["2"]["plan"] is None and rows["2"]["tags"] is None
    assert rows["3"]["plan"] == "free"
    assert json.loads(rows["3"]["tags"]) == ["a", "b"]
    assert rows["3"]["seats"] == "12"
    conn = sqlite3.connect(db_path)
    types = {row[1]: row[2] for row in conn.execute("pragma table_info(orgs)")}
    assert types["plan"] == types["tags"] == types["seats"] == "TEXT"


def test_reimport_counts_added_and_updated(db_path, tmp_path):
    first = "id,email,name,is_staff\n1,a@x,Ann,0\n2,b@x,Bob,0\n3,c@x,Cy,1\n"
    assert run("import-records", db_path, "users", write(tmp_path, "u1.csv", first)).stdout == (
        "users: 3 added, 0 updated\n"
    )
    # 1 unchanged (is_staff written differently), 2 changed, 3 loses its name, 4 new.
    second = "id,email,name,is_staff\n1,a@x,Ann,false\n2,b@x,Robert,0\n3,c@x,,yes\n4,d@x,Di,no\n"
    result = run("import-records", db_path, "users", write(tmp_path, "u2.csv", second))
    assert result.stdout == "users: 1 added, 2 updated\n"
    rows = {r["id"]: r for r in table(db_path, "users")}
    assert rows["1"] == {"id": "1", "email": "a@x", "name": "Ann", "is_staff": 0}
    assert rows["2"]["name"] == "Robert"
    assert rows["3"]["name"] is None and rows["3"]["is_staff"] == 1
    assert rows["4"]["name"] == "Di"
    # The same file again changes nothing.
    assert run("import-records", db_path, "users", write(tmp_path, "u3.csv", second)).stdout == (
        "users: 0 added, 0 updated\n"
    )


def test_jsonl_reimport_leaves_absent_keys_alone(db_path, tmp_path):
    run("import-records", db_path, "users", write(tmp_path, "u.csv", "id,email,name\n1,a@x,Ann\n"))
    result = run("import-records", db_path, "users", "-", input='{"id": 1, "email": "new@x"}\n')
    assert result.stdout == "users: 0 added, 1 updated\n"
    assert table(db_path, "users") == [{"id": "1", "email": "new@x", "name": "Ann", "is_staff": None}]


def test_composite_key_with_empty_part(db_path, tmp_path):
    text = "partner,org_id,authorized_at,revoked_at\nP,1,,\nP,1,2020-01-01,\n"
    assert run("import-records", db_path, "partner_orgs", write(tmp_path, "a.csv", text)).stdout == (
        "partner_orgs: 2 added, 0 updated\n"
    )
    text = "partner,org_id,authorized_at,revoked_at\nP,1,,2020-07-01\n"
    assert run("import-records", db_path, "partner_orgs", write(tmp_path, "b.csv", text)).stdout == (
        "partner_orgs: 0 added, 1 updated\n"
    )
    rows = table(db_path, "partner_orgs")
    assert sorted((r["authorized_at"] or "", r["revoked_at"] or "") for r in rows) == [
        ("", "2020-07-01T00:00:00.000Z"),
        ("2020-01-01T00:00:00.000Z", ""),
    ]


def test_ids_stay_strings(db_path):
    lines = '{"id": 12, "org_id": 7.0, "integration_id": "0012", "created_at": 1595063564}\n'
    assert run("import-records", db_path, "tokens", "-", input=lines).exit_code == 0
    conn = sqlite3.connect(db_path)
    row = conn.execute(
        "select id, typeof(id), org_id, typeof(org_id), integration_id, created_at from tokens"
    ).fetchone()
    assert row == ("12", "text", "7", "text", "0012", "2020-07-18T09:12:44.000Z")


def test_mixed_time_forms_normalised(db_path):
    lines = [
        {"user_id": "1", "org_id": "a", "joined_at": "2020-07-18T09:12:44Z"},
        {"user_id": "1", "org_id": "b", "joined_at": "2020-07-18 11:12:44+02:00"},
        {"user_id": "1", "org_id": "c", "joined_at": "18/Jul/2020:09:12:44 +0000"},
        {"user_id": "1", "org_id": "d", "joined_at": "1595063564"},
        {"user_id": "1", "org_id": "e", "joined_at": 1595063564},
        {"user_id": "1", "org_id": "f", "joined_at": 1595063564.5, "left_at": "[18/Jul/2020:11:12:44 +0100]"},
    ]
    text = "".join(json.dumps(line) + "\n" for line in lines)
    assert run("import-records", db_path, "memberships", "-", input=text).exit_code == 0
    rows = table(db_path, "memberships")
    assert [r["joined_at"] for r in rows] == ["2020-07-18T09:12:44.000Z"] * 5 + ["2020-07-18T09:12:44.500Z"]
    assert rows[-1]["left_at"] == "2020-07-18T10:12:44.000Z"


def test_library_api(tmp_path):
    db = schema.connect(str(tmp_path / "lib.db"))
    path = write(tmp_path, "orgs.csv", SAMPLES["orgs"][0])
    assert records.import_records(db, "orgs", path) == (2, 0)
    assert records.import_records(db, "orgs", path) == (0, 0)
    with pytest.raises(ForensicsError, match="Unknown record kind 'nope'"):
        records.import_records(db, "nope", path)


# Refusals: (kind, file name, content, what the message must say).
REFUSALS = [
    pytest.param("userz", "users.csv", "id,email\n1,a@x\n",
                 ["Unknown record kind 'userz'", "orgs, org_slugs, integrations", "ip_info"], id="unknown-kind"),
    pytest.param("users", "users.csv", "id,name\n1,x\n",
                 ["users.csv line 1: missing required column 'email'."], id="missing-column"),
    pytest.param("users", "users.csv", "id,email\n1,a@x\n2,\n",
                 ["users.csv line 3: required column 'email' is empty."], id="empty-required"),
    pytest.param("users", "users.jsonl", '{"id": "1", "email": "a@x"}\n\n{"id": "2", "name": "b"}\n',
                 ["users.jsonl line 3: missing required column 'email'."], id="jsonl-missing-key"),
    pytest.param("users", "users.jsonl", '{"id": "1", "email": "a@x"}\n{"id": "2", "email": " "}\n',
                 ["users.jsonl line 2: required column 'email' is empty."], id="jsonl-empty-key"),
    pytest.param("users", "users.jsonl", '{"id": "1", "email": "a@x"}\n{"id": null, "email": "b@x"}\n',
                 ["users.jsonl line 2: required column 'id' is empty."], id="jsonl-null-key"),
    pytest.param("memberships", "m.csv",
                 "user_id,org_id,joined_at\n1,2,2020-01-01\n1,3,yesterday\n",
                 ["m.csv line 3, column 'joined_at':", "'yesterday' is not a time"], id="bad-time"),
    pytest.param("integrations", "i.csv",
                 "id,org_id,created_at,deleted_at\n1,2,2020-01-01,2020-02-30T00:00:00Z\n",
                 ["i.csv line 2, column 'deleted_at':", "'2020-02-30T00:00:00Z' is not a time"], id="bad-date"),
    pytest.param("users", "users.csv", "id,email,is_staff\n1,a@x,TRUE\n2,b@x,maybe\n",
                 ["users.csv line 3, column 'is_staff':", "'maybe' is not a boolean"], id="bad-boolean"),
    pytest.param("partners", "p.csv", "name,cidr\nP,10.0.0.0/8\nQ,10.0.0.300/8\n",
                 ["p.csv line 3, column 'cidr':", "'10.0.0.300/8' is not an IP network"], id="bad-cidr"),
    pytest.param("ip_info", "ip.csv", "cidr,asn\nexample.com,AS1\n",
                 ["ip.csv line 2, column 'cidr':", "'example.com'"], id="bad-cidr-ipinfo"),
    pytest.param("partners", "p.csv", "name,cidr,user_agent_pattern\nP,10.0.0.0/8,python-requests/(2\n",
                 ["p.csv line 2, column 'user_agent_pattern':", "not a valid regular expression"], id="bad-regex"),
    pytest.param("users", "users.csv", "id,email\n7,a@x\n8,b@x\n7,c@x\n",
                 ["users.csv lines 2 and 4 have the same key (id '7')."], id="duplicate-key"),
    pytest.param("ip_info", "ip.csv", "cidr,asn\n10.0.0.1,AS1\n10.0.0.1/32,AS2\n",
                 ["ip.csv lines 2 and 3 have the same key (cidr '10.0.0.1/32')."], id="duplicate-normalised"),
    pytest.param("memberships", "m.jsonl",
                 '{"user_id": 1, "org_id": 2, "joined_at": "2020-01-01"}\n'
                 '{"user_id": "1", "org_id": "2", "joined_at": "2020-01-01T00:00:00Z"}\n',
                 ["m.jsonl lines 1 and 2 have the same key", "user_id '1', org_id '2'"], id="duplicate-composite"),
    pytest.param("users", "users.jsonl", '{"id": "1", "email": "a@x"}\n{"id": "2", "email": \n',
                 ["users.jsonl line 2 is not valid JSON"], id="bad-json"),
    pytest.param("users", "users.jsonl", '{"id": ' + "9" * 5000 + ', "email": "a@x"}\n',
                 ["users.jsonl line 1 is not valid JSON (Exceeds the limit (4300 digits)"], id="json-huge-number"),
    pytest.param("users", "users.json", '[{"id": ' + "9" * 5000 + ', "email": "a@x"}]',
                 ["users.json is not valid JSON (Exceeds the limit (4300 digits)"], id="json-array-huge-number"),
    pytest.param("users", "users.jsonl", '{"id": "1", "email": "a@x"}\n[1, 2]\n',
                 ["users.jsonl line 2 is not a JSON object."], id="json-not-object"),
    pytest.param("users", "users.jsonl", '{"id": {"x": 1}, "email": "a@x"}\n',
                 ["users.jsonl line 1, column 'id': expected a single value, not a JSON object."],
                 id="json-nested-id"),
    pytest.param("users", "users.csv", b"id,email\n1,a@x\n2,b\xff\xfe@x\n",
                 ["users.csv line 3 is not valid UTF-8 text."], id="not-utf8"),
    pytest.param("users", "users.csv", "id,email,first name\n1,a@x,Ann\n",
                 ["users.csv line 1: column name 'first name' is not allowed"], id="bad-column-name"),
    pytest.param("users", "users.csv", 'id,email,"x""); drop table users; --"\n1,a@x,Ann\n',
                 ["users.csv line 1: column name", "is not allowed"], id="injection-column-name"),
    pytest.param("users", "users.csv", "id,email,ID\n1,a@x,2\n",
                 ["users.csv line 1: column 'id' appears twice."], id="duplicate-column"),
    pytest.param("users", "users.csv", "id,email\n1,a@x,extra\n",
                 ["users.csv line 2 has 3 fields but the header has 2."], id="too-many-fields"),
    pytest.param("users", "users.csv", 'id,email\n1,"a@x\n',
                 ["users.csv line 2 is not valid CSV"], id="unclosed-quote"),
    pytest.param("memberships", "m.csv",
                 "user_id,org_id,joined_at,left_at\n1,2,2020-07-01,2020-06-01\n",
                 ["m.csv line 2: left_at 2020-06-01T00:00:00.000Z is before joined_at 2020-07-01T00:00:00.000Z."],
                 id="end-before-start"),
    pytest.param("users", "users.csv", "\n \n", ["users.csv is empty"], id="empty-file"),
    pytest.param("users", "users.csv.gz", b"\x1f\x8b\x08\x00garbage",
                 ["users.csv.gz is a damaged compressed file."], id="damaged-gzip"),
]


@pytest.fixture
def populated(db_path, tmp_path):
    for kind in ("users", "orgs", "memberships", "partners", "ip_info"):
        path = write(tmp_path, f"seed_{kind}.csv", SAMPLES[kind][0])
        assert run("import-records", db_path, kind, path).exit_code == 0
    return db_path


@pytest.mark.parametrize("kind, name, content, expected", REFUSALS)
def test_refusals(populated, tmp_path, kind, name, content, expected):
    before = dump(populated)
    path = write(tmp_path, name, content)
    result = run("import-records", populated, kind, path)
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    for text in expected:
        assert text in lines[0]
    assert "Traceback" not in result.stderr
    assert dump(populated) == before


def test_refusal_does_not_create_database(tmp_path):
    target = tmp_path / "new.db"
    result = run("import-records", target, "users", write(tmp_path, "u.csv", "id\n1\n"))
    assert result.exit_code == 1
    assert "missing required column 'email'" in result.stderr
    assert not target.exists()


def test_missing_file(db_path, tmp_path):
    result = run("import-records", db_path, "users", tmp_path / "nope.csv")
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: No such file: {tmp_path / 'nope.csv'}"


def test_booleans_any_case(db_path):
    text = "id,email,is_staff\n" + "".join(
        f"{i},u{i}@x,{v}\n" for i, v in enumerate(["1", "0", "TRUE", "false", "Yes", "NO", " yes "])
    )
    assert run("import-records", db_path, "users", "-", input=text).exit_code == 0
    assert [r["is_staff"] for r in sorted(table(db_path, "users"), key=lambda r: int(r["id"]))] == [
        1, 0, 1, 0, 1, 0, 1
    ]


def test_sqlite_utils_plugin_command(db_path, tmp_path):
    from sqlite_utils.cli import cli as sqlite_utils_cli

    path = write(tmp_path, "orgs.csv", SAMPLES["orgs"][0])
    result = CliRunner().invoke(sqlite_utils_cli, ["import-records", db_path, "orgs", path])
    assert result.exit_code == 0, result.output
    assert result.stdout == "orgs: 2 added, 0 updated\n"
    assert table(db_path, "orgs") == SAMPLES["orgs"][1]
    bad = CliRunner().invoke(sqlite_utils_cli, ["import-records", db_path, "orgz", path])
    assert bad.exit_code == 1 and "Unknown record kind 'orgz'" in bad.stderr
