"""Reverse DNS of stored client addresses, on request only (``enrich-rdns``, MODEL §7).

PTR queries go over UDP to the one resolver given (dnspython builds and reads
the messages), a bounded number at a time, each with a timeout. Every address
without a name is looked up once: the name, the outcome (``ok``, ``nxdomain``,
``no_answer``, ``timeout``, ``error``) and the time go to ``ips.ptr``,
``ptr_status`` and ``ptr_at``; a found name becomes the address's ``rdns``
unless an ``ip_info`` record names it (ipinfo.py). Look-ups that gave no name
are tried again only with ``retry_failed``.

Queries are kept in flight ``concurrency`` at a time (a slow one holds one
worker, not the others), and results are stored a few dozen at a time, each
group in its own transaction, so an interruption keeps what was looked up. A run
of look-ups without any DNS answer (timeouts, garbage, queries that could not be
sent) as long as a group (as long as the number of workers before the first
answer) stops the run, and that run is not stored: a resolver that is down, or is
not a DNS server, is not recorded as a thousand failed names. Nothing here runs unless
the command is given: an import never makes a network call.
"""

from __future__ import annotations

import ipaddress
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.reversename
import sqlite_utils

from . import derived
from .errors import ForensicsError
from .timeparse import utcnow
from .transaction import write_transaction

DEFAULT_CONCURRENCY = 16
DEFAULT_TIMEOUT = 2.0
MAX_CONCURRENCY = 256
# Look-ups stored per transaction, per worker: small groups keep what an
# interruption would lose small. A run of silent look-ups this long stops a run.
GROUP_PER_WORKER = 4
# Outcomes in which the resolver said nothing DNS could read: a run of these as
# long as a group stops the run.
SILENT = ("timeout", "garbage", "unreachable")
TODO = """
select id, ip from ips
where version is not null and rdns is null and (ptr_status is null or (:retry and ptr_status != 'ok'))
    and id > :after
order by id limit :limit
"""
TODO_COUNT = """
select count(*) from ips
where version is not null and rdns is null and (ptr_status is null or (:retry and ptr_status != 'ok'))
"""
STORE = """
update ips set ptr = :ptr, ptr_status = :status, ptr_at = :at,
    rdns = coalesce(rdns, :ptr)
where id = :id
"""


def parse_resolver(value: str | None) -> tuple[str, int]:
    """The resolver as (address, port), from ``IP``, ``IP:PORT`` or ``[IPv6]:PORT``.

    None: the first nameserver of this machine's resolver configuration.

    Raises:
        ForensicsError: not an address with an optional port, or none configured.
    """
    if value is None:
        try:
            servers = [s for s in dns.resolver.Resolver().nameservers if _is_address(s)]
        except dns.exception.DNSException:
            servers = []
        if not servers:
            raise ForensicsError("This machine has no resolver configured: give one with --resolver IP[:PORT].")
        return servers[0], 53
    text = value.strip()
    host, port = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                host = ""
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not _is_address(host) or not port.isdigit() or not 0 < int(port) < 65536:
        raise ForensicsError(f"--resolver {value!r} is not an address with an optional port, such as 192.0.2.53 or 192.0.2.53:5353.")
    return host, int(port)


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


@dataclass
class Lookup:
    ip_id: int
    ip: str
    status: str  # ok, nxdomain, no_answer, timeout, error (stored); garbage, unreachable: stored as error
    name: str | None = None
    detail: str | None = None
    at: str = ""

    @property
    def stored_status(self) -> str:
        return "error" if self.status in ("garbage", "unreachable") else self.status


def lookup(ip: str, resolver: tuple[str, int], timeout: float) -> tuple[str, str | None, str | None]:
    """One PTR query.

    Args:
        ip: the address.
        resolver: (address, port) of the resolver.
        timeout: seconds to wait for the answer.

    Returns:
        (outcome, name, detail): outcome ok (name: the first PTR target, without
        the final dot), nxdomain, no_answer, error (the resolver's SERVFAIL,
        REFUSED...), timeout, garbage (an answer that is not DNS, or not to this
        query) or unreachable (the query could not be sent).
    """
    query = dns.message.make_query(dns.reversename.from_address(ip), dns.rdatatype.PTR)
    try:
        answer = dns.query.udp(query, resolver[0], timeout=timeout, port=resolver[1])
    except dns.exception.Timeout:
        return "timeout", None, None
    except OSError as exc:
        return "unreachable", None, exc.strerror or type(exc).__name__
    except Exception as exc:  # dnspython's FormError, BadResponse, ShortHeader...: not a DNS answer to us
        return "garbage", None, type(exc).__name__
    rcode = answer.rcode()
    if rcode == dns.rcode.NXDOMAIN:
        return "nxdomain", None, None
    if rcode != dns.rcode.NOERROR:
        return "error", None, dns.rcode.to_text(rcode)
    for rrset in answer.answer:
        if rrset.rdtype == dns.rdatatype.PTR:
            for rdata in rrset:
                return "ok", rdata.target.to_text(omit_final_dot=True), None
    return "no_answer", None, None


@dataclass
class Summary:
    """What a run did: counts per outcome, and why it stopped early (or None)."""

    todo: int = 0
    looked_up: int = 0
    outcomes: dict = field(default_factory=dict)
    seconds: float = 0.0
    stopped: str | None = None

    def line(self) -> str:
        parts = ", ".join(f"{n:,} {status}" for status, n in sorted(self.outcomes.items()))
        rate = f", {self.looked_up / self.seconds:,.0f}/s" if self.seconds > 0 and self.looked_up else ""
        return f"{self.looked_up:,} of {self.todo:,} addresses looked up in {self.seconds:.1f}s{rate}" + (
            f": {parts}" if parts else ""
        )


def enrich(
    db: sqlite_utils.Database,
    resolver: tuple[str, int],
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout: float = DEFAULT_TIMEOUT,
    retry_failed: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> Summary:
    """Look up the PTR names of the stored addresses that have none.

    Args:
        db: the forensic database.
        resolver: (address, port), see :func:`parse_resolver`.
        concurrency: queries in flight at once.
        timeout: seconds per query.
        retry_failed: also the addresses whose earlier look-up gave no name.
        on_progress: called with the number of look-ups of each stored group.

    A run of silent look-ups (no DNS answer) as long as a group stops the run
    unstored (one per worker before the resolver's first answer); a shorter one
    at the end is stored as the failures it is.

    Returns:
        the Summary; ``stopped`` says why the run ended early (the resolver went
        silent), the groups before it being stored.
    """
    params = {"retry": int(retry_failed)}
    summary = Summary(todo=db.execute(TODO_COUNT, params).fetchone()[0])
    started = time.monotonic()
    group = concurrency * GROUP_PER_WORKER
    pending: list[Lookup] = []  # looked up, in the order they finished, not stored yet
    silent = 0  # how many of the latest look-ups in a row got no DNS answer
    answered = False

    def store(results: list[Lookup]) -> None:
        if not results:
            return
        _store(db, results)
        summary.looked_up += len(results)
        for r in results:
            summary.outcomes[r.stored_status] = summary.outcomes.get(r.stored_status, 0) + 1
        if on_progress:
            on_progress(len(results))

    rows = _todo(db, params)
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        inflight: set = set()
        while True:
            # A window of `concurrency` queries: a slow one holds one worker, not the rest.
            while len(inflight) < concurrency:
                row = next(rows, None)
                if row is None:
                    break
                inflight.add(pool.submit(_lookup, row, resolver, timeout))
            if not inflight:
                break
            done, inflight = wait(inflight, return_when=FIRST_COMPLETED)
            stopping = False
            for future in done:
                result = future.result()
                pending.append(result)
                if result.status in SILENT:
                    silent += 1
                else:
                    silent, answered = 0, True
                # Until the resolver has answered once, one silent look-up per worker is enough.
                stopping = silent >= (group if answered else concurrency)
                if stopping:
                    break  # what else finished is asked again by the next run
            if stopping:
                store(pending[:-silent])
                summary.stopped = _silence(pending[-silent:], resolver, timeout, summary.looked_up)
                for future in inflight:
                    future.cancel()
                break
            if len(pending) - silent >= group:  # a silent run stays pending: it may yet stop the run
                store(pending[: len(pending) - silent])
                del pending[: len(pending) - silent]
    if summary.stopped is None:
        if pending and not answered:  # fewer addresses than workers, and not one answer
            summary.stopped = _silence(pending, resolver, timeout, 0)
        else:
            store(pending)
    summary.seconds = time.monotonic() - started
    derived.finish(db)  # regroup the addresses by their new names
    return summary


def _todo(db: sqlite_utils.Database, params: dict, page: int = 1000):
    """The addresses to look up, a page of ids at a time."""
    after = 0
    while True:
        rows = db.execute(TODO, dict(params, after=after, limit=page)).fetchall()
        if not rows:
            return
        yield from rows
        after = rows[-1][0]


def _lookup(row, resolver, timeout) -> Lookup:
    ip_id, ip = row
    at = utcnow()
    status, name, detail = lookup(ip, resolver, timeout)
    return Lookup(ip_id, ip, status, name, detail, at)


def _store(db: sqlite_utils.Database, group: list[Lookup]) -> None:
    with write_transaction(db):
        db.conn.executemany(
            STORE, [{"id": r.ip_id, "ptr": r.name, "status": r.stored_status, "at": r.at} for r in group]
        )
        derived.after_ptr_names(db)


def _silence(group: list[Lookup], resolver: tuple[str, int], timeout: float, done: int) -> str:
    """One sentence: the resolver gave no DNS answer to a whole group."""
    where = f"[{resolver[0]}]:{resolver[1]}" if ":" in resolver[0] else f"{resolver[0]}:{resolver[1]}"
    statuses = {r.status for r in group}
    if statuses == {"timeout"}:
        what = f"did not answer any of {len(group):,} PTR queries within {timeout:g} s"
    elif statuses == {"garbage"}:
        what = f"answered {len(group):,} PTR queries with data that is not a DNS reply to them"
    elif statuses == {"unreachable"}:
        what = f"could not be reached ({group[0].detail})"
    else:
        what = f"gave no DNS answer to any of {len(group):,} PTR queries (timeouts, unreadable replies)"
    kept = (
        "nothing was stored"
        if not done
        else f"the {done:,} look-ups before are stored; run the command again to go on"
    )
    return f"The resolver {where} {what}: {kept}."
