"""Policy `log` lines are durable: a detached daemon writes them to its log file (path in
`fdsl stats`), the file outlives the unmount, and `fdsl stats --follow` tails it."""
from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from mounting import (FDSL, ROOT, Mount, check_stats_follow, cleanup, fdsl,  # noqa: F401
                      is_mounted, logging_policy, mounter, needs_fuse)

pytestmark = [pytest.mark.mount, needs_fuse]

def _stat_once(mnt: Path) -> None:
    os.stat(mnt / "f")


def test_log_lines_go_to_a_private_file_that_outlives_the_mount(mounter, logging_policy, tmp_path):
    log_file = tmp_path / "view.log"
    m = mounter.mount(logging_policy,
                      options=f"attr_timeout=0,entry_timeout=0,log_file={log_file}")
    (m.backing / "f").write_text("x")
    _stat_once(m.mnt)
    assert m.stats()["log_file"] == str(log_file)
    assert "log file " + str(log_file) in fdsl("stats", m.mnt, check=True).stdout
    fdsl("umount", m.mnt, check=True)
    text = log_file.read_text()
    assert "fdsl.policy INFO getattr by uid 0 nodeid" in text
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600


def test_log_file_is_bounded(mounter, logging_policy, tmp_path):
    log_file = tmp_path / "small.log"
    m = mounter.mount(logging_policy, options=f"attr_timeout=0,log_file={log_file},log_size=4096")
    (m.backing / "f").write_text("x")
    for _ in range(300):
        _stat_once(m.mnt)
    fdsl("umount", m.mnt, check=True)
    assert log_file.stat().st_size <= 4096
    assert Path(f"{log_file}.1").stat().st_size <= 4096
    assert "getattr by uid" in Path(f"{log_file}.1").read_text()


def test_stats_follow_tails_new_lines_until_unmount(mounter, logging_policy):
    m = mounter.mount(logging_policy, options="attr_timeout=0,entry_timeout=0")
    (m.backing / "f").write_text("x")
    check_stats_follow(m, "log file ")


def test_foreground_prints_log_lines_on_stderr(mounter, logging_policy):
    backing, mnt = mounter.dirs()
    (backing / "f").write_text("x")
    daemon = subprocess.Popen([*FDSL, "mount", "-f", "-o", "attr_timeout=0,entry_timeout=0",
                               str(logging_policy), str(backing), str(mnt)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    m = Mount(backing, mnt, daemon.pid)
    try:
        deadline = time.monotonic() + 30
        while not is_mounted(mnt) and time.monotonic() < deadline and daemon.poll() is None:
            time.sleep(0.05)
        assert is_mounted(mnt), daemon.stderr.read() if daemon.poll() is not None else "slow"
        _stat_once(mnt)
        fdsl("umount", mnt, check=True)
        assert daemon.wait(timeout=15) == 0
        assert "fdsl.policy INFO getattr by uid 0" in daemon.stderr.read()
    finally:
        cleanup(m)
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
