"""Start-up costs, side by side with bindfs: how long until a mount is ready, and how
long the fdsl command takes for --version and --help.

    .venv/bin/python -m bench.startup [--reps N]      # as root (it mounts)

Each row is the median (min-max) of N runs of the whole command, measured from
spawn to exit: `fdsl mount` and `bindfs` return once the mount serves requests.
Every mount is unmounted before the next run.  The fdsl rows use the console
script next to this interpreter, as a user would.  Targets (README): mount
ready <= 0.3 s, `fdsl --version` well under 0.2 s; the ratio column is
against bindfs (the same machine, the same minute).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FDSL = str(Path(sys.executable).with_name("fdsl"))
POLICY = REPO / "examples" / "hide_secrets.fdsl"


def timed(cmd: list[str], after=None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=REPO, timeout=120)
    elapsed = time.perf_counter() - start
    if after:
        after()
    return elapsed


def unmount(mnt: Path) -> None:
    subprocess.run(["fusermount3", "-u", str(mnt)], check=True, capture_output=True)
    deadline = time.monotonic() + 10
    while os.path.ismount(mnt) and time.monotonic() < deadline:
        time.sleep(0.02)


def rows(reps: int, work: Path) -> list[tuple[str, list[float]]]:
    backing, mnt = work / "backing", work / "mnt"
    backing.mkdir()
    mnt.mkdir()
    (backing / "file").write_text("x\n")
    obj = work / "policy.bpf.o"
    subprocess.run([FDSL, "compile", str(POLICY), "-o", str(obj)], check=True, cwd=REPO)
    subprocess.run([FDSL, "check", str(POLICY)], check=True, cwd=REPO, capture_output=True)
    cases: list[tuple[str, list[str]]] = []
    if shutil.which("bindfs"):
        cases.append(("bindfs mount", ["bindfs", str(backing), str(mnt)]))
    cases += [
        ("fdsl mount, no policy", [FDSL, "mount", "", str(backing), str(mnt)]),
        ("fdsl mount, compiled .bpf.o", [FDSL, "mount", str(obj), str(backing), str(mnt)]),
        ("fdsl mount, .fdsl source", [FDSL, "mount", str(POLICY), str(backing), str(mnt)]),
    ]
    results: dict[str, list[float]] = {name: [] for name, _ in cases}
    results["fdsl --version"] = []
    results["fdsl --help"] = []
    for _ in range(reps):   # interleaved, so drift in the machine's load hits every row
        for name, cmd in cases:
            results[name].append(timed(cmd, after=lambda: unmount(mnt)))
        results["fdsl --version"].append(timed([FDSL, "--version"]))
        results["fdsl --help"].append(timed([FDSL, "--help"]))
    return list(results.items())


def table(measured: list[tuple[str, list[float]]]) -> str:
    ref = dict(measured).get("bindfs mount")
    ref_median = statistics.median(ref) if ref else None
    lines = ["| command | median (s) | min-max (s) | vs bindfs mount |", "|---|---:|---:|---:|"]
    for name, values in measured:
        med = statistics.median(values)
        ratio = f"{med / ref_median:.1f}x" if ref_median else "-"
        lines.append(f"| {name} | {med:.3f} | {min(values):.3f}-{max(values):.3f} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.startup", description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.startup mounts: run it as root", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="fdsl-startup-"))
    try:
        print(table(rows(args.reps, work)))
    finally:
        mnt = work / "mnt"
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
