"""Peak memory of a command whose import runs in two processes (the benchmarks' one way).

An import reads and parses in a child process while the command stores
(``datasette_forensics.pipeline``), so neither process's own peak is the
memory the machine needed, and their two peaks added up overstate it: they
need not happen at once (the child has exited when the page aggregates are
rebuilt), and pages shared after the fork count twice. So a command is sampled
while it runs:

- ``peak_rss_mb``: the largest of (a) the sum of the resident set sizes of the
  command and its descendants, sampled every 20 ms, and (b) each process's own
  peak (``VmHWM``, which no sampling can miss) as the command reports it;
- ``peak_pss_mb``: the largest sampled sum of their proportional set sizes, which
  count each shared page once: the memory the machine really holds.

Example:

    result = memory.run(["datasette-forensics", "import-logs", "x.db", "x.log"])
"""

from __future__ import annotations

import os
import subprocess
import threading
import time


def _tree(pid: int) -> list[int]:
    """A process and its descendants."""
    found, pending = [], [pid]
    while pending:
        p = pending.pop()
        found.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    pending.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def tree_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in KiB of a process and its descendants, from smaps_rollup."""
    rss = pss = 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return rss, pss


def run(args: list[str], env: dict | None = None, timeout: float | None = None, interval: float = 0.02) -> dict:
    """Run a command, sampling its memory; stdout and stderr are captured.

    A line ``PEAK_RSS_KB n`` on its stderr (a process's own VmHWM, see
    bench_limits.CHILD) is taken out of stderr and counts towards the peak.

    Returns:
        {returncode, seconds, cpu_seconds (its children's included), peak_rss_mb,
        peak_pss_mb, stdout, stderr}
    """
    started = time.perf_counter()
    proc = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    streams: dict[str, str] = {}
    readers = [
        threading.Thread(target=lambda name=name, s=s: streams.__setitem__(name, s.read()))
        for name, s in (("stdout", proc.stdout), ("stderr", proc.stderr))
    ]
    for reader in readers:
        reader.start()
    peak_rss = peak_pss = 0
    usage = None
    deadline = None if timeout is None else started + timeout
    while True:
        rss, pss = tree_kb(proc.pid)
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            break
        if deadline is not None and time.perf_counter() > deadline:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            for reader in readers:
                reader.join()
            raise subprocess.TimeoutExpired(args, timeout)
        time.sleep(interval)
    seconds = time.perf_counter() - started
    for reader in readers:
        reader.join()
    stderr_lines = streams.get("stderr", "").splitlines()
    reported = [int(line.split()[1]) for line in stderr_lines if line.startswith("PEAK_RSS_KB ")]
    return {
        "returncode": proc.returncode,
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": max([peak_rss, *reported]) / 1024,
        "peak_pss_mb": peak_pss / 1024,
        "stdout": streams.get("stdout", ""),
        "stderr": "\n".join(line for line in stderr_lines if not line.startswith("PEAK_RSS_KB ")),
    }
