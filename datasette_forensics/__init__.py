"""datasette-forensics: Datasette hooks only (pages live in views/, the CLI in cli.py)."""

from __future__ import annotations

from datasette import hookimpl

from . import permissions, schema

WRITE_PERMISSION = permissions.WRITE

# The permission hooks of the running Datasette line (see permissions.py).
if permissions.ACTIONS:
    from .permissions import permission_resources_sql, register_actions  # noqa: F401
else:
    from .permissions import permission_allowed  # noqa: F401


def is_forensic_database(conn) -> bool:
    """A database this plugin manages: it holds our migrations or our import table."""
    names = {r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")}
    if "import_batches" in names:
        return True
    if "_sqlite_migrations" in names:
        return bool(
            conn.execute(
                "select 1 from _sqlite_migrations where migration_set = ?",
                [schema.migrations.name],
            ).fetchone()
        )
    return False


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

            await db.execute_write_fn(migrate, block=True)

    return inner


@hookimpl
def register_routes(datasette):
    """The workbench pages under /DB/-/forensics."""
    from .views import ROUTES

    return ROUTES


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
