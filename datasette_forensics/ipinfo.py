"""Network owner and reverse DNS of client addresses, from the ``ip_info`` records.

Each address in ``ips`` takes ``asn``, ``provider`` and ``rdns`` from the ``ip_info``
row with the longest prefix that contains it (a /32 or /128 names one address).
The networks are grouped by prefix length, so matching one address is at most one
dict lookup per distinct length, longest first: a million addresses take seconds.
"""

from __future__ import annotations

import ipaddress

import sqlite_utils

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


def apply_ip_info(db: sqlite_utils.Database, min_ip_id: int | None = None) -> int:
    """Fill ``ips.asn``, ``ips.provider`` and ``ips.rdns`` by longest-prefix match.

    Runs inside the caller's transaction when there is one, else in its own.

    Args:
        db: the forensic database.
        min_ip_id: only look at ``ips`` rows with a larger id (the rows a log batch
            just added); None recomputes every row, clearing values no network
            gives any more.

    Returns:
        how many ``ips`` rows changed.
    """
    conn = db.conn
    own = not conn.in_transaction
    if own:
        conn.execute("begin immediate")
    try:
        changed = _apply(conn, min_ip_id)
        if own:
            conn.execute("commit")
    except BaseException:
        if own:
            conn.execute("rollback")
        raise
    return changed


def _apply(conn, min_ip_id: int | None) -> int:
    networks = NetworkTable(conn.execute("select cidr, asn, provider, rdns from ip_info"))
    if not networks:
        if min_ip_id is not None:
            return 0  # new rows start empty
        return conn.execute(
            """update ips set asn = null, provider = null, rdns = null
            where asn is not null or provider is not null or rdns is not null"""
        ).rowcount
    last_id = -1 if min_ip_id is None else min_ip_id
    changed = 0
    lookup = networks.lookup
    none = (None, None, None)
    while True:
        rows = conn.execute(
            """select id, ip, version, asn, provider, rdns from ips
            where id > ? order by id limit ?""",
            [last_id, CHUNK],
        ).fetchall()
        if not rows:
            return changed
        updates = []
        for id_, ip, version, asn, provider, rdns in rows:
            info = (lookup(ip) if version is not None else None) or none
            if info != (asn, provider, rdns):
                updates.append((*info, id_))
        if updates:
            conn.executemany("update ips set asn = ?, provider = ?, rdns = ? where id = ?", updates)
            changed += len(updates)
        last_id = rows[-1][0]
