"""AWS Application Load Balancer access logs (and Classic ELB ones, without ``type``).

``type time elb client:port target:port request_processing_time
target_processing_time response_processing_time elb_status_code target_status_code
received_bytes sent_bytes "request" "user_agent" ssl_cipher ssl_protocol
target_group_arn "trace_id" "domain_name" ...``

The request ``GET https://host:443/path?q HTTP/1.1`` gives uri ``/path?q`` and host
``host`` (the port is kept unless it is the scheme's default). Status is
elb_status_code, bytes is sent_bytes; the other fields go to ``extra`` by name
(``-`` values left out).
"""

from __future__ import annotations

import re

from ..timeparse import TimeError, parse_time
from . import BOM, MANY, ParseError, detect_by_parsing, split_request

NAME = "alb"
DESCRIPTION = "AWS Application Load Balancer access log (type time elb client:port target:port ...)"

_Q = r'[^"\\]*(?:\\.[^"\\]*)' + MANY  # possessive loops: see combined._Q
_LINE = re.compile(
    r"(?:([a-z][a-z0-9]*) )?(\d{4}-\d{2}-\d{2}T\S+) (\S+) (\S+) (\S+) (\S+) (\S+) (\S+)"
    r" (\d{1,3}|-) (\S+) (\d{1,18}|-) (\d{1,18}|-)"
    r' "(' + _Q + r')" "(' + _Q + r')"'
    r'((?: +(?:"' + _Q + r'"|[^\s"]\S*))' + MANY + r') *'
).fullmatch
_TOKEN = re.compile(r'"(' + _Q + r')"|(\S+)').findall
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)").fullmatch
_DEFAULT_PORTS = {"http": ":80", "https": ":443", "ws": ":80", "wss": ":443", "grpcs": ":443"}

#: The fields after the user agent, in order.
TRAILING_NAMES = (
    "ssl_cipher",
    "ssl_protocol",
    "target_group_arn",
    "trace_id",
    "domain_name",
    "chosen_cert_arn",
    "matched_rule_priority",
    "request_creation_time",
    "actions_executed",
    "redirect_url",
    "error_reason",
    "target_port_list",
    "target_status_code_list",
    "classification",
    "classification_reason",
    "conn_trace_id",
)


def split_client(client: str) -> tuple[str, str | None]:
    """``1.2.3.4:5678``, ``[2001:db8::1]:5678`` or ``2001:db8::1:5678`` to (ip, port)."""
    if client.startswith("["):
        ip, _, rest = client[1:].partition("]")
        return ip, rest[1:] or None
    ip, sep, port = client.rpartition(":")
    if sep and ip and port.isdigit():
        return ip, port
    return client, None


class Parser:
    """Parse one ALB access-log line into a record."""

    def parse(self, line: str) -> dict | None:
        """Parse one line.

        Args:
            line: the raw line, without its line ending.

        Returns:
            A record, or None for a blank line.

        Raises:
            ParseError: not an ALB line (or cut off), no client, or a bad time.
        """
        m = _LINE(line)
        if m is None:
            if not line.strip():
                return None
            if line.startswith(BOM):
                return self.parse(line[1:])
            if line.count('"') % 2:
                raise ParseError("line cut off inside a quoted field")
            raise ParseError("not an ALB log line")
        (
            kind, time, elb, client, target, request_pt, target_pt, response_pt,
            elb_status, target_status, received, sent, request, ua, rest,
        ) = m.groups()  # fmt: skip
        try:
            ts = parse_time(time)
        except TimeError as exc:
            raise ParseError(f"bad timestamp: {exc}") from None
        if client == "-":
            raise ParseError("missing client address")
        ip, port = split_client(client)
        if not ip:
            raise ParseError("missing client address")

        request = request.replace('\\"', '"')
        method, url, protocol = split_request(request)
        uri, host = url, None
        if method is not None:
            u = _URL(url)
            if u is not None:
                scheme, host, uri = u.groups()
                default = _DEFAULT_PORTS.get(scheme.lower())
                if default and host.endswith(default):
                    host = host[: -len(default)]
                uri = uri or "/"

        extra = {
            "type": kind,
            "elb": elb,
            "client_port": port,
            "target": target,
            "request_processing_time": request_pt,
            "target_processing_time": target_pt,
            "response_processing_time": response_pt,
            "target_status_code": target_status,
            "received_bytes": received,
        }
        tokens = [bare or quoted.replace('\\"', '"') for quoted, bare in _TOKEN(rest)]
        extra.update(zip(TRAILING_NAMES, tokens))
        if len(tokens) > len(TRAILING_NAMES):
            extra["trailing"] = tokens[len(TRAILING_NAMES):]
        extra = {k: v for k, v in extra.items() if v is not None and v != "-"}
        ua = ua.replace('\\"', '"')
        return {
            "ts": ts,
            "ip": ip,
            "ua": None if ua == "-" or ua == "" else ua,
            "uri": uri,
            "method": method,
            "protocol": protocol,
            "status": None if elb_status == "-" else int(elb_status),
            "bytes": None if sent == "-" else int(sent),
            "referer": None,
            "token_id": None,
            "org_id": None,
            "auth_type": None,
            "host": host,
            "xff": None,
            "extra": extra or None,
        }


def detect(lines: list[str]) -> bool:
    """Most lines are ALB (or Classic ELB) access-log lines."""
    return detect_by_parsing(Parser(), lines)
