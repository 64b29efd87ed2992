"""Profile a FUSE daemon under one workload with py-spy, and summarise where its time goes.

    .venv/bin/python -m bench.profile --target "fdsl passthrough" --workload roundtrip [--quick]

The daemon is mounted exactly as bench.run mounts it; py-spy samples it
(non-blocking, all threads, idle threads excluded) for the length of the
workload.  Writes the collapsed stacks (bench/results/profile-*.txt, loadable
in speedscope or flamegraph.pl) and prints the top functions by own time and
by inclusive time, which is what goes into bench/results/analysis.md.
"""
from __future__ import annotations

import argparse
import collections
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import workloads as wl  # noqa: E402
from bench.mounts import ZERO, mounted  # noqa: E402
from bench.run import RESULTS, discover  # noqa: E402


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def _frame_name(frame: str) -> str:
    """'fn (path/to/module.py:123)' -> 'fn (module.py)' so lines of one function merge."""
    m = re.match(r"(.*) \((.*?):\d+\)$", frame)
    if not m:
        return frame
    return f"{m.group(1)} ({Path(m.group(2)).name})"


# Frames every sample passes through (interpreter start-up, the daemon's main,
# thread bootstrap): left out of the inclusive table, they say nothing.
ROOT_FRAMES = ("_run_module_as_main ", "_run_code ", "<module> ", "main (", "cmd_mount ",
               "mount (daemon.py)", "serve (daemon.py)", "run (_run.py)", "Thread.run ",
               "Thread._bootstrap")


def summarise(collapsed: Path, top: int = 20) -> str:
    """Own-time and inclusive-time tables from py-spy's raw (collapsed) output."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame_name(f) for f in stack.split(";")]
        # drop the leading "process/thread" pseudo-frames py-spy adds
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        worker = any(f.startswith("Thread._bootstrap") for f in frames)
        threads["worker threads" if worker else "main (trio) thread"] += n
        own[frames[-1]] += n
        for f in set(frames):
            if not f.startswith(ROOT_FRAMES):
                incl[f] += n
    if not total:
        return "(no samples)"
    split = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in threads.most_common())
    out = [f"{total} samples (non-idle): {split}", "", "| own % | function |", "|---:|---|"]
    out += [f"| {100 * c / total:.1f} | `{f}` |" for f, c in own.most_common(top)]
    out += ["", "| inclusive % | function |", "|---:|---|"]
    out += [f"| {100 * c / total:.1f} | `{f}` |" for f, c in incl.most_common(top)]
    return "\n".join(out)


def _profiled(spy: str, target, backing: Path, w: wl.Workload, sizes: wl.Sizes, env,
              phase, out: Path, rate: int, native: bool) -> dict[str, float]:
    """Mount, attach py-spy to the daemon, run one phase, detach; returns its values."""
    pids: list[int] = []
    with wl.scratch_filesystem(backing, w.scratch_fs), \
            mounted(target, backing, ZERO if w.zero_timeouts else env.timeouts, env.ctx,
                    pids) as view:
        cmd = [spy, "record", "--pid", str(pids[0]), "--rate", str(rate),
               "--nonblocking", "--format", "raw", "--output", str(out)]
        if native:
            cmd.append("--native")
        spy_proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)  # let py-spy attach before the workload starts
        try:
            return phase(view, sizes)
        finally:
            spy_proc.send_signal(signal.SIGINT)
            _, err = spy_proc.communicate(timeout=60)
            if not out.exists():
                print(f"bench.profile: py-spy: {err.decode(errors='replace')[-300:]}",
                      file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="a bench.run target name")
    parser.add_argument("--workload", required=True, choices=list(wl.WORKLOADS))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--native", action="store_true", help="include C frames (py-spy --native)")
    args = parser.parse_args(argv)

    spy = py_spy()
    if spy is None:
        print("bench.profile: py-spy not installed (pip install '.[bench]')", file=sys.stderr)
        return 2
    targets, env = discover(args.quick)
    target = next((t for t in targets if t.name == args.target), None)
    if target is None or target.unavailable or target.kind == "native":
        print(f"bench.profile: cannot profile {args.target!r}: "
              f"{target.unavailable if target else 'unknown target'}", file=sys.stderr)
        return 2
    sizes = wl.Sizes.quick() if args.quick else wl.Sizes.full()
    w = wl.WORKLOADS[args.workload]
    slug = re.sub(r"\W+", "-", f"{args.target}-{args.workload}")
    out = RESULTS / f"profile-{slug}.txt"
    RESULTS.mkdir(parents=True, exist_ok=True)
    backing = Path(tempfile.mkdtemp(prefix="fdsl-bench-backing-"))
    values: dict[str, float] = {}
    out.unlink(missing_ok=True)
    try:
        if w.prepare:
            w.prepare(backing, sizes)
        for phase in w.phases or (w.run,):  # each phase on a fresh mount, as bench.run does
            part = out.with_suffix(".part")
            values.update(_profiled(spy, target, backing, w, sizes, env, phase, part,
                                    args.rate, args.native))
            with open(out, "a") as fh:
                fh.write(part.read_text() if part.exists() else "")
            part.unlink(missing_ok=True)
        print(f"{args.target} / {args.workload}: " +
              ", ".join(f"{k}={v:.4g}" for k, v in values.items()), file=sys.stderr)
    finally:
        shutil.rmtree(backing, ignore_errors=True)
    if not out.exists() or not out.stat().st_size:
        print("bench.profile: py-spy wrote nothing", file=sys.stderr)
        return 1
    print(f"## {args.target}, {args.workload} ({'quick' if args.quick else 'full'} sizes)\n")
    print(summarise(out))
    print(f"\ncollapsed stacks: {out.relative_to(RESULTS.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
