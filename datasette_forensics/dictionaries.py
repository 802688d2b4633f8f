"""Dictionary tables (value -> integer id) with an in-memory cache for imports.

Each distinct value is stored, and enriched, once. While the importer holds the
write lock it assigns ids itself, so a fresh import never has to look values up;
when the cache may be incomplete (another writer, or a cache that was cleared to
bound memory) it looks misses up by their unique index.
"""

from __future__ import annotations

import sqlite3
from typing import Callable, Hashable, Sequence

CACHE_LIMIT = 400_000
PRELOAD_LIMIT = 200_000


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
        self.pending: list[tuple] = []
        self.next_id = 1
        self.complete = False
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
            self.next_id = max_id + 1

    def id(self, key: Hashable) -> int:
        found = self.cache.get(key)
        if found is not None:
            return found
        return self._miss(key)

    def _miss(self, key: Hashable) -> int:
        params = (key,) if self.single else key
        if not self.complete:
            row = self.conn.execute(self._lookup, params).fetchone()
            if row is not None:
                self._remember(key, row[0])
                return row[0]
        new_id = self.next_id
        self.next_id += 1
        extra = tuple(self.enrich(*params)) if self.enrich else ()
        self.pending.append((new_id,) + tuple(params) + extra)
        self._remember(key, new_id)
        return new_id

    def _remember(self, key: Hashable, value: int) -> None:
        if len(self.cache) >= CACHE_LIMIT:
            self.cache.clear()
            self.complete = False
        self.cache[key] = value

    def flush(self) -> None:
        if self.pending:
            self.conn.executemany(self._insert, self.pending)
            self.pending = []

    def forget_pending(self) -> None:
        """After a rollback: ids handed out in the chunk were never stored."""
        self.pending = []
        self.cache.clear()
        self.complete = False
