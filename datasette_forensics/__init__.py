"""datasette-forensics: Datasette hooks only (pages live in views/, the CLI in cli.py)."""

from __future__ import annotations

import click
from datasette import hookimpl

from . import around, permissions, schema
from .errors import ForensicsError
from .schema import is_forensic_database
from .terminal import visible
from .windows import database as window_database

WRITE_PERMISSION = permissions.WRITE

# The permission hooks of the running Datasette line (see permissions.py).
if permissions.ACTIONS:
    from .permissions import permission_resources_sql, register_actions  # noqa: F401
else:
    from .permissions import permission_allowed  # noqa: F401


@hookimpl
def startup(datasette):
    """Apply pending schema migrations to every forensic database being served."""

    async def inner():
        for db in datasette.databases.values():
            if db.is_memory or not db.is_mutable:
                continue

            def migrate(conn):
                if is_forensic_database(conn):
                    import sqlite_utils

                    schema.ensure_schema(sqlite_utils.Database(conn))

            try:
                await db.execute_write_fn(migrate, block=True)
            except ForensicsError as exc:  # one sentence, not a traceback
                raise click.ClickException(f"{db.name}: {exc}") from None
        forensic = [
            name for name, db in datasette.databases.items()
            if not db.is_memory and await db.execute_fn(is_forensic_database)
        ]
        for name in forensic:  # the window engine's cells, loaded in the background
            window_database.start_warming(datasette, datasette.databases[name])
        around.note_forensic_databases(datasette, forensic)
        around.apply_table_settings(datasette)

    return inner


@hookimpl
def register_routes(datasette):
    """The workbench pages under /DB/-/forensics."""
    # Imported here, when Datasette asks for the routes, and not with the package:
    # every command line imports the package too, and the pages (with Datasette's
    # views under them) took 0.40 s of the 0.65 s that costs.
    from .views import ROUTES

    return ROUTES + [(r"^/-/auth-token$", around.sign_in)]


async def _forensic_databases(datasette, actor) -> list[str]:
    """Names of the served forensic databases this actor may view."""
    names = []
    for name, db in datasette.databases.items():
        if db.is_memory or not await db.execute_fn(is_forensic_database):
            continue
        if await permissions.may_use_workbench(datasette, actor, name):
            names.append(name)
    return names


@hookimpl
def menu_links(datasette, actor, request):
    """A workbench link per forensic database in the navigation menu."""

    async def inner():
        if not await permissions.may_view_instance(datasette, actor):
            return []
        return [
            {"href": datasette.urls.database(name) + "/-/forensics", "label": f"Forensics: {name}"}
            for name in await _forensic_databases(datasette, actor)
        ]

    return inner


@hookimpl
def database_actions(datasette, actor, database, request):
    """The workbench and its pivots, from a forensic database's page."""

    async def inner():
        if database not in await _forensic_databases(datasette, actor):
            return []
        base = datasette.urls.database(database) + "/-/forensics"
        return [
            {"href": base, "label": "Forensic workbench"},
            {"href": base + "/orgs", "label": "Forensics: orgs by exposure"},
            {"href": base + "/signatures", "label": "Forensics: signatures"},
        ]

    return inner


@hookimpl
def extra_template_vars(datasette):
    """forensics_workbench_url(database): the workbench of a served database, else None."""

    def forensics_workbench_url(database):
        try:
            return datasette.urls.database(database) + "/-/forensics"
        except KeyError:
            return None

    return {"forensics_workbench_url": forensics_workbench_url}


@hookimpl
def prepare_jinja2_environment(env, datasette):
    """The forensics_visible filter: log text with its control and bidi characters as escapes."""
    env.filters["forensics_visible"] = visible


@hookimpl
def get_metadata(datasette, key, database, table):
    """Hide the plugin's own tables and label foreign keys, in every forensic database."""
    return around.metadata(datasette)


@hookimpl
def render_cell(value, column, table, database, datasette):
    """Request ids with their values, and log text with visible escapes, on Datasette's pages."""
    return around.render_cell(value, column, table, database, datasette)
