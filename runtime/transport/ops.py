"""FUSE opcode handlers: decode a request, call the engine, encode its result.

One handler per opcode the kernel sends to a passthrough filesystem,
registered in the `Dispatcher` table by `register_all`.  File handles,
directories and the operations pyfuse3 never delivered (lseek, fallocate,
copy_file_range, tmpfile) are in `fileops`.
"""
from __future__ import annotations

import errno
import struct
from typing import Any

from fdsl import abi

from ..engine import Engine
from . import fileops
from .calls import AttrChange, EngineCalls
from .dispatch import NO_REPLY, Dispatcher
from .protocol import (GETXATTR_OUT, OPCODES, Request, attr_out, entry_out, signed64,
                       statfs_out, xattr_list)

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


class Operations:
    """The handlers, bound to one engine."""

    def __init__(self, engine: Engine, setxattr_ext: bool = True) -> None:
        self.engine = EngineCalls(engine)
        self._setxattr_in = _SETXATTR_IN if setxattr_ext else _SETXATTR_IN_OLD

    # ----------------------------------------------------------- entries

    def lookup(self, req: Request) -> Any:
        (name,) = req.names()
        return entry_out(self.engine.lookup(req.nodeid, name, req.caller()))

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
        return attr_out(self.engine.getattr(req.nodeid, req.caller(),
                                            fh if flags & abi.FUSE_GETATTR_FH else None))

    def setattr(self, req: Request) -> Any:
        (valid, _, fh, size, _lock, atime, mtime, _ctime, atimensec, mtimensec, _ctimensec,
         mode, _, uid, gid, _) = req.struct(_SETATTR_IN)
        change = AttrChange()
        if valid & FATTR["FATTR_MODE"]:
            change.mode = mode
        if valid & FATTR["FATTR_UID"]:
            change.uid = uid
        if valid & FATTR["FATTR_GID"]:
            change.gid = gid
        if valid & FATTR["FATTR_SIZE"]:
            change.size = size
        if valid & FATTR["FATTR_ATIME"]:
            if valid & FATTR["FATTR_ATIME_NOW"]:
                change.atime_now = True
            else:
                change.atime_ns = signed64(atime) * 1_000_000_000 + atimensec
        if valid & FATTR["FATTR_MTIME"]:
            if valid & FATTR["FATTR_MTIME_NOW"]:
                # truncate(2) sends "mtime = now" with the size: the backing
                # truncate sets it (as the caller, who may not own the file).
                if change.size is None or valid & FATTR["FATTR_ATIME"]:
                    change.mtime_now = True
            else:
                change.mtime_ns = signed64(mtime) * 1_000_000_000 + mtimensec
        handle = fh if valid & FATTR["FATTR_FH"] else None
        return attr_out(self.engine.setattr(req.nodeid, change, handle, req.caller()))

    def readlink(self, req: Request) -> Any:
        return self.engine.readlink(req.nodeid, req.caller())

    def symlink(self, req: Request) -> Any:
        name, target = req.names(0, 2)
        return entry_out(self.engine.symlink(req.nodeid, name, target, req.caller()))

    def mknod(self, req: Request) -> Any:
        mode, rdev, umask, _ = req.struct(_MKNOD_IN)
        (name,) = req.names(_MKNOD_IN.size)
        return entry_out(self.engine.mknod(req.nodeid, name, mode, rdev, umask,
                                           req.caller(umask)))

    def mkdir(self, req: Request) -> Any:
        mode, umask = req.struct(_MKDIR_IN)
        (name,) = req.names(_MKDIR_IN.size)
        return entry_out(self.engine.mkdir(req.nodeid, name, mode, umask, req.caller(umask)))

    def unlink(self, req: Request) -> Any:
        (name,) = req.names()
        self.engine.unlink(req.nodeid, name, req.caller())

    def rmdir(self, req: Request) -> Any:
        (name,) = req.names()
        self.engine.rmdir(req.nodeid, name, req.caller())

    def rename(self, req: Request) -> Any:
        (newdir,) = req.struct(_RENAME_IN)
        old, new = req.names(_RENAME_IN.size, 2)
        self.engine.rename(req.nodeid, old, newdir, new, 0, req.caller())

    def rename2(self, req: Request) -> Any:
        newdir, flags, _ = req.struct(_RENAME2_IN)
        old, new = req.names(_RENAME2_IN.size, 2)
        self.engine.rename(req.nodeid, old, newdir, new, flags, req.caller())

    def link(self, req: Request) -> Any:
        (oldnodeid,) = req.struct(_LINK_IN)
        (name,) = req.names(_LINK_IN.size)
        return entry_out(self.engine.link(oldnodeid, req.nodeid, name, req.caller()))

    # -------------------------------------------------------------- misc

    def statfs(self, req: Request) -> Any:
        return statfs_out(self.engine.statfs(req.nodeid, req.caller()))

    def access(self, req: Request) -> Any:
        mask, _ = req.struct(_ACCESS_IN)
        self.engine.access(req.nodeid, mask, req.caller())

    def setxattr(self, req: Request) -> Any:
        size, flags, *_ = req.struct(self._setxattr_in)
        at = self._setxattr_in.size
        (name,) = req.names(at)
        start = at + len(name) + 1
        value = bytes(req.body[start:start + size])
        if len(value) != size:
            raise OSError(errno.EIO, "short setxattr value")
        self.engine.setxattr(req.nodeid, name, value, flags, req.caller())

    def getxattr(self, req: Request) -> Any:
        size, _ = req.struct(_GETXATTR_IN)
        (name,) = req.names(_GETXATTR_IN.size)
        return _sized(self.engine.getxattr(req.nodeid, name, size, req.caller()), size)

    def listxattr(self, req: Request) -> Any:
        size, _ = req.struct(_GETXATTR_IN)
        return _sized(xattr_list(self.engine.listxattr(req.nodeid, size, req.caller())), size)

    def removexattr(self, req: Request) -> Any:
        (name,) = req.names()
        self.engine.removexattr(req.nodeid, name, req.caller())

    def interrupt(self, req: Request) -> Any:
        # Backing syscalls cannot be interrupted from here; the interrupted
        # request completes normally (the kernel discards a late reply).
        return NO_REPLY

    def destroy(self, req: Request) -> Any:
        return None


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
