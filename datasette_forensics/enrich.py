"""Enrichment computed once per distinct value: user agents and client addresses."""

from __future__ import annotations

import ipaddress
import re

from ua_parser import parse as _ua_parse

KINDS = ("browser", "library", "bot", "unknown")

# Families that ua-parser reports for HTTP client libraries and command-line tools.
_LIBRARY = re.compile(
    r"(?i)^(python|python requests|python-urllib|aiohttp|httpx|urllib|go-http-client|"
    r"apache-httpclient|java|okhttp|curl|wget|libwww-perl|lwp|php|guzzle|ruby|faraday|"
    r"axios|node-fetch|got|undici|postman|insomnia|httpie|powershell|dart|rest-client|"
    r"restsharp|\.net|jersey|jakarta|okhttp|reqwest|hyper|libcurl|winhttp|unirest)"
)
_LIBRARY_UA = re.compile(
    r"(?i)^(python-|python/|go-http-client|apache-httpclient|java/|okhttp|curl/|wget/|"
    r"libwww-perl|php/|guzzlehttp|ruby|faraday|axios|node-fetch|got |undici|postmanruntime|"
    r"insomnia|httpie|powershell|dart:|rest-client|restsharp|jersey|reqwest|hyper/|"
    r"java-http-client|aiohttp|httpx)"
)
_BOT_UA = re.compile(r"(?i)(bot\b|bot/|crawler|spider|slurp|scanner|zgrab|masscan|nmap|nikto|sqlmap)")
_BROWSERS = re.compile(r"^Mozilla/\d")


def classify_user_agent(ua: str) -> dict:
    """Parse a user agent with ua-parser and give it a kind.

    Args:
        ua: the user agent exactly as logged ('' when the log had none).

    Returns:
        a dict with family, major, os, device and kind (browser, library, bot or unknown).
    """
    if not ua:
        return {"family": None, "major": None, "os": None, "device": None, "kind": "unknown"}
    # ua-parser's regexes are built for realistic user agents; cap pathological ones.
    result = _ua_parse(ua[:2048])
    agent, os_, device = result.user_agent, result.os, result.device
    family = agent.family if agent else None
    device_family = device.family if device else None
    if device_family == "Spider" or _BOT_UA.search(ua):
        kind = "bot"
    elif (family and _LIBRARY.match(family)) or _LIBRARY_UA.match(ua):
        kind = "library"
    elif family and family != "Other" and _BROWSERS.match(ua):
        kind = "browser"
    else:
        kind = "unknown"
    return {
        "family": family or "Other",
        "major": agent.major if agent else None,
        "os": os_.family if os_ else None,
        "device": device_family,
        "kind": kind,
    }


def classify_ip(value: str) -> dict:
    """Version and prefix clusters of a client address.

    Args:
        value: the client field as logged: an IPv4 or IPv6 address, or a host name.

    Returns:
        a dict with version (4, 6 or None for a host name), prefix (/24 or /48, or
        the host name) and prefix16 (/16, /32 for IPv6, or the registered domain of
        a host name).
    """
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        labels = value.lower().rstrip(".").split(".")
        domain = ".".join(labels[-2:]) if len(labels) >= 2 else value.lower()
        return {"version": None, "prefix": value.lower(), "prefix16": domain}
    if address.version == 4:
        return {
            "version": 4,
            "prefix": str(ipaddress.ip_network(f"{address}/24", strict=False)),
            "prefix16": str(ipaddress.ip_network(f"{address}/16", strict=False)),
        }
    return {
        "version": 6,
        "prefix": str(ipaddress.ip_network(f"{address}/48", strict=False)),
        "prefix16": str(ipaddress.ip_network(f"{address}/32", strict=False)),
    }
