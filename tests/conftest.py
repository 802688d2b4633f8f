"""Shared fixtures: a database built the real way from sample_data/."""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from datasette_forensics import incident, ingest, permissions, records, schema

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"
RECORD_KINDS = [
    "orgs", "org_slugs", "integrations", "tokens", "users",
    "memberships", "sessions", "partners", "partner_orgs", "ip_info",
]


# Datasette 1.0 checks CSRF by the headers a browser sends (Sec-Fetch-Site, Origin) and
# sets no token cookie; 0.65 compares the ds_csrftoken cookie with the form's csrftoken.
HEADER_CSRF = importlib.util.find_spec("datasette.csrf") is not None
CROSS_SITE = {"sec-fetch-site": "cross-site", "origin": "http://evil.example"}


async def csrf_cookies(ds, cookies: dict, page: str = "/-/messages") -> tuple[dict, str]:
    """Cookies and the csrftoken form value for a same-origin POST (1.0: no token needed)."""
    if HEADER_CSRF:
        return dict(cookies), "unused-by-datasette-1.0"
    token = (await ds.client.get(page, cookies=cookies)).cookies["ds_csrftoken"]
    return dict(cookies, ds_csrftoken=token), token


def skip_unless_ci(reason: str):
    """Skip a test whose tool is missing, but FAIL under CI=true, where it must be there."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: it must be installed)")
    pytest.skip(reason, allow_module_level=True)


def import_or_skip_unless_ci(module: str, install: str):
    """The module, else a skip (a failure under CI=true) naming how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        skip_unless_ci(f"{module} is not installed ({install})")


def make_datasette(paths, config: dict | None = None, metadata: dict | None = None):
    """Datasette over paths with allow blocks and plugin settings where this Datasette
    line documents them (datasette.yaml config on 1.0, metadata on 0.65)."""
    from datasette.app import Datasette

    return Datasette([str(p) for p in paths], **permissions.datasette_kwargs(config, metadata))


def dump(path) -> str:
    """The whole database as SQL text: equal dumps mean nothing changed."""
    conn = sqlite3.connect(str(path))
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


def sample_record_file(kind: str) -> Path:
    (path,) = [p for p in SAMPLE.glob(f"{kind}.*")]
    return path


def sample_log_files() -> list[str]:
    return sorted(str(p) for p in (SAMPLE / "logs").iterdir() if p.is_file())


def build_sample_db(path: Path, with_logs: bool = True):
    """Records, incident, then every sample log: the load order of sample_data/README.md."""
    db = schema.connect(str(path))
    for kind in RECORD_KINDS:
        records.import_records(db, kind, str(sample_record_file(kind)))
    incident.set_incident(db, str(SAMPLE / "incident.toml"))
    if with_logs:
        ingest.import_logs(db, sample_log_files())
    return db


@pytest.fixture(scope="session")
def sample_db_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sample") / "sample.db"
    build_sample_db(path).conn.close()
    return path


@pytest.fixture
def sample_db_path(sample_db_template, tmp_path) -> Path:
    """A fresh copy of the sample incident database (no rules applied)."""
    path = tmp_path / "sample.db"
    shutil.copy(sample_db_template, path)
    return path
