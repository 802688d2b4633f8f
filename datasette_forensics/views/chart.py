"""The charts of the workbench pages, and the frame in which each is drawn.

A chart is a Vega-Lite spec built here, with its rows, embedded in the page as
JSON; the page shows it in a small frame (``/-/forensics-chart?data=ID``) whose
script draws it with the Vega and Vega-Lite that datasette-vega 0.6 bundles (see
``static/forensics-chart.js``). Everything is served from the plugins' own static
files: no CDN, no network.

Every chart is drawn from ranges (``x``/``x2`` or ``y``/``y2``) computed here, so
stacks, floating waterfall steps and continuous time axes need nothing from
Vega-Lite 2's stacking; every mark carries the URL of the requests behind it
(``href``), and the same figures, with the same links, are in a table beside it.
One colour scheme serves every page (``PARTS``).
"""

from __future__ import annotations

import importlib.resources

from datasette import Response

from .. import permissions
from ..terminal import safe
from ..timeparse import format_ms

# The parts of a count of requests, in legend and stacking order, and their colours
# (the same on every page, distinct in hue and lightness for colour-blind readers).
PARTS = {
    "unexplained": "#c0392b",
    "explained": "#2f6fb0",
    "out of scope": "#b8c2cc",
    "in scope": "#5b6670",
}
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
LABEL_ROOM = 240  # at most this many pixels for the category labels of a horizontal bar chart


def bucket_label(start_ms: int, unit_ms: int) -> str:
    """2020-07-18 for a day, 2020-07-18 09:00 for an hour (UTC)."""
    text = format_ms(start_ms)
    return text[:10] if unit_ms >= DAY_MS else text[:10] + " " + text[11:13] + ":00"


def time_unit(first_ms: int | None, last_ms: int | None) -> int:
    """Hours for a span of up to three days, else days."""
    if first_ms is None or last_ms is None:
        return DAY_MS
    return HOUR_MS if last_ms - first_ms <= 3 * DAY_MS else DAY_MS


def _scale(parts) -> dict:
    return {"domain": list(parts), "range": [PARTS[p] for p in parts]}


def _marks(parts) -> dict:
    """Colour by part (the shared scheme), a link and a tooltip on every mark."""
    return {
        "color": {"field": "part", "type": "nominal", "scale": _scale(parts), "legend": {"title": None}},
        "href": {"field": "href", "type": "nominal"},
        "tooltip": {"field": "tip", "type": "nominal"},
    }


def _requests_axis(channel: str, rows: list[dict]) -> dict:
    """The requests axis of a range mark (from {channel}0 to {channel}1), with whole-number ticks."""
    top = max((r[f"{channel}1"] for r in rows), default=1)
    return {
        channel: {"field": f"{channel}0", "type": "quantitative", "title": "Requests",
                  "axis": {"tickCount": max(1, min(top, 8)), "format": ",d"}},
        f"{channel}2": {"field": f"{channel}1", "type": "quantitative"},
    }


def _stack(rows: list, channel: str, label: str, counts: dict, parts, where: dict) -> list[dict]:
    """Stack one bar's parts by hand: append a mark per non-empty part to rows, from
    {channel}0 to {channel}1, and return the table cells (count and link per part)."""
    start, cells = 0, []
    for part in parts:
        count, href = counts.get(part, (0, None))
        count = count or 0
        if count:
            rows.append({**where, "part": part, f"{channel}0": start, f"{channel}1": start + count,
                         "href": href, "tip": f"{label}: {count:,} {part}"})
        start += count
        cells.append({"value": count, "href": href})
    return cells


def _label(value) -> str:
    """A category label: log text with its control and bidi characters shown as escapes."""
    return "(unknown)" if value is None else "(empty)" if value == "" else safe(value)


def _figures_table(columns, rows) -> dict:
    """The chart's figures as a table: rows of [label, {value, href}...]."""
    return {"columns": columns, "rows": rows}


def _chart(element_id, title, spec, table, drawable, height) -> dict:
    return {"id": element_id, "title": title, "spec": spec, "table": table, "drawable": drawable, "height": height}


def category_bars(element_id: str, title: str, axis_title: str, categories: list[dict], parts=("unexplained", "explained", "out of scope")) -> dict:
    """Horizontal stacked bars, one per category, in the given order.

    Args:
        categories: ``{"label": str|None, "parts": {part: (count, href)}}``, in page order.
    Returns:
        The chart: its id, title, Vega-Lite spec, figures table and drawn height.
    """
    rows, table = [], []
    for c in categories:
        label = _label(c["label"])
        table.append([label] + _stack(rows, "x", label, c["parts"], parts, {"category": label}))
    spec = {
        "data": {"values": rows},
        "mark": {"type": "bar", "cursor": "pointer"},
        "encoding": {
            "y": {"field": "category", "type": "ordinal", "sort": None, "title": axis_title,
                  "axis": {"labelLimit": LABEL_ROOM}},
            **_requests_axis("x", rows),
            **_marks(parts),
        },
        "height": max(22 * len(categories), 160),
        "autosize": {"type": "fit", "contains": "padding"},
    }
    return _chart(element_id, title, spec, _figures_table([axis_title, *parts], table), bool(rows), spec["height"] + 60)


def time_bars(element_id: str, title: str, buckets: list[dict], unit_ms: int, parts=("unexplained", "explained")) -> dict:
    """Stacked bars on a continuous UTC time axis: empty hours or days stay as gaps.

    Args:
        buckets: ``{"start": ms, "parts": {part: (count, href)}}``, one per non-empty bucket.
        unit_ms: the bucket's length (HOUR_MS or DAY_MS).
    """
    rows, table = [], []
    for b in buckets:
        label = bucket_label(b["start"], unit_ms) + (" (at least)" if b.get("at_least") else "")
        where = {"t0": b["start"], "t1": b["start"] + unit_ms}
        table.append([label] + _stack(rows, "y", label, b["parts"], parts, where))
    heading = "Day (UTC)" if unit_ms >= DAY_MS else "Hour (UTC)"
    spec = {
        "data": {"values": rows},
        "mark": {"type": "bar", "cursor": "pointer", "stroke": "#ffffff", "strokeWidth": 1},
        "encoding": {
            "x": {"field": "t0", "type": "temporal", "title": heading, "scale": {"type": "utc"},
                  "axis": {"format": "%b %d" if unit_ms >= DAY_MS else "%b %d %H:00", "labelAngle": 0}},
            "x2": {"field": "t1", "type": "temporal"},
            **_requests_axis("y", rows),
            **_marks(parts),
        },
        "height": 200,
        "autosize": {"type": "fit", "contains": "padding"},
    }
    return _chart(element_id, title, spec, _figures_table([heading, *parts], table), bool(rows), 270)


def waterfall(element_id: str, title: str, steps: list[dict]) -> dict:
    """A true waterfall: the in-scope bar, one floating bar per applied rule for what
    it newly explained, and the bar of what is still unexplained.

    Args:
        steps: ``{"rule": name|None, "remaining": n, "url": href}`` in order; the
            first (rule None) is the in-scope total.
    """
    rows, table = [], []
    if steps:
        first = steps[0]
        rows.append({"step": "in scope", "y0": 0, "y1": first["remaining"], "part": "in scope", "href": first["url"],
                     "tip": f"in scope: {first['remaining']:,}"})
        table.append(["in scope", {"value": first["remaining"], "href": first["url"]}])
        before = first["remaining"]
        for s in steps[1:]:
            explained = before - s["remaining"]
            label = safe(s["rule"])
            rows.append({"step": label, "y0": s["remaining"], "y1": before, "part": "explained", "href": s.get("explained_url") or s["url"],
                         "tip": f"{label} explained {explained:,}; {s['remaining']:,} left"})
            table.append([f"{label}: explained", {"value": explained, "href": s.get("explained_url")}])
            before = s["remaining"]
        last = steps[-1]
        rows.append({"step": "unexplained", "y0": 0, "y1": last["remaining"], "part": "unexplained", "href": last["url"],
                     "tip": f"still unexplained: {last['remaining']:,}"})
        table.append(["still unexplained", {"value": last["remaining"], "href": last["url"]}])
    parts = ("in scope", "explained", "unexplained")
    spec = {
        "data": {"values": rows},
        "mark": {"type": "bar", "cursor": "pointer"},
        "encoding": {
            "x": {"field": "step", "type": "ordinal", "sort": None, "title": "Step (rules in the order applied)",
                  "axis": {"labelAngle": 0, "labelLimit": 160}},
            **_requests_axis("y", rows),
            **_marks(parts),
        },
        "height": 220,
        "autosize": {"type": "fit", "contains": "padding"},
    }
    return _chart(element_id, title, spec, _figures_table(["Step", "Requests"], table), len(steps) > 0 and steps[0]["remaining"] > 0, 290)


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
    scripts, _ = vega_assets(datasette)
    return Response.html(
        await datasette.render_template(
            "forensics_chart.html",
            {
                "vega_scripts": scripts,
                "chart_script": datasette.urls.static_plugins("datasette-forensics", "forensics-chart.js"),
                "stylesheet": datasette.urls.static_plugins("datasette-forensics", "forensics.css"),
            },
            request=request,
        )
    )
