"""The report of MODEL §4 over the web: JSON, and the notification list as a CSV download."""

from __future__ import annotations

import sqlite_utils
from datasette import Response

from .. import report
from .common import open_page, page_view, to_json_text


@page_view
async def view(datasette, request):
    """/DB/-/forensics/report.json and /DB/-/forensics/report.csv (same content as the CLI)."""
    page = await open_page(datasette, request, "report")
    fmt = request.url_vars["format"]

    def build(conn):
        db = sqlite_utils.Database(conn)
        return report.notification_csv(db) if fmt == ".csv" else report.build_report(db)

    content = await page.db.execute_fn(build)
    if fmt == ".csv":
        return Response(
            content,
            content_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{page.db.name}-notify.csv"'},
        )
    return Response(to_json_text(content), content_type="application/json; charset=utf-8")
