"""Checks before mounting and unmounting: busy mount points found whatever their
names (spaces, non-ASCII), no fdsl mount on top of another FUSE mount, `fdsl umount`
only for fdsl mounts, and a daemon that does not keep the launcher's cwd busy."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from mounting import FDSL, Mount, fdsl, is_mounted, mounter, needs_fuse  # noqa: F401

pytestmark = [pytest.mark.mount, needs_fuse]


@pytest.fixture
def bind_mounted(tmp_path):
    """A directory with a blank and an accent in its name, bind-mounted on itself."""
    target = tmp_path / "a dir é"
    target.mkdir()
    subprocess.run(["mount", "--bind", str(target), str(target)], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def test_busy_mount_point_with_blank_and_accent_is_refused(mounter, bind_mounted):
    backing, _ = mounter.dirs()
    m = mounter.mount("", backing, bind_mounted, expect_fail=True)
    assert "busy" in m.error  # type: ignore[attr-defined]


def test_no_mount_on_top_of_another_fuse_mount(mounter):
    lower = mounter.mount("")
    other_backing, _ = mounter.dirs()
    m = mounter.mount("", other_backing, lower.mnt, options="nonempty", expect_fail=True)
    assert "already a FUSE mount" in m.error  # type: ignore[attr-defined]
    assert lower.alive()


def test_umount_refuses_what_fdsl_did_not_mount(bind_mounted, tmp_path):
    proc = fdsl("umount", bind_mounted)
    assert proc.returncode == 1 and "not an fdsl one" in proc.stderr
    assert is_mounted(bind_mounted)
    proc = fdsl("umount", tmp_path)
    assert proc.returncode == 1 and "not a mount point" in proc.stderr


def test_daemon_works_from_root_directory_with_relative_paths(mounter, tmp_path):
    backing, mnt = mounter.dirs()
    (backing / "f").write_text("x")
    launcher_dir = backing.parent
    proc = subprocess.run([*FDSL, "mount", "", backing.name, mnt.name],
                          cwd=launcher_dir, capture_output=True, text=True, timeout=60)
    m = Mount(backing, mnt)
    mounter.mounts.append(m)
    assert proc.returncode == 0, proc.stderr
    m.pid = m.stats()["pid"]
    assert os.readlink(f"/proc/{m.pid}/cwd") == "/"
    assert (mnt / "f").read_text() == "x"
    assert m.stats()["backing"] == str(backing)
    fds = {os.readlink(f"/proc/{m.pid}/fd/{fd}") for fd in (0, 1, 2)}
    assert fds == {"/dev/null"}
