"""The frame in which datasette-vega draws one chart of a workbench page.

datasette-vega 0.6 ships one bundled script (React, Vega, Vega-Lite, vega-embed)
that charts the JSON behind a page's ``.export-links a[href*=json]`` link, as
configured by ``#g.*`` fragment parameters, once per document. It exposes no
global to call, so each chart is a small frame of its own: its script hands
datasette-vega the rows the parent page embeds (see ``static/forensics-chart.js``).
Everything is served from the plugins' own static files: no CDN, no network.
"""

from __future__ import annotations

import importlib.resources

from datasette import Response

from .. import permissions


def vega_assets(datasette) -> tuple[list[str], list[str]]:
    """The URLs of datasette-vega's static scripts and stylesheets (none if it is missing)."""
    try:
        static = importlib.resources.files("datasette_vega") / "static"
    except ModuleNotFoundError:
        return [], []
    names = sorted(p.name for p in static.iterdir()) if static.is_dir() else []
    url = lambda name: datasette.urls.static_plugins("datasette-vega", name)  # noqa: E731
    return [url(n) for n in names if n.endswith(".js")], [url(n) for n in names if n.endswith(".css")]


async def view(datasette, request):
    """A chart frame: datasette-vega draws the rows that its parent page embeds."""
    await permissions.ensure_view_instance(datasette, request.actor)
    scripts, stylesheets = vega_assets(datasette)
    return Response.html(
        await datasette.render_template(
            "forensics_chart.html",
            {
                "vega_scripts": scripts,
                "vega_stylesheets": stylesheets,
                "chart_script": datasette.urls.static_plugins("datasette-forensics", "forensics-chart.js"),
                "stylesheet": datasette.urls.static_plugins("datasette-forensics", "forensics.css"),
            },
            request=request,
        )
    )
