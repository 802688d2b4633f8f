"""The one-command demo: the sample incident of sample_data/, served by Datasette."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from . import evidence, incident, ingest, notes, notify, records, schema, verdicts

SAMPLE_DATA = Path(__file__).resolve().parent / "sample_data"
RECORD_KINDS = (
    "orgs", "org_slugs", "integrations", "tokens", "users",
    "memberships", "sessions", "partners", "partner_orgs", "ip_info",
)
# Bookkeeping tables an analyst never needs to browse.
HIDDEN_TABLES = ("line_counts", "line_counts_suspended", "line_counts_staged", "line_counts_batch", "line_filter", "derived_upto", "window_hours_upto", "raw_bytes", "raw_chunks", "slug_windows", "integration_windows", "_sqlite_migrations")


def sample_files(sample: Path = SAMPLE_DATA) -> tuple[dict[str, Path], Path, list[Path]]:
    """The record file of each kind, the incident file and the log files of a sample folder."""
    kinds = {}
    for kind in RECORD_KINDS:
        found = sorted(p for p in sample.glob(f"{kind}.*") if p.suffix in (".csv", ".jsonl", ".json"))
        if found:
            kinds[kind] = found[0]
    logs = sorted(p for p in (sample / "logs").iterdir() if p.is_file())
    return kinds, sample / "incident.toml", logs


def build(path: str, sample: Path = SAMPLE_DATA, with_case_work: bool = False) -> None:
    """Build the demo database at path, atomically: a finished file replaces the old one.

    Args:
        with_case_work: also leave a verdict, notes, tags, an evidence file and a
            notification run (the demo command does; tests of the bare story do not).
    """
    kinds, incident_file, logs = sample_files(sample)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(suffix=".db", dir=directory)
    os.close(fd)
    os.remove(tmp)
    try:
        db = schema.connect(tmp)
        for kind, file in kinds.items():
            records.import_records(db, kind, str(file))
        incident.set_incident(db, str(incident_file))
        ingest.import_logs(db, [str(p) for p in logs])
        if with_case_work:
            case_work(db, case_directory(path))
        db.execute("pragma wal_checkpoint(truncate)")
        db.conn.execute("pragma journal_mode = delete")
        db.conn.close()
        for suffix in ("-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, tmp + "-wal", tmp + "-shm"):
            if os.path.exists(leftover):
                os.remove(leftover)


def metadata(database: str) -> dict:
    return {
        "title": "datasette-forensics demo incident",
        "description": "The sample incident of sample_data/: see the workbench under /{}/-/forensics".format(database),
    }


def config(database: str) -> dict:
    """Table settings: bookkeeping tables hidden."""
    return {"databases": {database: {"tables": {t: {"hidden": True} for t in HIDDEN_TABLES}}}}


# The case work the demo shows (MODEL §6): a verdict, a note and tags, an evidence
# file and a notification run, as an analyst would leave them.
DEMO_VERDICT = (
    "198.51.100.30",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.1.1 Safari/605.1.15",
    "109",
    "customer confirmed: their office network",
)


def case_directory(path: str) -> str:
    """Where the demo writes its evidence file and messages: DB's name + '-case' beside it."""
    return os.path.splitext(os.path.abspath(path))[0] + "-case"


def case_work(db, directory: str) -> None:
    """A verdict, notes and tags, the evidence file of acme (101) and a notification run."""
    ip, ua, org, reason = DEMO_VERDICT
    verdicts.make(db, ip, ua, org, reason, "demo")
    notes.add_note(db, notes.resolve_target(db, "org", "101"), "notified", "Phoned their security team.", "demo")
    notes.add_note(db, notes.resolve_target(db, "signature", ("192.0.2.66", "curl/7.68.0")), "suspicious",
                   "Mallory: reads acme and wayne with her own token.", "demo")
    notes.add_note(db, notes.resolve_target(db, "cidr", "192.0.2.0/24"), "cloud", None, "demo")
    evidence.writable_directory(directory)
    evidence.write(db, "101", os.path.join(directory, "evidence-101.html"))
    notify.notify(db, os.path.join(directory, "outbox"), "security@example.com",
                  "Security incident: API integration tokens", actor="demo")
