"""An in-memory window engine (issue #14 item 4): the hour cells of a database held
in numpy arrays, and a window's per-signature and per-(signature, org) figures from
them (whole hours by a slice of the hour-sorted arrays, the at most two partial edge
hours read raw from ``requests``), serving the pages' time windows (``database.py``,
``groups.py``).
"""
