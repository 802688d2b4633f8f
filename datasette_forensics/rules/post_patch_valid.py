"""post_patch_valid: a single-tenant signature that kept succeeding for the org after the patch."""

NAME = "post_patch_valid"
DESCRIPTION = (
    "The signature is not cross-tenant and made a 2xx request for the same org "
    "at or after patched_at."
)

# The condition names (signature, org) pairs only: every request of a pair or none.
WHOLE_PAIRS = True


def match_sql() -> str:
    """A SQL condition on an in-scope request ``s`` (a row of scoped): true when the rule explains it."""
    return """(s.sig_id, s.org_id) in (
        select pp.sig_id, pp.org_id from post_patch_valid pp
        join signature_scope ss on ss.sig_id = pp.sig_id and ss.cross_tenant = 0
    )"""
