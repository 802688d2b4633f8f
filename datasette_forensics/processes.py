"""Processes: whether another one is alive (an unfinished import's owner, by its pid),
and the lock that keeps an import's threads out of SQLite while it forks."""

from __future__ import annotations

import os
import threading

# Held by an import's threads (checkpointer.py, derived/batch_figures.py) while they work
# in SQLite, and by pipeline.py while it forks a parse process: a thread inside SQLite
# at the fork would leave the child a mutex nobody releases (SQLite's file lock table,
# which the child's first connection needs), and the child would wait for it forever.
# Two imports in one process (the tests' importer in between) fork beside those threads.
FORK_LOCK = threading.Lock()


def alive(pid: int | None) -> bool:
    """True when ``pid`` names a running process other than this one."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid != os.getpid()
