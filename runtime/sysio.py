"""Thin wrappers for the Linux calls the `os` module lacks.

Everything here works on file descriptors (mostly O_PATH ones) so the daemon
never has to build an absolute path into the backing tree: per-thread
credentials (setfsuid/setfsgid/setgroups as raw syscalls, so they change only
the calling thread, unlike glibc's process-wide setgroups), *at() calls with
AT_EMPTY_PATH, renameat2.
"""
from __future__ import annotations

import ctypes
import errno
import os

_libc = ctypes.CDLL(None, use_errno=True)

AT_EMPTY_PATH = 0x1000
AT_SYMLINK_NOFOLLOW = 0x100
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2

# x86_64 and aarch64 syscall numbers (the only architectures we build for).
_SYSCALLS = {
    "x86_64": {"setgroups": 116, "setfsuid": 122, "setfsgid": 123, "renameat2": 316,
               "unshare": 272},
    "aarch64": {"setgroups": 159, "setfsuid": 151, "setfsgid": 152, "renameat2": 276,
                "unshare": 97},
}
_NR = _SYSCALLS.get(os.uname().machine, _SYSCALLS["x86_64"])

_libc.syscall.restype = ctypes.c_long


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def setfsuid(uid: int) -> None:
    """Set the calling thread's filesystem uid (used for permission checks and new files)."""
    _libc.syscall(_NR["setfsuid"], ctypes.c_uint(uid))


def setfsgid(gid: int) -> None:
    _libc.syscall(_NR["setfsgid"], ctypes.c_uint(gid))


def setgroups_thread(groups: list[int]) -> None:
    """Supplementary groups of the calling thread only (raw syscall, no glibc broadcast)."""
    arr = (ctypes.c_uint * max(1, len(groups)))(*groups)
    _check(_libc.syscall(_NR["setgroups"], ctypes.c_size_t(len(groups)), arr), "setgroups")


CLONE_FS = 0x200


def unshare_fs() -> None:
    """Give the calling thread its own cwd/root/umask (so its umask is its own)."""
    _check(_libc.syscall(_NR["unshare"], ctypes.c_int(CLONE_FS)), "unshare(CLONE_FS)")


def renameat2(olddirfd: int, oldname: bytes, newdirfd: int, newname: bytes, flags: int) -> None:
    if flags == 0:
        os.rename(oldname, newname, src_dir_fd=olddirfd, dst_dir_fd=newdirfd)
        return
    _check(
        _libc.syscall(_NR["renameat2"], ctypes.c_int(olddirfd), ctypes.c_char_p(oldname),
                      ctypes.c_int(newdirfd), ctypes.c_char_p(newname), ctypes.c_uint(flags)),
        "renameat2",
    )


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _ts(ns: int | None, now: bool = False) -> _Timespec:
    if now:
        return _Timespec(0, UTIME_NOW)
    if ns is None:
        return _Timespec(0, UTIME_OMIT)
    return _Timespec(ns // 1_000_000_000, ns % 1_000_000_000)


def utimens_fd(fd: int, atime_ns: int | None, mtime_ns: int | None,
               atime_now: bool = False, mtime_now: bool = False) -> None:
    """utimensat(fd, "", AT_EMPTY_PATH): works on O_PATH fds, symlinks included.

    None means UTIME_OMIT (leave that time alone).
    """
    times = (_Timespec * 2)(_ts(atime_ns, atime_now), _ts(mtime_ns, mtime_now))
    if atime_now and mtime_now:
        times = None  # NULL: the "touch" form a non-owner with write access may use
    _check(_libc.utimensat(ctypes.c_int(fd), b"", times, ctypes.c_int(AT_EMPTY_PATH)), "utimensat")


def fchown_fd(fd: int, uid: int, gid: int) -> None:
    """fchownat(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) on an O_PATH fd; -1 keeps a value."""
    _check(_libc.fchownat(ctypes.c_int(fd), b"", ctypes.c_uint(uid & 0xFFFFFFFF),
                          ctypes.c_uint(gid & 0xFFFFFFFF),
                          ctypes.c_int(AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)), "fchownat")


def proc_fd_path(fd: int) -> str:
    """The /proc magic link of one of our fds: reopening through it checks the
    caller's permissions against the inode, never against a path."""
    return f"/proc/self/fd/{fd}"


def errno_of(exc: BaseException) -> int:
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    return errno.EIO
