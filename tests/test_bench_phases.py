"""benchmarks/bench_phases.py times what it says: each wrapped part ran, and the parts fit the whole.

The benchmark wraps the import's functions from outside; were one renamed or no
longer called where the wrapper expects it, its figure would silently read 0. The
import here is small (a parse process is forced), in a child process of its own,
as the benchmark runs it.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))


@pytest.fixture(scope="module")
def phases(tmp_path_factory):
    import bench_import

    log = tmp_path_factory.mktemp("phases") / "access.log"
    bench_import.generate(str(log), 30_000)
    env = dict(os.environ, FORENSICS_PARSE_PROCESS="always", FORENSICS_CHUNK_LINES="5000")
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "bench_phases.py"), "--child", str(log)],
        check=True, capture_output=True, text=True, env=env,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_every_part_was_timed(phases):
    parts = phases["parts"]
    assert phases["lines"] == 30_000
    for key in (
        "store: busy", "store: commits", "store: duplicate-line counts", "store: uris rows", "store: paths rows",
        "store: waiting for a chunk (and unpickling it)", "close", "close: line counts merged",
        "close: deferred indexes built", "close: ip_info", "close: aggregates",
        "hour cells counted (idle time and close)",
    ):
        assert parts[key] > 0, key
    assert phases["parse_process_cpu_seconds"] > 0


def test_the_parts_fit_the_whole(phases):
    parts = phases["parts"]
    assert 0 < phases["chunk_phase_seconds"] < phases["seconds"]
    assert phases["close_seconds"] == parts["close"]
    assert phases["chunk_phase_seconds"] + phases["close_seconds"] <= phases["seconds"] + 0.01
    inside_store = parts["store: commits"] + parts["store: duplicate-line counts"] + sum(
        v for k, v in parts.items() if k.endswith(" rows")
    )
    assert inside_store <= parts["store: busy"]
    assert parts["store: requests and the rest"] == pytest.approx(parts["store: busy"] - inside_store, abs=0.002)
    inside_close = sum(v for k, v in parts.items() if k.startswith("close: "))
    assert inside_close <= parts["close"]
