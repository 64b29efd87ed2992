"""Filters see the caller exactly as bpf_get_current_pid_tgid would report it.

FUSE request headers carry the calling *thread's* id; helper 14 returns the
thread id in the lower and the process id (tgid) in the upper 32 bits, so
the daemon must tell them apart for a call made from a secondary thread.
READ and WRITE rules see the caller of the request, not who opened the file.
"""
from __future__ import annotations

import errno
import os
import stat
import threading

import pytest

from mounting import mounter, needs_fuse  # noqa: F401

pytest_plugins = ["posix_fixtures"]

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


def _in_child_as(user, action) -> str:
    """Fork, drop to `user` (all ids), run `action()`: "ok" or the errno name."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:   # pragma: no cover - the child
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(user.gid)
            os.setuid(user.uid)
            try:
                action()
                result = "ok"
            except OSError as err:
                result = errno.errorcode.get(err.errno, str(err.errno))
            os.write(w, result.encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    try:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        return os.read(r, 100).decode()
    finally:
        os.close(r)


@pytest.mark.parametrize("op", ["read", "write"])
def test_read_and_write_rules_see_the_caller_not_the_opener(mounter, tmp_path, posix_users,
                                                            request, op):
    """A file opened by root, its fd inherited by children that set another uid:
    the rule refusing user a must refuse a's child (a READ or WRITE run as the
    opener would let it through) and let user b's child and root through."""
    if mounter.transport == "pyfuse3":
        request.applymarker(pytest.mark.xfail(
            reason="pyfuse3 gives read and write no caller: they run as the opener", strict=True))
    a, b = posix_users.a, posix_users.b
    policy = tmp_path / "rw_uid.fdsl"
    policy.write_text(f"on {op} pre {{ if uid == {a.uid} {{ deny EACCES }} }}\n")
    backing, mnt = mounter.dirs()
    (backing / "f").write_bytes(b"0123456789")
    mounter.mount(policy, backing, mnt, options="allow_other")
    fd = os.open(mnt / "f", os.O_RDWR)
    try:
        if op == "read":
            assert _in_child_as(a, lambda: os.pread(fd, 4, 0)) == "EACCES"
            assert _in_child_as(b, lambda: os.pread(fd, 4, 0)) == "ok"
            assert os.pread(fd, 4, 0) == b"0123"
            # what others read is not served to a from the page cache
            assert _in_child_as(a, lambda: os.pread(fd, 4, 0)) == "EACCES"
        else:
            assert _in_child_as(a, lambda: os.pwrite(fd, b"AA", 0)) == "EACCES"
            assert _in_child_as(b, lambda: os.pwrite(fd, b"BB", 2)) == "ok"
            assert os.pwrite(fd, b"RR", 4) == 2
    finally:
        os.close(fd)
    expected = b"0123456789" if op == "read" else b"01BBRR6789"
    assert (backing / "f").read_bytes() == expected


def test_reads_with_caller_dependent_rules_bypass_the_page_cache(mounter, tmp_path, request):
    """Read rules that count (or read uid) see every read, as a fuse-bpf kernel runs
    the program for each: the file is opened FOPEN_DIRECT_IO, and shared mmap still
    works (FUSE_DIRECT_IO_ALLOW_MMAP)."""
    if mounter.transport == "pyfuse3":
        request.applymarker(pytest.mark.xfail(
            reason="pyfuse3 opens every file cached: repeated reads come from the page cache",
            strict=True))
    import mmap

    policy = tmp_path / "count_reads.fdsl"
    policy.write_text("counter reads\non read pre { count reads }\n")
    backing, mnt = mounter.dirs()
    (backing / "f").write_bytes(b"0123456789" * 1000)
    m = mounter.mount(policy, backing, mnt)
    with open(mnt / "f", "rb", buffering=0) as fh:
        for _ in range(3):
            assert os.pread(fh.fileno(), 10, 0) == b"0123456789"
    assert m.counters("reads") == {"total": 3}
    with open(mnt / "f", "r+b") as fh:
        with mmap.mmap(fh.fileno(), 0) as mem:
            assert mem[10:14] == b"0123"
            mem[0:4] = b"MMAP"
            mem.flush()
    assert (backing / "f").read_bytes()[:12] == b"MMAP45678901"
