"""post_patch_valid: a single-tenant signature that kept succeeding for the org after the patch."""

NAME = "post_patch_valid"
BIT = 1 << 4
DESCRIPTION = (
    "The signature is not cross-tenant and made a 2xx request for the same org "
    "at or after patched_at."
)


def select_sql(restrict: str, columns: str = "s.request_id") -> str:
    """Args: restrict: extra SQL conditions on scoped alias s; columns: of scoped s to select.
    Returns: a select of the in-scope requests the rule explains."""
    return f"""
    select {columns} from post_patch_valid pp
    cross join signature_scope ss on ss.sig_id = pp.sig_id and ss.cross_tenant = 0
    cross join scoped s on s.sig_id = pp.sig_id and s.org_id = pp.org_id
    where 1 {restrict}"""
