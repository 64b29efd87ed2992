"""`mount -t fuse.fdsl` and fstab lines, for real: mount(8) -> mount.fuse3 -> `fdsl BACKING
MNT -o ...` -> the daemon; plain `umount MNT` stops it.

mount(8) runs helpers with the standard PATH, so each test links the venv's `fdsl`
script into /usr/local/sbin under a name of its own (`fuse.<name>` runs `<name>`):
concurrent test runs never share or clobber a system file, and the link is removed
whatever happens.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from mounting import EXAMPLES, Mount, cleanup, fdsl, is_mounted, needs_fuse

pytestmark = [pytest.mark.mount, needs_fuse,
              pytest.mark.skipif(shutil.which("mount.fuse3") is None, reason="needs mount.fuse3")]

HELPER_DIR = Path("/usr/local/sbin")


@pytest.fixture
def helper_type():
    """A private filesystem type `fuse.<name>` whose helper is our fdsl command."""
    script = Path(sys.executable).with_name("fdsl")
    assert script.is_file(), f"no fdsl console script next to {sys.executable}"
    name = f"fdsl-test-{uuid.uuid4().hex[:8]}"
    link = HELPER_DIR / name
    HELPER_DIR.mkdir(parents=True, exist_ok=True)
    link.symlink_to(script)
    try:
        yield f"fuse.{name}"
    finally:
        link.unlink()


@pytest.fixture
def tree(tmp_path):
    base = tmp_path / "dir with spaces é"
    backing, mnt = base / "backing", base / "view"
    backing.mkdir(parents=True)
    mnt.mkdir()
    (backing / "a.txt").write_text("hello\n")
    (backing / ".env").write_text("SECRET=1\n")
    (backing / "id.key").write_text("key\n")
    m = Mount(backing, mnt)
    try:
        yield m
    finally:
        cleanup(m)


def _daemon_pid(mnt: Path) -> int:
    proc = fdsl("stats", "--json", mnt, check=True)
    import json

    return json.loads(proc.stdout)["pid"]


def _gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().split(")")[-1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def _check_policy_applies(m: Mount) -> None:
    assert sorted(os.listdir(m.mnt)) == ["a.txt"]
    assert (m.mnt / "a.txt").read_text() == "hello\n"
    with pytest.raises(FileNotFoundError):
        (m.mnt / ".env").read_text()


def _umount_stops_daemon(m: Mount) -> None:
    pid = m.pid = _daemon_pid(m.mnt)
    subprocess.run(["umount", str(m.mnt)], check=True, capture_output=True)
    assert not is_mounted(m.mnt)
    assert _gone(pid), "the daemon outlived umount"


def test_mount_t_fuse_fdsl_with_policy_option(helper_type, tree):
    policy = EXAMPLES / "hide_secrets.fdsl"
    proc = subprocess.run(["mount", "-t", helper_type, str(tree.backing), str(tree.mnt),
                           "-o", f"policy={policy},allow_other,attr_timeout=0,nodev"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert is_mounted(tree.mnt)
    _check_policy_applies(tree)
    _umount_stops_daemon(tree)


def test_fstab_line(helper_type, tree, tmp_path):
    def escape(path: Path) -> str:    # fstab fields escape blanks as \040
        return str(path).replace(" ", "\\040")

    fstab = tmp_path / "fstab"
    fstab.write_text(
        "# fdsl views\n"
        f"{escape(tree.backing)} {escape(tree.mnt)} {helper_type} "
        f"noauto,nofail,x-systemd.automount,policy={EXAMPLES / 'hide_secrets.fdsl'},"
        "allow_other 0 0\n")
    proc = subprocess.run(["mount", "--fstab", str(fstab), str(tree.mnt)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    _check_policy_applies(tree)
    _umount_stops_daemon(tree)


def test_bad_option_through_mount_is_reported(helper_type, tree):
    proc = subprocess.run(["mount", "-t", helper_type, str(tree.backing), str(tree.mnt),
                           "-o", "threads=lots"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "threads=lots" in proc.stderr
    assert not is_mounted(tree.mnt)
