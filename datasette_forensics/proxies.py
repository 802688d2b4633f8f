"""Trusted proxies: the client behind a load balancer, from X-Forwarded-For (MODEL §7).

With ``import-logs --trusted-proxy CIDR``, a request whose peer address (the one
the log gives as the client) lies in a trusted range and that carries
X-Forwarded-For gets as its client the right-most address of that header that
is not in a trusted range, as nginx's realip module does with
``real_ip_recursive on``. The peer stays stored beside it, in the request's
``extra`` as ``peer`` (requests_view's ``peer`` column). Lines without the
header, or whose peer is not trusted, keep their peer as the client.

Hops are read right to left: each proxy appends the address it was connected
from, so the right-most hops are the most trustworthy. A hop may carry a port
(``203.0.113.7:4711``, ``[2001:db8::7]:443``). When every hop is trusted, the
left-most is the client. A hop that is not an address (``unknown``, garbage a
client wrote itself) ends the walk: the client is then the last trusted hop
reached, or the peer when it is the right-most one.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable

from .errors import ForensicsError

_CACHE_LIMIT = 65_536


def parse_networks(values: Iterable[str]) -> list:
    """The trusted ranges as networks.

    Args:
        values: CIDRs (``10.0.0.0/8``, ``2001:db8::/32``) or single addresses.

    Raises:
        ForensicsError: a value is not a network, naming it.
    """
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ForensicsError(
                f"--trusted-proxy {value!r} is not a network: give a CIDR such as 10.0.0.0/8 or an address."
            ) from None
    return networks


def hop_address(hop: str) -> tuple[str, object] | None:
    """One X-Forwarded-For hop as (its address as written, without brackets or port; the
    parsed address), or None when it is not an address."""
    hop = hop.strip()
    if hop[:1] == "[":
        end = hop.find("]")
        if end < 0 or (hop[end + 1 :] and not hop[end + 1 :].startswith(":")):
            return None
        hop = hop[1:end]
    elif hop.count(":") == 1:  # IPv4 with a port (an IPv6 address has two colons or more)
        hop = hop.split(":", 1)[0]
    try:
        return hop, ipaddress.ip_address(hop)
    except ValueError:
        return None


class TrustedProxies:
    """Trusted ranges, and the client of a request behind them."""

    def __init__(self, networks: list):
        self.networks = {4: [n for n in networks if n.version == 4], 6: [n for n in networks if n.version == 6]}
        self.seen: dict[str, bool] = {}

    @classmethod
    def from_cidrs(cls, values: Iterable[str]) -> "TrustedProxies | None":
        """None when no range is given (nothing to do per line)."""
        networks = parse_networks(values)
        return cls(networks) if networks else None

    def trusts(self, address) -> bool:
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in n for n in self.networks[address.version])

    def _trusted_peer(self, peer: str) -> bool:
        found = self.seen.get(peer)
        if found is None:
            hop = hop_address(peer)
            found = hop is not None and self.trusts(hop[1])
            if len(self.seen) >= _CACHE_LIMIT:
                self.seen.clear()
            self.seen[peer] = found
        return found

    def client(self, peer: str, xff: str | None) -> str | None:
        """The client behind ``peer``, or None when the peer stays the client.

        Args:
            peer: the address the log gives as the client.
            xff: the X-Forwarded-For header as logged, or None.

        Returns:
            the right-most untrusted hop (see the module doc), as written without
            brackets or port; None when the peer is untrusted, the header is
            missing, or its right-most hop is not an address.
        """
        if not xff or not self._trusted_peer(peer):
            return None
        client = None
        for text in reversed(xff.split(",")):
            hop = hop_address(text)
            if hop is None:
                break
            client = hop[0]
            if not self.trusts(hop[1]):
                break
        return client

    def resolve(self, rec: dict) -> dict:
        """The record with its client replaced when a trusted peer forwarded it (a copy), else itself."""
        peer = rec["ip"]
        client = self.client(peer, rec.get("xff"))
        if client is None or client == peer:
            return rec
        extra = dict(rec.get("extra") or {})
        extra["peer"] = peer
        return dict(rec, ip=client, extra=extra)
