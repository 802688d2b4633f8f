"""One org's evidence file (MODEL §6.5) as a download: /DB/-/forensics/orgs/ORG_ID/evidence.html."""

from __future__ import annotations

import sqlite_utils
from datasette import NotFound, Response
from datasette.utils import tilde_decode

from .. import evidence
from ..errors import ForensicsError
from .common import open_page, page_view


@page_view
async def view(datasette, request):
    """The same self-contained HTML file as `datasette-forensics evidence --org ORG_ID`."""
    page = await open_page(datasette, request, "evidence")
    org = tilde_decode(request.url_vars["org_id"])

    def render(conn):
        return evidence.render(sqlite_utils.Database(conn), org)

    try:
        text = await page.db.execute_fn(render)
    except ForensicsError as exc:
        raise NotFound(str(exc))
    return Response(
        text,
        content_type="text/html; charset=utf-8",
        headers={
            "content-disposition": f'attachment; filename="evidence-{evidence.safe_name(org)}.html"',
            "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'",
        },
    )
