"""The workbench pages: one module per page, each registered in ROUTES."""

ROUTES: list = []
