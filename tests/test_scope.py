"""Scope (MODEL §2) on hand-built cases, boundaries included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datasette_forensics import derived, incident, ingest, records, schema

INCIDENT = """
name = "test"
introduced_at = "2020-07-01T00:00:00Z"
patched_at = "2020-07-20T14:04:00Z"
scope_paths = ['^/api/0/']
org_routes = ['^/api/0/organizations/(?P<org>[^/]+)/']
require_integration = {require}
"""

RECORDS = {
    "orgs": "id,slug,name\n1,acme,Acme\n2,beta,Beta\n3,gamma,Gamma\n4,delta,Delta\n",
    # gamma was called 'oldslug' until 10 Jul; delta took 'oldslug' from 12 Jul.
    "org_slugs": "org_id,slug,valid_from,valid_to\n"
    "3,oldslug,2020-06-01T00:00:00Z,2020-07-10T00:00:00Z\n"
    "4,oldslug,2020-07-12T00:00:00Z,\n",
    # beta's only integration was deleted at 5 Jul 00:00.
    "integrations": "id,org_id,created_at,deleted_at\n"
    "i1,1,2020-06-01T00:00:00Z,\n"
    "i2,2,2020-06-01T00:00:00Z,2020-07-05T00:00:00Z\n"
    "i3,3,2020-06-01T00:00:00Z,\n"
    "i4,4,2020-06-01T00:00:00Z,\n",
}

S = ("192.0.2.1", "sig-S")  # reaches acme and gamma: cross-tenant
T = ("192.0.2.2", "sig-T")  # acme only


def line(n, ts, uri, sig=T, status=200, **extra):
    return dict(
        remote_addr=sig[0], http_user_agent=sig[1], request_uri=uri, request_method="GET",
        status=status, body_bytes_sent=10, time_iso8601=ts, n=n, **extra,
    )


LINES = [
    line("in_last_ms", "2020-07-20T14:03:59.999Z", "/api/0/organizations/acme/issues/"),
    line("out_at_patch", "2020-07-20T14:04:00Z", "/api/0/organizations/acme/issues/"),
    line("in_at_introduced", "2020-07-01T00:00:00Z", "/api/0/organizations/acme/?q=/x/"),
    line("out_before", "2020-06-30T23:59:59Z", "/api/0/organizations/acme/"),
    line("out_path", "2020-07-02T00:00:00Z", "/health"),
    line("out_path_query", "2020-07-02T00:00:00Z", "/status?next=/api/0/organizations/acme/"),
    line("out_unknown_org", "2020-07-02T00:00:00Z", "/api/0/organizations/nobody/"),
    line("out_not_decoded", "2020-07-02T00:00:00Z", "/api/0/organizations/ac%6De/"),
    line("in_beta_before_delete", "2020-07-04T23:59:59Z", "/api/0/organizations/beta/"),
    line("out_beta_at_delete", "2020-07-05T00:00:00Z", "/api/0/organizations/beta/"),
    line("in_gamma_old_slug", "2020-07-09T23:59:59Z", "/api/0/organizations/oldslug/", sig=S),
    line("out_slug_valid_to", "2020-07-10T00:00:00Z", "/api/0/organizations/oldslug/", sig=S),
    line("in_delta_taken_slug", "2020-07-13T00:00:00Z", "/api/0/organizations/oldslug/"),
    line("in_gamma_current", "2020-07-14T00:00:00Z", "/api/0/organizations/gamma/"),
    line("in_acme_S", "2020-07-15T00:00:00Z", "/api/0/organizations/acme/", sig=S),
    line("in_log_org_id", "2020-07-03T00:00:00Z", "/api/0/whoami/", org_id=2),
]
IN_SCOPE = {
    "in_last_ms": "1", "in_at_introduced": "1", "in_beta_before_delete": "2",
    "in_gamma_old_slug": "3", "in_delta_taken_slug": "4", "in_gamma_current": "3",
    "in_acme_S": "1", "in_log_org_id": "2",
}


def write_lines(path: Path, lines) -> str:
    path.write_text("".join(json.dumps(l) + "\n" for l in lines))
    return str(path)


def build(tmp_path, require="true", lines=LINES):
    db = schema.connect(str(tmp_path / "t.db"))
    for kind, text in RECORDS.items():
        (tmp_path / f"{kind}.csv").write_text(text)
        records.import_records(db, kind, str(tmp_path / f"{kind}.csv"))
    (tmp_path / "incident.toml").write_text(INCIDENT.format(require=require))
    incident.set_incident(db, str(tmp_path / "incident.toml"))
    ingest.import_logs(db, [write_lines(tmp_path / "log.jsonl", lines)])
    return db


def scoped_by_name(db) -> dict:
    rows = db.execute(
        """select json_extract(r.extra, '$.n'), s.org_id from scoped s
        join requests r on r.id = s.request_id"""
    ).fetchall()
    return dict(rows)


def test_scope_boundaries(tmp_path):
    db = build(tmp_path)
    assert scoped_by_name(db) == IN_SCOPE


def test_without_require_integration_deleted_integration_does_not_matter(tmp_path):
    db = build(tmp_path, require="false")
    assert scoped_by_name(db) == dict(IN_SCOPE, out_beta_at_delete="2")


def test_cross_tenant_signatures(tmp_path):
    db = build(tmp_path)
    rows = dict(
        db.execute(
            """select a.ua, ss.cross_tenant from signature_scope ss join signatures g on g.id = ss.sig_id
            join user_agents a on a.id = g.ua_id"""
        ).fetchall()
    )
    # S reached gamma (old slug and current) and acme; T reached acme, beta (via log org_id
    # on a non-route path counts as beta), delta: T is cross-tenant too.
    assert rows == {"sig-S": 1, "sig-T": 1}
    assert db.execute("select orgs from signature_scope ss join signatures g on g.id = ss.sig_id "
                      "join user_agents a on a.id = g.ua_id where a.ua = 'sig-S'").fetchone()[0] == 2


def _state(db):
    return {
        "scoped": db.execute("select request_id, org_id, sig_id, ts, explained from scoped order by 1").fetchall(),
        "sigs": db.execute("select * from signature_scope order by 1").fetchall(),
        "sig_org": db.execute("select * from sig_org order by 1, 2").fetchall(),
        "post": db.execute("select * from post_patch_valid order by 1, 2").fetchall(),
    }


def test_incremental_batch_equals_full_recompute(tmp_path):
    db = build(tmp_path, lines=LINES[:8])
    ingest.import_logs(db, [write_lines(tmp_path / "second.jsonl", LINES[8:])])
    incremental = _state(db)
    derived.recompute(db)
    assert _state(db) == incremental
    assert scoped_by_name(db) == IN_SCOPE


def test_records_after_logs_give_the_same_scope(tmp_path):
    db = schema.connect(str(tmp_path / "t.db"))
    ingest.import_logs(db, [write_lines(tmp_path / "log.jsonl", LINES)])
    (tmp_path / "incident.toml").write_text(INCIDENT.format(require="true"))
    incident.set_incident(db, str(tmp_path / "incident.toml"))
    assert scoped_by_name(db) == {}  # no orgs known yet
    for kind, text in RECORDS.items():
        (tmp_path / f"{kind}.csv").write_text(text)
        records.import_records(db, kind, str(tmp_path / f"{kind}.csv"))
    assert scoped_by_name(db) == IN_SCOPE


@pytest.mark.parametrize("status,counted", [(200, True), (204, True), (401, False), (302, False)])
def test_post_patch_valid_counts_only_2xx_at_or_after_patch(tmp_path, status, counted):
    lines = LINES + [line("after", "2020-07-20T14:04:00Z", "/api/0/organizations/acme/", status=status)]
    db = build(tmp_path, lines=lines)
    rows = db.execute(
        """select pp.org_id, pp.requests from post_patch_valid pp join signatures g on g.id = pp.sig_id
        join user_agents a on a.id = g.ua_id where a.ua = 'sig-T'"""
    ).fetchall()
    # out_at_patch (200, at patched_at exactly) always counts for acme.
    assert rows == [("1", 2 if counted else 1)]
