"""Start-up costs, side by side with bindfs: how long until a mount is ready, and how
long the fdsl command takes for --version and --help.

    .venv/bin/python -m bench.startup [--reps N]      # as root (it mounts)

Ready means what a user (or a boot script) waits for: the mount command has
exited 0 and `stat MOUNTPOINT` is answered by the new FUSE mount.  Each row is
the median (min-max) of N runs of the whole command, measured from spawn to
that answer, and the median CPU time spent until then (the command, its
children, and the fdsl daemon until it reported ready: what a quiet machine's
wall time would be, nearly, since start-up is one thread's work); every mount is unmounted before the next run and the rows are
interleaved, so drift in the machine's load hits every row alike.

* warm: the fdsl cache (compiled .fdsl objects, parser tables, JIT code) has
  been filled by an earlier mount of the same policy;
* cold: a fresh, empty fdsl cache for every run (FDSL_CACHE and
  FDSL_JIT_CACHE), so a .fdsl policy is parsed and compiled first.

Python's own bytecode caches are warm in both (scripts/setup.sh compiles
them).  The fdsl rows use the console script next to this interpreter, as a
user would.  Targets (README): mount ready <= 0.3 s warm, with no policy and
with examples/hide_secrets.fdsl; `fdsl --version` well under 0.2 s.  The
ratio column is against bindfs (the same machine, the same minute).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
FDSL = str(Path(sys.executable).with_name("fdsl"))
POLICY = REPO / "examples" / "hide_secrets.fdsl"


def is_fuse_mount(path: Path) -> bool:
    """`stat` answered by a FUSE mount (not the empty directory under it)."""
    st = os.stat(path)
    parent = os.stat(path.parent)
    return st.st_dev != parent.st_dev and os.major(st.st_dev) == 0


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], env: dict[str, str], ready: Callable[[], bool] | None,
          mnt: Path | None = None) -> tuple[float, float | None]:
    """(wall seconds to ready, CPU seconds to ready or None): the CPU time of the command
    and its children, plus for fdsl the daemon's own until it reported ready (its
    `fdsl stats` ready_cpu).  CPU time is what a loaded machine inflates least."""
    cpu = children_cpu()
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=REPO, timeout=120, env=env)
    if ready is not None and not ready():
        raise RuntimeError(f"{cmd[0]} exited but the mount does not answer")
    wall = time.perf_counter() - start
    cpu = children_cpu() - cpu
    if cmd[0] != FDSL or mnt is None:
        return wall, cpu
    reply = subprocess.run([FDSL, "stats", "--json", str(mnt)], check=True, capture_output=True,
                           cwd=REPO, env=env, text=True).stdout
    return wall, cpu + (json.loads(reply).get("ready_cpu") or 0.0)


def unmount(mnt: Path, fdsl: bool) -> None:
    """Unmount and let the daemon go (`fdsl umount` waits for it), so that one run's
    exiting daemon does not compete with the next run for the CPUs."""
    cmd = [FDSL, "umount", str(mnt)] if fdsl else ["fusermount3", "-u", str(mnt)]
    subprocess.run(cmd, check=True, capture_output=True)
    deadline = time.monotonic() + 10
    while os.path.ismount(mnt) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)


class Caches:
    """The warm fdsl cache (one for the whole run) and fresh cold ones."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.count = 0
        self.warm = self.env(work / "cache-warm")

    def env(self, base: Path) -> dict[str, str]:
        base.mkdir(mode=0o700)
        return dict(os.environ, FDSL_CACHE=str(base / "fdsl"), FDSL_JIT_CACHE=str(base / "jit"))

    def cold(self) -> dict[str, str]:
        self.count += 1
        cold = self.work / f"cache-cold-{self.count}"
        return self.env(cold)


def rows(reps: int, work: Path) -> list[tuple[str, list[tuple[float, float | None]]]]:
    backing, mnt = work / "backing", work / "mnt"
    backing.mkdir()
    mnt.mkdir()
    (backing / "file").write_text("x\n")
    caches = Caches(work)
    obj = work / "policy.bpf.o"
    subprocess.run([FDSL, "compile", str(POLICY), "-o", str(obj)], check=True, cwd=REPO,
                   env=caches.warm)
    ready = lambda: is_fuse_mount(mnt)   # noqa: E731
    # (name, command, environment factory, whether it mounts)
    cases: list[tuple[str, list[str], Callable[[], dict[str, str]], bool]] = []
    if shutil.which("bindfs"):
        cases.append(("bindfs mount", ["bindfs", str(backing), str(mnt)], lambda: caches.warm,
                      True))
    mount = [FDSL, "mount"]
    cases += [
        ("fdsl mount, no policy, warm", [*mount, "", str(backing), str(mnt)],
         lambda: caches.warm, True),
        ("fdsl mount, hide_secrets.fdsl, warm", [*mount, str(POLICY), str(backing), str(mnt)],
         lambda: caches.warm, True),
        ("fdsl mount, hide_secrets .bpf.o, warm", [*mount, str(obj), str(backing), str(mnt)],
         lambda: caches.warm, True),
        ("fdsl mount, no policy, cold", [*mount, "", str(backing), str(mnt)],
         caches.cold, True),
        ("fdsl mount, hide_secrets.fdsl, cold", [*mount, str(POLICY), str(backing), str(mnt)],
         caches.cold, True),
        ("fdsl --version", [FDSL, "--version"], lambda: caches.warm, False),
        ("fdsl --help", [FDSL, "--help"], lambda: caches.warm, False),
    ]
    # fill the warm cache (and the page cache) once, untimed
    for _, cmd, env, mounts in cases:
        timed(cmd, env(), ready if mounts else None)
        if mounts:
            unmount(mnt, cmd[0] == FDSL)
    results: dict[str, list[tuple[float, float | None]]] = {name: [] for name, *_ in cases}
    for _ in range(reps):
        for name, cmd, env, mounts in cases:
            results[name].append(timed(cmd, env(), ready if mounts else None,
                                       mnt if mounts else None))
            if mounts:
                unmount(mnt, cmd[0] == FDSL)
    return list(results.items())


def table(measured: list[tuple[str, list[tuple[float, float | None]]]]) -> str:
    ref = dict(measured).get("bindfs mount")
    ref_median = statistics.median(w for w, _ in ref) if ref else None
    lines = ["| command | median (s) | min-max (s) | vs bindfs mount | CPU to ready, median (s) |",
             "|---|---:|---:|---:|---:|"]
    for name, runs in measured:
        walls = [w for w, _ in runs]
        cpus = [c for _, c in runs if c is not None]
        med = statistics.median(walls)
        ratio = f"{med / ref_median:.1f}x" if ref_median else "-"
        cpu = f"{statistics.median(cpus):.3f}" if cpus else "-"
        lines.append(f"| {name} | {med:.3f} | {min(walls):.3f}-{max(walls):.3f} | {ratio} "
                     f"| {cpu} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.startup", description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.startup mounts: run it as root", file=sys.stderr)
        return 2
    # a private base: the fdsl caches refuse directories others may write (/tmp)
    base = os.environ.get("XDG_RUNTIME_DIR") or "/run"
    work = Path(tempfile.mkdtemp(prefix="fdsl-startup-", dir=base))
    try:
        load = os.getloadavg()[0]
        measured = rows(args.reps, work)
        print(table(measured))
        print(f"\n{args.reps} runs each; load average {load:.2f} at the start, "
              f"{os.getloadavg()[0]:.2f} at the end ({os.cpu_count()} CPUs)")
    finally:
        mnt = work / "mnt"
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
