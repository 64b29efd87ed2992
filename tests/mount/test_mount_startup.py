"""The fast start of `fdsl mount` stays correct: a mount started from the compile cache
behaves as one that compiled (and the cached start does not parse), the daemon answers on
the interpreter and the background JIT takes over, and a stop signal that arrives right
after the launcher returned still unmounts cleanly.  (Speed itself: bench/startup.py.)"""
from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import private_tmp_base
from mounting import (EXAMPLES, ROOT, Mount, dev_mounter, is_mounted, mounter,  # noqa: F401
                      needs_fuse)

pytestmark = [pytest.mark.mount, needs_fuse]

POLICY = EXAMPLES / "hide_secrets.fdsl"


@pytest.fixture
def object_cache(monkeypatch):
    """A fresh, trusted compile cache (FDSL_CACHE) for the launchers these tests run."""
    base = private_tmp_base()
    assert base is not None, "no private base directory ($XDG_RUNTIME_DIR or /run as root)"
    path = Path(tempfile.mkdtemp(prefix=".fdsl-startup-test-", dir=base))
    monkeypatch.setenv("FDSL_CACHE", str(path))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _mount_traced(mounter, backing: Path, mnt: Path) -> set[str]:
    """`fdsl mount` under -X importtime; returns the modules the launcher imported."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "fdsl.cli", "mount",
                           "-o", f"transport={mounter.transport}", str(POLICY), str(backing),
                           str(mnt)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    mount = Mount(backing, mnt)
    mounter.mounts.append(mount)
    assert proc.returncode == 0, proc.stderr
    os.stat(mnt)                      # ready: the launcher has exited and the mount answers
    mount.pid = mount.stats()["pid"]
    return {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


def _view(mnt: Path) -> tuple:
    """What a user sees of the hide_secrets policy."""
    def err(fn) -> int:
        try:
            fn()
        except OSError as e:
            return e.errno or 0
        return 0

    return (sorted(os.listdir(mnt)), sorted(os.listdir(mnt / "src")),
            (mnt / "README.md").read_text(),
            err(lambda: os.stat(mnt / ".env")), err(lambda: os.stat(mnt / "src" / "a.key")),
            err(lambda: (mnt / "new.key").write_text("x")),
            err(lambda: os.rename(mnt / "README.md", mnt / ".env")))


def test_a_mount_from_the_compile_cache_behaves_like_a_compiled_one(mounter, object_cache):
    views, traces = [], []
    for _ in range(2):
        backing, mnt = mounter.dirs()
        (backing / "README.md").write_text("hello\n")
        (backing / ".env").write_text("SECRET=1\n")
        (backing / "src").mkdir()
        (backing / "src" / "a.key").write_text("k")
        (backing / "src" / "main.c").write_text("int main;\n")
        traces.append(_mount_traced(mounter, backing, mnt))
        views.append(_view(mnt))
    assert views[0] == views[1]
    assert views[0][:2] == (["README.md", "src"], ["main.c"])
    assert views[0][3:] == (errno.ENOENT,) * 4
    compiler = {"lark", "llvmlite", "fdsl.compile.driver"}
    assert compiler <= traces[0]            # the first mount compiled the policy ...
    assert list((object_cache / "objects").glob("*.o"))
    assert "fdsl.compile.cache" in traces[1] and not compiler & traces[1]   # ... the second not


def test_the_background_jit_takes_over_from_the_interpreter(dev_mounter, object_cache):
    backing, mnt = dev_mounter.dirs()
    (backing / "README.md").write_text("hello\n")
    (backing / ".env").write_text("SECRET=1\n")
    m = dev_mounter.mount(POLICY, backing, mnt)
    programs = m.stats()["programs"]
    assert programs and set(programs.values()) <= {"interp", "jit"}
    deadline = time.monotonic() + 300      # liveness only: LLVM on a loaded machine
    while set(programs.values()) != {"jit"} and time.monotonic() < deadline:
        time.sleep(0.2)
        programs = m.stats()["programs"]
    assert set(programs.values()) == {"jit"}, programs
    assert sorted(os.listdir(mnt)) == ["README.md"]
    with pytest.raises(FileNotFoundError):
        os.stat(mnt / ".env")


def test_a_stop_signal_right_after_the_launcher_returned_unmounts(mounter):
    m = mounter.mount()
    os.kill(m.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while (is_mounted(m.mnt) or m.alive()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_mounted(m.mnt) and not m.alive()


def test_the_other_workers_start_once_the_mount_answers(dev_mounter):
    m = dev_mounter.mount(options="threads=8")
    os.stat(m.mnt)
    deadline = time.monotonic() + 30
    while len(os.listdir(f"/proc/{m.pid}/task")) < 1 + 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(os.listdir(f"/proc/{m.pid}/task")) >= 1 + 8
