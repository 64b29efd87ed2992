"""Daemon CPU time per operation: a before/after comparison that a busy machine blurs less.

    .venv/bin/python -m bench.cpu --workload tree [--targets bindfs,"fdsl passthrough"]
                                  [--reps 3] [--quick]

Wall-clock rates on two shared cores swing with everyone else's load; the CPU
time the daemon itself spends (user + system, all threads, read from
/proc/PID/stat around one phase) swings much less, because it does not count
the time the daemon waits for a core.  Mounted exactly as bench.run mounts
each target; prints, per phase and target, the median wall rate and the
daemon's µs of CPU per unit (per file operation for metadata (create, stat and
unlink of one file: three), per entry for the tree walks), and the caller's own CPU (the kernel's
side of each request is spent in the caller's thread).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import workloads as wl  # noqa: E402
from bench.mounts import ZERO, mounted  # noqa: E402
from bench.run import discover  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> tuple[float, float]:
    """(user, system) seconds of every thread of `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK


def units(workload: str, sizes: wl.Sizes) -> float:
    """How many operations one phase did (the divisor for CPU per operation)."""
    if workload == "metadata":
        return 3 * sizes.meta_files
    return wl.tree_entries(sizes)


def measure(target, backing: Path, env, w: wl.Workload, sizes: wl.Sizes,
            phase: Callable) -> tuple[dict[str, float], float, float, float]:
    """(values, daemon user and system CPU seconds, caller CPU seconds) of one phase
    on a fresh mount."""
    pids: list[int] = []
    with wl.scratch_filesystem(backing, w.scratch_fs), \
            mounted(target, backing, ZERO if w.zero_timeouts else env.timeouts, env.ctx,
                    pids) as view:
        before = process_cpu(pids[0]) if pids else (0.0, 0.0)
        mine = os.times()
        values = phase(view, sizes)
        after_mine = os.times()
        after = process_cpu(pids[0]) if pids else (0.0, 0.0)
    caller = (after_mine.user - mine.user + after_mine.system - mine.system
              + after_mine.children_user - mine.children_user
              + after_mine.children_system - mine.children_system)
    return values, after[0] - before[0], after[1] - before[1], caller


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.cpu", description=__doc__.splitlines()[0])
    parser.add_argument("--workload", required=True, choices=["metadata", "tree"])
    parser.add_argument("--targets", default="bindfs,fdsl passthrough")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    targets, env = discover(args.quick)
    wanted = [t.strip() for t in args.targets.split(",")]
    chosen = [t for name in wanted for t in targets if t.name == name and not t.unavailable]
    sizes = wl.Sizes.quick() if args.quick else wl.Sizes.full()
    w = wl.WORKLOADS[args.workload]
    backing = Path(tempfile.mkdtemp(prefix="fdsl-bench-backing-"))
    rows: dict[tuple[str, str], list[tuple[float, ...]]] = {}
    try:
        if w.prepare:
            w.prepare(backing, sizes)
        for rep in range(args.reps):
            order = chosen[rep % len(chosen):] + chosen[:rep % len(chosen)]
            for target in order:
                for phase in w.phases or (w.run,):
                    values, user, system, caller = measure(target, backing, env, w, sizes,
                                                           phase)
                    n = units(args.workload, sizes)
                    for metric, value in values.items():
                        rows.setdefault((metric, target.name), []).append(
                            (value, (user + system) / n * 1e6, system / n * 1e6,
                             caller / n * 1e6))
    finally:
        shutil.rmtree(backing, ignore_errors=True)
    print("| metric | target | wall (median) | daemon CPU µs/unit | of which system | "
          "caller CPU µs/unit |")
    print("|---|---|---:|---:|---:|---:|")
    for (metric, name), got in rows.items():
        unit = wl.METRICS[metric].unit
        med = [statistics.median(col) for col in zip(*got)]
        print(f"| {metric} | {name} | {med[0]:,.4g} {unit} | {med[1]:,.1f} | {med[2]:,.1f} | "
              f"{med[3]:,.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
