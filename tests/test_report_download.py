"""The report over the web equals the command line's, and the CSV downloads."""

from __future__ import annotations

import csv
import io
import json

import pytest
from click.testing import CliRunner
from datasette.app import Datasette

from datasette_forensics.cli import cli


@pytest.mark.asyncio
async def test_report_json_and_csv_match_the_cli(sample_db_path):
    runner = CliRunner()
    assert runner.invoke(cli, ["rules", str(sample_db_path), "--apply", "all"]).exit_code == 0
    cli_json = json.loads(runner.invoke(cli, ["report", str(sample_db_path)]).output)
    cli_csv = runner.invoke(cli, ["report", str(sample_db_path), "--format", "csv"]).output
    ds = Datasette([str(sample_db_path)])
    response = await ds.client.get("/sample/-/forensics/report.json")
    assert response.status_code == 200
    assert response.json() == cli_json
    response = await ds.client.get("/sample/-/forensics/report.csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    assert response.text.replace("\r\n", "\n") == cli_csv.replace("\r\n", "\n")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["org_id"] for r in rows] == ["101", "107", "108", "104", "103", "111"]


@pytest.mark.asyncio
async def test_report_needs_view_permission(sample_db_path):
    ds = Datasette([str(sample_db_path)], metadata={"databases": {"sample": {"allow": {"id": "root"}}}})
    assert (await ds.client.get("/sample/-/forensics/report.csv")).status_code == 403
    assert (await ds.client.get("/nope/-/forensics/report.csv")).status_code == 404
