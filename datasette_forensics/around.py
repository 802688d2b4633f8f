"""Datasette around the workbench: which tables an analyst browses, how ids read, how
log text shows on Datasette's own table pages, and where signing in lands.

- The tables the plugin keeps for itself (aggregates, dictionaries, bookkeeping) are
  hidden through plugin metadata, so ``datasette DB`` lists the analyst's tables
  first (hidden tables stay reachable by URL and under "hidden tables").
- Foreign keys read as their values (``label_column``), and ``requests`` (whose
  integer columns carry no foreign-key constraints, to keep imports fast) shows the
  address and agent, URI, referer and import file beside each id.
- Text holding control, escape, bidi or invisible characters is shown with visible
  escapes and a badge, as on the workbench pages.
- The ``--root`` sign-in link lands on the workbench when one forensic database is
  served.
"""

from __future__ import annotations

import secrets
import weakref

from datasette import Forbidden, Response
from markupsafe import Markup, escape

from .terminal import visible

# Tables the plugin keeps for itself: derived data, dictionaries, bookkeeping.
HIDDEN_TABLES = (
    "_sqlite_migrations", "dictionary_watermarks", "line_counts", "line_counts_suspended", "line_counts_staged",
    "line_counts_batch", "line_filter", "derived_upto", "window_hours_upto", "raw_bytes", "raw_chunks",
    "slug_windows", "integration_windows", "pivot_groups", "org_stats", "sig_stats", "sig_org",
    "signature_scope", "scope_days", "scoped", "scoped_clustered", "post_patch_valid", "rule_waterfall",
    "paths", "uris", "referers", "signatures",
)
LABEL_COLUMNS = {
    "import_batches": "source",
    "ips": "ip",
    "user_agents": "ua",
    "uris": "uri",
    "paths": "path",
    "referers": "referer",
    "orgs": "slug",
    "users": "email",
}
# requests columns -> SQL giving the label of one id (:id), all from a fixed list.
REQUEST_LABELS = {
    "sig_id": "select i.ip || '  ' || a.ua from signatures g join ips i on i.id = g.ip_id "
              "join user_agents a on a.id = g.ua_id where g.id = :id",
    "uri_id": "select uri from uris where id = :id",
    "referer_id": "select referer from referers where id = :id",
    "batch_id": "select source from import_batches where id = :id",
}
REQUEST_LINKS = {"sig_id": "signatures", "uri_id": "uris", "referer_id": "referers", "batch_id": "import_batches"}

# The forensic databases of each running Datasette, noted at startup.
_forensic: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def note_forensic_databases(datasette, names) -> None:
    _forensic[datasette] = set(names)


def forensic_databases(datasette) -> set:
    return _forensic.get(datasette, set())


def metadata(datasette) -> dict:
    """Hidden tables and label columns of every forensic database."""
    tables = {name: {"hidden": True} for name in HIDDEN_TABLES}
    for name, column in LABEL_COLUMNS.items():
        tables.setdefault(name, {})["label_column"] = column
    return {"databases": {name: {"tables": tables} for name in forensic_databases(datasette)}}


def apply_table_settings(datasette) -> None:
    """Datasette 1.0 reads hidden tables and label columns from its config, not from plugin
    metadata: add ours there, never overriding what the configuration says."""
    config = getattr(datasette, "config", None)
    if not isinstance(config, dict) or not hasattr(datasette, "table_config"):
        return  # Datasette 0.65: the get_metadata hook serves them
    for name, settings in metadata(datasette)["databases"].items():
        tables = config.setdefault("databases", {}).setdefault(name, {}).setdefault("tables", {})
        for table, values in settings["tables"].items():
            for key, value in values.items():
                tables.setdefault(table, {}).setdefault(key, value)


def badge(text: str) -> Markup:
    """Log text as visible escapes, with the workbench's warning badge when anything was escaped."""
    shown = visible(text)
    if shown == text:
        return Markup(escape(text))
    return Markup(
        '{}<span class="forensics-hostile" title="This text holds control, escape, bidi or invisible '
        'characters: they are shown as \\x.. and \\u.. escapes." style="margin-left:.3em;padding:0 .3em;'
        'background:#7a1f1f;color:#fff;font-size:.75em;font-weight:bold">⚠ escaped</span>'
    ).format(escape(shown))


def render_cell(value, column, table, database, datasette):
    """Datasette's table pages: labelled request ids, and hostile text made visible."""
    if database not in forensic_databases(datasette):
        return None
    if table == "requests" and column in REQUEST_LABELS and isinstance(value, int):
        return _request_label(datasette, database, column, value)
    if isinstance(value, str) and visible(value) != value:
        return badge(value)
    return None


def _request_label(datasette, database, column, value):
    async def inner():
        db = datasette.get_database(database)
        row = (await db.execute(REQUEST_LABELS[column], {"id": value})).first()
        url = datasette.urls.row(database, REQUEST_LINKS[column], str(value))
        label = row[0] if row and row[0] is not None else ""
        shown = visible(label)
        if len(shown) > 120:
            shown = shown[:119] + "…"
        return Markup('<a href="{}">{}</a>&nbsp;<span title="{}">{}</span>').format(
            url, value, visible(label)[:2000], shown
        )

    return inner


async def sign_in(datasette, request):
    """``--root``'s one-time link: sign in as root and land on the workbench."""
    token = request.args.get("token") or ""
    if not datasette._root_token:
        raise Forbidden("Root token has already been used")
    if not secrets.compare_digest(token, datasette._root_token):
        raise Forbidden("Invalid token")
    datasette._root_token = None
    names = sorted(forensic_databases(datasette))
    target = datasette.urls.database(names[0]) + "/-/forensics" if len(names) == 1 else datasette.urls.instance()
    response = Response.redirect(target)
    response.set_cookie("ds_actor", datasette.sign({"a": {"id": "root"}}, "actor"))
    return response

