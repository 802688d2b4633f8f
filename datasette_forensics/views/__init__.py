"""The workbench pages: one module per page, each registered in ROUTES."""

ROUTES: list = []

from . import rules_page  # noqa: E402

ROUTES.append((r"^/(?P<database>[^/]+)/-/forensics/rules(?P<format>\.json)?$", rules_page.view))
