"""The incident under investigation (MODEL §1.3): a TOML file, validated, stored as one row."""

from __future__ import annotations

import datetime
import json
import re

import sqlite_utils

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from . import derived
from .errors import ForensicsError
from .patterns import regex_problem
from .readers import decode_text, read_whole
from .transaction import write_transaction
from .timeparse import TimeError, format_ms, parse_time, utcnow

KEYS = ("name", "introduced_at", "patched_at", "scope_paths", "org_routes", "require_integration")


def load_incident(path: str) -> dict:
    """Read and validate an incident TOML file.

    Args:
        path: the TOML file, or '-' for standard input.

    Returns:
        a dict with name, introduced_at and patched_at (normalised ISO text),
        introduced_ms and patched_ms, scope_paths and org_routes (lists of
        regexes), require_integration (bool) and source (the TOML text).

    Raises:
        ForensicsError: one sentence naming what is wrong.
    """
    source = "standard input" if path == "-" else path
    text = _read_text(path, source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ForensicsError(f"{source} is not valid TOML: {exc}.") from None
    except ValueError as exc:  # a value TOML allows but Python will not convert (a 5,000-digit number)
        raise ForensicsError(f"{source} could not be read: {str(exc).split(';')[0]}.") from None
    unknown = [key for key in data if key not in KEYS]
    if unknown:
        raise ForensicsError(
            f"{source}: unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))} (the keys are {', '.join(KEYS)})."
        )
    for key in ("name", "introduced_at", "patched_at", "scope_paths", "org_routes"):
        if key not in data:
            raise ForensicsError(f"{source}: the required key {key!r} is missing.")
    name = data["name"]
    if not isinstance(name, str) or not name.strip():
        raise ForensicsError(f"{source}: name must be a non-empty string.")
    introduced_ms = _time(data["introduced_at"], "introduced_at", source)
    patched_ms = _time(data["patched_at"], "patched_at", source)
    if introduced_ms >= patched_ms:
        raise ForensicsError(
            f"{source}: introduced_at ({format_ms(introduced_ms)}) must be before "
            f"patched_at ({format_ms(patched_ms)})."
        )
    scope_paths = _regexes(data["scope_paths"], "scope_paths", source)
    org_routes = _regexes(data["org_routes"], "org_routes", source)
    for pattern in org_routes:
        if "org" not in re.compile(pattern).groupindex:
            raise ForensicsError(
                f"{source}: the org_routes regex {pattern!r} has no group named org "
                "(write it as (?P<org>...))."
            )
    require_integration = data.get("require_integration", True)
    if not isinstance(require_integration, bool):
        raise ForensicsError(f"{source}: require_integration must be true or false.")
    return {
        "name": name.strip(),
        "introduced_at": format_ms(introduced_ms),
        "patched_at": format_ms(patched_ms),
        "introduced_ms": introduced_ms,
        "patched_ms": patched_ms,
        "scope_paths": scope_paths,
        "org_routes": org_routes,
        "require_integration": require_integration,
        "source": text,
    }


def set_incident(db: sqlite_utils.Database, path: str) -> dict:
    """Validate an incident file, make it the incident of ``db``, and recompute the scope.

    Returns:
        the incident, as :func:`load_incident` gives it.

    Raises:
        ForensicsError: the file is not a valid incident; the database is unchanged then.
    """
    return store_incident(db, load_incident(path))


def store_incident(db: sqlite_utils.Database, incident: dict) -> dict:
    """Replace the incident row with a validated incident and recompute the scope,
    in one transaction (the caller's, if one is open).

    Returns:
        the incident.
    """
    with write_transaction(db):
        db.execute("delete from incident")
        db.execute(
            """insert into incident (id, name, introduced_at, patched_at, introduced_ms,
            patched_ms, scope_paths, org_routes, require_integration, source, set_at)
            values (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [
                incident["name"],
                incident["introduced_at"],
                incident["patched_at"],
                incident["introduced_ms"],
                incident["patched_ms"],
                json.dumps(incident["scope_paths"]),
                json.dumps(incident["org_routes"]),
                int(incident["require_integration"]),
                incident["source"],
                utcnow(),
            ],
        )
        derived.after_incident(db)
    return incident


def summary(incident: dict) -> str:
    """One line describing an incident, for the command line."""
    paths, routes = len(incident["scope_paths"]), len(incident["org_routes"])
    return (
        f"Incident {incident['name']!r}: {incident['introduced_at']} to {incident['patched_at']}, "
        f"{paths} scope path{'s' if paths != 1 else ''}, {routes} org route{'s' if routes != 1 else ''}, "
        f"integration {'required' if incident['require_integration'] else 'not required'}."
    )


def _read_text(path: str, source: str) -> str:
    return decode_text(read_whole(path, "an incident file"), source)


def _time(value, key: str, source: str) -> int:
    # TOML's own date-times: a naive one is UTC, like an ISO string without offset.
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        value = value.isoformat()
    elif isinstance(value, datetime.date):
        value = value.isoformat()
    try:
        if isinstance(value, (str, int, float)):
            return parse_time(value)
    except TimeError:
        pass
    raise ForensicsError(
        f"{source}: {key} = {value!r} is not a time (use ISO 8601 such as "
        "'2020-07-01T00:00:00Z', nginx time_local or epoch seconds)."
    )


def _regexes(value, key: str, source: str) -> list:
    if not isinstance(value, list) or not value:
        raise ForensicsError(f"{source}: {key} must be a non-empty list of regular expressions.")
    for pattern in value:
        if not isinstance(pattern, str):
            raise ForensicsError(f"{source}: {key} holds {pattern!r}, which is not a string.")
        reason = regex_problem(pattern)
        if reason is not None:
            raise ForensicsError(f"{source}: the {key} regex {pattern!r} is not valid ({reason}).")
    return list(value)


