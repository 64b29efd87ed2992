"""Daemon memory under load: RSS before and after a workload of varied request shapes.

    sudo .venv/bin/python -m bench.memory [--files N] [--rounds R]

Mounts the fdsl daemon with no policy and with bench/policies/realistic.fdsl
(auto = the `fdsl mount` default: interpreter first, JIT compiled in the
background, so LLVM's memory arrives after mounting; JIT; interpreter) side by side on the same backing directory and runs,
R times, a loop over N files whose names (1..200 characters) and sizes
(0..4999 bytes) all differ: create+write, stat, read, rename, unlink.  Every
distinct name length and write size is a distinct request shape for the
filter contexts, which is what made a realistic daemon grow from ~65 MB to
~155 MB (issue 11, item 13; the per-shape context layouts held a zeroed copy
of their argument windows, 4096 per thread).  Prints the daemon's VmRSS after
mounting and after each round; what matters is the growth (last round minus
mounted) compared with the no-policy row of the same run, not absolute numbers.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.mounts import MountContext, Target, Timeouts, mounted  # noqa: E402

POLICY = Path(__file__).resolve().parent / "policies" / "realistic.fdsl"
TARGETS = [Target("fdsl passthrough", "fdsl", None, "jit"),
           Target("fdsl realistic auto", "fdsl", POLICY, "auto"),
           Target("fdsl realistic jit", "fdsl", POLICY, "jit"),
           Target("fdsl realistic interp", "fdsl", POLICY, "interp")]


def rss_mib(pid: int) -> float:
    """Resident set of the daemon (the `fdsl mount -f` process serves the mount itself)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def varied_shapes(view: Path, files: int) -> None:
    d = view / "shapes"
    d.mkdir(exist_ok=True)
    for i in range(files):
        path = d / ("n" * (1 + i % 200) + str(i))
        with open(path, "wb") as fh:
            fh.write(b"x" * (i % 5000))
        os.stat(path)
        with open(path, "rb") as fh:
            fh.read()
        os.rename(path, f"{path}r")
        os.unlink(f"{path}r")


def measure(target: Target, files: int, rounds: int) -> list[float]:
    backing = Path(tempfile.mkdtemp(prefix="fdsl-bench-mem-"))
    os.chmod(backing, 0o755)
    pids: list[int] = []
    ctx = MountContext(backend_flag="-o backend=", fdsl_timeout_opts=True)
    try:
        with mounted(target, backing, Timeouts(1.0, 1.0), ctx, pids) as view:
            time.sleep(1.0)              # the JIT compiles before the mount is ready
            samples = [rss_mib(pids[0])]
            for _ in range(rounds):
                varied_shapes(view, files)
                samples.append(rss_mib(pids[0]))
            return samples
    finally:
        shutil.rmtree(backing, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"daemon VmRSS (MiB), {args.files} files of varied name length and size per round\n")
    print("| target | mounted | " + " | ".join(f"round {r + 1}" for r in range(args.rounds))
          + " | growth |")
    print("|---|---:|" + "---:|" * args.rounds + "---:|")
    for target in TARGETS:
        s = measure(target, args.files, args.rounds)
        cells = " | ".join(f"{v:.0f}" for v in s)
        print(f"| {target.name} | {cells} | {s[-1] - s[0]:+.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
