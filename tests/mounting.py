"""Mount fixtures for the daemon tests: real FUSE mounts that are always cleaned up.

`mounter` (a pytest fixture factory) runs `fdsl mount` (daemonized, like a
user would) and, whatever happens in the test, unmounts with fusermount3
(lazily if busy) and kills the daemon it started.  It is parametrized over
both transports (`dev`, the default over /dev/fuse, and `pyfuse3`): every
mount it makes carries `-o transport=...`; `mounter.transport` says which.  `run_as(uid, gid, code)`
runs Python code in a child process with another identity (no passwd entry
needed), for permission tests.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

FDSL = [sys.executable, "-m", "fdsl.cli"]
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
# The venv's interpreter may live under /root; other users need a system one.
USER_PYTHON = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or sys.executable


def user_fdsl() -> list[str]:
    """`fdsl` as another user can run it: the system interpreter with this venv's
    packages added (the venv's own interpreter may sit in a directory only root
    may enter)."""
    import site
    import sysconfig

    purelib = sysconfig.get_paths()["purelib"]
    boot = (f"import site, sys; site.addsitedir({purelib!r}); "
            "from fdsl.cli import main; sys.exit(main(sys.argv[1:]))")
    del site
    return [USER_PYTHON, "-c", boot]


def fuse_available() -> bool:
    return os.path.exists("/dev/fuse") and shutil.which("fusermount3") is not None \
        and os.geteuid() == 0


needs_fuse = pytest.mark.skipif(not fuse_available(), reason="needs root, /dev/fuse and fusermount3")


def fdsl(*args: str, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run([*FDSL, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"fdsl {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                             f"{proc.stdout}{proc.stderr}")
    return proc


def is_mounted(path: Path) -> bool:
    from fdsl.runtime import mounttable

    return mounttable.find(os.path.realpath(path)) is not None


@dataclass
class Mount:
    backing: Path
    mnt: Path
    pid: int = 0

    def stats(self) -> dict:
        proc = fdsl("stats", "--json", self.mnt, check=True)
        return json.loads(proc.stdout)

    def counters(self, name: str) -> dict[str, int]:
        for m in self.stats()["maps"]:
            if m["name"] == name:
                return {str(k): v for k, v in m["entries"]}
        raise KeyError(name)

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        try:  # a zombie child of ours counts as gone
            with open(f"/proc/{self.pid}/stat") as fh:
                return fh.read().split(")")[-1].split()[0] != "Z"
        except OSError:
            return False


def cleanup(m: Mount) -> None:
    """Unmount (lazily if busy) and make sure the daemon we started is gone."""
    if is_mounted(m.mnt):
        if subprocess.run(["fusermount3", "-u", str(m.mnt)], capture_output=True).returncode:
            subprocess.run(["fusermount3", "-u", "-z", str(m.mnt)], capture_output=True)
    deadline = time.monotonic() + 5
    while m.pid and m.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if m.pid and m.alive():
        os.kill(m.pid, signal.SIGKILL)


@dataclass
class Mounter:
    """Creates world-traversable scratch dirs and mounts; remembers what to clean."""

    base: Path
    transport: str = "dev"
    mounts: list[Mount] = field(default_factory=list)
    counter: int = 0

    def dirs(self) -> tuple[Path, Path]:
        self.counter += 1
        backing = self.base / f"backing{self.counter}"
        mnt = self.base / f"mnt{self.counter}"
        backing.mkdir()
        mnt.mkdir()
        os.chmod(backing, 0o755)
        os.chmod(mnt, 0o755)
        return backing, mnt

    def mount(self, policy: str | Path = "", backing: Path | None = None, mnt: Path | None = None,
              options: str = "", expect_fail: bool = False,
              flags: tuple[str, ...] = ()) -> Mount:
        """`flags`: more `fdsl mount` arguments (`("--abi", "rfc-v1")`)."""
        if backing is None or mnt is None:
            b, m = self.dirs()
            backing, mnt = backing or b, mnt or m
        options = ",".join(filter(None, [f"transport={self.transport}", options]))
        args = ["mount", *flags, "-o", options, policy, backing, mnt]
        proc = fdsl(*args)
        if expect_fail:
            assert proc.returncode != 0, "mount unexpectedly succeeded"
            mount = Mount(backing, mnt)
            self.mounts.append(mount)
            mount.error = proc.stderr  # type: ignore[attr-defined]
            return mount
        mount = Mount(backing, mnt)
        self.mounts.append(mount)
        assert proc.returncode == 0, f"mount failed: {proc.stderr}"
        assert is_mounted(mnt)
        mount.pid = mount.stats()["pid"]
        return mount


LOGGING_POLICY = 'on getattr pre { log "getattr by uid %d nodeid %d", uid, nodeid }\n'


@pytest.fixture
def logging_policy(tmp_path):
    """A policy that logs one line per getattr: the log tests' source of lines."""
    path = tmp_path / "logging.fdsl"
    path.write_text(LOGGING_POLICY)
    return path


def check_stats_follow(m: Mount, last_stats_line: str) -> None:
    """`fdsl stats --follow` prints, after the stats part (ending with a line that starts
    with `last_stats_line`), the getattr lines of `logging_policy` as they come, and
    exits 0 once the mount is gone.  The backing dir must hold a file `f`."""
    import select

    follower = subprocess.Popen([*FDSL, "stats", "--follow", str(m.mnt)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while not follower.stdout.readline().startswith(last_stats_line):
            pass    # the stats part (its recent logs may hold older getattr lines)
        seen = ""
        deadline = time.monotonic() + 30
        while "getattr by uid 0" not in seen and time.monotonic() < deadline:
            os.stat(m.mnt / "f")
            ready, _, _ = select.select([follower.stdout], [], [], 0.5)
            if ready:
                seen += follower.stdout.readline()
        assert "getattr by uid 0" in seen
        fdsl("umount", m.mnt, check=True)
        assert follower.wait(timeout=15) == 0
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()


TRANSPORTS = ("dev", "pyfuse3")


def _mounter_for(transport: str):
    base = Path(tempfile.mkdtemp(prefix="fdsl-mnt-"))
    os.chmod(base, 0o755)
    m = Mounter(base, transport)
    try:
        yield m
    finally:
        for mount in reversed(m.mounts):
            cleanup(mount)
        for stray in mounts_below(base):     # e.g. a CLI call expected to fail that mounted
            cleanup(Mount(base, stray))
        shutil.rmtree(base, ignore_errors=True)


def mounts_below(base: Path) -> list[Path]:
    """Mount points under `base` (deepest first), from /proc/self/mountinfo."""
    from fdsl.runtime import mounttable

    prefix = str(base) + "/"
    found = [Path(e.target) for e in mounttable.entries() if e.target.startswith(prefix)]
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


@pytest.fixture(params=TRANSPORTS)
def mounter(request):
    yield from _mounter_for(request.param)


@pytest.fixture
def dev_mounter():
    """Mounts on the /dev/fuse transport only, for what pyfuse3 cannot do (passthrough)."""
    yield from _mounter_for("dev")


def run_as(uid: int, gid: int, code: str, groups: tuple[int, ...] = (),
           timeout: float = 30) -> subprocess.CompletedProcess:
    """Run Python `code` as uid/gid; it prints its result as JSON on stdout."""
    def demote() -> None:
        os.setgroups(list(groups))
        os.setgid(gid)
        os.setuid(uid)

    return subprocess.run([USER_PYTHON, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, preexec_fn=demote, cwd="/")


def errno_as(uid: int, gid: int, code: str) -> object:
    """Result of `code` run as uid, where code sets `r`; OSError -> its errno name."""
    wrapped = ("import os, json, errno\n"
               "try:\n" + textwrap.indent(textwrap.dedent(code), "    ") +
               "\nexcept OSError as e:\n    r = errno.errorcode[e.errno]\n"
               "print(json.dumps(r))\n")
    proc = run_as(uid, gid, wrapped)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)
