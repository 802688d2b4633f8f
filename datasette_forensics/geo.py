"""Offline owner, country and network kind of a client address (MODEL §7).

Country and owner name come from the data file that the geoip2fast package ships
(MaxMind GeoLite2 Country + ASN, IPv4 and IPv6); the network kind comes from the
standard library's ipaddress. Nothing here touches the network. The shipped data
names each network's owner (``GOOGLE``, ``AMAZON-02``) but not its AS number: the
number comes only from ``ip_info`` records (see ipinfo.py, which owns the columns).
"""

from __future__ import annotations

import functools
import ipaddress
import os

DATA_FILE = "geoip2fast-asn-ipv6.dat.gz"
#: Set (to anything) to skip this enrichment altogether: the benchmark's "without" side
#: (benchmarks/bench_import.py, contender full_no_geo). The owner columns stay empty.
DISABLE_ENV = "FORENSICS_NO_GEO"

NETWORK_KINDS = ("public", "private", "loopback", "link_local", "cgnat", "documentation", "multicast", "reserved")

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_DOCUMENTATION = {
    4: tuple(ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")),
    6: (ipaddress.ip_network("2001:db8::/32"), ipaddress.ip_network("3fff::/20")),
}


def network_kind(value: str) -> str | None:
    """The kind of network an address lies in.

    Args:
        value: an address as logged (an IPv4-mapped IPv6 address counts as its IPv4 address).

    Returns:
        public, private, loopback, link_local, cgnat, documentation, multicast or
        reserved; None for a value that is not an address (a host name).
    """
    address = _address(value)
    return None if address is None else _kind(address)


def _address(value: str):
    """The address of a logged value (an IPv4-mapped IPv6 address as IPv4), or None."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _kind(address) -> str:
    if any(address in net for net in _DOCUMENTATION[address.version]):
        return "documentation"
    if address.version == 4 and address in _CGNAT:
        return "cgnat"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link_local"
    if address.is_multicast:
        return "multicast"
    if address.is_reserved or address.is_unspecified:
        return "reserved"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "reserved"  # e.g. 192.0.0.0/24, 2001::/23: special purpose, not routed publicly
    return "public"


def enabled() -> bool:
    """Whether addresses are enriched (FORENSICS_NO_GEO unset)."""
    return not os.environ.get(DISABLE_ENV)


@functools.lru_cache(maxsize=1)
def _reader():
    from geoip2fast import GeoIP2Fast

    return GeoIP2Fast(geoip2fast_data_file=DATA_FILE, verbose=False)


def release() -> None:
    """Free the loaded data (some 110 MB) once a batch's addresses are looked up."""
    _reader.cache_clear()


def data_source() -> str:
    """The shipped data's own source line, e.g. MAXMIND:GeoLite2-CountryASN-IPv4IPv6-en-20240618."""
    return _reader().get_database_info()["source_info"]


def lookup(value: str) -> tuple[str | None, str | None, str | None]:
    """The network kind, country and owner name of one address.

    Args:
        value: an address as logged, or a host name.

    Returns:
        (network, country, as_name): only a public address gets a country (ISO 3166
        alpha-2) and an owner name from the shipped data, where it has them.
    """
    address = _address(value) if enabled() else None
    if address is None:
        return None, None, None
    kind = _kind(address)
    if kind != "public":
        return kind, None, None
    found = _reader().lookup(str(address))
    country = found.country_code if found.country_code and found.country_code != "--" else None
    return kind, country, found.asn_name or None
