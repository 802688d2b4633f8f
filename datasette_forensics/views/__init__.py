"""The workbench pages: one module per page, each registered in ROUTES."""

ROUTES: list = []

from . import rules_page  # noqa: E402

ROUTES.append((r"^/(?P<database>[^/]+)/-/forensics/rules(?P<format>\.json)?$", rules_page.view))

from . import chart, ips, org, orgs, overview, report_download, signatures, user_agents  # noqa: E402
from . import request, requests  # noqa: E402

_DB = r"^/(?P<database>[^/]+)/-/forensics"
ROUTES += [
    (_DB + r"(?P<format>\.json)?$", overview.view),
    (_DB + r"/ips(?P<format>\.json)?$", ips.view),
    (_DB + r"/user-agents(?P<format>\.json)?$", user_agents.view),
    (_DB + r"/orgs(?P<format>\.json)?$", orgs.view),
    (_DB + r"/orgs/(?P<org_id>[^/]+?)(?P<format>\.json)?$", org.view),
    (_DB + r"/signatures(?P<format>\.json)?$", signatures.view),
    (_DB + r"/requests(?P<format>\.json|\.csv)?$", requests.view),
    (_DB + r"/requests/(?P<request_id>[0-9]+)(?P<format>\.json)?$", request.view),
    (_DB + r"/report(?P<format>\.json|\.csv)$", report_download.view),
    (r"^/-/forensics-chart$", chart.view),
]

from . import case_writes, evidence_download  # noqa: E402

ROUTES += [
    (_DB + r"/orgs/(?P<org_id>[^/]+?)/evidence\.html$", evidence_download.view),
    (_DB + r"/notes$", case_writes.notes_view),
    (_DB + r"/verdicts$", case_writes.verdicts_view),
]
