"""Whether another process is alive: an unfinished import's owner, by its pid."""

from __future__ import annotations

import os


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
