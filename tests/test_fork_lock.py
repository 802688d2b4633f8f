"""The fork lock (processes.FORK_LOCK): an import's threads work in SQLite only while
holding it, and the parse process is forked only while holding it, so that the child
never inherits a SQLite mutex held by another thread (it would wait for it forever)."""

from __future__ import annotations

import threading
import time

from datasette_forensics import checkpointer, pipeline, schema
from datasette_forensics.derived import batch_figures
from datasette_forensics.processes import FORK_LOCK


def held_for(seconds: float) -> threading.Thread:
    """A thread that holds the fork lock for ``seconds`` (started, the lock taken)."""
    taken = threading.Event()

    def hold():
        with FORK_LOCK:
            taken.set()
            time.sleep(seconds)

    thread = threading.Thread(target=hold)
    thread.start()
    taken.wait()
    return thread


def test_the_parse_process_is_forked_only_under_the_lock():
    holder = held_for(0.5)
    started = time.perf_counter()

    def produce(in_child):
        yield "chunk"
        return "end"

    chunks = pipeline.Chunks(produce, True, "test")
    try:
        assert time.perf_counter() - started >= 0.45  # the fork waited for the lock
        assert list(chunks) == ["chunk"] and chunks.end == "end"
    finally:
        chunks.close()
        holder.join()


def test_the_checkpointer_and_the_tally_work_only_under_the_lock(tmp_path):
    db = schema.connect(str(tmp_path / "t.db"))
    path = str(tmp_path / "t.db")
    copier = checkpointer.Checkpointer(path)
    tally = batch_figures.Tally(path)
    try:
        with FORK_LOCK:
            copier.request()
            tally.stored(1, 1)
            time.sleep(0.3)
            assert copier.checkpoints == 0  # waiting for the lock
            assert tally._ranges.unfinished_tasks == 1
        deadline = time.monotonic() + 10
        while (copier.checkpoints == 0 or tally._ranges.unfinished_tasks) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert copier.checkpoints == 1 and tally._ranges.unfinished_tasks == 0 and not tally.failed
    finally:
        copier.close()
        tally.drop(db.conn)
        db.conn.close()
