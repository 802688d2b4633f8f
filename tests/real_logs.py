"""Where the shared real access logs are, for tests that must hold on real traffic.

``real_logs_dir()`` skips the calling test when the folder is absent, except on CI
(``CI=true``), where a missing folder is a failure rather than a silent pass.
"""

import gzip
import os
from pathlib import Path

import pytest

REAL_LOGS = Path(__file__).parents[1].parent / "shared" / "real_logs"


def real_logs_dir() -> Path:
    """The real_logs folder; pytest.skip (or pytest.fail on CI) when it is absent."""
    if REAL_LOGS.is_dir():
        return REAL_LOGS
    message = f"real access logs not found at {REAL_LOGS}"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (required when CI=true)")
    pytest.skip(message)


def read_lines(path: Path) -> list[str]:
    """Every line of a plain or .gz log, without line endings, decoded as an import does.

    Lines that are not valid UTF-8 are decoded with backslashreplace.
    """
    with (gzip.open(path) if path.suffix == ".gz" else open(path, "rb")) as f:
        data = f.read()
    raws = data.split(b"\n")
    if raws and raws[-1] == b"":
        raws.pop()
    return [raw.removesuffix(b"\r").decode("utf-8", "backslashreplace") for raw in raws]
