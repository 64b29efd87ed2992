"""The filesystems under test, each as a context manager yielding the directory to measure.

Every configuration (a "target") sees the same backing directory.  Mounts are
made under a temporary directory, by a child process this module starts and
owns, and are always unmounted in `finally` (lazily if busy), so an aborted
benchmark leaves nothing mounted.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PYTHON = sys.executable


@dataclass(frozen=True)
class Timeouts:
    """Kernel cache lifetimes (seconds) handed to every FUSE implementation alike."""

    entry: float
    attr: float
    negative: float = 0.0

    def label(self) -> str:
        return f"entry {self.entry:g}s, attr {self.attr:g}s, negative {self.negative:g}s"


ZERO = Timeouts(0.0, 0.0, 0.0)


@dataclass
class Target:
    """One column of the result tables."""

    name: str
    kind: str  # native | bindfs | pyfuse3 | fdsl
    policy: Path | None = None
    backend: str | None = None  # fdsl only: jit | interp
    options: tuple[str, ...] = ()  # fdsl only: extra -o options (transport=pyfuse3, ...)
    unavailable: str | None = None  # reason this column shows n/a
    notes: list[str] = field(default_factory=list)


class MountError(RuntimeError):
    pass


# ---------------------------------------------------------------- discovery

def fdsl_command() -> list[str]:
    """How to run the fdsl CLI with the same interpreter (works without the console script)."""
    return [PYTHON, "-m", "fdsl.cli"]


def fdsl_mount_help() -> str | None:
    """`fdsl mount --help`, or None when the subcommand does not exist yet."""
    try:
        out = subprocess.run(fdsl_command() + ["mount", "--help"], capture_output=True,
                             text=True, timeout=60, cwd=REPO)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout


def fdsl_backend_option(help_text: str) -> str | None:
    """How `fdsl mount` selects interpreter vs JIT ("-o backend=" or a flag), if it can."""
    if "backend=" in help_text:
        return "-o backend="
    for flag in ("--backend", "--engine", "--vm"):
        if flag in help_text:
            return flag
    return None


def fdsl_default_timeouts() -> tuple[Timeouts | None, str]:
    """The entry/attr timeouts the fdsl daemon uses by default, read from runtime/.

    Returns (timeouts, where they came from); None while the daemon does not
    exist yet.  pyfuse3 never caches negative lookups, so negative is 0.
    """
    try:
        import dataclasses
        from fdsl.runtime.daemon import MountConfig
        defaults = {f.name: f.default for f in dataclasses.fields(MountConfig)}
        return (Timeouts(float(defaults["entry_timeout"]), float(defaults["attr_timeout"]), 0.0),
                "fdsl.runtime.daemon.MountConfig defaults")
    except Exception as err:  # a missing or half-written daemon must not break the harness
        return None, f"not readable from runtime/ ({type(err).__name__}: {err})"


# ---------------------------------------------------------------- mount plumbing

def _mounted(path: Path) -> bool:
    """True when `path` is a mount point (read from mountinfo: never stats into FUSE)."""
    target = os.fsencode(os.path.realpath(path))
    with open("/proc/self/mountinfo", "rb") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) > 4 and fields[4].replace(b"\\040", b" ") == target:
                return True
    return False


def _tail(fh) -> str:
    fh.seek(0)
    return fh.read().decode(errors="replace").strip()[-1500:]


def _wait_mounted(path: Path, proc: subprocess.Popen, errfile, timeout: float,
                  what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _mounted(path):
            return
        if proc.poll() is not None:
            raise MountError(f"{what} exited with {proc.returncode} before mounting: "
                             f"{_tail(errfile)}")
        time.sleep(0.02)
    raise MountError(f"{what} did not mount within {timeout:g}s: {_tail(errfile)}")


def unmount(path: Path) -> None:
    """Unmount our own mount point; lazily if something still holds it."""
    for cmd in (["fusermount3", "-u", str(path)], ["umount", str(path)]):
        for _ in range(20):
            if not _mounted(path):
                return
            try:
                if subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0:
                    return
            except subprocess.TimeoutExpired:
                break
            time.sleep(0.1)
    if _mounted(path):
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def _stop(proc: subprocess.Popen, path: Path) -> None:
    """Unmount, then wait for our own daemon to exit (terminate it if it hangs)."""
    try:
        unmount(path)
    finally:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def _daemon(cmd: list[str], mnt: Path, what: str, env: dict[str, str] | None = None,
            mount_timeout: float = 60.0) -> Iterator[subprocess.Popen]:
    """Start a foreground FUSE daemon, wait for its mount, always unmount afterwards."""
    mnt.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as errfile:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=errfile,
                                stderr=errfile, cwd=REPO, env=env)
        try:
            _wait_mounted(mnt, proc, errfile, mount_timeout, what)
            yield proc
        finally:
            _stop(proc, mnt)
        if proc.returncode not in (0, None, -15):
            # exited badly after unmount: worth knowing, but the numbers stand
            sys.stderr.write(f"bench: {what} exited {proc.returncode}: {_tail(errfile)}\n")


def _settled(mnt: Path, env: dict[str, str] | None) -> None:
    """Wait until the fdsl daemon has finished starting up.  It answers FUSE as soon
    as it is mounted and imports trio (for its control socket) afterwards, holding
    the GIL for a few hundred ms: a cold tree walk started at once shares those with
    it (28% of the daemon's samples in one profile).  `fdsl stats` is answered once
    that is done; bindfs has no such phase."""
    try:
        subprocess.run(fdsl_command() + ["stats", "--json", str(mnt)], env=env, cwd=REPO,
                       capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        pass


def _with_pythonpath() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


# ---------------------------------------------------------------- the targets

def bindfs_cmd(backing: Path, mnt: Path, t: Timeouts) -> list[str]:
    """bindfs as users run it (single-threaded default), with fdsl's cache lifetimes."""
    opts = f"entry_timeout={t.entry:g},attr_timeout={t.attr:g},negative_timeout={t.negative:g}"
    return ["bindfs", "-f", "-o", opts, str(backing), str(mnt)]


def pyfuse3_cmd(backing: Path, mnt: Path, t: Timeouts) -> list[str]:
    return [PYTHON, str(BENCH_DIR / "baselines" / "pyfuse3_passthrough.py"),
            "--entry-timeout", f"{t.entry:g}", "--attr-timeout", f"{t.attr:g}",
            str(backing), str(mnt)]


def fdsl_cmd(target: Target, backing: Path, mnt: Path, t: Timeouts,
             backend_flag: str | None, timeout_opts: bool) -> list[str]:
    """`fdsl mount POLICY BACKING MNT -f` with our timeouts and backend as -o options."""
    policy = str(target.policy) if target.policy else ""  # "" = no policy: pure passthrough
    cmd = fdsl_command() + ["mount", policy, str(backing), str(mnt), "-f"]
    opts = []
    if timeout_opts:  # fdsl has no negative_timeout: pyfuse3 does not cache ENOENT
        opts += [f"entry_timeout={t.entry:g}", f"attr_timeout={t.attr:g}"]
    if backend_flag == "-o backend=" and target.backend:
        opts.append(f"backend={target.backend}")
    elif backend_flag and target.backend:
        cmd += [backend_flag, target.backend]
    opts += target.options
    if opts:
        cmd += ["-o", ",".join(opts)]
    return cmd


@dataclass
class MountContext:
    """What the runner learned about the environment, shared by all mounts."""

    backend_flag: str | None = None
    fdsl_timeout_opts: bool = False
    fdsl_env: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def mounted(target: Target, backing: Path, timeouts: Timeouts, ctx: MountContext,
            pids: list[int] | None = None) -> Iterator[Path]:
    """Yield the directory through which `target` sees `backing`.

    `pids` (if given) receives the daemon's process id, for the profiler.
    """
    if target.kind == "native":
        yield backing
        return
    parent = Path(tempfile.mkdtemp(prefix=f"fdsl-bench-{target.kind}-"))
    mnt = parent / "mnt"
    try:
        if target.kind == "bindfs":
            cmd = bindfs_cmd(backing, mnt, timeouts)
            env = None
        elif target.kind == "pyfuse3":
            cmd = pyfuse3_cmd(backing, mnt, timeouts)
            env = None
        elif target.kind == "fdsl":
            cmd = fdsl_cmd(target, backing, mnt, timeouts, ctx.backend_flag,
                           ctx.fdsl_timeout_opts)
            env = _with_pythonpath()
            env.update(ctx.fdsl_env)
        else:
            raise ValueError(target.kind)
        with _daemon(cmd, mnt, target.name, env=env) as proc:
            if target.kind == "fdsl":
                _settled(mnt, env)
            if pids is not None:
                pids.append(proc.pid)
            yield mnt
    finally:
        if not _mounted(mnt):
            shutil.rmtree(parent, ignore_errors=True)
