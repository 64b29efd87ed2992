"""Filters see the caller exactly as bpf_get_current_pid_tgid would report it.

FUSE request headers carry the calling *thread's* id; helper 14 returns the
thread id in the lower and the process id (tgid) in the upper 32 bits, so
the daemon must tell them apart for a call made from a secondary thread.
"""
from __future__ import annotations

import os
import stat
import threading

import pytest

from mounting import mounter, needs_fuse  # noqa: F401

pytestmark = [pytest.mark.mount, needs_fuse]

POLICY = ('on getattr pre { if nodeid != 1 { log "caller pid %d tgid %d", pid, tgid } }\n'
          # a regex rule runs in the daemon: its tgid must be the process id too
          'on lookup pre { if name matches "^f$" { log "userspace tgid %d", tgid } }\n')


def test_pid_is_the_thread_and_tgid_the_process(mounter, tmp_path):
    policy = tmp_path / "ids.fdsl"
    policy.write_text(POLICY)
    backing, mnt = mounter.dirs()
    (backing / "f").write_text("x")
    m = mounter.mount(policy, backing, mnt, options="attr_timeout=0,entry_timeout=0")
    seen: dict[str, int] = {}

    def stat_from_a_thread() -> None:
        seen["tid"] = threading.get_native_id()
        os.stat(mnt / "f")

    worker = threading.Thread(target=stat_from_a_thread)
    worker.start()
    worker.join()
    assert seen["tid"] != os.getpid()
    logs = "\n".join(m.stats()["logs"])
    assert f"caller pid {seen['tid']} tgid {os.getpid()}" in logs, logs
    assert f"userspace tgid {os.getpid()}" in logs, logs


def test_lookup_postfilter_attribute_writes_are_ignored_like_the_kernel(mounter, tmp_path):
    """Spec 3.2: after a BPF lookup the inode's attributes come from the backing inode."""
    policy = tmp_path / "lookup_attr.fdsl"
    policy.write_text("on lookup post { out.attr.mode = 0o100600 }\n")
    backing, mnt = mounter.dirs()
    (backing / "d").mkdir(mode=0o755)
    mounter.mount(policy, backing, mnt, options="attr_timeout=0,entry_timeout=0")
    st = os.stat(mnt / "d")
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755
