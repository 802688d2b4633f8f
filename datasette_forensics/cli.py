"""The datasette-forensics command line (the import commands are also sqlite-utils commands)."""

from __future__ import annotations

import functools
import json
import shlex
import sqlite3
import sys
import time

import click

from . import ingest, report as report_module, schema
from .errors import ForensicsError


def user_errors(fn):
    """Turn ForensicsError and database errors into one clear sentence, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ForensicsError as exc:
            raise click.ClickException(str(exc)) from None
        except sqlite3.DatabaseError as exc:
            raise click.ClickException(f"Database error: {exc}.") from None
        except KeyboardInterrupt:
            click.echo("Interrupted: run the same command again to finish the import.", err=True)
            sys.exit(130)

    return wrapper


def open_db(path: str):
    """Open the forensic database, refusing files that are not SQLite databases."""
    try:
        return schema.connect(path)
    except sqlite3.DatabaseError:
        raise ForensicsError(f"{path} is not a SQLite database.") from None


db_argument = click.argument("db", type=click.Path(dir_okay=False))


@click.group()
@click.version_option(package_name="datasette-forensics")
def cli():
    """A forensic workbench for access logs, on SQLite and Datasette."""


class _Progress:
    """A click progress bar on a terminal (lines, lines/s, file); silent otherwise."""

    def __init__(self):
        self.enabled = sys.stderr.isatty()
        self.bar = None
        self.started = 0.0
        self.lines = 0

    def start(self, prepared: ingest.PreparedInput) -> None:
        if not self.enabled:
            return
        self.finish()
        self.started = time.monotonic()
        self.lines = 0
        name = prepared.display
        self.bar = click.progressbar(
            length=prepared.input.size or 0,
            label=click.format_filename(name, shorten=True),
            file=sys.stderr,
            item_show_func=lambda _: self._rate(),
            show_percent=bool(prepared.input.size),
        )
        self.bar.__enter__()
        self.position = 0

    def _rate(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        return f"{self.lines:,} lines, {self.lines / elapsed:,.0f} lines/s"

    def update(self, result: ingest.FileResult, consumed: int) -> None:
        if self.bar is None:
            return
        self.lines = result.lines_read - result.resumed_from
        self.bar.update(max(consumed - self.position, 0), current_item=result)
        self.position = consumed

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


@cli.command(name="import-logs")
@db_argument
@click.argument("files", nargs=-1, required=True)
@click.option(
    "--format", "fmt", default="auto", show_default=True,
    help="auto, combined, common, nginx-ext, jsonl, csv, alb, w3c or caddy.",
)
@click.option("--batch", "batch_name", help="A name for the import batch.")
@user_errors
def import_logs(db, files, fmt, batch_name):
    """Import access logs (plain, .gz, .bz2, or - for standard input) into DB.

    Every line is accounted for: imported, rejected with its reason, or skipped
    as a duplicate of a line already in the database.

    Example:

        datasette-forensics import-logs incident.db access.log.gz api-*.jsonl
    """
    database = open_db(db)
    progress = _Progress()
    command = shlex.join(sys.argv)
    try:
        results = ingest.import_logs(
            database, files, fmt=fmt, batch_name=batch_name, command=command,
            on_progress=progress.update, on_start=progress.start,
        )
    finally:
        progress.finish()
    failed = None
    for result in results:
        click.echo(result.summary())
        if result.message:
            failed = result.message
    if failed:
        raise ForensicsError(failed)


@cli.command()
@db_argument
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write to a file.")
@user_errors
def report(db, fmt, output):
    """Print the report: funnel, org statuses, cross-tenant signatures, rules applied.

    Example:

        datasette-forensics report incident.db --format csv -o notify.csv
    """
    database = open_db(db)
    if fmt == "json":
        text = json.dumps(report_module.build_report(database), indent=2, ensure_ascii=False) + "\n"
    else:
        text = report_module.notification_csv(database)
    if output:
        with open(output, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    else:
        click.echo(text, nl=False)


@cli.command(name="import-records")
@db_argument
@click.argument("kind")
@click.argument("file")
@user_errors
def import_records(db, kind, file):
    """Import account records of one KIND from a CSV or JSON-lines FILE (- for standard input).

    KIND is one of orgs, org_slugs, integrations, tokens, users, memberships,
    sessions, partners, partner_orgs, ip_info. The whole file is checked before
    anything is written; rows whose key is already stored are updated.

    Example:

        datasette-forensics import-records incident.db users users.csv
    """
    from . import records

    parsed = records.read_records(kind, file)  # a bad file is refused before DB is opened
    added, updated = records.store_records(open_db(db), parsed)
    click.echo(f"{parsed.kind.name}: {added:,} added, {updated:,} updated")


@cli.command(name="incident")
@db_argument
@click.argument("file")
@user_errors
def incident_command(db, file):
    """Set the incident (window, scope paths, org routes) from a TOML FILE and recompute the scope.

    Example:

        datasette-forensics incident incident.db incident.toml
    """
    from . import incident

    loaded = incident.load_incident(file)  # a bad file is refused before DB is opened
    click.echo(incident.summary(incident.store_incident(open_db(db), loaded)))


@cli.command()
@click.option("--port", default=8001, show_default=True, type=int, help="Port to serve on (127.0.0.1).")
@click.option(
    "--db", "db_path", default="forensics-demo.db", show_default=True,
    type=click.Path(dir_okay=False), help="Where to build the demo database.",
)
@click.option("--build-only", is_flag=True, help="Build the database and exit without serving.")
@user_errors
def demo(port, db_path, build_only):
    """Build the sample incident database from sample_data/ and serve the workbench.

    The database is rebuilt from scratch each time (a few seconds) and replaced
    atomically. Datasette prints a one-time link that signs you in as root, who
    may apply and undo rules.

    Example:

        datasette-forensics demo --port 8001
    """
    import json
    import os
    import tempfile

    from datasette.cli import cli as datasette_cli

    from . import demo as demo_module

    demo_module.build(db_path)
    name = os.path.splitext(os.path.basename(db_path))[0]
    click.echo(f"Built {db_path} from {demo_module.SAMPLE_DATA.resolve()}.")
    if build_only:
        return
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(demo_module.metadata(name), f)
    click.echo(f"Workbench: http://127.0.0.1:{port}/{name}/-/forensics")
    click.echo("Sign in as root (to apply rules) with the one-time link Datasette prints below.")
    datasette_cli.main(
        ["serve", db_path, "--host", "127.0.0.1", "--port", str(port), "--root", "--metadata", f.name],
        prog_name="datasette",
    )
