"""Dictionary tables (value -> integer id): ids handed out while reading, rows stored after.

Each distinct value is stored, and enriched, once. The reading side of an
import (:class:`Dictionary`, which may run in a child process: see pipeline.py)
gives each new value the next id and keeps its row until the chunk is sent; the
storing side (:func:`store_rows`) inserts those rows under the write lock.

Reading needs no lock, so its ids are provisional: another importer may have
taken an id, or stored the same value, in the meantime, and a value evicted
from the cache gets a second provisional id. The store notices (its INSERT OR
IGNORE changes fewer rows than it was given) and translates the ids that did not
land into the stored ones, for those rows and every later reference to them
(:class:`Translation`). In the usual case, one importer, nothing is translated.

So that a provisional id is never mistaken for a stored one, the reading side
only looks up rows below its ``bound``: those stored before the batch began (ids
below ``first_new``) and those its own batch stored as they were, up to the
watermark the store records while no id has moved (``dictionary_watermarks``).
Every other id from ``first_new`` up is one it handed out itself. Rows handed
out but maybe not stored yet (this chunk's and the one before) stay cached.

The cache has two generations of CACHE_LIMIT // 2 entries each: when the current
one is full it becomes the old one, so frequent values survive the rotation
(they are promoted back on their next use) while memory stays bounded. From the
first rotation of a cache that held every value, a Bloom filter of all values
tells most new values from evicted ones without a lookup.

A first import into an empty ``uris`` or ``paths`` table defers the table's unique
index, like the ``requests`` indexes (derived/indexes.py): kept entry by entry, the
two text indexes were most of the store's work. Every value stored then is one this
object handed out, so it keeps, instead of the Bloom filter, a compact map of every
value it handed out (``keymap``: a 32-bit check of the value's hash and the id, in
the compiled helper's table) and never hands out a second id for a value: an
evicted value's candidates from the map are read back by id (rowid look-ups, no text
index needed) and the one whose stored text is the value is its id. Candidates not
stored yet (at or above the ``bound``) are not trusted; that happens only once
another importer has come, and that importer built the unique index first
(indexes.settle), so the store's INSERT OR IGNORE catches the second id as usual.

The hot loop of an import calls ``cache.get(key) or dictionary.miss(key)``: ids
start at 1, so a falsy get is a miss, and the cache dict is never replaced, so a
bound ``cache.get`` stays valid.
"""

from __future__ import annotations

import sqlite3
from typing import Callable, Hashable, Sequence

try:  # the compiled helper's key map (setup.py builds it); without it, no index is deferred
    from ._plainlines import keymap_grow, keymap_ids, keymap_new
except ImportError:
    keymap_grow = keymap_ids = keymap_new = None

# 120,000 rather than 60,000: the benchmark log's parse process (1M lines, 373,369
# distinct URIs) made 120,516 look-ups of evicted values with 60,000 and spent 9.7-10.4
# CPU s, against 8.7-9.0 s with 120,000, for 23 MB more (the import 0.954x the wall
# time, benchmarks/ab.py -n 4). Larger caches gain less for more memory (240,000:
# 8.6 s, 61 MB more), and the 5M-line import must stay under 400 MB.
CACHE_LIMIT = 120_000
PRELOAD_LIMIT = CACHE_LIMIT  # a table the cache can hold whole is read into it at the start
# 2**25 bits (4 MiB), two probes: 1.4% false positives at 2 million values, 12% at 8.
BLOOM_BITS = 1 << 25
BLOOM_MASK = BLOOM_BITS - 1
# The key map starts with this many 8-byte slots and doubles past KEYMAP_LOAD full.
# Linear probing still reads a few cache lines per look-up at 0.9; at 0.75 the 5M-line
# benchmark's 1,755,335 URIs took 2**22 slots (32 MiB) instead of 2**21, and the
# import's peak memory passed 400 MB (401.8 MB).
KEYMAP_SLOTS = 1 << 16
KEYMAP_LOAD = 0.9


def _bloom_add(bloom: bytearray, key: Hashable) -> None:
    h = hash(key)
    a, b = h & BLOOM_MASK, (h >> 32) & BLOOM_MASK
    bloom[a >> 3] |= 1 << (a & 7)
    bloom[b >> 3] |= 1 << (b & 7)


def _bloom_has(bloom: bytearray, key: Hashable) -> bool:
    h = hash(key)
    a, b = h & BLOOM_MASK, (h >> 32) & BLOOM_MASK
    return bool(bloom[a >> 3] >> (a & 7) & 1 and bloom[b >> 3] >> (b & 7) & 1)


class Dictionary:
    """The reading side of one dictionary table: ids for values, rows for new ones.

    Args:
        conn: a connection to look values up with (the importer's, or one of the
            child process's own: see :meth:`use_connection`).
        table: the table; ``keys`` its unique value columns.
        enrich: computes the ``enrich_columns`` of a new value, once.
        refs: {row position: table} for columns holding other dictionaries' ids
            (a uri's path_id, a signature's ip_id and ua_id), for the store.
        mapped: the table's unique index is deferred (it was empty when the batch
            began): keep the key map (see the module doc).
        prefix_of: for uris, the paths dictionary: a value's one enrich column is the
            id of its part before the first "?" there (computed by the compiled
            helper too, for a mapped dictionary).
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        table: str,
        keys: Sequence[str],
        enrich: Callable[..., Sequence] | None = None,
        enrich_columns: Sequence[str] = (),
        refs: dict[int, str] | None = None,
        mapped: bool = False,
        prefix_of: Dictionary | None = None,
    ):
        if prefix_of is not None:
            enrich = lambda value: (prefix_of.id(value.split("?", 1)[0]),)  # noqa: E731
        self.conn = conn
        self.table = table
        self.keys = tuple(keys)
        self.single = len(self.keys) == 1
        self.enrich = enrich
        self.prefix_of = prefix_of
        self.refs = refs or {}
        columns = ("id",) + self.keys + tuple(enrich_columns)
        self.insert_sql = "insert or ignore into {} ({}) values ({})".format(
            table, ", ".join(columns), ", ".join("?" for _ in columns)
        )
        self.lookup_sql = "select id from {} where {}".format(
            table, " and ".join(f"{k} = ?" for k in self.keys)
        )
        self.cache: dict[Hashable, int] = {}
        self.old: dict[Hashable, int] = {}
        self.generation = CACHE_LIMIT // 2
        self.pending: list[tuple] = []
        # Ids below first_new were stored before this import began; from it up,
        # every id this object gives is one it handed out (provisional).
        self.first_new = conn.execute(f"select coalesce(max(id), 0) + 1 from {table}").fetchone()[0]
        self.next_id = self.first_new
        self.bound = self.first_new  # look up only ids below this (see the module doc)
        self.inflight: dict[Hashable, int] = {}  # the values taken last: maybe not stored yet
        self.complete = False
        # Once the cache overflows, a Bloom filter of every value keeps telling a new
        # value from an evicted one, so a new value still costs no lookup.
        self.bloom: bytearray | None = None
        self.keymap: bytearray | None = None
        if mapped:
            if keymap_new is None or not self.single:
                raise ValueError(f"{table}: a key map needs the compiled helper and a single key column")
            if enrich is not None and prefix_of is None:
                raise ValueError(f"{table}: a mapped dictionary's only enrichment is its prefix id")
            self.keymap = bytearray(8 * KEYMAP_SLOTS)
            self.keymap_count = 0
            self.keymap_limit = int(KEYMAP_LOAD * KEYMAP_SLOTS)
            self.stored_sql = f"select {self.keys[0]} from {table} where id = ?"
            self.miss = self._miss_mapped  # the compiled loop calls it straight
        self._preload()

    def _preload(self) -> None:
        count = self.conn.execute(f"select count(*) from {self.table}").fetchone()[0]
        if count > PRELOAD_LIMIT:
            return
        cols = ", ".join(self.keys)
        for row in self.conn.execute(f"select id, {cols} from {self.table} where id < ?", [self.first_new]):
            self.cache[row[1] if self.single else tuple(row[1:])] = row[0]
        self.complete = True

    def use_connection(self, conn: sqlite3.Connection) -> None:
        """Look values up through ``conn`` from now on (a child process's own)."""
        self.conn = conn

    def id(self, key: Hashable) -> int:
        return self.cache.get(key) or self.miss(key)

    def miss(self, key: Hashable) -> int:
        """The id of a value the current cache generation does not hold (a new one if unknown)."""
        if self.keymap is not None:
            return self._miss_mapped(key)
        bloom = self.bloom
        if bloom is not None:
            # Test and set the filter's two bits at once: a value it has never
            # seen is new, with no other lookup (most misses, once the cache
            # has overflowed, are new values).
            h = hash(key)
            a, b = h & BLOOM_MASK, (h >> 32) & BLOOM_MASK
            byte_a, bit_a, byte_b, bit_b = a >> 3, 1 << (a & 7), b >> 3, 1 << (b & 7)
            if not (bloom[byte_a] & bit_a and bloom[byte_b] & bit_b):
                bloom[byte_a] |= bit_a
                bloom[byte_b] |= bit_b
                return self._new(key)
        found = self.old.get(key) or self.inflight.get(key)
        if found is not None:
            self._remember(key, found)
            return found
        if not self.complete:
            params = (key,) if self.single else key
            row = self.conn.execute(self.lookup_sql + " and id < ?", (*params, self.bound)).fetchone()
            if row is not None:
                self._remember(key, row[0])
                return row[0]
        return self._new(key)

    def _miss_mapped(self, key: Hashable) -> int:
        """:meth:`miss` while the table's unique index is deferred: the key map, not a lookup by text."""
        new_id = keymap_new(self, key, False)  # a value never handed out, most often: all of it in C
        if new_id is not None:
            return new_id
        found = self.old.get(key) or self.inflight.get(key)
        if found is not None:
            self._remember(key, found)
            return found
        for candidate in keymap_ids(self.keymap, key):
            if candidate < self.bound and self.conn.execute(self.stored_sql, (candidate,)).fetchone() == (key,):
                self._remember(key, candidate)
                return candidate
        return keymap_new(self, key, True)  # another value's check, or not stored yet: a new id

    def _grow_keymap(self) -> None:
        """Double the key map (called by the compiled helper too)."""
        larger = bytearray(2 * len(self.keymap))
        keymap_grow(self.keymap, larger)
        self.keymap = larger
        self.keymap_limit = int(KEYMAP_LOAD * (len(larger) >> 3))

    def _new(self, key: Hashable) -> int:
        """Hand out the next id to a value this batch has not met (its row is stored with the chunk)."""
        new_id = self.next_id
        self.next_id = new_id + 1
        if self.enrich is None:
            self.pending.append((new_id, key) if self.single else (new_id, *key))
        else:
            self.pending.append((new_id, key, *self.enrich(key)) if self.single else (new_id, *key, *self.enrich(*key)))
        cache = self.cache
        if len(cache) < self.generation:
            cache[key] = new_id
        else:
            self._remember(key, new_id)
        return new_id

    def _remember(self, key: Hashable, value: int) -> None:
        cache = self.cache
        # The chunk's new values stay cached (see below) and do not count against the
        # generation: were they to, a chunk with more new values than a generation
        # holds would rotate the cache at every further value.
        if len(cache) >= self.generation + len(self.pending):
            if self.complete and self.keymap is None:  # the cache holds every value: the filter can start now
                self.bloom = bloom = bytearray(BLOOM_BITS // 8)
                for known in cache:
                    _bloom_add(bloom, known)
            if self.bloom is not None:
                _bloom_add(self.bloom, key)
            self.old = cache.copy()
            cache.clear()
            self.complete = False
            # Values handed out in this chunk are not stored yet: a lookup could
            # not find them, so they stay cached whatever the limits (the chunk
            # before's are in self.inflight).
            width = len(self.keys)
            for row in self.pending:
                cache[row[1] if width == 1 else row[1 : 1 + width]] = row[0]
        cache[key] = value

    def take_rows(self) -> list[tuple]:
        """The rows of the values new since the last call, for :func:`store_rows`."""
        rows, self.pending = self.pending, []
        width = len(self.keys)
        self.inflight = {row[1] if width == 1 else row[1 : 1 + width]: row[0] for row in rows}
        return rows

    def raise_bound(self, watermark: int) -> None:
        """The store has stored every id below ``watermark`` as handed out: look those up too."""
        if watermark > self.bound:
            self.bound = watermark

    def release(self) -> None:
        """Free the cache (the batch is read): the derived tables are rebuilt next,
        and a million cached user agents should not sit in memory through that."""
        self.cache.clear()
        self.old.clear()
        self.inflight = {}
        self.bloom = None
        self.keymap = None
        self.__dict__.pop("miss", None)
        self.complete = False


def store_rows(
    conn: sqlite3.Connection, d: Dictionary, rows: list[tuple], moved: dict[str, dict[int, int]]
) -> bool:
    """Store a dictionary's new rows; note in ``moved`` the provisional ids that did not land.

    Call with the write lock held, dictionaries in dependency order (paths before
    uris, ips and user agents before signatures): ``moved`` maps, per table, a
    provisional id to the stored row's id when another importer took the id or
    stored the value first, or the value was handed out twice.

    Returns:
        True when every row landed under its own id.
    """
    if not rows:
        return True
    if any(moved.get(table) for table in d.refs.values()):
        refs = [(position, moved.get(table, {})) for position, table in d.refs.items()]
        rows = [moved_row(row, refs) for row in rows]
    before = conn.total_changes
    conn.executemany(d.insert_sql, rows)
    if conn.total_changes - before == len(rows):
        return True
    # Which rows did not land: those whose id now holds another value, or nothing.
    width = len(d.keys)
    stored = {
        row[0]: row[1:]
        for row in conn.execute(
            f"select id, {', '.join(d.keys)} from {d.table} where id between ? and ?", (rows[0][0], rows[-1][0])
        )
    }
    mine = moved.setdefault(d.table, {})
    for row in rows:
        key = row[1 : 1 + width]
        if stored.get(row[0]) == key:
            continue
        found = conn.execute(d.lookup_sql, key).fetchone()
        if found is None:  # its id was taken by another value: store it under a new one
            found = (conn.execute(d.insert_sql, (None, *row[1:])).lastrowid,)
        mine[row[0]] = found[0]
    return False


def moved_row(row: tuple, refs: list[tuple[int, dict[int, int]]]) -> tuple:
    """The row with the ids at each (position, moved ids) replaced by where they moved."""
    row = list(row)
    for position, ids in refs:
        row[position] = ids.get(row[position], row[position])
    return tuple(row)
