"""Thin wrappers for the Linux calls the `os` module lacks.

Everything here works on file descriptors (mostly O_PATH ones) so the daemon
never has to build an absolute path into the backing tree: per-thread
credentials (setfsuid/setfsgid from the C library; setgroups as a raw syscall,
so it changes only the calling thread, unlike glibc's process-wide setgroups),
*at() calls with AT_EMPTY_PATH, renameat2, statfs's f_type.
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

# setgroups(2) through glibc changes every thread of the process (it is a "setxid"
# call broadcast by nptl), so the per-thread form needs the raw syscall, whose number
# differs per architecture.  Unknown architectures fail loudly instead of calling
# whatever that number means there.  Everything else below goes through the C library.
_SETGROUPS_NR = {
    "x86_64": 116,
    "aarch64": 159, "riscv64": 159, "loongarch64": 159,   # the generic syscall table
}
MACHINE = os.uname().machine

_libc.syscall.restype = ctypes.c_long
for _name in ("setfsuid", "setfsgid"):
    getattr(_libc, _name).argtypes = [ctypes.c_uint]
    getattr(_libc, _name).restype = ctypes.c_int
_libc.unshare.argtypes = [ctypes.c_int]
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                            ctypes.c_uint]


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def require_thread_credentials() -> None:
    """Raise (before mounting) if per-thread groups cannot be set on this architecture."""
    if MACHINE not in _SETGROUPS_NR:
        raise OSError(errno.ENOSYS, f"per-thread setgroups is not known for {MACHINE}; "
                      "mount with -o no_identity (backing operations run as the daemon)")


def setfsuid(uid: int) -> None:
    """Set the calling thread's filesystem uid (used for permission checks and new files)."""
    _libc.setfsuid(uid)


def setfsgid(gid: int) -> None:
    _libc.setfsgid(gid)


def setgroups_thread(groups: list[int]) -> None:
    """Supplementary groups of the calling thread only (raw syscall, no glibc broadcast)."""
    require_thread_credentials()
    arr = (ctypes.c_uint * max(1, len(groups)))(*groups)
    _check(_libc.syscall(ctypes.c_long(_SETGROUPS_NR[MACHINE]), ctypes.c_size_t(len(groups)),
                         arr), "setgroups")


CLONE_FS = 0x200


def unshare_fs() -> None:
    """Give the calling thread its own cwd/root/umask (so its umask is its own)."""
    _check(_libc.unshare(CLONE_FS), "unshare(CLONE_FS)")


def renameat2(olddirfd: int, oldname: bytes, newdirfd: int, newname: bytes, flags: int) -> None:
    if flags == 0:
        os.rename(oldname, newname, src_dir_fd=olddirfd, dst_dir_fd=newdirfd)
        return
    _check(_libc.renameat2(olddirfd, oldname, newdirfd, newname, flags), "renameat2")


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
    times: ctypes.Array[_Timespec] | None = (_Timespec * 2)(_ts(atime_ns, atime_now), _ts(mtime_ns, mtime_now))
    if atime_now and mtime_now:
        times = None  # NULL: the "touch" form a non-owner with write access may use
    _check(_libc.utimensat(ctypes.c_int(fd), b"", times, ctypes.c_int(AT_EMPTY_PATH)), "utimensat")


def fchown_fd(fd: int, uid: int, gid: int) -> None:
    """fchownat(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) on an O_PATH fd; -1 keeps a value."""
    _check(_libc.fchownat(ctypes.c_int(fd), b"", ctypes.c_uint(uid & 0xFFFFFFFF),
                          ctypes.c_uint(gid & 0xFFFFFFFF),
                          ctypes.c_int(AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)), "fchownat")


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """fallocate(2) with its mode bits (os.posix_fallocate has none)."""
    _check(_libc.fallocate(ctypes.c_int(fd), ctypes.c_int(mode), ctypes.c_long(offset),
                           ctypes.c_long(length)), "fallocate")


STATX_BTIME = 0x800
_AT_EMPTY_PATH = 0x1000
_STATX_SIZE = 256                # struct statx
_STATX_BTIME_AT = 80             # stx_btime: tv_sec s64, tv_nsec u32


def statx_btime(fd: int) -> tuple[int, int] | None:
    """The birth time (seconds, nanoseconds) of the inode `fd` refers to (O_PATH
    fds too), or None where the filesystem does not record one."""
    buf = ctypes.create_string_buffer(_STATX_SIZE)
    _check(_libc.statx(ctypes.c_int(fd), b"", ctypes.c_int(_AT_EMPTY_PATH),
                       ctypes.c_uint(STATX_BTIME), buf), "statx")
    mask = int.from_bytes(buf.raw[0:4], "little")
    if not mask & STATX_BTIME:
        return None
    sec = int.from_bytes(buf.raw[_STATX_BTIME_AT:_STATX_BTIME_AT + 8], "little", signed=True)
    nsec = int.from_bytes(buf.raw[_STATX_BTIME_AT + 8:_STATX_BTIME_AT + 12], "little")
    return sec, nsec


class _Statfs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 112)]


def fs_magic(where: int | str) -> int | None:
    """statfs f_type of an fd or a path (None if it cannot be read)."""
    buf = _Statfs()
    if isinstance(where, int):
        rc = _libc.fstatfs(where, ctypes.byref(buf))
    else:
        rc = _libc.statfs(os.fsencode(where), ctypes.byref(buf))
    return int(buf.f_type) & 0xFFFFFFFF if rc == 0 else None


def proc_fd_path(fd: int) -> str:
    """The /proc magic link of one of our fds: reopening through it checks the
    caller's permissions against the inode, never against a path."""
    return f"/proc/self/fd/{fd}"


# --------------------------------------------------------------- file handles

MAX_HANDLE_SZ = 128
_HANDLE_HEAD = 8                    # struct file_handle: u32 handle_bytes, i32 handle_type
_libc.name_to_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p,
                                    ctypes.POINTER(ctypes.c_int), ctypes.c_int]
_libc.open_by_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]


def name_to_handle(fd: int) -> tuple[bytes, int]:
    """(struct file_handle bytes, mount id) of the inode `fd` refers to (O_PATH is fine).

    Raises OSError (EOPNOTSUPP, EOVERFLOW, ...) where the filesystem cannot
    export handles.  Needs no privilege.
    """
    buf = ctypes.create_string_buffer(_HANDLE_HEAD + MAX_HANDLE_SZ)
    ctypes.c_uint32.from_buffer(buf).value = MAX_HANDLE_SZ
    mount_id = ctypes.c_int()
    _check(_libc.name_to_handle_at(fd, b"", buf, ctypes.byref(mount_id), AT_EMPTY_PATH),
           "name_to_handle_at")
    size = ctypes.c_uint32.from_buffer(buf).value
    return buf.raw[:_HANDLE_HEAD + size], mount_id.value


def open_by_handle(mount_fd: int, handle: bytes, flags: int) -> int:
    """open_by_handle_at(2): needs CAP_DAC_READ_SEARCH, so a thread whose fsuid is
    not 0 (fs capabilities dropped) must switch back to fsuid 0 around it."""
    return _check(_libc.open_by_handle_at(mount_fd, handle, flags), "open_by_handle_at")


def swap_fsuid(uid: int) -> int:
    """setfsuid returning the previous fsuid (so a caller can put it back)."""
    return int(_libc.setfsuid(uid))


def linkat_empty(src_fd: int, dst_dir_fd: int, new_name: bytes) -> None:
    """Hard link to a symlink node through its O_PATH fd (needs CAP_DAC_READ_SEARCH)."""
    _check(_libc.linkat(ctypes.c_int(src_fd), b"", ctypes.c_int(dst_dir_fd), new_name,
                        ctypes.c_int(AT_EMPTY_PATH)), "linkat")
