"""IP clusters: /DB/-/forensics/ips?by=ip|cidr24|cidr16|asn|provider|country|network|rdns."""

from __future__ import annotations

from .common import page_view
from .pivot import pivot_view


@page_view
async def view(datasette, request):
    """IP clusters: requests, scope, reach and user-agent kinds per address or network."""
    return await pivot_view(datasette, request, "ips")
