"""Shared fixtures: a database built the real way from sample_data/."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from datasette_forensics import incident, ingest, records, schema

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"
RECORD_KINDS = [
    "orgs", "org_slugs", "integrations", "tokens", "users",
    "memberships", "sessions", "partners", "partner_orgs", "ip_info",
]


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
