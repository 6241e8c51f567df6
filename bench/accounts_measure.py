"""Run one command and print its wall time, CPU time and peak memory as one JSON line.

Used by bench/accounts.py *inside* a test host (stdlib only, any Python 3.11):

    python accounts_measure.py --stdout FILE --stderr FILE -- ARGV...

How memory is measured, two ways:

- ``maxrss_kib``: ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` after the wait. The kernel's own
  figure, exact, and it includes every process of the tree that was waited for (a child's
  usage includes its waited-for children) — but it is the peak of the *largest single
  process*, not of the sum.
- ``tree_peak_kib``: the largest sum of resident set sizes over the command's whole process
  tree, sampled every ``--sample-ms`` by walking ``/proc/PID/task/*/children``. Shared pages
  (a forked worker's, shared libraries) count once per process, and processes that live
  shorter than a sample (one ``useradd``) can be missed, so it is an estimate of the
  footprint; ``maxrss_kib`` is the exact lower bound.

The command's output goes to files, never to a pipe we must drain, so the measurement does not
depend on how fast we read.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time

_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def _descendants(pid: int) -> list[int]:
    """``pid`` and everything below it, from the kernel's per-task children lists."""
    found, todo = [], [pid]
    while todo:
        cur = todo.pop()
        found.append(cur)
        try:
            tasks = os.listdir(f"/proc/{cur}/task")
        except FileNotFoundError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{cur}/task/{tid}/children") as f:
                    todo += [int(c) for c in f.read().split()]
            except FileNotFoundError:
                pass
    return found


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE_KIB
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0


class _TreeSampler(threading.Thread):
    """Samples the process tree's total RSS until told to stop; keeps the largest."""

    def __init__(self, pid: int, interval: float):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_kib = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            total = sum(_rss_kib(p) for p in _descendants(self.pid))
            self.peak_kib = max(self.peak_kib, total)
            self.done.wait(self.interval)


def measure(argv: list[str], stdout: str, stderr: str, sample_ms: float) -> dict[str, object]:
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        sampler = _TreeSampler(proc.pid, sample_ms / 1000)
        sampler.start()
        returncode = proc.wait()
        wall = time.perf_counter() - start
        sampler.done.set()
        sampler.join()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "returncode": returncode,
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "maxrss_kib": usage.ru_maxrss,
        "tree_peak_kib": max(sampler.peak_kib, usage.ru_maxrss),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stdout", required=True)
    parser.add_argument("--stderr", required=True)
    parser.add_argument("--sample-ms", type=float, default=10)
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        parser.error("no command given")
    print(json.dumps(measure(argv, args.stdout, args.stderr, args.sample_ms)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
