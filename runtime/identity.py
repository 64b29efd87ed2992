"""Who is calling, and running backing operations as that caller.

The daemon runs as root, and every backing operation that checks permissions
runs with the thread's filesystem credentials switched to the caller's
(fsuid, fsgid, supplementary groups; raw per-thread syscalls).  The backing
filesystem then makes the permission decisions itself (so a non-root caller
cannot read a root 0600 file) and new files get the caller's uid/gid, setgid
directories included.  fsuid != 0 also drops the fs capabilities
(CAP_DAC_OVERRIDE, CAP_FOWNER, ...), so there is no privilege leak through
the daemon.  New files get the caller's umask per thread (`thread_umask`).
"""
from __future__ import annotations

import dataclasses
import os
import threading

from fdsl.vm.helpers import Caller

from . import sysio

__all__ = ["Caller", "ROOT", "as_caller", "thread_umask", "with_tgid"]


ROOT = Caller(uid=0, gid=0, pid=0, tgid=0, umask=0, groups=())


def with_tgid(caller: Caller) -> Caller:
    """The caller with its thread-group id (process id) filled in from /proc.

    FUSE gives only the thread id; only programs that call
    bpf_get_current_pid_tgid need the tgid.  A vanished task falls back to pid."""
    if caller.tgid:
        return caller
    return dataclasses.replace(caller, tgid=read_status_field(caller.pid, b"Tgid:") or caller.pid)


_IS_ROOT = os.geteuid() == 0


def _read_status(pid: int) -> bytes:
    """/proc/<pid>/status of a task, or b"" if it is gone."""
    try:
        fd = os.open(f"/proc/{pid}/status", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return b""
    try:
        return os.read(fd, 8192)
    except OSError:
        return b""
    finally:
        os.close(fd)


def read_status_field(pid: int, key: bytes) -> int | None:
    """The first number of one `Key:` line of /proc/<pid>/status."""
    data = _read_status(pid)
    start = data.find(b"\n" + key)
    if start < 0:
        return None
    values = data[start + len(key) + 1:data.find(b"\n", start + 1)].split()
    return int(values[0]) if values else None


def read_groups(pid: int) -> tuple[int, ...]:
    """Supplementary groups of a task, read fresh for every request; empty if it is gone.

    Not cached: a process may drop a group at any moment (setgroups) and must
    lose what the group granted at once; a per-pid cache leaked access for its
    lifetime.  FUSE's pid is the calling thread's id, and /proc/<tid>/status
    holds that thread's own groups.  One open+read+close costs ~10 µs, paid
    only by non-root callers of operations whose backing step checks
    permissions.
    """
    data = _read_status(pid)
    start = data.find(b"\nGroups:")
    if start < 0:
        return ()
    end = data.find(b"\n", start + 1)
    return tuple(int(g) for g in data[start + 8:end].split())


_state = threading.local()


def _apply(uid: int, gid: int, groups: tuple[int, ...]) -> None:
    current = getattr(_state, "creds", None)
    if current == (uid, gid, groups):
        return
    # Order matters: groups and gid first, while fsuid still grants CAP_SETGID.
    # What is already set is not set again (a switch to or from root: 2 calls, not 4).
    if current is None or current[0] != 0:
        sysio.setfsuid(0)
    if current is None or current[2] != groups:
        sysio.setgroups_thread(list(groups))
    if current is None or current[1] != gid:
        sysio.setfsgid(gid)
    if uid != 0:
        sysio.setfsuid(uid)
    _state.creds = (uid, gid, groups)


def restore_after_each_op() -> None:
    """Mark the calling thread as shared (the trio thread running inline operations):
    `as_caller` then puts root credentials back when each operation ends."""
    _state.restore = True


class as_caller:
    """Context manager: run the enclosed file operations with the caller's credentials.

    In a worker thread dedicated to one request at a time the credentials stay
    set until the next request on that thread (two syscalls fewer for a steady
    caller).  On a thread marked with `restore_after_each_op` they are reset
    to root on exit, exceptions included, so nothing else that thread does
    runs as a user.  A nested `as_caller` (e.g. ROOT for one privileged step)
    puts the enclosing credentials back on exit.
    """

    def __init__(self, caller: Caller, enabled: bool = True) -> None:
        self.caller = caller
        self.enabled = enabled and _IS_ROOT
        self.previous: tuple[int, int, tuple[int, ...]] | None = None
        self.outermost = False

    def __enter__(self) -> Caller:
        if self.enabled:
            c = self.caller
            groups = c.groups if c.groups is not None else (
                () if c.uid == 0 else read_groups(c.pid))
            depth = getattr(_state, "depth", 0)
            self.outermost = depth == 0
            self.previous = getattr(_state, "creds", None)
            try:
                _apply(c.uid, c.gid, groups)
            except BaseException:
                _state.creds = None  # half switched: force a full switch next time
                _apply(*(self.previous or (0, 0, ())))
                raise
            _state.depth = depth + 1
        return self.caller

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            _state.depth -= 1
            if not self.outermost and self.previous is not None:
                _apply(*self.previous)
            elif self.outermost and getattr(_state, "restore", False):
                _apply(0, 0, ())
        return None


class thread_umask:
    """Context manager: the calling thread's umask is `mask` inside.

    A new file's permission bits are the backing filesystem's business: with a
    default ACL on the parent it ignores the umask, otherwise it applies it.
    So creates run with the caller's umask set and the unmasked mode (the
    kernel sends it unmasked when FUSE_DONT_MASK was negotiated).  The umask
    is per process unless the thread unshared CLONE_FS, which each thread
    does once here (the daemon never relies on a shared cwd or umask).
    """

    def __init__(self, mask: int) -> None:
        self.mask = mask & 0o777

    def __enter__(self) -> None:
        if not getattr(_state, "own_fs", False):
            sysio.unshare_fs()
            _state.own_fs = True
            os.umask(0)
        if self.mask:
            os.umask(self.mask)

    def __exit__(self, *exc: object) -> None:
        if self.mask:
            os.umask(0)


def reset_thread_credentials() -> None:
    """Back to root for daemon-internal work (opening control files, logs)."""
    if _IS_ROOT:
        _apply(0, 0, ())
