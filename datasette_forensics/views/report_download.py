"""The report of MODEL §4 over the web: JSON, and the notification list as a CSV download.

The CSV is the orgs' contact list: it needs view-table on orgs (403 otherwise). The
JSON leaves out the orgs' slugs and contacts for an actor who may not view orgs, saying so.
"""

from __future__ import annotations

import sqlite_utils
from datasette import Response

from .. import report
from .common import open_page, page_view, to_json_text


@page_view
async def view(datasette, request):
    """/DB/-/forensics/report.json and /DB/-/forensics/report.csv (same content as the CLI)."""
    fmt = request.url_vars["format"]
    page = await open_page(datasette, request, "report", tables=("orgs",) if fmt == ".csv" else ())
    hide_orgs = fmt == ".json" and await page.withhold("orgs", "Org slugs and contact e-mails")

    def build(conn):
        db = sqlite_utils.Database(conn)
        if fmt == ".csv":
            return report.notification_csv(db)
        built = report.build_report(db)
        if hide_orgs:
            for org in built["orgs"]:
                org["slug"] = org["contact_email"] = None
            built["withheld"] = page.withheld
        return built

    content = await page.db.execute_fn(build)
    if fmt == ".csv":
        return Response(
            content,
            content_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{page.db.name}-notify.csv"'},
        )
    return Response(to_json_text(content), content_type="application/json; charset=utf-8")
