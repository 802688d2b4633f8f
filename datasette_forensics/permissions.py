"""Every permission check and registration of the plugin, on both Datasette lines.

Datasette 1.0 alphas check *actions* on *resources* (``datasette.allowed()``,
``register_actions``, ``permission_resources_sql``); 0.65 asks its
``permission_allowed`` hooks and has no registration. This module is the only
place that knows which line is running (``ACTIONS``); views and hooks call it.

A view makes one call, before it reads anything::

    page = await open_page(datasette, request, "mypage", tables=("orgs",))

(``views.common.open_page`` calls :func:`ensure_view_database` and
:func:`ensure_view_tables`.) A page that shows one table's data as a part of
itself asks :func:`may_view_table` and leaves the part out, saying so
(``page.withhold(...)``). Writes ask :func:`ensure_write`.

``forensics-write``: the root actor holds it; others through the plugin's ``write``
allow block, read from the plugin's configuration (``metadata`` on 0.65, ``datasette.yaml``
on 1.0). Another permission plugin may grant it too.
"""

from __future__ import annotations

from datasette import Forbidden, hookimpl
from datasette.utils import actor_matches_allow

try:  # Datasette 1.0 alphas: actions on resources.
    from datasette.permissions import Action, PermissionSQL
    from datasette.resources import DatabaseResource, TableResource
except ImportError:  # Datasette 0.65: permission_allowed hooks.
    Action = PermissionSQL = DatabaseResource = TableResource = None

ACTIONS = Action is not None
WRITE = "forensics-write"
WRITE_DESCRIPTION = "Apply and undo rules, save views and record case work in the forensic workbench"
PLUGIN = "datasette-forensics"
# Every workbench page shows the log's data: these tables' view-table is always needed.
LOG_TABLES = ("requests", "ips", "user_agents")


def _granted_write(datasette, actor) -> str | None:
    """Why this plugin grants forensics-write to actor, or None."""
    if actor and actor.get("id") == "root":
        return "root holds forensics-write"
    allow = (datasette.plugin_config(PLUGIN) or {}).get("write")
    if allow is not None and actor_matches_allow(actor, allow):
        return "the datasette-forensics write allow block"
    return None


# Hooks: __init__ imports the ones of the running line.
if ACTIONS:

    @hookimpl
    def register_actions(datasette):
        """forensics-write, a global action."""
        return [Action(name=WRITE, abbr=None, description=WRITE_DESCRIPTION)]

    @hookimpl
    def permission_resources_sql(datasette, actor, action):
        """forensics-write for root and the plugin's write allow block."""
        if action != WRITE:
            return None
        reason = _granted_write(datasette, actor)
        return PermissionSQL.allow(reason=reason) if reason else None

else:

    @hookimpl
    def permission_allowed(datasette, actor, action, resource):
        """forensics-write for root and the plugin's write allow block."""
        if action != WRITE:
            return None
        # No opinion otherwise: another permission plugin may still grant it.
        return True if _granted_write(datasette, actor) else None



# Checks --------------------------------------------------------------------------


async def _cascade_065(datasette, actor, checks) -> bool:
    """0.65's rule for views: the first check with an opinion decides, else allowed."""
    try:
        await datasette.ensure_permissions(actor, checks)
    except Forbidden:
        return False
    return True


async def may_view_instance(datasette, actor) -> bool:
    if ACTIONS:
        return await datasette.allowed(action="view-instance", actor=actor)
    return await _cascade_065(datasette, actor, ["view-instance"])


async def may_view_database(datasette, actor, database: str) -> bool:
    """view-database (and the instance above it), as Datasette's own database page decides."""
    if ACTIONS:
        return await datasette.allowed(
            action="view-instance", actor=actor
        ) and await datasette.allowed(action="view-database", resource=DatabaseResource(database), actor=actor)
    return await _cascade_065(datasette, actor, [("view-database", database), "view-instance"])


async def may_view_table(datasette, actor, database: str, table: str) -> bool:
    """view-table, as Datasette's own table page decides (table, then database, then instance)."""
    if ACTIONS:
        return await may_view_database(datasette, actor, database) and await datasette.allowed(
            action="view-table", resource=TableResource(database, table), actor=actor
        )
    return await _cascade_065(
        datasette, actor, [("view-table", (database, table)), ("view-database", database), "view-instance"]
    )


async def may_write(datasette, actor) -> bool:
    if ACTIONS:
        return await datasette.allowed(action=WRITE, actor=actor)
    return bool(await datasette.permission_allowed(actor, WRITE, default=False))


async def ensure_view_instance(datasette, actor) -> None:
    if not await may_view_instance(datasette, actor):
        raise Forbidden("You may not view this Datasette instance.")


async def ensure_view_database(datasette, actor, database: str) -> None:
    if not await may_view_database(datasette, actor, database):
        raise Forbidden(f"You may not view the {database} database.")


async def may_use_workbench(datasette, actor, database: str) -> bool:
    """May actor open the workbench of database (the database and its log tables)?"""
    for table in LOG_TABLES:
        if not await may_view_table(datasette, actor, database, table):
            return False
    return True


async def ensure_view_tables(datasette, actor, database: str, tables) -> None:
    """403 unless actor may view every one of tables (a page that is all about them)."""
    for table in tables:
        if not await may_view_table(datasette, actor, database, table):
            raise Forbidden(f"This page shows the {table} table, which you may not view.")


async def ensure_write(datasette, actor, what: str = "Changing the workbench") -> None:
    if not await may_write(datasette, actor):
        raise Forbidden(f"{what} needs the {WRITE} permission.")


def withheld_sentence(tables: list[str], part: str) -> str:
    """The sentence a page shows where it leaves out tables' data."""
    if len(tables) == 1:
        return f"{part} left out: they come from the {tables[0]} table, which you may not view."
    names = ", ".join(tables[:-1]) + f" and {tables[-1]}"
    return f"{part} left out: they come from the {names} tables, which you may not view."


def datasette_kwargs(config: dict | None = None, metadata: dict | None = None) -> dict:
    """Datasette() keyword arguments for allow blocks, table and plugin settings (config)
    and titles and descriptions (metadata): 1.0 reads config from datasette.yaml, 0.65
    everything from metadata."""
    if ACTIONS:
        return {"config": config or {}, "metadata": metadata or {}}
    return {"metadata": _deep_merge(metadata or {}, config or {})}


def serve_options(config: dict | None = None, metadata: dict | None = None) -> dict[str, dict]:
    """The same as `datasette serve` options: {"--config": ..., "--metadata": ...} (JSON files)."""
    return {f"--{key}": value for key, value in datasette_kwargs(config, metadata).items() if value}


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
