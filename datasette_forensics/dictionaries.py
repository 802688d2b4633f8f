"""Dictionary tables (value -> integer id) with an in-memory cache for imports.

Each distinct value is stored, and enriched, once. While the importer holds the
write lock it assigns ids itself, so a fresh import never has to look values up;
when the cache may be incomplete (another writer, or a cache that was cleared to
bound memory) it looks misses up by their unique index.

The cache has two generations of CACHE_LIMIT // 2 entries each: when the current
one is full it becomes the old one, so frequent values survive the rotation
(they are promoted back on their next use) while memory stays bounded. From the
first rotation of a cache that held every value, a Bloom filter of all values
tells most new values from evicted ones without a lookup.

The hot loop of an import calls ``cache.get(key) or dictionary.miss(key)``: ids
start at 1, so a falsy get is a miss, and the cache dict is never replaced, so a
bound ``cache.get`` stays valid.
"""

from __future__ import annotations

import sqlite3
from typing import Callable, Hashable, Sequence

CACHE_LIMIT = 200_000
PRELOAD_LIMIT = 200_000
# 2**25 bits (4 MiB), two probes: 1.4% false positives at 2 million values, 12% at 8.
BLOOM_BITS = 1 << 25
BLOOM_MASK = BLOOM_BITS - 1


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
    def __init__(
        self,
        conn: sqlite3.Connection,
        table: str,
        keys: Sequence[str],
        enrich: Callable[..., Sequence] | None = None,
        enrich_columns: Sequence[str] = (),
    ):
        self.conn = conn
        self.table = table
        self.keys = tuple(keys)
        self.single = len(self.keys) == 1
        self.enrich = enrich
        columns = ("id",) + self.keys + tuple(enrich_columns)
        self._insert = "insert into {} ({}) values ({})".format(
            table, ", ".join(columns), ", ".join("?" for _ in columns)
        )
        self._lookup = "select id from {} where {}".format(
            table, " and ".join(f"{k} = ?" for k in self.keys)
        )
        self.cache: dict[Hashable, int] = {}
        self.old: dict[Hashable, int] = {}
        self.generation = CACHE_LIMIT // 2
        self.pending: list[tuple] = []
        self.next_id = 1
        self.complete = False
        # Once the cache overflows, a Bloom filter of every value keeps telling a new
        # value from an evicted one, so a new value still costs no lookup.
        self.bloom: bytearray | None = None
        self._preload()

    def _preload(self) -> None:
        count = self.conn.execute(f"select count(*) from {self.table}").fetchone()[0]
        if count > PRELOAD_LIMIT:
            return
        cols = ", ".join(self.keys)
        for row in self.conn.execute(f"select id, {cols} from {self.table}"):
            self.cache[row[1] if self.single else tuple(row[1:])] = row[0]
        self.complete = True
        self.next_id = max(self.cache.values(), default=0) + 1

    def begin_chunk(self) -> None:
        """Call with the write lock held: notices rows written by anyone else."""
        max_id = self.conn.execute(f"select coalesce(max(id), 0) from {self.table}").fetchone()[0]
        if max_id != self.next_id - 1:
            self.complete = False
            self.bloom = None
            self.next_id = max_id + 1

    def id(self, key: Hashable) -> int:
        return self.cache.get(key) or self.miss(key)

    def miss(self, key: Hashable) -> int:
        """The id of a value the current cache generation does not hold (assigning one if new)."""
        found = self.old.get(key)
        if found is not None:
            self._remember(key, found)
            return found
        params = (key,) if self.single else key
        if not self.complete:
            bloom = self.bloom
            if bloom is not None:  # _bloom_has and _bloom_add, inlined: this runs per new value
                h = hash(key)
                a, b = h & BLOOM_MASK, (h >> 32) & BLOOM_MASK
                seen = bloom[a >> 3] >> (a & 7) & 1 and bloom[b >> 3] >> (b & 7) & 1
                if not seen:
                    bloom[a >> 3] |= 1 << (a & 7)
                    bloom[b >> 3] |= 1 << (b & 7)
            if bloom is None or seen:
                row = self.conn.execute(self._lookup, params).fetchone()
                if row is not None:
                    self._remember(key, row[0])
                    return row[0]
        new_id = self.next_id
        self.next_id = new_id + 1
        if self.enrich is None:
            self.pending.append((new_id, *params))
        else:
            self.pending.append((new_id, *params, *self.enrich(*params)))
        cache = self.cache
        if len(cache) < self.generation:
            cache[key] = new_id
        else:
            self._remember(key, new_id)
        return new_id

    def _remember(self, key: Hashable, value: int) -> None:
        cache = self.cache
        if len(cache) >= self.generation:
            if self.complete:  # the cache holds every value: the filter can start now
                self.bloom = bloom = bytearray(BLOOM_BITS // 8)
                for known in cache:
                    _bloom_add(bloom, known)
            if self.bloom is not None:
                _bloom_add(self.bloom, key)
            self.old = cache.copy()
            cache.clear()
            self.complete = False
            # Values handed out in this chunk are not in the table yet: a lookup
            # could not find them, so they stay cached whatever the limits.
            width = len(self.keys)
            for row in self.pending:
                cache[row[1] if width == 1 else row[1 : 1 + width]] = row[0]
        cache[key] = value

    def flush(self) -> None:
        if self.pending:
            self.conn.executemany(self._insert, self.pending)
            self.pending = []

    def release(self) -> None:
        """Free the cache (the batch is written): the derived tables are rebuilt next,
        and a million cached user agents should not sit in memory through that."""
        self.cache.clear()
        self.old.clear()
        self.bloom = None
        self.complete = False

    def forget_pending(self) -> None:
        """After a rollback: ids handed out in the chunk were never stored."""
        self.pending = []
        self.cache.clear()
        self.old = {}
        self.complete = False
        self.bloom = None
