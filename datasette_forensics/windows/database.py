"""The window engine behind the pages: a Datasette database whose queries can read a
window's figures from two temp tables the engine fills.

A page with a ``?from=``/``?to=`` window swaps its ``page.db`` for a
:class:`WindowDatabase`. Its queries run as usual, except that a query naming
``temp.window_sigs`` or ``temp.window_pairs`` first makes sure that connection's temp
table holds this window's figures:

- ``temp.window_sigs(sig_id, requests, in_scope, unexplained, first_ts, last_ts)``: per
  signature with requests in the window;
- ``temp.window_pairs(sig_id, org_id, requests, unexplained, first_ts, last_ts)``: per
  in-scope (signature, org).

They come from :mod:`.relations` (the hour cells held in numpy, plus the raw edge hours),
and are refilled only when the window or the cells' generation changed (a key kept in
``temp.window_keys``). Everything else (signature attributes, groupings, enrichment,
filters, sorts and paging) stays in the same SQL as without the engine, joined to these
small tables; so the pages' figures and order cannot drift from the SQL path.

Above the memory bound (the plugin setting ``window_engine_mb``; 0 turns the engine off),
the pages keep reading the cells in SQL (``views/sources.py``).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading

from datasette.database import Results
from datasette.utils import sqlite_timelimit

from . import cells as cells_module
from . import groups as groups_module

DEFAULT_MB = 512
# Bytes per cell held in numpy (int32 hour/sig/requests + int64 first/last; scoped adds org
# and unexplained), plus headroom for the per-window arrays.
BYTES_PER_HOUR_CELL = 24
BYTES_PER_SCOPED_CELL = 32
HEADROOM = 1.5

TABLES = {
    "window_sigs": (
        "create temp table window_sigs (sig_id integer primary key, requests integer, in_scope integer, "
        "unexplained integer, first_ts integer, last_ts integer)",
        "insert into temp.window_sigs values (?, ?, ?, ?, ?, ?)",
    ),
    "window_pairs": (
        "create temp table window_pairs (sig_id integer, org_id text, requests integer, unexplained integer, "
        "first_ts integer, last_ts integer, primary key (sig_id, org_id)) without rowid",
        "insert into temp.window_pairs values (?, ?, ?, ?, ?, ?)",
    ),
}

_sizes: dict[tuple[str, int], int] = {}
_sizes_lock = threading.Lock()


def limit_mb(datasette) -> float:
    """The plugin setting ``window_engine_mb`` (0: off)."""
    from ..permissions import PLUGIN

    value = (datasette.plugin_config(PLUGIN) or {}).get("window_engine_mb", DEFAULT_MB)
    try:
        return float(value)
    except (TypeError, ValueError):
        return DEFAULT_MB


def key_of(db) -> str:
    """The key the engine keeps a Datasette database's cells under: its path (its name
    for a database without a file)."""
    return db.path or db.name


def cells_bytes(conn: sqlite3.Connection, key: str) -> int:
    """The memory the cells of this database would take in the engine (counted once per generation)."""
    gen = cells_module.generation(conn)
    with _sizes_lock:
        if (key, gen) in _sizes:
            return _sizes[(key, gen)]
    hours = conn.execute("select count(*) from window_hours").fetchone()[0]
    scoped = conn.execute("select count(*) from window_scoped_hours").fetchone()[0]
    size = int((hours * BYTES_PER_HOUR_CELL + scoped * BYTES_PER_SCOPED_CELL) * HEADROOM)
    with _sizes_lock:
        _sizes[(key, gen)] = size
    return size


def has_cells(conn: sqlite3.Connection) -> bool:
    return bool(conn.execute("select 1 from sqlite_master where name = 'window_generation'").fetchone())


def fits(conn: sqlite3.Connection, key: str, mb: float) -> bool:
    """Whether the engine serves this database: it is on (``mb`` > 0) and the cells
    exist and fit its memory bound."""
    return mb > 0 and has_cells(conn) and cells_bytes(conn, key) <= mb * 1024 * 1024


# Cells up to this size (the estimate of cells_bytes; about 200,000 hour cells) load
# within the request that needs them, in a quarter of a second or less; larger ones load
# in the background (see serves).
INLINE_LOAD_BYTES = 8 << 20

# Per database path: the background task loading its cells (at startup, or after a
# later batch or rule change made the loaded ones stale).
warming: dict[str, "asyncio.Task"] = {}


def start_warming(datasette, db) -> "asyncio.Task | None":
    """Load the database's cells in the background unless a load of them is running
    (the startup hook calls it, so the first window page after a server start does
    not pay the load; :func:`serves`, when the loaded cells went stale). Returns the
    running load (None: the engine is off)."""
    mb = limit_mb(datasette)
    key = key_of(db)
    if mb <= 0:
        return None
    if key in warming and not warming[key].done():
        return warming[key]

    def warm(conn):
        if fits(conn, key, mb):
            cells = cells_module.cached(conn, key)
            groups_module.sig_attributes(conn, key, cells.generation)  # every pivot's first request needs them

    task = warming[key] = asyncio.get_running_loop().create_task(db.execute_fn(warm))
    return task


async def serves(page, wait: bool) -> bool:
    """Whether the engine serves this page's database: its cells fit the memory bound
    and are loaded for the database's current generation, or are small enough to load
    in place.

    Otherwise (the server has just started, or a batch, rule or record change has just
    landed) their load runs in the background, on one of Datasette's SQL threads, and
    no other page waits for it. A page that can read the same figures in SQL fast at
    millions of requests (the timelines, over the cells: ``wait=False``) does so
    meanwhile; a pivot, whose SQL over a long window can reach the time limit at
    millions of requests, awaits the load (``wait=True``, once per change: about 4 s at
    5M requests) rather than show a time-out."""
    mb = limit_mb(page.datasette)
    if mb <= 0:
        return False
    key = key_of(page.db)

    def decide(conn) -> str:
        if not fits(conn, key, mb):
            return "sql"
        if cells_module.current(conn, key) or cells_bytes(conn, key) <= INLINE_LOAD_BYTES:
            return "engine"
        return "load"

    use = await page.db.execute_fn(decide)
    if use == "load":
        task = start_warming(page.datasette, page.db)
        if not wait:
            return False
        await asyncio.shield(task)
        return True
    return use == "engine"


async def for_page(page) -> bool:
    """Serve this page's window from the engine when it :func:`serves` the database
    (waiting for a load of its cells): swaps ``page.db`` and sets ``page.state.engine``.
    Returns whether it did."""
    state = page.state
    if not state.window or not await serves(page, wait=True):
        return False
    page.db = WindowDatabase(page.db, key_of(page.db), state.window_params())
    state.engine = True
    return True


class WindowDatabase:
    """A Datasette database proxy whose ``execute`` fills the window's temp tables first."""

    def __init__(self, db, key: str, window: dict):
        self._db = db
        self._key = key
        self._lo, self._hi = window["w_from"], window["w_to"]

    def __getattr__(self, name):
        return getattr(self._db, name)

    def _ensure(self, conn: sqlite3.Connection, table: str) -> None:
        gen = cells_module.generation(conn)
        want = f"{self._key}|{gen}|{self._lo}|{self._hi}"
        conn.execute("create temp table if not exists window_keys (name text primary key, key text)")
        row = conn.execute("select key from temp.window_keys where name = ?", [table]).fetchone()
        if row and row[0] == want:
            return
        cells = cells_module.cached(conn, self._key)
        if table == "window_sigs":
            f = groups_module.window_sigs(conn, cells, self._key, self._lo, self._hi)
            rows = zip(
                f["sig_id"].tolist(), f["requests"].tolist(), f["in_scope"].tolist(),
                f["unexplained"].tolist(), f["first_ts"].tolist(), f["last_ts"].tolist(),
            )
        else:
            f = groups_module.window_pairs(conn, cells, self._key, self._lo, self._hi)
            rows = zip(
                f["sig_id"].tolist(), f["org_id"].tolist(), f["requests"].tolist(),
                f["unexplained"].tolist(), f["first_ts"].tolist(), f["last_ts"].tolist(),
            )
        create, insert = TABLES[table]
        conn.execute(f"drop table if exists temp.{table}")
        conn.execute(create)
        conn.executemany(insert, rows)
        conn.execute("insert or replace into temp.window_keys (name, key) values (?, ?)", [table, want])
        conn.commit()  # the inserts opened a transaction: end it, or later reads would keep its snapshot

    async def groups(self, **options):
        """A window pivot's page of groups and their total (see :func:`.groups.groups`)."""
        return await self._db.execute_fn(
            lambda conn: groups_module.groups(conn, self._key, self._lo, self._hi, **options)
        )

    async def execute(self, sql, params=None, truncate=False, custom_time_limit=None, page_size=None,
                      log_sql_errors=True):
        tables = [t for t in TABLES if f"temp.{t}" in sql]
        if not tables:
            return await self._db.execute(sql, params, truncate=truncate, custom_time_limit=custom_time_limit,
                                          page_size=page_size, log_sql_errors=log_sql_errors)
        time_limit = self._db.ds.sql_time_limit_ms
        if custom_time_limit and custom_time_limit < time_limit:
            time_limit = custom_time_limit

        def run(conn):
            for table in tables:
                self._ensure(conn, table)
            with sqlite_timelimit(conn, time_limit):
                cursor = conn.execute(sql, params if params is not None else {})
                rows = cursor.fetchall()
            return Results(rows, False, cursor.description)

        return await self._db.execute_fn(run)
