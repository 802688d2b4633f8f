"""A first import's signature figures, counted while the store waits (derived/batch_figures.py).

The close of a first import takes ``sig_stats`` from the tally only when it holds
exactly the batch's requests; these tests check that the figures it takes are a
recount's, that it really takes them, and that it refuses a tally that is short.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import SAMPLE
from datasette_forensics import incident, ingest, ipinfo, schema
from datasette_forensics.derived import aggregates, batch_figures

UAS = ["curl/7.68.0", "python-requests/2.25.1", "Mozilla/5.0 (X11; Linux x86_64) Firefox/78.0"]
STATUSES = [200, 204, 302, 404, 500]


def write_log(path: Path, n: int) -> Path:
    """n lines over 19-21 July 2020 (the demo incident is patched on the 20th), many signatures."""
    lines = []
    for i in range(n):
        day, hour, minute = 19 + i * 3 // n, i % 24, i % 60
        ip = f"10.{i % 3}.{i % 7}.{i % 11}"
        lines.append(
            f'{ip} - - [{day}/Jul/2020:{hour:02d}:{minute:02d}:{i % 60:02d} +0000] "GET /api/0/items/{i % 97}/ HTTP/1.1"'
            f' {STATUSES[i % 5]} {i} "-" "{UAS[i % 3]}"'
        )
    path.write_text("".join(line + "\n" for line in lines))
    return path


def sig_stats(db) -> list[tuple]:
    return db.execute("select * from sig_stats order by sig_id").fetchall()


@pytest.fixture
def spied(monkeypatch):
    """Every answer Tally.figures gave."""
    answers = []
    figures = batch_figures.Tally.figures

    def spy(self, conn, batch_requests):
        answer = figures(self, conn, batch_requests)
        answers.append((answer, batch_requests))
        return answer

    monkeypatch.setattr(batch_figures.Tally, "figures", spy)
    return answers


@pytest.mark.parametrize("with_incident", [False, True], ids=["no-incident", "incident"])
def test_a_first_import_takes_the_tallied_figures_and_they_are_a_recounts(tmp_path, monkeypatch, spied, with_incident):
    monkeypatch.setenv("FORENSICS_PARSE_PROCESS", "always")
    monkeypatch.setattr(ingest, "CHUNK_LINES", 300)  # 10 chunks
    db = schema.connect(str(tmp_path / "f.db"))
    if with_incident:
        incident.set_incident(db, str(SAMPLE / "incident.toml"))
    (result,) = ingest.import_logs(db, [str(write_log(tmp_path / "a.log", 3000))])
    assert result.status == "complete" and result.imported == 3000
    (answer, counted), = spied
    assert answer is not None and counted == 3000  # the tally was taken, not recounted
    tallied = sig_stats(db)
    assert len(tallied) == 231  # the signatures of the log: i mod 231 gives the address, and its agent
    if with_incident:
        assert db.execute("select sum(after_patch) from sig_stats").fetchone()[0] > 0
    aggregates.refresh(db)  # a recount from the requests
    assert sig_stats(db) == tallied
    assert db.execute("select count(*) from temp.sqlite_master where name = 'batch_sig_figures'").fetchone()[0] == 0


def test_a_later_batch_does_not_use_a_tally(tmp_path, monkeypatch, spied):
    """Only a batch that holds every request may take its figures for all of sig_stats:
    a later batch does not even count them."""
    monkeypatch.setenv("FORENSICS_PARSE_PROCESS", "always")
    monkeypatch.setattr(ingest, "CHUNK_LINES", 300)
    created = []
    init = batch_figures.Tally.__init__

    def spy_init(self, db_file):
        created.append(db_file)
        init(self, db_file)

    monkeypatch.setattr(batch_figures.Tally, "__init__", spy_init)
    db = schema.connect(str(tmp_path / "f.db"))
    ingest.import_logs(db, [str(write_log(tmp_path / "a.log", 1500))])
    assert len(created) == 1
    path = tmp_path / "b.log"
    path.write_text(write_log(tmp_path / "b0.log", 2400).read_text().replace("GET /api/0/items/", "GET /b/"))
    ingest.import_logs(db, [str(path)])
    assert len(spied) == 1 and len(created) == 1  # the first batch's close only
    tallied = sig_stats(db)
    aggregates.refresh(db)
    assert sig_stats(db) == tallied


def test_a_tally_short_of_the_batch_or_under_another_patch_time_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("FORENSICS_PARSE_PROCESS", "never")
    path = str(tmp_path / "f.db")
    db = schema.connect(path)
    ingest.import_logs(db, [str(write_log(tmp_path / "a.log", 600))])
    conn = db.conn
    first, last = conn.execute("select min(id), max(id) from requests").fetchone()
    short = batch_figures.Tally(path)
    short.stored(first, first + 299)  # a resumed batch: this run stored only part of it
    assert short.figures(conn, 600) is None
    short.drop(conn)
    whole = batch_figures.Tally(path)
    whole.stored(first, first + 299)
    whole.stored(first + 300, last)
    assert whole.figures(conn, 600) is not None
    assert conn.execute(f"select sum(requests) from {batch_figures.TABLE}").fetchone()[0] == 600
    incident.set_incident(db, str(SAMPLE / "incident.toml"))  # the patch time changed since it counted
    assert whole.figures(conn, 600) is None
    whole.drop(conn)
    assert conn.execute("select count(*) from temp.sqlite_master where name = 'batch_sig_figures'").fetchone()[0] == 0


def test_a_failed_count_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("FORENSICS_PARSE_PROCESS", "never")
    path = str(tmp_path / "f.db")
    db = schema.connect(path)
    ingest.import_logs(db, [str(write_log(tmp_path / "a.log", 300))])
    first, last = db.conn.execute("select min(id), max(id) from requests").fetchone()
    tally = batch_figures.Tally(path)
    tally.reader.execute("drop table temp.batch_sig_figures")  # its next count fails
    tally.stored(first, last)
    assert tally.figures(db.conn, 300) is None and tally.failed
    tally.drop(db.conn)


def test_a_first_import_looks_its_addresses_up_ahead_and_stores_what_inline_lookups_give(tmp_path, monkeypatch):
    """ipinfo.Located: the new addresses' shipped data looked up beside the close."""
    monkeypatch.setenv("FORENSICS_PARSE_PROCESS", "always")
    monkeypatch.setattr(ingest, "CHUNK_LINES", 300)
    found = []
    result = ipinfo.Located.result

    def spy(self):
        answer = result(self)
        found.append(answer)
        return answer

    monkeypatch.setattr(ipinfo.Located, "result", spy)
    log = write_log(tmp_path / "a.log", 900).read_text().replace("10.0.", "8.8.")  # some public addresses
    (tmp_path / "b.log").write_text(log)
    db = schema.connect(str(tmp_path / "f.db"))
    ingest.import_logs(db, [str(tmp_path / "b.log")])
    (located,) = found
    assert located is not None and len(located) == db.execute("select count(*) from ips").fetchone()[0] == 231
    assert db.execute("select count(*) from ips where network = 'public' and country is not null").fetchone()[0] > 0
    assert ipinfo.apply_ip_info(db) == 0  # every address looked up again, inline: nothing changes
