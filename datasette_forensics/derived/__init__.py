"""Derived data: what the base tables imply, each kind kept by one module here."""
