"""The backing steps: each FUSE operation on the backing inode, as plain OS calls.

Every function takes the driver's `Call` (node, request, caller, open handle)
and the values the kernel honours (read from the argument frame by the
operation table, `runtime/optable.py`); it returns what the finalize step
needs (a stat result, an fd, bytes) and raises OSError on failure.  The
driver has already switched credentials where the row says so.

Everything works relative to O_PATH fds (`runtime/nodes.py`); nothing builds
a path into the backing tree.
"""
from __future__ import annotations

import errno
import fcntl
import os
import stat
from dataclasses import dataclass
from typing import Any

from fdsl import abi

from . import requests as R
from . import scopes, sysio
from .identity import ROOT, as_caller, thread_umask

OPATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(slots=True)
class Found:
    """A backing lookup's result: the child's O_PATH fd and its stat."""

    fd: int
    st: os.stat_result
    nodes: Any                       # the engine's NodeTable

    @property
    def ctx_nodeid(self) -> int:
        """What a POST program sees as out.nodeid: the node's, if the inode is known."""
        existing = self.nodes.find_key((self.st.st_dev, self.st.st_ino))
        return existing.ctx_nodeid if existing else 0


@dataclass(slots=True)
class Made:
    fd: int                  # the opened file
    name: bytes              # the name really created (CREATE honours a rewritten name)


@dataclass(slots=True)
class SetattrValues:
    mode: int
    uid: int
    gid: int
    size: int
    atime_ns: int
    mtime_ns: int


@dataclass(slots=True)
class Page:
    """One READDIR page: fuse_dirent records and where the listing goes on."""

    records: list[tuple[bytes, int, int, int]]   # (name, ino, next offset, type)
    data: bytes
    next_offset: int
    again: bool
    snapshot_end: bool


def check_name(name: bytes) -> None:
    if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
        raise OSError(errno.EINVAL if name in (b".", b"..") else errno.ENOENT, "bad name")
    if len(name) > abi.NAME_MAX:
        raise OSError(errno.ENAMETOOLONG, "name too long")


# ------------------------------------------------------------------ lookup

def lookup(call: Any, frame: Any) -> Found:
    # The backing lookup uses the original name (LOOKUP honours no input).
    fd = os.open(call.req.name, OPATH_FLAGS, dir_fd=call.node.fd)
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    return Found(fd, st, call.engine.nodes)


def close_found(found: Found) -> None:
    os.close(found.fd)


def getattr(call: Any, frame: Any) -> os.stat_result:
    # fstat of an O_PATH fd checks no permission: no credential switch needed.
    return os.fstat(call.node.fd)


def readlink(call: Any, frame: Any) -> bytes:
    return os.readlink(b"", dir_fd=call.node.fd)


# ----------------------------------------------------------------- setattr

def setattr(call: Any, v: SetattrValues) -> os.stat_result:
    """Honoured: the values; which attributes change comes from the request (§9).

    The owner and group change first: a chown the backing fs refuses (EPERM)
    must leave the mode alone, setuid/setgid bits included."""
    r, node = call.req, call.node
    if r.uid is not None or r.gid is not None:
        sysio.fchown_fd(node.fd, v.uid if r.uid is not None else -1,
                        v.gid if r.gid is not None else -1)
    if r.mode is not None:
        if stat.S_ISLNK(node.mode):
            raise OSError(errno.EOPNOTSUPP, "chmod of a symlink")
        if _is_kill_suid(call, v.mode):
            # With a size, the truncate below (as the caller) clears the bits on
            # the backing fs; alone, it precedes the caller's write.
            if r.size is None:
                with as_caller(ROOT, call.engine.options.switch_identity):
                    os.chmod(sysio.proc_fd_path(node.fd), v.mode & 0o7777)
        else:
            os.chmod(sysio.proc_fd_path(node.fd), v.mode & 0o7777)
    if r.size is not None:
        handle = call.engine.files.get(r.fh) if r.fh is not None else None
        if handle is not None and hasattr(handle, "written"):
            os.ftruncate(handle.fd, v.size)
        else:
            os.truncate(sysio.proc_fd_path(node.fd), v.size)
    if r.atime_ns is not None or r.mtime_ns is not None or r.atime_now or r.mtime_now:
        a = None if (r.atime_ns is None or r.atime_now) else v.atime_ns
        m = None if (r.mtime_ns is None or r.mtime_now) else v.mtime_ns
        sysio.utimens_fd(node.fd, a, m, r.atime_now, r.mtime_now)
    return os.fstat(node.fd)


def _is_kill_suid(call: Any, mode: int) -> bool:
    """A SETATTR whose mode change only clears S_ISUID/S_ISGID, from a non-owner who
    may write the file: the kernel's suid/sgid kill before a write or truncate (sent
    unless FUSE_HANDLE_KILLPRIV was negotiated; see `fuseconn`).  The backing fs
    clears the bits itself when the caller writes, so clearing them with privilege
    grants nothing the caller could not get by writing; run as the caller, the
    chmod is EPERM."""
    r, node, caller = call.req, call.node, call.caller
    if r.uid is not None or r.gid is not None or not call.engine.options.switch_identity:
        return False  # (a truncate comes as mode + size: the size part runs as the caller)
    st = os.fstat(node.fd)
    if caller.uid in (0, st.st_uid) or not stat.S_ISREG(st.st_mode):
        return False
    current = st.st_mode & 0o7777
    kill = current & ~(mode & 0o7777)
    if not kill or kill & ~(stat.S_ISUID | stat.S_ISGID) or mode & 0o7777 & ~current:
        return False
    return os.access(sysio.proc_fd_path(node.fd), os.W_OK, effective_ids=True)


# -------------------------------------------------------------- namespace

def mknod(call: Any, mode: int, rdev: int, umask: int) -> None:
    with thread_umask(umask):
        os.mknod(call.req.name, mode, rdev, dir_fd=call.node.fd)


def mkdir(call: Any, mode: int, umask: int) -> None:
    with thread_umask(umask):
        os.mkdir(call.req.name, mode & 0o7777, dir_fd=call.node.fd)


def symlink(call: Any, frame: Any) -> None:
    os.symlink(call.req.target, call.req.name, dir_fd=call.node.fd)


def unlink(call: Any, frame: Any) -> None:
    os.unlink(call.req.name, dir_fd=call.node.fd)


def rmdir(call: Any, frame: Any) -> None:
    os.rmdir(call.req.name, dir_fd=call.node.fd)


def rename(call: Any, flags: int) -> None:
    if scopes.rename_crosses(call.engine.policy, call.node, call.req.name, call.other,
                             call.req.new_name):
        raise OSError(errno.EXDEV, "rename across a scope boundary")
    sysio.renameat2(call.node.fd, call.req.name, call.other.fd, call.req.new_name, flags)


def link(call: Any, frame: Any) -> None:
    # linkat(fd, "", ..., AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH; the /proc
    # magic link with AT_SYMLINK_FOLLOW works for any caller.
    source, new_name = call.other, call.req.new_name
    if scopes.link_crosses(call.engine.policy, source, call.node, new_name):
        raise OSError(errno.EXDEV, "hard link across a scope boundary")
    if stat.S_ISLNK(source.mode):
        sysio.linkat_empty(source.fd, call.node.fd, new_name)
    else:
        os.link(sysio.proc_fd_path(source.fd), new_name, dst_dir_fd=call.node.fd,
                follow_symlinks=True)


def create(call: Any, name: bytes, flags: int, mode: int) -> Made:
    check_name(name)
    with thread_umask(call.req.umask):
        fd = os.open(name, _backing_open_flags(flags) | os.O_CREAT, mode & 0o7777,
                     dir_fd=call.node.fd)
    return Made(fd, name)


def close_made(made: Made) -> None:
    os.close(made.fd)


# -------------------------------------------------------------- open files

def _backing_open_flags(flags: int) -> int:
    """Flags to open the backing file with.  O_APPEND is dropped: the kernel sends
    every write's offset (the end of file for an O_APPEND writer), and an O_APPEND
    backing fd would move shared-mmap writebacks and pwrites to the end."""
    return ((flags & ~(os.O_CREAT | os.O_EXCL | os.O_NOCTTY | os.O_NOFOLLOW | os.O_APPEND))
            | os.O_NOFOLLOW | os.O_CLOEXEC)


def open_file(call: Any, flags: int) -> int:
    # The kernel resolved the path (O_NOFOLLOW on a symlink already gave ELOOP
    # there); reopening through the /proc magic link must follow it.
    return os.open(sysio.proc_fd_path(call.node.fd), _backing_open_flags(flags) & ~os.O_NOFOLLOW)


def read(call: Any, frame: Any) -> bytes:
    return os.pread(call.handle.fd, call.req.size, call.req.offset)


def write(call: Any, frame: Any) -> int:
    call.handle.written = True
    return os.pwrite(call.handle.fd, call.req.data, call.req.offset)


def flush(call: Any, frame: Any) -> None:
    # close(dup(fd)) so the backing fs sees close(2) semantics (NFS, locks).
    call.handle.written = False
    os.close(os.dup(call.handle.fd))


def fsync(fd: int, flags: int) -> None:
    (os.fdatasync if flags & abi.FUSE_FSYNC_FDATASYNC else os.fsync)(fd)


def lseek(call: Any, offset: int, whence: int) -> int:
    """SEEK_DATA/SEEK_HOLE on the backing file (its position is never used for I/O)."""
    return os.lseek(call.handle.fd, _signed(offset), whence)


def fallocate(call: Any, mode: int, offset: int, length: int) -> None:
    call.handle.written = True
    sysio.fallocate(call.handle.fd, mode, _signed(offset), _signed(length))


# What one read(2) or copy_file_range(2) moves at most (the kernel's MAX_RW_COUNT).
MAX_RW_COUNT = 0x7FFFF000
_COPY_CHUNK = 1 << 20


def copy_file_range(call: Any, off_in: int, off_out: int, length: int, flags: int) -> int:
    """The copy on the backing files.  Where the source has read rules or the
    destination write rules, it is done as READ and WRITE requests through the
    engine (each with its rules and the caller), so copy_file_range cannot move
    data those rules would refuse to read or write."""
    if flags:
        raise OSError(errno.EINVAL, "copy_file_range flags")
    engine, src, dst = call.engine, call.handle, call.other_handle
    length = min(length, MAX_RW_COUNT)
    policy = engine.policy
    if not (policy.runs_program(src.node, "read") or policy.runs_program(dst.node, "write")):
        dst.written = True
        return os.copy_file_range(src.fd, dst.fd, length, _signed(off_in), _signed(off_out))
    done = 0
    while done < length:
        try:
            data = engine.dispatch(R.Read(call.caller, call.req.fh, off_in + done,
                                          min(_COPY_CHUNK, length - done)))
            if not data:
                break
            n = engine.dispatch(R.Write(call.caller, call.req.fh_out, off_out + done, data))
        except OSError:
            if done:
                break            # a short copy, as copy_file_range(2) reports one
            raise
        done += n
        if n < len(data):
            break
    return done


# ioctls that only read a file's attribute flags (what lsattr asks, through the
# kernel's fileattr_get): the number and the size of what they return.
FS_IOC_GETFLAGS, FS_IOC_FSGETXATTR = 0x80086601, 0x801C581F
READ_ONLY_IOCTLS = {FS_IOC_GETFLAGS: 4, FS_IOC_FSGETXATTR: 28}


def read_ioctl(fd: int, cmd: int, size: int) -> bytes:
    """One of READ_ONLY_IOCTLS on an open backing file or directory."""
    if READ_ONLY_IOCTLS.get(cmd) != size:
        raise OSError(errno.ENOTTY, "ioctl not passed on")
    return bytes(fcntl.ioctl(fd, cmd, bytes(size)))


def _signed(value: int) -> int:
    """A loff_t the kernel sent as a u64."""
    return value - (1 << 64) if value >= 1 << 63 else value


# ------------------------------------------------------------- directories

def open_dir(call: Any) -> int:
    return os.open(sysio.proc_fd_path(call.node.fd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def snapshot(fd: int) -> list[tuple[bytes, int, int]]:
    """(name, d_ino, d_type) of every entry, read once per listing."""
    os.lseek(fd, 0, os.SEEK_SET)
    names = []
    with os.scandir(fd) as it:
        for e in it:
            try:
                dtype = abi.DT_DIR if e.is_dir(follow_symlinks=False) else \
                    abi.DT_LNK if e.is_symlink() else abi.DT_REG
            except OSError:
                dtype = abi.DT_UNKNOWN
            names.append((os.fsencode(e.name), e.inode(), dtype))
    return names


def readdir_page(call: Any, frame: Any) -> Page:
    """The entries after `call.page_offset` that fit in one dirent page.

    Offsets: "." is 1, ".." 2, the i-th name of the snapshot i + 3."""
    d = call.handle
    with d.lock:
        if d.names is None or call.page_offset <= 2:
            d.names = snapshot(d.fd)
        names = d.names
    start = max(call.page_offset, 2) - 2
    entries = [(name, ino, start + i + 3, dtype)
               for i, (name, ino, dtype) in enumerate(names[start:start + 256])]
    if call.engine.policy.runs_program(d.node, "readdir"):
        data, count = abi.pack_dirents(entries, abi.DIRENT_BUFFER)
    else:                       # no program reads the records: only how many fit in one
        data, count = b"", abi.dirents_fitting(entries, abi.DIRENT_BUFFER)
    records = entries[:count]
    next_offset = records[-1][2] if records else call.page_offset
    return Page(records, data, next_offset, False, start + count >= len(names))


# -------------------------------------------------------------------- misc

def statfs(call: Any, frame: Any) -> os.statvfs_result:
    return os.statvfs(call.node.fd)   # fstatvfs on an O_PATH fd checks no permission


def access(node: Any, mask: int) -> None:
    if not os.access(sysio.proc_fd_path(node.fd), mask, effective_ids=True):
        raise OSError(errno.EACCES, "access denied")


def setxattr(call: Any, frame: Any) -> None:
    r = call.req
    os.setxattr(sysio.proc_fd_path(call.node.fd), r.name, r.value, r.flags)


def getxattr(node: Any, name: bytes) -> bytes:
    return os.getxattr(sysio.proc_fd_path(node.fd), name)


def listxattr(node: Any) -> bytes:
    return b"".join(os.fsencode(n) + b"\0" for n in os.listxattr(sysio.proc_fd_path(node.fd)))


def removexattr(call: Any, frame: Any) -> None:
    os.removexattr(sysio.proc_fd_path(call.node.fd), call.req.name)
