"""The SQL that shows a request: its address, agent, URI and path.

Every list of requests (the requests page, a request's page, an org's latest
requests, the evidence file's unexplained requests) joins a request ``r`` to its
signature ``g``, address ``i``, user agent ``a``, URI ``u`` and path ``p`` the same
way: this is that join, written once.
"""

from __future__ import annotations

REQUEST_JOINS = """
join signatures g on g.id = r.sig_id
join ips i on i.id = g.ip_id
join user_agents a on a.id = g.ua_id
join uris u on u.id = r.uri_id
join paths p on p.id = u.path_id
"""
