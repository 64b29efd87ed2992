"""FUSE opcode handlers: decode a request, call the engine, encode its result.

One handler per opcode the kernel sends to a passthrough filesystem,
registered in the `Dispatcher` table by `register_all`.  File handles,
directories and the operations pyfuse3 never delivered (lseek, fallocate,
copy_file_range, tmpfile) are in `fileops`.
"""
from __future__ import annotations

import errno
import os
import struct
from typing import Any

from fdsl import abi

from .. import requests as R
from ..engine import Engine
from . import fileops
from .dispatch import NO_REPLY, Dispatcher
from .protocol import (GETXATTR_OUT, OPCODES, Request, attr_out, entry_out, signed64,
                       split_timeout, statfs_out, xattr_list)

FATTR = abi.FATTR
_FORGET_IN = abi.FUSE_FORGET_IN.codec
_BATCH_FORGET_IN = abi.FUSE_BATCH_FORGET_IN.codec
_FORGET_ONE = abi.FUSE_FORGET_ONE.codec
_GETATTR_IN = abi.FUSE_GETATTR_IN.codec
_SETATTR_IN = abi.FUSE_SETATTR_IN.codec
_MKNOD_IN = abi.FUSE_MKNOD_IN.codec
_MKDIR_IN = abi.FUSE_MKDIR_IN.codec
_RENAME_IN = abi.FUSE_RENAME_IN.codec
_RENAME2_IN = abi.FUSE_RENAME2_IN.codec
_LINK_IN = abi.FUSE_LINK_IN.codec
_SETXATTR_IN = abi.FUSE_SETXATTR_IN.codec
_SETXATTR_IN_OLD = struct.Struct("<II")       # without FUSE_SETXATTR_EXT
_GETXATTR_IN = abi.FUSE_GETXATTR_IN.codec
_ACCESS_IN = abi.FUSE_ACCESS_IN.codec
_STATX_IN = abi.FUSE_STATX_IN.codec
_IOCTL_IN = abi.FUSE_IOCTL_IN.codec
_IOCTL_OUT = abi.FUSE_IOCTL_OUT.codec
_IOCTL_UNRESTRICTED = 1 << 1             # FUSE_IOCTL_UNRESTRICTED (CUSE only)
_STATX_OUT = abi.FUSE_STATX_OUT.codec
_STATX_BASIC_STATS, _STATX_BTIME = 0x7FF, 0x800
_MODE, _UID, _GID, _SIZE = (FATTR[f"FATTR_{n}"] for n in ("MODE", "UID", "GID", "SIZE"))
_ATIME, _MTIME, _MTIME_NOW = FATTR["FATTR_ATIME"], FATTR["FATTR_MTIME"], FATTR["FATTR_MTIME_NOW"]
_ATIME_BOTH = _ATIME | FATTR["FATTR_ATIME_NOW"]
_MTIME_BOTH = _MTIME | _MTIME_NOW


def _ns(seconds: int, nsec: int) -> int:
    return signed64(seconds) * 1_000_000_000 + nsec


class Operations:
    """The handlers, bound to one engine: each builds the engine's request record
    (`runtime/requests.py`) and hands it to `Engine.dispatch`."""

    def __init__(self, engine: Engine, setxattr_ext: bool = True) -> None:
        self.engine = engine
        self.do = engine.dispatch
        self._setxattr_in = _SETXATTR_IN if setxattr_ext else _SETXATTR_IN_OLD

    # ----------------------------------------------------------- entries

    def lookup(self, req: Request) -> Any:
        (name,) = req.names()
        return entry_out(self.do(R.Lookup(req.caller(), req.nodeid, name)))

    def forget(self, req: Request) -> Any:
        (nlookup,) = req.struct(_FORGET_IN)
        self.engine.forget(req.nodeid, nlookup)
        return NO_REPLY

    def batch_forget(self, req: Request) -> Any:
        count, _ = req.struct(_BATCH_FORGET_IN)
        at = _BATCH_FORGET_IN.size
        for _ in range(min(count, (len(req.body) - at) // _FORGET_ONE.size)):
            nodeid, nlookup = _FORGET_ONE.unpack_from(req.body, at)
            self.engine.forget(nodeid, nlookup)
            at += _FORGET_ONE.size
        return NO_REPLY

    def getattr(self, req: Request) -> Any:
        flags, _, fh = req.struct(_GETATTR_IN)
        on_file = flags & abi.FUSE_GETATTR_FH
        return attr_out(self.do(R.Getattr(req.caller(), req.nodeid, fh if on_file else None,
                                          on_file)))

    def setattr(self, req: Request) -> Any:
        (valid, _, fh, size, _lock, atime, mtime, _ctime, atimensec, mtimensec, _ctimensec,
         mode, _, uid, gid, _) = req.struct(_SETATTR_IN)
        has_size = bool(valid & _SIZE)
        atime_now = valid & _ATIME_BOTH == _ATIME_BOTH
        # truncate(2) sends "mtime = now" with the size: the backing truncate sets
        # it (as the caller, who may not own the file).
        mtime_now = valid & _MTIME_BOTH == _MTIME_BOTH and (not has_size or bool(valid & _ATIME))
        return attr_out(self.do(R.Setattr(
            req.caller(), req.nodeid,
            mode=mode if valid & _MODE else None,
            uid=uid if valid & _UID else None,
            gid=gid if valid & _GID else None,
            size=size if has_size else None,
            atime_ns=_ns(atime, atimensec) if valid & _ATIME and not atime_now else None,
            mtime_ns=_ns(mtime, mtimensec) if valid & _MTIME and not valid & _MTIME_NOW
            else None,
            atime_now=atime_now, mtime_now=mtime_now,
            fh=fh if valid & FATTR["FATTR_FH"] else None)))

    def statx(self, req: Request) -> Any:
        """FUSE_STATX (statx(2) asking more than the basic stats, e.g. STATX_BTIME): the
        basic stats are GETATTR's (its rules run), the birth time the backing inode's."""
        flags, _, fh, _sx_flags, _sx_mask = req.struct(_STATX_IN)
        on_file = flags & abi.FUSE_GETATTR_FH
        attr = self.do(R.Getattr(req.caller(), req.nodeid, fh if on_file else None, on_file))
        return _statx_out(attr, self.engine.btime(req.nodeid))

    def readlink(self, req: Request) -> Any:
        return self.do(R.Readlink(req.caller(), req.nodeid))

    def symlink(self, req: Request) -> Any:
        name, target = req.names(0, 2)
        return entry_out(self.do(R.Symlink(req.caller(), req.nodeid, name, target)))

    def mknod(self, req: Request) -> Any:
        mode, rdev, umask, _ = req.struct(_MKNOD_IN)
        (name,) = req.names(_MKNOD_IN.size)
        return entry_out(self.do(R.Mknod(req.caller(umask), req.nodeid, name, mode, rdev,
                                         umask)))

    def mkdir(self, req: Request) -> Any:
        mode, umask = req.struct(_MKDIR_IN)
        (name,) = req.names(_MKDIR_IN.size)
        return entry_out(self.do(R.Mkdir(req.caller(umask), req.nodeid, name, mode, umask)))

    def unlink(self, req: Request) -> Any:
        (name,) = req.names()
        self.do(R.Unlink(req.caller(), req.nodeid, name))

    def rmdir(self, req: Request) -> Any:
        (name,) = req.names()
        self.do(R.Rmdir(req.caller(), req.nodeid, name))

    def rename(self, req: Request) -> Any:
        (newdir,) = req.struct(_RENAME_IN)
        old, new = req.names(_RENAME_IN.size, 2)
        self.do(R.Rename(req.caller(), req.nodeid, old, newdir, new, 0))

    def rename2(self, req: Request) -> Any:
        newdir, flags, _ = req.struct(_RENAME2_IN)
        old, new = req.names(_RENAME2_IN.size, 2)
        self.do(R.Rename(req.caller(), req.nodeid, old, newdir, new, flags))

    def link(self, req: Request) -> Any:
        (oldnodeid,) = req.struct(_LINK_IN)
        (name,) = req.names(_LINK_IN.size)
        return entry_out(self.do(R.Link(req.caller(), oldnodeid, req.nodeid, name)))

    # -------------------------------------------------------------- misc

    def statfs(self, req: Request) -> Any:
        return statfs_out(self.do(R.Statfs(req.caller(), req.nodeid)))

    def access(self, req: Request) -> Any:
        mask, _ = req.struct(_ACCESS_IN)
        self.do(R.Access(req.caller(), req.nodeid, mask))

    def setxattr(self, req: Request) -> Any:
        size, flags, *_ = req.struct(self._setxattr_in)
        at = self._setxattr_in.size
        (name,) = req.names(at)
        start = at + len(name) + 1
        value = bytes(req.body[start:start + size])
        if len(value) != size:
            raise OSError(errno.EIO, "short setxattr value")
        self.do(R.Setxattr(req.caller(), req.nodeid, name, value, flags))

    def getxattr(self, req: Request) -> Any:
        size, _ = req.struct(_GETXATTR_IN)
        (name,) = req.names(_GETXATTR_IN.size)
        # size 0 asks for the length: programs see that shape (fuse_getxattr_out)
        return _sized(self.do(R.Getxattr(req.caller(), req.nodeid, name, size)), size)

    def listxattr(self, req: Request) -> Any:
        size, _ = req.struct(_GETXATTR_IN)
        return _sized(xattr_list(self.do(R.Listxattr(req.caller(), req.nodeid, size))), size)

    def removexattr(self, req: Request) -> Any:
        (name,) = req.names()
        self.do(R.Removexattr(req.caller(), req.nodeid, name))

    def poll(self, req: Request) -> Any:
        """ENOSYS: the kernel stops asking and reports DEFAULT_POLLMASK (readable and
        writable) for every file of the mount, which is what regular files and
        directories of a local filesystem report (they have no poll method); other
        file types never reach a FUSE server."""
        raise OSError(errno.ENOSYS, "poll: the kernel's default mask")

    def ioctl(self, req: Request) -> Any:
        """The read-only attribute flags ioctls (FS_IOC_GETFLAGS, FS_IOC_FSGETXATTR: what
        lsattr reads through the kernel's fileattr_get) are answered from the backing
        file; every other command gets ENOSYS, which the kernel turns into ENOTTY (an
        arbitrary command run by the daemon on the backing file cannot be checked
        against the caller's rights; see docs/architecture.md)."""
        fh, flags, cmd, _arg, in_size, out_size = req.struct(_IOCTL_IN)
        if in_size or flags & _IOCTL_UNRESTRICTED:
            raise OSError(errno.ENOSYS, "ioctl: not passed on")
        try:
            data = self.engine.read_ioctl(fh, cmd, out_size)
        except OSError as err:
            if err.errno == errno.ENOTTY:
                raise OSError(errno.ENOSYS, "ioctl: not passed on") from None
            raise
        return [_IOCTL_OUT.pack(0, 0, 0, 0), data]

    def destroy(self, req: Request) -> Any:
        return None


def _sx_time(ns: int) -> tuple[int, int, int]:
    return ns // 1_000_000_000, ns % 1_000_000_000, 0


def _statx_out(attr: Any, btime: tuple[int, int] | None) -> bytes:
    """fuse_statx_out from GETATTR's attributes and the backing birth time."""
    valid, valid_ns = split_timeout(attr.timeout)
    mask = _STATX_BASIC_STATS | (_STATX_BTIME if btime is not None else 0)
    birth = (*btime, 0) if btime is not None else (0, 0, 0)
    return _STATX_OUT.pack(
        valid, valid_ns, 0, mask, attr.blksize & 0xFFFFFFFF, 0, attr.nlink,
        attr.uid & 0xFFFFFFFF, attr.gid & 0xFFFFFFFF, attr.mode & 0xFFFF, attr.ino, attr.size,
        attr.blocks, 0, *_sx_time(attr.atime_ns), *birth, *_sx_time(attr.ctime_ns),
        *_sx_time(attr.mtime_ns), os.major(attr.rdev), os.minor(attr.rdev), 0, 0)


def _sized(data: bytes, size: int) -> Any:
    """GETXATTR/LISTXATTR: size 0 asks for the length only; too small a buffer is ERANGE."""
    if size == 0:
        return GETXATTR_OUT.pack(len(data), 0)
    if len(data) > size:
        raise OSError(errno.ERANGE, "buffer too small")
    return data


def register_all(dispatcher: Dispatcher, engine: Engine, files: "fileops.FileOperations",
                 setxattr_ext: bool) -> Operations:
    """Register every handler under its opcode number."""
    ops = Operations(engine, setxattr_ext)
    for holder in (ops, files):
        for name, number in OPCODES.items():
            handler = getattr(holder, name, None)
            if handler is not None:
                dispatcher.register(number, handler)
    return ops
