"""Notes and tags (MODEL §6.4): targets that must exist, history kept through edits and
deletes, tags in the report, the note command and its bad input."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from conftest import dump
from test_rules import BOT3, db, db_path, world_template  # noqa: F401 (fixtures)

from datasette_forensics import notes, report
from datasette_forensics.cli import cli


def test_notes_with_history_and_tags_in_the_report(db):
    org = notes.resolve_target(db, "org", "5")
    first = notes.add_note(db, org, "notified", "emailed ops", "alice")
    notes.add_note(db, org, "cloud", None, "bob")
    notes.add_note(db, org, "cloud", "twice the same tag", "bob")
    sig = notes.add_note(db, notes.resolve_target(db, "signature", BOT3), "suspicious", None, "bob")
    assert sig["target"] == '["10.0.2.3","Bot3"]'
    tags = {o["org_id"]: o["tags"] for o in report.build_report(db)["orgs"]}
    assert tags["5"] == ["cloud", "notified"] and tags["6"] == []

    notes.edit_note(db, first["id"], "called", "phoned instead", "carol")
    notes.delete_note(db, first["id"], "dave")
    assert {o["org_id"]: o["tags"] for o in report.build_report(db)["orgs"]}["5"] == ["cloud"]
    versions = notes.history(db, [first["id"]])[first["id"]]
    assert [(v["action"], v["tag"], v["text"], v["actor"]) for v in versions] == [
        ("write", "notified", "emailed ops", "alice"),
        ("edit", "called", "phoned instead", "carol"),
        ("delete", "called", "phoned instead", "dave"),
    ]
    assert [n["id"] for n in notes.list_notes(db)] == [2, 3, 4]
    with pytest.raises(Exception, match="was already deleted"):
        notes.delete_note(db, first["id"], "x")


def test_every_kind_of_target(db):
    for kind, value, stored in [
        ("ip", "10.0.2.3", "10.0.2.3"),
        ("cidr", "10.0.2.77/24", "10.0.2.0/24"),
        ("cidr", "10.0.0.0/8", "10.0.0.0/8"),
        ("user_agent", "Bot3", "Bot3"),
        ("org", "999", None),
    ]:
        if stored is None:
            with pytest.raises(Exception, match="Unknown org '999'"):
                notes.resolve_target(db, kind, value)
            continue
        assert notes.resolve_target(db, kind, value).value == stored
    for kind, value, message in [
        ("ip", "192.0.2.200", "No request was made from address 192.0.2.200"),
        ("cidr", "172.16.0.0/12", "No request was made from network 172.16.0.0/12"),
        ("cidr", "not a net", "is not a network"),
        ("user_agent", "Nobody/1", "No request was made with user agent"),
        ("signature", ("10.0.2.3", "Bot1"), "No request was made from address 10.0.2.3 with user agent 'Bot1'"),
    ]:
        with pytest.raises(Exception, match=message):
            notes.resolve_target(db, kind, value)


def test_note_command_and_bad_input(db_path):
    runner = CliRunner()
    ok = runner.invoke(cli, ["note", str(db_path), "--signature", *BOT3, "--tag", "suspicious", "--text", "<b>x</b>", "--actor", "a"])
    assert ok.exit_code == 0 and "Note 1 on signature 10.0.2.3 'Bot3'" in ok.output
    assert runner.invoke(cli, ["note", str(db_path), "--edit", "1", "--tag", "cloud"]).exit_code == 0
    listed = runner.invoke(cli, ["note", str(db_path), "--list", "--history"])
    assert "tag=cloud" in listed.output and "write" in listed.output and "edit" in listed.output
    before = dump(db_path)
    for args, message in [
        (["--org", "999", "--tag", "x"], "Unknown org '999'"),
        (["--org", "5"], "needs a tag or some text"),
        (["--org", "5", "--tag", "two words"], "A tag is one short word"),
        (["--org", "5", "--ip", "10.0.2.3", "--tag", "x"], "Give one target"),
        (["--edit", "99", "--tag", "x"], "There is no note 99"),
        (["--delete", "99"], "There is no note 99"),
        ([], "Give one of a target"),
    ]:
        result = runner.invoke(cli, ["note", str(db_path), *args])
        assert result.exit_code == 1 and message in result.output, (args, result.output)
    assert dump(db_path) == before
