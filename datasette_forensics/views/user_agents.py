"""User-agent groups: /DB/-/forensics/user-agents?by=raw|family|family_major|os|kind."""

from __future__ import annotations

from .common import page_view
from .pivot import pivot_view


@page_view
async def view(datasette, request):
    """User-agent groups: requests, scope and reach per user agent, family, OS or kind."""
    return await pivot_view(datasette, request, "user-agents")
