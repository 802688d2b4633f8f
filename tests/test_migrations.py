"""A database written before a layout change is migrated in place, with the same figures."""

from __future__ import annotations

import json
import sqlite3

import pytest
from click.testing import CliRunner
from conftest import dump

from datasette_forensics import report, rules, schema
from datasette_forensics.cli import cli
from datasette_forensics.errors import ForensicsError
from datasette_forensics.rules import actions

# The layout of scoped before m007 (a rowid table with two secondary indexes).
OLD_SCOPED = """
drop view requests_view;
create table scoped_old (
    request_id integer primary key,
    org_id text not null,
    sig_id integer not null,
    ts integer not null,
    explained integer not null default 0
);
insert into scoped_old select request_id, org_id, sig_id, ts, explained from scoped;
drop table scoped;
alter table scoped_old rename to scoped;
create index scoped_org on scoped(org_id, ts);
create index scoped_sig on scoped(sig_id, org_id, explained);
"""


def figures(db) -> dict:
    built = report.build_report(db)
    for key in ("generated_at", "database"):
        built.pop(key, None)
    return {
        "report": json.dumps(built, sort_keys=True, default=str),
        "groups": db.execute(
            """select grouping, k1, k2, requests, in_scope, unexplained, orgs, signatures
            from pivot_groups order by 1, 2, 3"""
        ).fetchall(),
        "orgs": db.execute("select * from org_stats order by org_id").fetchall(),
        "days": db.execute("select * from scope_days order by org_id, day").fetchall(),
        "scoped": db.execute(
            "select request_id, org_id, sig_id, ts, explained from scoped order by request_id"
        ).fetchall(),
        "view": db.execute(
            "select id, in_scope, explained, unexplained from requests_view order by id"
        ).fetchall(),
    }


def test_an_older_database_is_migrated_with_the_same_figures(sample_db_path):
    db = schema.connect(str(sample_db_path))
    for name in rules.resolve_names(db, "all"):
        actions.apply(db, name)
    expected = figures(db)
    assert expected["scoped"] and any(row[4] for row in expected["scoped"])

    # Put it back as the code before m007-m009 left it: rowid scoped, row triggers,
    # raw user-agent groups keyed by the agent's text.
    db.executescript(OLD_SCOPED)
    db.executescript(schema.REQUESTS_VIEW)
    for name in schema.OLD_TRIGGERS:
        db.execute(f"create trigger {name} after update on sig_org begin select 1; end")
    db.execute(
        """update pivot_groups set gkey = (select json_array(a.ua) from user_agents a where a.ua = pivot_groups.k1)
        where grouping = 'raw'"""
    )
    db.execute("drop table derived_state")
    db.execute(
        "delete from _sqlite_migrations where name in ('m007_scoped_clustered', "
        "'m008_unexplained_set_based', 'm009_raw_groups_by_id', 'm012_owner_derived_state')"
    )
    db.conn.close()

    db = schema.connect(str(sample_db_path))
    (scoped_sql,) = db.execute("select sql from sqlite_master where name = 'scoped'").fetchone()
    assert "without rowid" in scoped_sql.lower()
    assert not db.execute(
        "select name from sqlite_master where type = 'trigger' and name in (?, ?)", schema.OLD_TRIGGERS
    ).fetchall()
    raw_groups, keyed_by_id = db.execute(
        """select count(*), sum(g.gkey = json_array(a.id)) from pivot_groups g
        join user_agents a on a.ua = g.k1 where g.grouping = 'raw'"""
    ).fetchone()
    assert raw_groups > 0 and keyed_by_id == raw_groups
    assert figures(db) == expected

    # And the rules still move every figure after the migration: undo the last
    # two and apply them again in the same order.
    actions.undo(db, "token_owner")
    actions.undo(db, "post_patch_valid")
    assert figures(db) != expected
    actions.apply(db, "post_patch_valid")
    actions.apply(db, "token_owner")
    assert figures(db) == expected


def test_migration_recomputes_before_anything_reads(sample_db_path):
    """A database from before m012 has everything derived recomputed at its first
    opening, whatever older code left in the derived tables."""
    db = schema.connect(str(sample_db_path))
    actions.apply(db, "staff")
    expected = figures(db)
    # What an older version might have left: aggregates it no longer keeps right.
    db.execute("update org_stats set unexplained = unexplained + 7")
    db.execute("delete from scope_days")
    db.execute("delete from pivot_groups where grouping = 'raw'")
    db.execute("drop table derived_state")
    db.execute("delete from _sqlite_migrations where name = 'm012_owner_derived_state'")
    db.conn.close()
    db = schema.connect(str(sample_db_path))
    assert figures(db) == expected
    assert db.execute("select count(*) from derived_state").fetchone()[0] == 0


OLD_LAYOUT = """
create table import_batches (id integer primary key, file text, lines integer);
create table requests (id integer primary key, batch_id integer, line text);
insert into import_batches values (1, 'access.log', 2);
insert into requests values (1, 1, '192.0.2.1 - - [01/Jul/2020:00:00:00 +0000] "GET / HTTP/1.1" 200 1');
"""


def test_an_unmigratable_database_is_refused_in_one_sentence(tmp_path):
    """A database from before the migrations (its own tables, no migration record) is
    refused with one sentence saying how to rebuild it; nothing in it changes."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_LAYOUT)
    conn.close()
    before = dump(path)
    with pytest.raises(ForensicsError, match="rebuild it by importing"):
        schema.connect(str(path))
    result = CliRunner().invoke(cli, ["report", str(path)])
    assert result.exit_code != 0
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    assert result.output.count("\n") == 1 and "rebuild it by importing" in result.output
    assert dump(path) == before


@pytest.mark.asyncio
async def test_datasette_refuses_an_unmigratable_database_in_one_sentence(tmp_path):
    import click
    from datasette.app import Datasette

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_LAYOUT)
    conn.close()
    ds = Datasette([str(path)])
    with pytest.raises(click.ClickException, match="^old: .*rebuild it by importing") as refused:
        await ds.invoke_startup()
    assert "\n" not in refused.value.message


def test_a_database_from_before_idle_cells_keeps_its_cells_and_counts_on(sample_db_path, tmp_path):
    """m028 starts the hour cells' watermark after the requests a database holds (older
    versions counted every stored request at once); the next batch is counted from there."""
    from datasette_forensics import ingest

    db = schema.connect(str(sample_db_path))
    cells = db.execute("select * from window_hours order by hour, sig_id").fetchall()
    last = db.execute("select max(id) from requests").fetchone()[0]
    db.execute("drop table window_hours_upto")
    db.execute("delete from _sqlite_migrations where name = 'm028_idle_cells_window_hours_upto'")
    db.conn.close()
    db = schema.connect(str(sample_db_path))
    assert db.execute("select upto from window_hours_upto").fetchone()[0] == last + 1
    assert db.execute("select * from window_hours order by hour, sig_id").fetchall() == cells
    more = tmp_path / "more.log"
    more.write_text(
        '203.0.113.9 - - [01/Jul/2020:02:00:00 +0000] "GET /api/0/x/ HTTP/1.1" 200 1 "-" "curl/8"\n'
    )
    ingest.import_logs(db, [str(more)])
    assert db.execute("select * from window_hours order by hour, sig_id").fetchall() == db.execute(
        "select ts / 3600000, sig_id, count(*), min(ts), max(ts) from requests group by 1, 2 order by 1, 2"
    ).fetchall()
    assert db.execute("select upto from window_hours_upto").fetchone()[0] == last + 2
