"""The six built-in rules (MODEL §3) on hand-built cases, boundaries included; engine and CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from datasette_forensics import incident, ingest, records, report, rules, schema
from datasette_forensics.derived import rule_counts, waterfall
from datasette_forensics.rules import actions
from datasette_forensics.cli import cli
from datasette_forensics.derived.status import org_statuses

INCIDENT = """
name = "rules test"
introduced_at = "2020-07-01T00:00:00Z"
patched_at = "2020-07-20T00:00:00Z"
scope_paths = ['^/api/']
org_routes = ['^/api/orgs/(?P<org>[^/]+)/']
"""

RECORDS = {
    "orgs": "id,slug,name,contact_email\n"
    "1,alpha,Alpha,a@alpha.example\n2,beta,Beta,\n3,gamma,Gamma,\n4,delta,Delta,\n"
    "5,eps,Eps,\n6,zeta,Zeta,\n7,eta,Eta,\n",
    "integrations": "id,org_id,created_at\n"
    + "".join(f"i{n},{n},2020-01-01T00:00:00Z\n" for n in range(1, 8)),
    "tokens": "id,org_id,created_at,revoked_at\nT1,1,2020-01-01T00:00:00Z,\nT2,2,2020-01-01T00:00:00Z,2020-07-02T00:00:00Z\n",
    "users": "id,email,is_staff\n"
    "900,staff@example.com,TRUE\n"
    "901,user@example.com,false\n"
    "902,staff6@example.com,yes\n"
    "100,leaver@example.com,0\n"
    "101,joiner@example.com,\n",
    "memberships": "user_id,org_id,role,joined_at,left_at\n"
    # 100 left alpha at 10 Jul 12:00: a member before, not at or after.
    "100,1,member,2020-06-01T00:00:00Z,2020-07-10T12:00:00Z\n"
    # 101 joined beta at 15 Jul (after some of its requests) and is a member now.
    "101,2,member,2020-07-15T00:00:00Z,\n"
    # 901 is a (non-staff) member of zeta now.
    "901,6,member,2019-01-01T00:00:00Z,\n",
    "sessions": "user_id,ip,user_agent,first_seen,last_seen\n"
    "900,10.0.0.9,StaffUA/1,2020-01-01T00:00:00Z,2020-01-02T00:00:00Z\n"
    "901,10.0.0.8,UserUA/1,2020-01-01T00:00:00Z,2020-01-02T00:00:00Z\n"
    # written in a non-canonical IPv6 form: still the same address as the log's.
    "902,2001:DB8:0:0::10,StaffUA/6,2020-01-01T00:00:00Z,2020-01-02T00:00:00Z\n"
    "100,10.0.1.1,Leaver/1,2020-01-01T00:00:00Z,2020-01-02T00:00:00Z\n"
    "101,10.0.1.2,Joiner/1,2020-01-01T00:00:00Z,2020-01-02T00:00:00Z\n",
    "partners": "name,cidr,user_agent_pattern\n"
    "P1,203.0.113.0/24,^PartnerBot/\n"
    "P1,198.51.100.0/24,^Other/\n"
    "P1,2001:db8:aa::/48,\n"
    "P2,192.0.2.0/24,\n",
    "partner_orgs": "partner,org_id,authorized_at,revoked_at\n"
    "P1,3,2020-06-01T00:00:00Z,2020-07-10T00:00:00Z\n"
    "P1,4,,\n"
    "P2,5,2020-07-05T00:00:00Z,\n",
}

STAFF = ("10.0.0.9", "StaffUA/1")
STAFF6 = ("2001:db8::10", "StaffUA/6")
USER = ("10.0.0.8", "UserUA/1")
LEAVER = ("10.0.1.1", "Leaver/1")
JOINER = ("10.0.1.2", "Joiner/1")
PBOT = ("203.0.113.5", "PartnerBot/1.0")
PCURL = ("203.0.113.6", "curl/7.68.0")
P6 = ("2001:db8:aa::7", "anything at all")
P_WRONG_ROW = ("198.51.100.9", "PartnerBot/1.0")  # P1's second range, first row's pattern
P_RIGHT_ROW = ("198.51.100.9", "Other/2")
P2 = ("192.0.2.50", "p2-client")
BOT1 = ("10.0.2.1", "Bot1")  # eps only, 2xx for eps after the patch
BOT2 = ("10.0.2.2", "Bot2")  # zeta only, non-2xx for zeta after the patch, 2xx for alpha
BOT3 = ("10.0.2.3", "Bot3")  # eps and zeta: cross-tenant, 2xx for both after the patch
BOT4 = ("10.0.2.4", "Bot4")  # eta only, a 304 after the patch
BOT5 = ("10.0.2.5", "Bot5")  # eta only, a 204 exactly at the patch, off-scope path
TOK = ("10.0.3.1", "TokenClient/1")


def line(n, ts, org, sig, status=200, path="items/", **extra):
    uri = f"/api/orgs/{org}/{path}" if org else path
    return dict(
        remote_addr=sig[0], http_user_agent=sig[1], request_uri=uri, request_method="GET",
        status=status, body_bytes_sent=10, time_iso8601=ts, n=n, **extra,
    )


# case -> the rules that explain it, each applied alone (None: not in scope).
CASES = {
    "staff_alpha": (line("staff_alpha", "2020-07-02T10:00:00Z", "alpha", STAFF), {"staff"}),
    "staff_beta": (line("staff_beta", "2020-07-03T10:00:00Z", "beta", STAFF), {"staff"}),
    "staff6_gamma": (line("staff6_gamma", "2020-07-03T11:00:00Z", "gamma", STAFF6), {"staff"}),
    # a non-staff session explains nothing by staff; 901 is a member of zeta now.
    "user_zeta": (line("user_zeta", "2020-07-04T10:00:00Z", "zeta", USER), {"member_current", "member_historical"}),
    "user_alpha": (line("user_alpha", "2020-07-04T11:00:00Z", "alpha", USER), set()),
    # 100 left alpha at 2020-07-10T12:00:00Z.
    "leaver_before": (line("leaver_before", "2020-07-10T11:59:59.999Z", "alpha", LEAVER), {"member_historical"}),
    "leaver_at_left": (line("leaver_at_left", "2020-07-10T12:00:00Z", "alpha", LEAVER), set()),
    "leaver_after": (line("leaver_after", "2020-07-11T00:00:00Z", "alpha", LEAVER), set()),
    # 101 joined beta at 2020-07-15T00:00:00Z and is still a member.
    "joiner_before": (line("joiner_before", "2020-07-05T00:00:00Z", "beta", JOINER), {"member_current"}),
    "joiner_at_join": (
        line("joiner_at_join", "2020-07-15T00:00:00Z", "beta", JOINER), {"member_current", "member_historical"},
    ),
    # P1 authorised by gamma until 2020-07-10T00:00:00Z.
    "pbot_gamma_before_revoke": (line("pbot_gamma_before_revoke", "2020-07-09T23:59:59Z", "gamma", PBOT), {"partner"}),
    "pbot_gamma_at_revoke": (line("pbot_gamma_at_revoke", "2020-07-10T00:00:00Z", "gamma", PBOT), set()),
    "pbot_delta": (line("pbot_delta", "2020-07-02T00:00:00Z", "delta", PBOT), {"partner"}),
    "pcurl_delta": (line("pcurl_delta", "2020-07-02T00:00:00Z", "delta", PCURL), set()),
    "p6_delta": (line("p6_delta", "2020-07-02T00:00:00Z", "delta", P6), {"partner"}),
    "p_wrong_row_delta": (line("p_wrong_row_delta", "2020-07-06T00:00:00Z", "delta", P_WRONG_ROW), set()),
    "p_right_row_delta": (line("p_right_row_delta", "2020-07-06T00:00:00Z", "delta", P_RIGHT_ROW), {"partner"}),
    # P2 authorised by eps from 2020-07-05T00:00:00Z.
    "p2_eps_before_auth": (line("p2_eps_before_auth", "2020-07-04T23:59:59Z", "eps", P2), set()),
    "p2_eps_at_auth": (line("p2_eps_at_auth", "2020-07-05T00:00:00Z", "eps", P2), {"partner"}),
    "bot1_eps": (line("bot1_eps", "2020-07-06T00:00:00Z", "eps", BOT1), {"post_patch_valid"}),
    "bot1_eps_post": (line("bot1_eps_post", "2020-07-21T00:00:00Z", "eps", BOT1, status=201), None),
    "bot2_zeta": (line("bot2_zeta", "2020-07-06T00:00:00Z", "zeta", BOT2), set()),
    "bot2_zeta_post_401": (line("bot2_zeta_post_401", "2020-07-21T00:00:00Z", "zeta", BOT2, status=401), None),
    "bot2_zeta_post_500": (line("bot2_zeta_post_500", "2020-07-21T01:00:00Z", "zeta", BOT2, status=500), None),
    "bot2_alpha_post_200": (line("bot2_alpha_post_200", "2020-07-21T02:00:00Z", "alpha", BOT2), None),
    "bot3_eps": (line("bot3_eps", "2020-07-06T00:00:00Z", "eps", BOT3), set()),
    "bot3_zeta": (line("bot3_zeta", "2020-07-06T00:00:00Z", "zeta", BOT3), set()),
    "bot3_eps_post": (line("bot3_eps_post", "2020-07-21T00:00:00Z", "eps", BOT3), None),
    "bot3_zeta_post": (line("bot3_zeta_post", "2020-07-21T00:00:00Z", "zeta", BOT3), None),
    "bot4_eta": (line("bot4_eta", "2020-07-06T00:00:00Z", "eta", BOT4), set()),
    "bot4_eta_post_304": (line("bot4_eta_post_304", "2020-07-21T00:00:00Z", "eta", BOT4, status=304), None),
    "bot5_eta": (line("bot5_eta", "2020-07-07T00:00:00Z", "eta", BOT5), {"post_patch_valid"}),
    # 2xx exactly at patched_at, on a path outside scope_paths yet routed: still counts.
    "bot5_eta_at_patch": (
        line("bot5_eta_at_patch", "2020-07-20T00:00:00Z", "eta", BOT5, status=204, path="x/"), None,
    ),
    "tok_alpha_t1": (line("tok_alpha_t1", "2020-07-08T00:00:00Z", "alpha", TOK, token_id="T1"), {"token_owner"}),
    "tok_beta_t1": (line("tok_beta_t1", "2020-07-08T00:00:01Z", "beta", TOK, token_id="T1"), set()),
    # T2 belongs to beta (revoked or not: the rule names the owner only).
    "tok_beta_t2": (line("tok_beta_t2", "2020-07-08T00:00:02Z", "beta", TOK, token_id="T2"), {"token_owner"}),
    "tok_alpha_none": (line("tok_alpha_none", "2020-07-08T00:00:03Z", "alpha", TOK), set()),
    "tok_alpha_unknown": (line("tok_alpha_unknown", "2020-07-08T00:00:04Z", "alpha", TOK, token_id="T9"), set()),
}
BUILTIN_NAMES = ["staff", "member_current", "member_historical", "partner", "post_patch_valid", "token_owner"]


def write_world(tmp_path: Path, lines=None) -> Path:
    """Records, incident and one log batch, the real way; returns the database path."""
    path = tmp_path / "rules.db"
    db = schema.connect(str(path))
    for kind, text in RECORDS.items():
        f = tmp_path / f"{kind}.csv"
        f.write_text(text)
        records.import_records(db, kind, str(f))
    toml = tmp_path / "incident.toml"
    toml.write_text(INCIDENT)
    incident.set_incident(db, str(toml))
    log = tmp_path / "batch1.jsonl"
    log.write_text("".join(json.dumps(l) + "\n" for l in (lines or [c[0] for c in CASES.values()])))
    ingest.import_logs(db, [str(log)])
    db.conn.close()
    return path


@pytest.fixture(scope="module")
def world_template(tmp_path_factory) -> Path:
    return write_world(tmp_path_factory.mktemp("rules-world"))


@pytest.fixture
def db_path(world_template, tmp_path) -> Path:
    """A fresh copy of the rules world (the other rules test modules use it too)."""
    path = tmp_path / "w.db"
    path.write_bytes(world_template.read_bytes())
    return path


@pytest.fixture
def db(db_path):
    return schema.connect(str(db_path))


def case_ids(db) -> dict[str, int]:
    return dict(db.execute("select json_extract(extra, '$.n'), id from requests"))


def explained_cases(db, bit: int) -> set[str]:
    return {
        n for (n,) in db.execute(
            """select json_extract(r.extra, '$.n') from scoped s join requests r on r.id = s.request_id
            where s.explained & ? != 0""",
            [bit],
        )
    }


def state(db):
    """Everything a rule changes: scoped bits, aggregates, statuses."""
    return (
        db.execute("select request_id, explained from scoped order by request_id").fetchall(),
        db.execute("select * from sig_org order by sig_id, org_id").fetchall(),
        org_statuses(db),
    )


def test_scope_of_the_cases(db):
    in_scope = {n for (n,) in db.execute(
        "select json_extract(r.extra, '$.n') from scoped s join requests r on r.id = s.request_id"
    )}
    assert in_scope == {name for name, (_, rules_) in CASES.items() if rules_ is not None}


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_each_builtin_alone_explains_exactly_its_cases(db, name):
    before = state(db)
    result = actions.apply(db, name, actor="tester")
    expected = {case for case, (_, explained_by) in CASES.items() if explained_by and name in explained_by}
    bit = rules.bit_of(db, name)
    assert explained_cases(db, bit) == expected
    assert explained_cases(db, ~bit) == set()  # no other bit set
    assert result["requests_explained"] == len(expected)
    assert rules.applied_names(db) == [name]
    undone = actions.undo(db, name, actor="tester")
    assert undone["requests_unexplained"] == len(expected)
    assert state(db) == before  # undo restores every status exactly


def test_all_rules_statuses(db):
    before = org_statuses(db)
    # staff's and Bot3's signatures are cross-tenant; the partner's P1 v4 signature too.
    assert before == {
        "1": "exposed", "2": "exposed", "3": "exposed", "4": "exposed",
        "5": "exposed", "6": "exposed", "7": "review",
    }
    for name in BUILTIN_NAMES:
        actions.apply(db, name, actor="tester")
    unexplained = {n for (n,) in db.execute(
        "select json_extract(r.extra, '$.n') from scoped s join requests r on r.id = s.request_id where s.explained = 0"
    )}
    assert unexplained == {name for name, (_, by) in CASES.items() if by == set()}
    # USER, TOK, PBOT and Bot3 reach two orgs each: their unexplained requests expose.
    assert org_statuses(db) == {
        "1": "exposed",  # user_alpha (USER), tok_alpha_none (TOK); the leaver after leaving
        "2": "exposed",  # tok_beta_t1: T1 is alpha's token, TOK is cross-tenant
        "3": "exposed",  # PBOT at the revocation
        "4": "review",   # curl, and the wrong row's UA: single-tenant signatures
        "5": "exposed",  # Bot3; P2 before the authorisation
        "6": "exposed",  # Bot3; Bot2 had only 401/500 for zeta after the patch
        "7": "review",   # Bot4: a 304 after the patch does not count
    }


def test_post_patch_valid_never_explains_a_cross_tenant_signature(db):
    actions.apply(db, "post_patch_valid")
    ids = case_ids(db)
    explained = dict(db.execute("select request_id, explained from scoped"))
    assert explained[ids["bot3_eps"]] == 0 and explained[ids["bot3_zeta"]] == 0
    assert explained[ids["bot1_eps"]] != 0
    # the (sig, org) table holds the 2xx at patched_at for eta, not the 304
    pp = db.execute(
        """select i.ip, p.org_id from post_patch_valid p join signatures g on g.id = p.sig_id
        join ips i on i.id = g.ip_id order by i.ip, p.org_id"""
    ).fetchall()
    assert ("10.0.2.5", "7") in pp and ("10.0.2.4", "7") not in pp
    assert ("10.0.2.2", "1") in pp and ("10.0.2.2", "6") not in pp


def test_applied_rule_explains_a_later_batch_and_new_records(db, tmp_path):
    actions.apply(db, "staff", actor="t")
    actions.apply(db, "member_historical", actor="t")
    new = tmp_path / "batch2.jsonl"
    new.write_text(
        json.dumps(line("staff_late", "2020-07-19T00:00:00Z", "delta", STAFF)) + "\n"
        + json.dumps(line("newcomer", "2020-07-19T00:00:00Z", "delta", ("10.9.9.9", "New/1"))) + "\n"
    )
    ingest.import_logs(db, [str(new)])
    assert "staff_late" in explained_cases(db, rules.bit_of(db, "staff"))
    assert "newcomer" not in explained_cases(db, -1)
    # a records update: the newcomer turns out to be a delta member with that session
    sessions = tmp_path / "sessions2.csv"
    sessions.write_text("user_id,ip,user_agent,first_seen,last_seen\n555,10.9.9.9,New/1,2020-01-01,2020-01-02\n")
    members = tmp_path / "members2.csv"
    members.write_text("user_id,org_id,joined_at\n555,4,2020-01-01T00:00:00Z\n")
    records.import_records(db, "sessions", str(sessions))
    records.import_records(db, "memberships", str(members))
    assert "newcomer" in explained_cases(db, rules.bit_of(db, "member_historical"))
    assert waterfall.read(db) == waterfall.compute(db)


def test_ledger_waterfall_and_breakdown(db):
    for name in ("token_owner", "staff", "partner"):
        actions.apply(db, name, actor="alice")
    actions.undo(db, "staff", actor="bob")
    ledger = db.execute("select rule, action, actor, requests_explained from rule_ledger order by id").fetchall()
    assert ledger == [
        ("token_owner", "apply", "alice", 2), ("staff", "apply", "alice", 3),
        ("partner", "apply", "alice", 5), ("staff", "undo", "bob", 3),
    ]
    changes = [json.loads(c) for (c,) in db.execute("select orgs_changed from rule_ledger order by id")]
    # partner explains PBOT's delta request: delta keeps only single-tenant unexplained signatures.
    assert changes == [[], [], [{"org_id": "4", "from": "exposed", "to": "review"}], []]
    steps = waterfall.read(db)
    in_scope = sum(1 for _, by in CASES.values() if by is not None)
    assert steps == [
        {"rule": None, "remaining": in_scope, "explained": None},
        {"rule": "token_owner", "remaining": in_scope - 2, "explained": 2},
        {"rule": "partner", "remaining": in_scope - 7, "explained": 5},
    ]
    stored = db.execute("select rule, remaining, explained from rule_waterfall order by position").fetchall()
    assert stored == [(s["rule"], s["remaining"], s["explained"]) for s in steps]
    assert rule_counts.breakdown(db) == {
        "1": {"token_owner": 1}, "2": {"token_owner": 1},
        "3": {"partner": 1}, "4": {"partner": 3}, "5": {"partner": 1},
    }
    assert rule_counts.breakdown(db, "4") == {"4": {"partner": 3}}
    built = report.build_report(db)
    delta = next(o for o in built["orgs"] if o["org_id"] == "4")
    assert delta["explained_by"] == {"partner": 3}
    assert set(delta) == {
        "org_id", "slug", "status", "in_scope_requests", "unexplained_requests",
        "unexplained_signatures", "contact_email", "explained_by",
        "tags", "notified_at", "needs_update",  # MODEL §6
    }
    assert next(o for o in built["orgs"] if o["org_id"] == "7")["explained_by"] == {}


def test_apply_twice_and_undo_unapplied_change_nothing(db):
    actions.apply(db, "staff")
    before = state(db)
    assert actions.apply(db, "staff")["already"] is True
    assert actions.undo(db, "partner")["already"] is True
    assert state(db) == before
    assert db.execute("select count(*) from rule_ledger").fetchone()[0] == 1


def test_unknown_rule_is_refused(db):
    with pytest.raises(rules.UnknownRule, match="Unknown rule 'nope'"):
        actions.apply(db, "nope")
    with pytest.raises(rules.UnknownRule):
        rules.resolve_names(db, "staff,nope")


def test_cli_apply_list_undo(db, world_template, tmp_path):
    path = db.conn.execute("pragma database_list").fetchone()[2]
    db.conn.close()
    runner = CliRunner()
    result = runner.invoke(cli, ["rules", path, "--apply", "staff,partner", "--actor", "carol"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "staff: 3 requests newly explained",
        "partner: 5 requests newly explained",
        "  org 4 (delta): exposed -> review",
    ]
    result = runner.invoke(cli, ["rules", path, "--list"])
    assert result.exit_code == 0, result.output
    listing = {l.split()[0]: l.split()[1:3] for l in result.output.splitlines()}
    assert listing["staff"] == ["applied", "builtin"] and listing["token_owner"] == ["-", "builtin"]
    result = runner.invoke(cli, ["rules", path, "--undo", "partner", "--actor", "carol"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "partner: undone, 5 requests no longer explained",
        "  org 4 (delta): review -> exposed",
    ]
    result = runner.invoke(cli, ["rules", path, "--apply", "staff,nope"])
    assert result.exit_code != 0
    assert "Unknown rule 'nope'" in result.output and "Traceback" not in result.output
    result = runner.invoke(cli, ["rules", path, "--apply", "all"])
    assert result.exit_code == 0
    assert "staff: already applied" in result.output
    check = schema.connect(path)
    assert rules.applied_names(check) == BUILTIN_NAMES
    actors = {r[0] for r in check.execute("select actor from rule_ledger where rule = 'partner'")}
    assert "carol" in actors
