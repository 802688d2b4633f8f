"""Who owns each client address: the shipped data, overridden by the ``ip_info`` records.

This module owns the derived columns of ``ips`` (MODEL §7): ``network``,
``country`` and ``as_name`` from the data an installed package ships (geo.py),
and ``asn``, ``provider`` and ``rdns``, which the ``ip_info`` row with the longest
prefix containing the address gives (a /32 or /128 names one address). Where
that row leaves a field empty, or no row contains the address, ``provider`` is
the shipped owner name, ``asn`` stays empty (the shipped data has no AS numbers)
and ``rdns`` is the PTR name ``enrich-rdns`` looked up (``ips.ptr``, rdns.py).

The networks are grouped by prefix length, so matching one address is at most one
dict lookup per distinct length, longest first: a million addresses take seconds.
Each address is looked up once: when a log batch adds it, and again only when the
``ip_info`` records change (or an upgrade fills the columns).
"""

from __future__ import annotations

import ipaddress
import sqlite3
import threading

import sqlite_utils

from . import geo

CHUNK = 50_000
_BITS = {4: 32, 6: 128}

Info = tuple  # (asn, provider, rdns)


class NetworkTable:
    """The ``ip_info`` networks, ready for longest-prefix matching."""

    def __init__(self, rows):
        by_length: dict[int, dict[int, dict[int, Info]]] = {4: {}, 6: {}}
        for cidr, asn, provider, rdns in rows:
            try:
                network = ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                continue  # import validates every cidr; a hand-edited row is ignored
            table = by_length[network.version].setdefault(network.prefixlen, {})
            table[int(network.network_address)] = (asn, provider, rdns)
        # Per version: (mask, {network as int: info}) from the longest prefix down.
        self.plans = {
            version: [
                (_mask(_BITS[version], length), tables[length])
                for length in sorted(tables, reverse=True)
            ]
            for version, tables in by_length.items()
        }

    def __bool__(self) -> bool:
        return any(self.plans.values())

    def lookup(self, ip: str) -> Info | None:
        """The info of the longest network containing ``ip``.

        Args:
            ip: an address as logged. An IPv4-mapped IPv6 address (``::ffff:1.2.3.4``)
                matches as its IPv4 address; host names match nothing.

        Returns:
            (asn, provider, rdns), or None when no network contains it.
        """
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return None
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        n = int(address)
        for mask, table in self.plans[address.version]:
            info = table.get(n & mask)
            if info is not None:
                return info
        return None


def _mask(bits: int, length: int) -> int:
    return ((1 << length) - 1) << (bits - length)


class Located:
    """The shipped data's (network, country, as_name) of a batch's new addresses,
    looked up in a thread while the batch's close runs its first SQL statements
    (SQLite lets go of the interpreter lock while it sorts and writes, and the parse
    process has ended, so the second core is free): 0.4 s of a 1M-line close.

    Only a head start: :func:`apply_ip_info` looks up inline any address it does not
    find here, and everything when the thread failed.
    """

    LIMIT = 200_000  # more new addresses than this: looked up inline, in bounded memory

    def __init__(self, conn: sqlite3.Connection, min_ip_id: int):
        rows = conn.execute("select id, ip from ips where id > ? order by id limit ?", [min_ip_id, self.LIMIT + 1])
        self._rows = rows.fetchall()
        self.found: dict[int, tuple] | None = None
        self._thread = None
        if len(self._rows) <= self.LIMIT:
            self._thread = threading.Thread(target=self._run, name="forensics-geo", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            self.found = {id_: geo.lookup(ip) for id_, ip in self._rows}
        except Exception:  # noqa: BLE001 - inline look-ups then say what is wrong
            self.found = None

    def result(self) -> dict[int, tuple] | None:
        """{ips id: (network, country, as_name)}, once the thread is done; None when it failed."""
        if self._thread is not None:
            self._thread.join()
        self._rows = []
        return self.found


def apply_ip_info(db: sqlite_utils.Database, min_ip_id: int | None = None, located: Located | None = None) -> int:
    """Fill the owner columns of ``ips``: shipped data, then ``ip_info`` by longest-prefix match.

    Reads the addresses in batches of CHUNK ids, so a database of any size is
    filled in bounded memory.

    Runs inside the caller's transaction when there is one, else in its own.

    Args:
        db: the forensic database.
        min_ip_id: only look at ``ips`` rows with a larger id (the rows a log batch
            just added); None recomputes every row, clearing values no network
            gives any more.
        located: the shipped data's values of some of those rows, looked up already.

    Returns:
        how many ``ips`` rows changed.
    """
    conn = db.conn
    own = not conn.in_transaction
    if own:
        conn.execute("begin immediate")
    try:
        changed = _apply(conn, min_ip_id, located.result() if located is not None else None)
        if own:
            conn.execute("commit")
    except BaseException:
        if own:
            conn.execute("rollback")
        raise
    return changed


OWNER_COLUMNS = ("network", "country", "as_name", "asn", "provider", "rdns")


def _apply(conn, min_ip_id: int | None, found: dict[int, tuple] | None = None) -> int:
    networks = NetworkTable(conn.execute("select cidr, asn, provider, rdns from ip_info"))
    last_id = -1 if min_ip_id is None else min_ip_id
    changed = 0
    match = networks.lookup if networks else (lambda ip: None)
    try:
        while True:
            rows = conn.execute(
                f"""select id, ip, version, ptr, {', '.join(OWNER_COLUMNS)} from ips
                where id > ? order by id limit ?""",
                [last_id, CHUNK],
            ).fetchall()
            if not rows:
                return changed
            updates = []
            for id_, ip, version, ptr, *stored in rows:
                values = owner(ip, match(ip) if version is not None else None, ptr, found.get(id_) if found else None)
                if values != tuple(stored):
                    updates.append((*values, id_))
            if updates:
                conn.executemany(
                    f"update ips set {', '.join(c + ' = ?' for c in OWNER_COLUMNS)} where id = ?", updates
                )
                changed += len(updates)
            last_id = rows[-1][0]
    finally:
        geo.release()


def owner(ip: str, info: Info | None, ptr: str | None, located: tuple | None = None) -> tuple:
    """The owner columns of one address (OWNER_COLUMNS, in order).

    Args:
        ip: the address as logged (or a host name).
        info: (asn, provider, rdns) of the longest ``ip_info`` network holding it, or None.
        ptr: the PTR name enrich-rdns found for it, or None.
        located: ``geo.lookup(ip)``, when looked up already.
    """
    network, country, as_name = located if located is not None else geo.lookup(ip)
    asn, provider, rdns = info or (None, None, None)
    return network, country, as_name, asn or None, provider or as_name, rdns or ptr
