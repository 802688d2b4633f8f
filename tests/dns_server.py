"""A small DNS server on 127.0.0.1 for the reverse-DNS tests and benchmark.

It answers PTR queries over UDP from a table (address -> what to do) in a thread,
building replies with dnspython's message module. What it can do for an address:

- a name (``"one.example"``): a PTR answer;
- ``NXDOMAIN``, ``SERVFAIL``: that response code;
- ``EMPTY``: NOERROR with no answer;
- ``SILENT``: no reply at all (the client times out);
- ``GARBAGE``: bytes that are not a DNS message.

Addresses not in the table get ``default`` (a callable of the address, or one of
the above). ``mode`` overrides everything (a server that is silent or garbage
for every query), and ``answer_first`` makes it go silent after that many queries.
"""

from __future__ import annotations

import socket
import threading

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset

NXDOMAIN, SERVFAIL, EMPTY, SILENT, GARBAGE = "NXDOMAIN", "SERVFAIL", "EMPTY", "SILENT", "GARBAGE"


class DnsServer:
    def __init__(self, table: dict | None = None, default=NXDOMAIN, mode: str | None = None, answer_first: int | None = None):
        self.table = dict(table or {})
        self.default = default
        self.mode = mode
        self.answer_first = answer_first
        self.queries: list[str] = []  # the addresses asked about, in order
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> "DnsServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.running = False
        self.thread.join()
        self.sock.close()

    def _serve(self) -> None:
        while self.running:
            try:
                wire, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            reply = self._reply(wire)
            if reply is not None:
                self.sock.sendto(reply, peer)

    def _reply(self, wire: bytes) -> bytes | None:
        query = dns.message.from_wire(wire)
        qname = query.question[0].name
        ip = dns.reversename.to_address(qname)
        with self.lock:
            self.queries.append(ip)
            n = len(self.queries)
        action = self.mode or self.table.get(ip, self.default)
        if self.answer_first is not None and n > self.answer_first:
            action = SILENT
        if callable(action):
            action = action(ip)
        if action == SILENT:
            return None
        if action == GARBAGE:
            return b"\x00\x01not dns at all"
        response = dns.message.make_response(query)
        if action == NXDOMAIN:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif action == SERVFAIL:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif action != EMPTY:
            response.answer.append(
                dns.rrset.from_text(qname, 300, dns.rdataclass.IN, dns.rdatatype.PTR, action.rstrip(".") + ".")
            )
        return response.to_wire()
