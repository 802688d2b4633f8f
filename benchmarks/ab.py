"""Time two commands in turn, A B A B ..., as whole processes, and compare them pair by pair.

Each run's wall seconds, CPU seconds (user + system, with every process it waited
for: the import's parse process too) and peak memory (the largest single process, in
MiB) come from the operating system's own accounting of the finished process
(``os.wait4``). It prints each figure's minimum, median and maximum for A and B, and the
ratio A/B of each pair: on a noisy machine quote the medians of the ratios, which hold
when the machine's speed drifts between pairs.

Example (what keeping raw lines and the hour cells costs the import):

    python benchmarks/ab.py -n 5 --vs 'python benchmarks/bench_rawlines.py --pages off' \\
        -- python benchmarks/bench_rawlines.py --pages on
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import time


def run(command: list[str]) -> dict:
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    return {
        "wall s": time.monotonic() - started,
        "cpu s": usage.ru_utime + usage.ru_stime,
        "peak MiB": usage.ru_maxrss / 1024,
        "exit": os.waitstatus_to_exitcode(status),
    }


def spread(values: list[float]) -> str:
    return f"{min(values):10.3f} {statistics.median(values):10.3f} {max(values):10.3f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--runs", type=int, default=5, help="counted runs of each command")
    parser.add_argument("--warmup", type=int, default=0, help="runs of each first, not counted")
    parser.add_argument("--vs", metavar="COMMAND_B", required=True, help="the other command, one string")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND_A [ARG ...]")
    args = parser.parse_args(argv)
    a = args.command[1:] if args.command[:1] == ["--"] else args.command
    b = shlex.split(args.vs)
    if not a or not b or args.runs < 1:
        parser.error("give --vs 'COMMAND_B' -- COMMAND_A, and at least one run")
    for _ in range(args.warmup):
        run(a), run(b)
    pairs = [(run(a), run(b)) for _ in range(args.runs)]
    failed = [r["exit"] for pair in pairs for r in pair if r["exit"] != 0]
    print(f"A: {shlex.join(a)}\nB: {shlex.join(b)}\n{args.runs} pairs, in turn A B; min, median, max")
    for figure in ("wall s", "cpu s", "peak MiB"):
        for name, i in (("A", 0), ("B", 1)):
            print(f"{name} {figure:9}{spread([p[i][figure] for p in pairs])}")
    for figure in ("wall s", "cpu s"):
        print(f"A/B {figure:7}{spread([p[0][figure] / p[1][figure] for p in pairs])}")
    if failed:
        print(f"runs that failed (exit codes): {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
