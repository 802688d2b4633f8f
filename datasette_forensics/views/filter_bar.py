"""The filter bar of the workbench pages: a GET form over the page's own URL state.

The form submits to the page itself, so its state lands in the URL and a pasted
link shows the same view. ``filter_bar()`` gives the template macro
``forensics_macros.filter_bar`` what it shows: the time window with presets drawn
from the incident (its window, the day before the patch, after the patch), one
search field for an address, a network or a user agent (``?q=``, read by
``common.parse_state``), and status and kind toggles. Any page that has a ``Page``
can include it.
"""

from __future__ import annotations

from ..enrich import KINDS
from ..timeparse import format_ms
from .common import DAY_MS, SIGNATURE_FILTERS, Page

INCIDENT_WINDOW = "select introduced_at, patched_at, patched_ms from incident where id = 1"
# Parameters the bar's own fields carry: everything else in the URL state rides along hidden.
OWN = ("from", "to", "q", "ip", "cidr", "cidr24", "cidr16", "ua", "status", "kind", "page")


async def filter_bar(page: Page, statuses=(), status: str | None = None, kinds: bool = True) -> dict:
    """What the filter bar shows for this page and its URL state.

    Args:
        statuses: the page's ``?status=`` values, "all" (no parameter) first.
        status: the current one.
        kinds: whether the page filters by user-agent kind.
    Returns:
        The form's action, hidden fields, current values, presets and the clear link.
    """
    state = page.state
    args = state.args
    path = page.request.path[: -len(".json")] if page.request.path.endswith(".json") else page.request.path
    search = next((args[k] for k in ("ip", "cidr", "cidr24", "cidr16", "ua") if k in args), "")
    presets = []
    row = (await page.db.execute(INCIDENT_WINDOW)).first()
    if row is not None:
        patched = row["patched_at"]
        day_before = format_ms(row["patched_ms"] - DAY_MS)
        for label, start, end in (
            ("Incident window", row["introduced_at"], patched),
            ("The day before the patch", day_before, patched),
            ("After the patch", patched, None),
        ):
            presets.append(
                {
                    "label": label,
                    "url": page.self_url(json_format=False, **{"from": start, "to": end, "page": None}),
                    "active": args.get("from") == start and args.get("to") == end,
                }
            )
    presets.append(
        {
            "label": "Whole log",
            "url": page.self_url(json_format=False, **{"from": None, "to": None, "page": None}),
            "active": "from" not in args and "to" not in args,
        }
    )
    return {
        "action": path,
        "hidden": [(k, v) for k, v in args.items() if k not in OWN],
        "from": args.get("from", ""),
        "to": args.get("to", ""),
        "q": search,
        "presets": presets,
        "statuses": list(statuses),
        "status": status or "all",
        "kinds": list(KINDS) if kinds else [],
        "kind": args.get("kind", ""),
        "clear_url": page.self_url(json_format=False, **{k: None for k in (*OWN, *SIGNATURE_FILTERS, "org")}),
    }
