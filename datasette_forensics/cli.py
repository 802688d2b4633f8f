"""The datasette-forensics command line (the import commands are also sqlite-utils commands)."""

from __future__ import annotations

import functools
import importlib.util
import json
import shlex
import sqlite3
import sys
import time

import click

from . import clickhouse, demo as demo_module, evidence, proxies, rdns, preview, importers, incident, ingest, notes, notify, permissions, records, report as report_module, rules, schema, terminal, verdicts
from .derived import scope
from .rules import actions
from .errors import ForensicsError


def user_errors(fn):
    """Turn ForensicsError and database errors into one clear sentence, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ForensicsError as exc:
            raise click.ClickException(terminal.safe(exc)) from None
        except sqlite3.DatabaseError as exc:
            raise click.ClickException(terminal.safe(f"Database error: {exc}.")) from None
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
        self.unit = "lines"

    def start_rows(self, display: str) -> None:
        """A bar for rows pulled from a database (no size known): rows, rows/s."""
        if not self.enabled:
            return
        self.finish()
        self.started = time.monotonic()
        self.lines = 0
        self.unit = "rows"
        self.bar = click.progressbar(
            length=0, label=terminal.safe(display), file=sys.stderr,
            item_show_func=lambda _: self._rate(), show_percent=False,
        )
        self.bar.__enter__()
        self.position = 0

    def start(self, prepared: ingest.PreparedInput) -> None:
        if not self.enabled:
            return
        self.finish()
        self.started = time.monotonic()
        self.lines = 0
        name = prepared.display
        self.bar = click.progressbar(
            length=prepared.input.size or 0,
            label=terminal.safe(click.format_filename(name, shorten=True)),
            file=sys.stderr,
            item_show_func=lambda _: self._rate(),
            show_percent=bool(prepared.input.size),
        )
        self.bar.__enter__()
        self.position = 0

    def _rate(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        return f"{self.lines:,} {self.unit}, {self.lines / elapsed:,.0f} {self.unit}/s"

    def update(self, result: ingest.FileResult, consumed: int) -> None:
        if self.bar is None:
            return
        self.lines = result.lines_read - result.resumed_from
        step = max(consumed - self.position, 0)
        self.position = max(consumed, self.position)
        if step:
            self.bar.update(step, current_item=result)
        else:  # the input was read ahead: the line count still moves
            self.bar.render_progress()

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


@cli.command(name="import-logs")
@db_argument
@click.argument("files", nargs=-1)
@click.option(
    "--format", "fmt", default="auto", show_default=True,
    help="auto, combined, common, nginx-ext, jsonl, csv, alb, w3c or caddy.",
)
@click.option("--batch", "batch_name", help="A name for the import batch.")
@click.option(
    "--from-clickhouse", "clickhouse_url", metavar="URL",
    help="Pull rows from ClickHouse instead of files: clickhouse://host:port/database.",
)
@click.option("--query", metavar="SQL", help="With --from-clickhouse: the SELECT to pull.")
@click.option("--table", metavar="T", help="With --from-clickhouse: pull a whole table (SELECT * FROM T).")
@click.option("--where", metavar="EXPR", help="With --table: only rows matching this ClickHouse expression.")
@click.option(
    "--map", "maps", metavar="NAME=COLUMN", multiple=True,
    help="With --from-clickhouse: read jsonl field NAME from COLUMN (repeatable), e.g. remote_addr=client_ip.",
)
@click.option(
    "--trusted-proxy", "trusted", metavar="CIDR", multiple=True,
    help="A load balancer's range (repeatable): behind it, the client is the right-most "
    "X-Forwarded-For address outside every trusted range; the peer is kept as peer.",
)
@user_errors
def import_logs(db, files, fmt, batch_name, clickhouse_url, query, table, where, maps, trusted):
    """Import access logs (plain, .gz, .bz2, or - for standard input) into DB.

    Every line is accounted for: imported, rejected with its reason, or skipped
    as a duplicate of a line already in the database. With --from-clickhouse,
    the rows of a ClickHouse query are imported instead, as jsonl records
    (columns named like the jsonl fields, or renamed with --map).

    Example:

        datasette-forensics import-logs incident.db access.log.gz api-*.jsonl

    \b
        datasette-forensics import-logs incident.db \\
          --from-clickhouse clickhouse://ch:9000/logs --table access

        datasette-forensics import-logs incident.db access.jsonl --trusted-proxy 10.0.0.0/8
    """
    trusted_proxies = proxies.TrustedProxies.from_cidrs(trusted)  # refused before DB is opened
    if clickhouse_url is not None or query is not None or table is not None or where is not None or maps:
        _import_from_clickhouse(db, files, fmt, batch_name, clickhouse_url, query, table, where, maps, trusted_proxies)
        return
    if not files:
        raise ForensicsError("Give the log FILES to import, or --from-clickhouse URL with --query or --table.")
    if fmt != "auto" and fmt not in importers.FORMATS:
        raise ForensicsError(f"Unknown format {fmt!r}: choose one of auto, {', '.join(importers.FORMATS)}.")
    database = open_db(db)
    progress = _Progress()
    command = shlex.join(sys.argv)
    try:
        results = ingest.import_logs(
            database, files, fmt=fmt, batch_name=batch_name, command=command,
            on_progress=progress.update, on_start=progress.start, proxies=trusted_proxies,
        )
    finally:
        progress.finish()
    failed = None
    for result in results:
        click.echo(terminal.safe(result.summary()))
        if result.message:
            failed = result.message
    if failed:
        raise ForensicsError(failed)


def _import_from_clickhouse(db, files, fmt, batch_name, url, query, table, where, maps, trusted_proxies) -> None:
    """import-logs --from-clickhouse: check the options, pull, report the counts."""
    if importlib.util.find_spec("clickhouse_driver") is None:  # optional: the [clickhouse] extra
        raise ForensicsError(
            "--from-clickhouse needs clickhouse-driver, which is not installed: "
            "pip install 'datasette-forensics[clickhouse]'."
        )
    if url is None:
        raise ForensicsError("--query, --table, --where and --map only go with --from-clickhouse URL.")
    if files:
        raise ForensicsError("Give either log FILES or --from-clickhouse, not both.")
    if fmt != "auto":
        raise ForensicsError("--format does not apply to --from-clickhouse: rows are read as jsonl fields.")
    if (query is None) == (table is None):
        raise ForensicsError("--from-clickhouse needs exactly one of --query SQL or --table T.")
    if where is not None and table is None:
        raise ForensicsError("--where only goes with --table (put the condition in your --query).")
    mapping = clickhouse.parse_maps(maps)
    sql = query if query is not None else clickhouse.table_query(table, where)
    source = clickhouse.open_rows(url, sql, mapping)  # refused here: DB is not touched
    try:
        database = open_db(db)
    except BaseException:
        source.close()
        raise
    progress = _Progress()
    progress.start_rows(source.display)
    try:
        result = ingest.import_rows(
            database, source, batch_name=batch_name, command=sql, on_progress=progress.update, proxies=trusted_proxies
        )
    finally:
        progress.finish()
    click.echo(terminal.safe(clickhouse.summary(result)))
    if result.message:
        raise ForensicsError(result.message)


@cli.command(name="enrich-rdns")
@db_argument
@click.option("--resolver", metavar="IP[:PORT]", help="The DNS resolver to ask (default: this machine's first nameserver).")
@click.option(
    "--concurrency", type=click.IntRange(1, rdns.MAX_CONCURRENCY), default=rdns.DEFAULT_CONCURRENCY,
    show_default=True, help="Queries in flight at once.",
)
@click.option(
    "--timeout", type=click.FloatRange(0, 60, min_open=True), default=rdns.DEFAULT_TIMEOUT,
    show_default=True, help="Seconds to wait for each answer.",
)
@click.option("--retry-failed", is_flag=True, help="Also look up again the addresses whose earlier look-up gave no name.")
@user_errors
def enrich_rdns(db, resolver, concurrency, timeout, retry_failed):
    """Look up the reverse DNS (PTR) names of the stored addresses that have none.

    Only this command queries DNS, and only the resolver given. Each outcome and
    its time are stored, a few dozen at a time, so an interruption keeps what was
    looked up; addresses that got no name are asked again only with --retry-failed.

    Example:

        datasette-forensics enrich-rdns incident.db --resolver 192.0.2.53 --concurrency 32
    """
    import os

    where = rdns.parse_resolver(resolver)  # refused before DB is opened
    if not os.path.exists(db):
        raise ForensicsError(f"No such database: {db}")
    database = open_db(db)
    todo = database.execute(rdns.TODO_COUNT, {"retry": int(retry_failed)}).fetchone()[0]
    bar = None
    if sys.stderr.isatty() and todo:
        bar = click.progressbar(length=todo, label="PTR look-ups", file=sys.stderr)
        bar.__enter__()
    try:
        summary = rdns.enrich(database, where, concurrency, timeout, retry_failed, bar.update if bar else None)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    click.echo(terminal.safe(summary.line()))
    if summary.stopped:
        raise ForensicsError(summary.stopped)


@cli.command(name="clickhouse-scope")
@db_argument
@click.option("--table", default="logs", show_default=True, metavar="T", help="The ClickHouse table of access logs.")
@click.option(
    "--map", "maps", metavar="NAME=COLUMN", multiple=True,
    help="The table's column for jsonl field NAME (repeatable), e.g. timestamp=event_time.",
)
@click.option("--no-org-id", is_flag=True, help="The table has no org_id column.")
@user_errors
def clickhouse_scope(db, table, maps, no_org_id):
    """Print the ClickHouse SQL that selects the incident's candidate requests.

    The first cut (window, scope paths, org routes, and the 2xx requests after
    the patch that the post_patch_valid rule needs) then runs inside ClickHouse;
    pass the SQL to import-logs --query to drill down on the candidates in SQLite.

    Example:

        datasette-forensics clickhouse-scope incident.db --table access > scope.sql
    """
    import os


    if not os.path.exists(db):
        raise ForensicsError(f"No such database: {db}")
    mapping = clickhouse.parse_maps(maps)
    incident = scope.get_incident(open_db(db))
    if incident is None:
        raise ForensicsError(
            f"{db} has no incident yet: set one with datasette-forensics incident {db} FILE.toml."
        )
    click.echo(clickhouse.scope_sql(incident, table, mapping, org_id=not no_org_id), nl=False)


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
        # json.dumps escapes C0 controls; json_safe also C1 and bidi (same values).
        text = terminal.json_safe(json.dumps(report_module.build_report(database), indent=2, ensure_ascii=False)) + "\n"
    else:
        text = report_module.notification_csv(database)
    if output:
        with open(output, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    elif fmt == "csv" and terminal.is_terminal(sys.stdout):
        # Cells hold record text (org names): shown, never obeyed, on a terminal.
        click.echo("\n".join(terminal.safe(line) for line in text.split("\r\n")), nl=False)
    else:
        # Not click.echo: off a terminal it strips ANSI sequences, changing the data.
        stdout = click.get_text_stream("stdout")
        stdout.write(text)
        stdout.flush()


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

    parsed = records.read_records(kind, file)  # a bad file is refused before DB is opened
    added, updated = records.store_records(open_db(db), parsed)
    click.echo(terminal.safe(f"{parsed.kind.name}: {added:,} added, {updated:,} updated"))


@cli.command(name="incident")
@db_argument
@click.argument("file")
@user_errors
def incident_command(db, file):
    """Set the incident (window, scope paths, org routes) from a TOML FILE and recompute the scope.

    Example:

        datasette-forensics incident incident.db incident.toml
    """

    loaded = incident.load_incident(file)  # a bad file is refused before DB is opened
    click.echo(terminal.safe(incident.summary(incident.store_incident(open_db(db), loaded))))


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


    demo_module.build(db_path, with_case_work=True)
    name = os.path.splitext(os.path.basename(db_path))[0]
    click.echo(f"Built {db_path} from {demo_module.SAMPLE_DATA.resolve()}.")
    if build_only:
        return
    settings = []
    for option, content in permissions.serve_options(demo_module.config(name), demo_module.metadata(name)).items():
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(content, f)
        settings += [option, f.name]
    click.echo(f"Workbench: http://127.0.0.1:{port}/{name}/-/forensics")
    click.echo("Sign in as root (to apply rules) with the one-time link Datasette prints below.")
    datasette_cli.main(
        ["serve", db_path, "--host", "127.0.0.1", "--port", str(port), "--root", *settings],
        prog_name="datasette",
    )


def _default_actor() -> str | None:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no login name (some containers)
        return None


def _org_changes(database, changes: list) -> list[str]:
    slugs = dict(database.execute("select id, slug from orgs")) if changes else {}
    return [
        terminal.safe(
            f"  org {c['org_id']} ({slugs.get(c['org_id'], '?')}): {c['from'] or 'none'} -> {c['to'] or 'none'}"
        )
        for c in changes
    ]


@cli.command(name="rules")
@db_argument
@click.option("--list", "list_", is_flag=True, help="List the rules: state, kind, description.")
@click.option("--apply", "apply_", metavar="NAME[,NAME…]|all", help="Apply rules in this order (all: every built-in).")
@click.option("--undo", metavar="NAME[,NAME…]|all", help="Undo applied rules (all: every applied rule, last first).")
@click.option("--add", metavar="NAME", help="Save a custom rule (with --filter or --sql); it is not applied yet.")
@click.option("--filter", "filter_", metavar="JSON", help='The custom rule\'s filter, e.g. \'{"cidr": "203.0.113.0/24", "ua_kind": "bot"}\'.')
@click.option("--sql", metavar="PREDICATE", help="The custom rule as a SQL boolean expression over requests_view.")
@click.option("--description", metavar="TEXT", help="The custom rule's description.")
@click.option("--delete", metavar="NAME", help="Delete a custom rule (undone first if applied).")
@click.option("--actor", metavar="NAME", help="Who to record in the audit log (default: your login name).")
@click.option("--dry-run", is_flag=True, help="With --apply: show what it would explain and which statuses would change; change nothing.")
@user_errors
def rules_command(db, list_, apply_, undo, add, filter_, sql, description, delete, actor, dry_run):
    """List, apply, undo, add or delete elimination rules; every change is audited.

    With no option, lists the rules (as --list).

    Applying prints the requests each rule newly explained and the orgs whose
    status changed. An applied rule also explains matching requests of later
    log batches.

    Example:

        datasette-forensics rules incident.db --apply staff,partner

        datasette-forensics rules incident.db --add vpn --filter '{"cidr": "198.51.100.0/24"}'
    """

    chosen = [a for a in (list_, apply_, undo, add, delete) if a]
    if not chosen and not (filter_ or sql or description):
        list_, chosen = True, [True]
    if len(chosen) != 1:
        raise ForensicsError("Give exactly one of --list, --apply, --undo, --add or --delete.")
    if (filter_ or sql) and not add:
        raise ForensicsError("--filter and --sql go with --add NAME.")
    database = open_db(db)
    actor = actor or _default_actor()
    if list_:
        listed = rules.list_rules(database)
        width = max(len(r["name"]) for r in listed)
        for r in listed:
            state = "applied" if r["applied"] else "-"
            kind = "builtin" if r["builtin"] else "custom"
            click.echo(terminal.safe(f"{r['name']:<{width}}  {state:<7}  {kind:<7}  {r['description']}"))
        return
    if add:
        if bool(filter_) == bool(sql):
            raise ForensicsError("Give the custom rule as exactly one of --filter JSON or --sql PREDICATE.")
        definition = {"sql": sql} if sql else filter_
        if filter_:
            try:
                definition = {"filter": json.loads(filter_)}
            except json.JSONDecodeError as exc:
                raise ForensicsError(f"--filter is not valid JSON ({exc.msg}).") from None
        saved = actions.create_custom_rule(database, add, definition, actor, description)
        click.echo(terminal.safe(f"Saved custom rule {saved['name']} (not applied yet): {saved['description']}"))
        return
    if delete:
        result = actions.delete_custom_rule(database, delete, actor)
        if result["undo"]:
            click.echo(f"{delete}: undone, {result['undo']['requests_unexplained']:,} requests no longer explained")
            for line in _org_changes(database, result["undo"]["orgs_changed"]):
                click.echo(line)
        click.echo(f"Deleted custom rule {delete}.")
        return
    if dry_run and not apply_:
        raise ForensicsError("--dry-run goes with --apply.")
    if dry_run:
        previews = (preview.preview_apply(database, name) for name in rules.resolve_names(database, apply_))
        _echo_rule_changes(database, previews, "already applied",
                           "{rule} (dry run, nothing changed): would explain {requests_explained:,} requests")
        return
    if apply_:
        applied = actions.apply_all(database, rules.resolve_names(database, apply_), actor)
        _echo_rule_changes(database, applied, "already applied", "{rule}: {requests_explained:,} requests newly explained")
        return
    names = (
        [n for n in reversed(rules.applied_names(database)) if n not in {r.NAME for r in rules.SYSTEM}]
        if undo.strip() == "all"
        else [n for n in rules.resolve_names(database, undo)]
    )
    _echo_rule_changes(database, actions.undo_all(database, names, actor), "not applied",
                       "{rule}: undone, {requests_unexplained:,} requests no longer explained")


def _echo_rule_changes(database, results, already: str, done: str) -> None:
    """Print each rule change (applied, undone or previewed) and the org statuses it moves.

    Args:
        already: what to say of a rule that needed no change.
        done: a format string over the result's fields (its name is ``rule``).
    """
    for result in results:
        if result["already"]:
            click.echo(f"{result['rule']}: {already}")
            continue
        click.echo(done.format(**result))
        for line in _org_changes(database, result["orgs_changed"]):
            click.echo(line)


def _one_target(org, signature, ip, cidr, user_agent) -> tuple[str, object] | None:
    """The note or verdict target the options name: (kind, value), or None when none is given."""
    given = [
        (kind, value)
        for kind, value in (("org", org), ("signature", signature), ("ip", ip), ("cidr", cidr), ("user_agent", user_agent))
        if value is not None
    ]
    if len(given) > 1:
        raise ForensicsError("Give one target: --org, --signature, --ip, --cidr or --user-agent.")
    return given[0] if given else None


@cli.command(name="note")
@db_argument
@click.option("--org", metavar="ORG_ID", help="The org the note is about.")
@click.option("--signature", nargs=2, metavar="IP UA", help="The signature (address and exact user agent).")
@click.option("--ip", metavar="IP", help="The client address.")
@click.option("--cidr", metavar="NETWORK", help="The network, e.g. 203.0.113.0/24.")
@click.option("--user-agent", metavar="UA", help="The exact user agent.")
@click.option("--tag", metavar="WORD", help="A short tag such as notified, cloud, suspicious.")
@click.option("--text", metavar="TEXT", help="Free text.")
@click.option("--edit", type=int, metavar="ID", help="Replace note ID's tag and text (the old version is kept).")
@click.option("--delete", type=int, metavar="ID", help="Delete note ID (its history is kept).")
@click.option("--list", "list_", is_flag=True, help="List the live notes (with --history: every version).")
@click.option("--history", is_flag=True, help="With --list: every version of every note, deleted ones too.")
@click.option("--actor", metavar="NAME", help="Who wrote it (default: your login name).")
@user_errors
def note_command(db, org, signature, ip, cidr, user_agent, tag, text, edit, delete, list_, history, actor):
    """Write, edit, delete or list notes and tags on an org, signature, address, network or user agent.

    Example:

        datasette-forensics note incident.db --org 12 --tag notified --text "Emailed on 21 July"
    """
    target = _one_target(org, signature, ip, cidr, user_agent)
    actions = [a for a in (target, edit, delete, list_) if a]
    if len(actions) != 1:
        raise ForensicsError("Give one of a target (--org, --signature, --ip, --cidr, --user-agent), --edit, --delete or --list.")
    database = open_db(db)
    actor = actor or _default_actor()
    if list_:
        listed = notes.list_notes(database, include_deleted=history)
        versions = notes.history(database, [n["id"] for n in listed]) if history else {}
        for n in listed:
            what = notes.Target(n["kind"], n["target"]).describe()
            state = " (deleted)" if n["deleted_at"] else ""
            click.echo(terminal.safe(
                f"{n['id']}  {what}  tag={n['tag'] or '-'}  {n['text'] or ''}  [{n['updated_by'] or '?'} {n['updated_at']}]{state}"
            ))
            for v in versions.get(n["id"], []):
                click.echo(terminal.safe(f"    {v['at']}  {v['action']}  {v['actor'] or '?'}  tag={v['tag'] or '-'}  {v['text'] or ''}"))
        return
    if delete:
        notes.delete_note(database, delete, actor)
        click.echo(f"Deleted note {delete} (its history is kept).")
        return
    if edit:
        notes.edit_note(database, edit, tag, text, actor)
        click.echo(f"Edited note {edit} (the earlier version is kept).")
        return
    kind, value = target
    resolved = notes.resolve_target(database, kind, value)
    saved = notes.add_note(database, resolved, tag, text, actor)
    click.echo(terminal.safe(f"Note {saved['id']} on {resolved.describe()}."))


@cli.command(name="verdict")
@db_argument
@click.option("--ip", metavar="IP", help="The signature's address.")
@click.option("--user-agent", metavar="UA", help="The signature's exact user agent ('' for none).")
@click.option("--org", metavar="ORG_ID", help="The org it is explained for (default: every org).")
@click.option("--reason", metavar="TEXT", help="Why, e.g. 'customer confirmed: their CI runners'.")
@click.option("--file", "file_", type=click.Path(dir_okay=False), help="A CSV of verdicts: ip, user_agent, org_id (empty: every org), reason.")
@click.option("--withdraw", is_flag=True, help="Withdraw the standing verdict on --ip/--user-agent [--org].")
@click.option("--list", "list_", is_flag=True, help="List the verdicts (withdrawn ones too).")
@click.option("--actor", metavar="NAME", help="Who to record in the ledger (default: your login name).")
@user_errors
def verdict_command(db, ip, user_agent, org, reason, file_, withdraw, list_, actor):
    """Make, withdraw or list verdicts: a signature explained for one org or every org, with a reason.

    Example:

        datasette-forensics verdict incident.db --ip 198.51.100.7 --user-agent 'ci-runner/2.1' --org 12 --reason 'customer confirmed: their CI runners'
    """
    single = ip is not None or user_agent is not None
    if sum(bool(a) for a in (single, file_, list_)) != 1:
        raise ForensicsError("Give one of --ip with --user-agent, --file or --list.")
    if single and (ip is None or user_agent is None):
        raise ForensicsError("A verdict names its signature with both --ip and --user-agent.")
    if withdraw and not single:
        raise ForensicsError("--withdraw goes with --ip and --user-agent (and --org when the verdict has one).")
    if withdraw and reason:
        raise ForensicsError("--withdraw takes no --reason.")
    rows = verdicts.read_file(file_) if file_ else None  # a bad file is refused before DB is opened
    database = open_db(db)
    actor = actor or _default_actor()
    if list_:
        for v in verdicts.listed(database, include_withdrawn=True):
            state = f"withdrawn {v['withdrawn_at']} by {v['withdrawn_by'] or '?'}" if v["withdrawn_at"] else "standing"
            click.echo(terminal.safe(
                f"{v['id']}  {v['ip']}  {v['user_agent']!r}  org={v['org_id'] or 'every'}  {state}  "
                f"[{v['actor'] or '?'} {v['created_at']}]  {v['reason']}"
            ))
        return
    if rows is not None:
        results = verdicts.make_many(database, rows, actor)
    elif withdraw:
        results = [verdicts.withdraw(database, ip, user_agent, org, actor)]
    else:
        results = [verdicts.make(database, ip, user_agent, org, reason or "", actor)]
    for result in results:
        click.echo(terminal.safe(verdicts.summary(result)))


@cli.command(name="evidence")
@db_argument
@click.option("--org", metavar="ORG_ID", help="The org to write the evidence file for.")
@click.option("--all", "all_", is_flag=True, help="One file per exposed and review org, into the directory -o DIR.")
@click.option("-o", "--output", required=True, metavar="FILE|DIR", help="The HTML file (with --org) or the directory (with --all).")
@user_errors
def evidence_command(db, org, all_, output):
    """Write a self-contained HTML evidence file for one org (or every exposed and review org).

    The file names no other customer: a signature shared with other orgs is
    "also seen on N other organisations".

    Example:

        datasette-forensics evidence incident.db --org 12 -o acme-evidence.html
    """
    if bool(org) == bool(all_):
        raise ForensicsError("Give one of --org ORG_ID or --all.")
    database = open_db(db)
    if all_:
        paths = evidence.write_all(database, output)
        click.echo(terminal.safe(f"Wrote {len(paths):,} evidence files into {output}."))
        return
    evidence.write(database, org, output)
    click.echo(terminal.safe(f"Wrote the evidence for org {org} to {output}."))


@cli.command(name="notify")
@db_argument
@click.option("--template", type=click.Path(dir_okay=False), help="A Jinja2 template for the body (default: the built-in one).")
@click.option("--from", "sender", required=True, metavar="ADDRESS", help="The sender address.")
@click.option("--subject", required=True, metavar="TEXT", help="The subject line.")
@click.option("-o", "--output", required=True, metavar="DIR", help="Where to write ORG_ID.eml files.")
@click.option("--status", default="exposed,review", show_default=True, metavar="S[,S…]", help="The statuses to notify.")
@click.option("--only-changed", is_flag=True, help="Only orgs already notified whose status or unexplained count changed since.")
@click.option("--actor", metavar="NAME", help="Who to record (default: your login name).")
@user_errors
def notify_command(db, template, sender, subject, output, status, only_changed, actor):
    """Render one .eml message per org to tell, and record it; nothing is sent.

    The template is given org, status, incident, requests (its unexplained
    requests), in_scope_requests and unexplained_requests.

    Example:

        datasette-forensics notify incident.db --from security@example.com --subject "Security incident" -o outbox/
    """
    statuses = tuple(s.strip() for s in status.split(",") if s.strip())
    result = notify.notify(
        open_db(db), output, sender, subject, template, statuses, only_changed, actor or _default_actor()
    )
    click.echo(terminal.safe(f"Wrote {len(result['written']):,} messages into {output}."))
    for org, reason in result["skipped"]:
        click.echo(terminal.safe(f"  skipped org {org}: {reason}"))
