"""The operation table: one row per FUSE opcode, modelled on fuse-bpf's backing.c.

Each `Row` says where the operation's node comes from (`target`), whether the
backing step runs with the caller's credentials, which request attributes are
component names, and four steps:

    inputs(call, frame)         initialize the inputs: the request (plus the
                                kernel's defaults from `fdsl.abi.requests`) into
                                the argument frame, output presets included
    backing(call, frame|None)   the operation on the backing inode; with a frame
                                it reads the inputs the kernel honours from it
                                (PRE may have rewritten them), without one the
                                request's own values (no program, or a classic
                                request after a PRE result without BACKING)
    outputs(frame, value)       initialize the outputs from the backing result,
                                only when a POST program will read them
    finalize(call, value, frame|None)   the typed result; with a frame (POST ran)
                                the finalized outputs come from it

`fields` lists every language field a row's steps touch; `tests/runtime`
checks them (and the codecs, which fail at import) against `fdsl.abi`.  The
driver that runs a row is `Engine.dispatch` (`runtime/engine.py`); the
backing steps themselves are in `runtime/backing.py`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

from fdsl import abi
from fdsl.abi import requests as kernel
from fdsl.vm.frame import FieldCodec, Frame

from . import backing as B
from . import requests as R
from .requests import ATTR, Attr, stat_values

# ------------------------------------------------------------------ codecs

GETATTR_IN = FieldCodec(abi.FUSE_GETATTR_IN, "getattr_flags", "fh")
SETATTR_IN = FieldCodec(abi.FUSE_SETATTR_IN, "valid", "fh", "size", "atime", "mtime",
                        "atimensec", "mtimensec", "mode", "uid", "gid")
OPEN_IN = FieldCodec(abi.FUSE_OPEN_IN, "flags", "open_flags")
OPEN_OUT = FieldCodec(abi.FUSE_OPEN_OUT, "fh")
CREATE_IN = FieldCodec(abi.FUSE_CREATE_IN, "flags", "mode", "umask")
MKNOD_IN = FieldCodec(abi.FUSE_MKNOD_IN, "mode", "rdev", "umask")
MKDIR_IN = FieldCodec(abi.FUSE_MKDIR_IN, "mode", "umask")
RENAME_IN = FieldCodec(abi.FUSE_RENAME_IN, "newdir")
RENAME2_IN = FieldCodec(abi.FUSE_RENAME2_IN, "newdir", "flags")
LINK_IN = FieldCodec(abi.FUSE_LINK_IN, "oldnodeid")
READ_IN = FieldCodec(abi.FUSE_READ_IN, "fh", "offset", "size")
WRITE_IN = FieldCodec(abi.FUSE_WRITE_IN, "fh", "offset", "size")
RW_RET = FieldCodec(abi.RW_RESULT, "ret")
READ_OUT = FieldCodec(abi.FUSE_READ_OUT, "offset", "again")
RELEASE_IN = FieldCodec(abi.FUSE_RELEASE_IN, "fh", "flags")
FLUSH_IN = FieldCodec(abi.FUSE_FLUSH_IN, "fh")
FSYNC_IN = FieldCodec(abi.FUSE_FSYNC_IN, "fh", "fsync_flags")
LSEEK_IN = FieldCodec(abi.FUSE_LSEEK_IN, "fh", "offset", "whence")
LSEEK_OUT = FieldCodec(abi.FUSE_LSEEK_OUT, "offset")
FALLOCATE_IN = FieldCodec(abi.FUSE_FALLOCATE_IN, "fh", "offset", "length", "mode")
COPY_IN = FieldCodec(abi.FUSE_COPY_FILE_RANGE_IN, "fh_in", "off_in", "nodeid_out", "fh_out",
                     "off_out", "len", "flags")
ACCESS_IN = FieldCodec(abi.FUSE_ACCESS_IN, "mask")
SETXATTR_IN = FieldCodec(abi.FUSE_SETXATTR_IN, "size", "flags")
GETXATTR_IN = FieldCodec(abi.FUSE_GETXATTR_IN, "size")
GETXATTR_OUT = FieldCodec(abi.FUSE_GETXATTR_OUT, "size")
STATFS_OUT = FieldCodec(abi.FUSE_STATFS_OUT, "blocks", "bfree", "bavail", "files", "ffree",
                        "bsize", "namelen", "frsize")
ENTRY_NODEID = FieldCodec(abi.FUSE_ENTRY_OUT, "nodeid")
ENTRY_BPF = FieldCodec(abi.FUSE_ENTRY_BPF_OUT, "backing_action", "bpf_action")
ATTR_OUT = FieldCodec(abi.FUSE_ATTR_OUT, "attr_valid", "attr_valid_nsec",
                      *(f"attr.{name}" for name in R.ATTR_FIELDS if name != "flags"))
_NSEC = 10**9
ENTRY_ATTR_AT = ENTRY_NODEID.struct.size - abi.FUSE_ATTR.size       # 40: fuse_attr inside
ATTR_OUT_ATTR_AT = abi.FUSE_ATTR_OUT.size - abi.FUSE_ATTR.size       # 16: fuse_attr inside
_NUL = b"\0"


def _name(frame: Frame, index: int, name: bytes) -> None:
    frame.set_input(index, name + _NUL)


@dataclass(frozen=True)
class Row:
    op: str                                  # abi opcode name
    record: type
    target: str                              # node | parent | file | dir | file_release | dir_release
    as_caller: bool
    inputs: Callable[[Any, Frame], None]
    backing: Callable[[Any, Frame | None], Any]
    finalize: Callable[[Any, Any, Frame | None], Any]
    outputs: Callable[[Frame, Any], None] | None = None
    cleanup: Callable[[Any], None] | None = None
    names: tuple[str, ...] = ()              # record attributes that are component names
    fields: tuple[str, ...] = ()             # language fields the steps touch
    ctx_nodeid_zero: bool = False            # LINK: the context's nodeid is not set
    may_block: bool = False                  # may wait long (data I/O, syncs): `MAY_BLOCK`

    @property
    def spec(self) -> abi.OpSpec:
        return abi.OPS[self.op]


def _nothing(frame: Frame, value: Any) -> None:
    return None


def _none(call: Any, value: Any, frame: Frame | None) -> None:
    return None


# ------------------------------------------------------------------ lookup

def lookup_inputs(call: Any, frame: Frame) -> None:
    _name(frame, 0, call.req.name)


def lookup_outputs(frame: Frame, value: B.Found) -> None:
    view, at, nodeid = frame.view, frame.out_off[0], value.ctx_nodeid
    ENTRY_NODEID.pack_into(view, at, nodeid)
    ATTR.pack_into(view, at + ENTRY_ATTR_AT, *stat_values(nodeid, value.st))


def lookup_finalize(call: Any, value: B.Found, frame: Frame | None) -> R.Entry:
    if frame is None:
        return call.engine.attach_found(call, value, 0, abi.ACTION_KEEP, abi.ACTION_KEEP)
    nodeid = ENTRY_NODEID.unpack_from(frame.view, frame.out_off[0])[0]
    backing_action, bpf_action = ENTRY_BPF.unpack_from(frame.view, frame.out_off[1])
    return call.engine.attach_found(call, value, nodeid, backing_action, bpf_action)


# ----------------------------------------------------------------- getattr

def getattr_inputs(call: Any, frame: Frame) -> None:
    fh = call.req.fh
    GETATTR_IN.pack_into(frame.view, frame.in_off[0], call.req.flags,
                         kernel.GETATTR_NO_FH if fh is None else fh)


def getattr_outputs(frame: Frame, st: os.stat_result) -> None:
    # attr_valid = 1 s, then fuse_attr: one codec for the whole fuse_attr_out
    a, m, c = st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns
    ATTR_OUT.pack_into(frame.view, frame.out_off[0], 1, 0, frame.nodeid, st.st_size,
                       st.st_blocks, a // _NSEC, m // _NSEC, c // _NSEC, a % _NSEC, m % _NSEC,
                       c % _NSEC,
                       st.st_mode, st.st_nlink, st.st_uid, st.st_gid, st.st_rdev & 0xFFFFFFFF,
                       st.st_blksize)


def getattr_finalize(call: Any, st: os.stat_result, frame: Frame | None) -> Attr:
    node = call.node
    timeout = call.engine.attr_timeout(node, filtered=True)
    if frame is None:
        return Attr.from_stat(node.nodeid, st, timeout)
    attr = Attr.from_fuse(ATTR.unpack_from(frame.view, frame.out_off[0] + ATTR_OUT_ATTR_AT),
                          timeout)
    attr.ino = node.nodeid
    return attr


# ----------------------------------------------------------------- setattr

def setattr_inputs(call: Any, frame: Frame) -> None:
    r = call.req
    valid = kernel.setattr_valid(
        mode=r.mode is not None, uid=r.uid is not None, gid=r.gid is not None,
        size=r.size is not None, atime=r.atime_ns is not None, mtime=r.mtime_ns is not None,
        atime_now=r.atime_now, mtime_now=r.mtime_now, fh=r.fh is not None)
    a, m = r.atime_ns or 0, r.mtime_ns or 0
    SETATTR_IN.pack_into(frame.view, frame.in_off[0], valid, r.fh or 0, r.size or 0,
                         a // 10**9, m // 10**9, a % 10**9, m % 10**9, r.mode or 0,
                         r.uid or 0, r.gid or 0)


def setattr_values(call: Any, frame: Frame | None) -> B.SetattrValues:
    r = call.req
    if frame is None:
        return B.SetattrValues(r.mode or 0, r.uid or 0, r.gid or 0, r.size or 0,
                               r.atime_ns or 0, r.mtime_ns or 0)
    (_valid, _fh, size, atime, mtime, atimensec, mtimensec, mode, uid,
     gid) = SETATTR_IN.unpack_from(frame.view, frame.in_off[0])
    return B.SetattrValues(mode, uid, gid, size, atime * 10**9 + atimensec,
                           mtime * 10**9 + mtimensec)


def setattr_backing(call: Any, frame: Frame | None) -> os.stat_result:
    return B.setattr(call, setattr_values(call, frame))


def setattr_finalize(call: Any, st: os.stat_result, frame: Frame | None) -> Attr:
    return call.engine.attr_of(call.node, st)


# -------------------------------------------------------- namespace: create

def mknod_inputs(call: Any, frame: Frame) -> None:
    r = call.req
    MKNOD_IN.pack_into(frame.view, frame.in_off[0], r.mode, r.rdev, r.umask)
    _name(frame, 1, r.name)


def mknod_backing(call: Any, frame: Frame | None) -> None:
    r = call.req
    mode, rdev, umask = (r.mode, r.rdev, r.umask) if frame is None else \
        MKNOD_IN.unpack_from(frame.view, frame.in_off[0])
    B.mknod(call, mode, rdev, umask)


def mkdir_inputs(call: Any, frame: Frame) -> None:
    MKDIR_IN.pack_into(frame.view, frame.in_off[0], call.req.mode, call.req.umask)
    _name(frame, 1, call.req.name)


def mkdir_backing(call: Any, frame: Frame | None) -> None:
    r = call.req
    mode, umask = (r.mode, r.umask) if frame is None else \
        MKDIR_IN.unpack_from(frame.view, frame.in_off[0])
    B.mkdir(call, mode, umask)


def symlink_inputs(call: Any, frame: Frame) -> None:
    _name(frame, 0, call.req.name)
    _name(frame, 1, call.req.target)


def created_finalize(call: Any, value: Any, frame: Frame | None) -> R.Entry:
    return call.engine.created(call, call.req.name)


def link_inputs(call: Any, frame: Frame) -> None:
    LINK_IN.pack_into(frame.view, frame.in_off[0], call.other.ctx_nodeid)
    _name(frame, 1, call.req.new_name)


def link_finalize(call: Any, value: Any, frame: Frame | None) -> R.Entry:
    return call.engine.linked(call)


def create_inputs(call: Any, frame: Frame) -> None:
    r = call.req
    # §9: flags as OPEN's, umask and open_flags 0 in the context
    CREATE_IN.pack_into(frame.view, frame.in_off[0], r.flags & ~kernel.OPEN_FLAGS_DROPPED,
                        r.mode, 0)
    _name(frame, 1, r.name)


def create_backing(call: Any, frame: Frame | None) -> B.Made:
    r = call.req
    if frame is None:
        return B.create(call, r.name, r.flags, r.mode)
    _flags, mode, _umask = CREATE_IN.unpack_from(frame.view, frame.in_off[0])
    return B.create(call, frame.input_string(1), r.flags, mode)   # honours mode and name


def create_finalize(call: Any, made: B.Made, frame: Frame | None) -> R.Opened:
    nodeid = 0 if frame is None else ENTRY_NODEID.unpack_from(frame.view, frame.out_off[0])[0]
    return call.engine.created_open(call, made, nodeid)


# -------------------------------------------------------- namespace: remove

def name_inputs(call: Any, frame: Frame) -> None:
    _name(frame, 0, call.req.name)


def rename_inputs(call: Any, frame: Frame) -> None:
    r = call.req
    if r.flags:
        RENAME2_IN.pack_into(frame.view, frame.in_off[0], call.other.ctx_nodeid, r.flags)
    else:
        RENAME_IN.pack_into(frame.view, frame.in_off[0], call.other.ctx_nodeid)
    _name(frame, 1, r.name)
    _name(frame, 2, r.new_name)


def rename_backing(call: Any, frame: Frame | None) -> None:
    flags = call.req.flags
    if frame is not None and flags:   # RENAME2 honours its flags
        flags = RENAME2_IN.unpack_from(frame.view, frame.in_off[0])[1]
    B.rename(call, flags)


# -------------------------------------------------------------- open files

def open_inputs(call: Any, frame: Frame) -> None:
    OPEN_IN.pack_into(frame.view, frame.in_off[0],
                      call.req.flags & ~kernel.OPEN_FLAGS_DROPPED, 0)


def open_flags(call: Any, frame: Frame | None) -> int:
    if frame is None:
        return call.req.flags
    return OPEN_IN.unpack_from(frame.view, frame.in_off[0])[0]


def open_finalize(call: Any, fd: int, frame: Frame | None) -> R.Opened:
    bpf_fh = 0 if frame is None else OPEN_OUT.unpack_from(frame.view, frame.out_off[0])[0]
    return call.engine.opened(call, fd, bpf_fh)


def fh_of(call: Any) -> int:
    return call.handle.bpf_fh or call.req.fh


def read_inputs(call: Any, frame: Frame) -> None:
    r = call.req
    READ_IN.pack_into(frame.view, frame.in_off[0], fh_of(call), r.offset, r.size)
    RW_RET.pack_into(frame.view, frame.out_off[0], r.size)   # preset (abi.requests)


def rw_outputs(frame: Frame, value: Any) -> None:
    RW_RET.pack_into(frame.view, frame.out_off[0], len(value) if isinstance(value, bytes)
                     else value)


def rw_ret(frame: Frame) -> int:
    """READ/WRITE's out.ret as POST left it; a negative value fails the operation."""
    ret = int(RW_RET.unpack_from(frame.view, frame.out_off[0])[0])
    if ret < 0:
        raise OSError(-ret, f"{frame.shape.spec.name} failed")
    return ret


def read_finalize(call: Any, data: bytes, frame: Frame | None) -> bytes:
    return data if frame is None else data[:rw_ret(frame)]


def write_inputs(call: Any, frame: Frame) -> None:
    r = call.req
    n = len(r.data)
    WRITE_IN.pack_into(frame.view, frame.in_off[0], fh_of(call), r.offset, n)
    frame.set_null_input(1, n)                                # data: NULL, size = bytes
    RW_RET.pack_into(frame.view, frame.out_off[0], n)         # preset (abi.requests)


def write_finalize(call: Any, n: int, frame: Frame | None) -> int:
    return n if frame is None else rw_ret(frame)


def flush_inputs(call: Any, frame: Frame) -> None:
    FLUSH_IN.pack_into(frame.view, frame.in_off[0], fh_of(call))


def release_inputs(call: Any, frame: Frame) -> None:
    RELEASE_IN.pack_into(frame.view, frame.in_off[0], fh_of(call), call.handle.flags)


def fsync_inputs(call: Any, frame: Frame) -> None:
    FSYNC_IN.pack_into(frame.view, frame.in_off[0], fh_of(call),
                       kernel.fsync_flags(call.req.datasync))


def fsync_backing(call: Any, frame: Frame | None) -> None:
    flags = kernel.fsync_flags(call.req.datasync) if frame is None else \
        FSYNC_IN.unpack_from(frame.view, frame.in_off[0])[1]
    B.fsync(call.handle.fd, flags)


def lseek_inputs(call: Any, frame: Frame) -> None:
    r = call.req
    LSEEK_IN.pack_into(frame.view, frame.in_off[0], fh_of(call), r.offset, r.whence)


def lseek_backing(call: Any, frame: Frame | None) -> int:
    r = call.req
    if frame is None or (r.offset == 0 and r.whence in (os.SEEK_SET, os.SEEK_CUR)):
        return B.lseek(call, r.offset, r.whence)   # §9: the fast paths use the originals
    _fh, offset, whence = LSEEK_IN.unpack_from(frame.view, frame.in_off[0])
    return B.lseek(call, offset, whence)


def lseek_outputs(frame: Frame, offset: int) -> None:
    LSEEK_OUT.pack_into(frame.view, frame.out_off[0], offset)


def lseek_finalize(call: Any, offset: int, frame: Frame | None) -> int:
    """The file position := out.offset as POST left it (§9)."""
    return offset if frame is None else int(LSEEK_OUT.unpack_from(frame.view,
                                                                   frame.out_off[0])[0])


def fallocate_inputs(call: Any, frame: Frame) -> None:
    r = call.req
    FALLOCATE_IN.pack_into(frame.view, frame.in_off[0], fh_of(call), r.offset, r.length,
                           r.mode)


def fallocate_backing(call: Any, frame: Frame | None) -> None:
    r = call.req
    if frame is None:
        return B.fallocate(call, r.mode, r.offset, r.length)
    _fh, offset, length, mode = FALLOCATE_IN.unpack_from(frame.view, frame.in_off[0])
    return B.fallocate(call, mode, offset, length)


def copy_inputs(call: Any, frame: Frame) -> None:
    r, out = call.req, call.other_handle
    COPY_IN.pack_into(frame.view, frame.in_off[0], fh_of(call), r.off_in, out.node.ctx_nodeid,
                      out.bpf_fh or r.fh_out, r.off_out, r.len, r.flags)


def copy_backing(call: Any, frame: Frame | None) -> int:
    r = call.req
    if frame is None:
        return B.copy_file_range(call, r.off_in, r.off_out, r.len, r.flags)
    _fh, off_in, _nodeid, _fh_out, off_out, length, flags = \
        COPY_IN.unpack_from(frame.view, frame.in_off[0])
    return B.copy_file_range(call, off_in, off_out, length, flags)


def copy_finalize(call: Any, copied: int, frame: Frame | None) -> int:
    return copied       # out (fuse_write_out) is never filled nor read back (§9)


# ------------------------------------------------------------- directories

def readdir_inputs(call: Any, frame: Frame) -> None:
    READ_IN.pack_into(frame.view, frame.in_off[0], fh_of(call), call.page_offset,
                      kernel.INPUT_DEFAULTS["readdir"]["in.size"])


def readdir_outputs(frame: Frame, page: B.Page) -> None:
    READ_OUT.pack_into(frame.view, frame.out_off[0], page.next_offset, 0)
    frame.set_output(1, page.data)


def readdir_finalize(call: Any, page: B.Page, frame: Frame | None) -> B.Page:
    if frame is None:
        return page
    offset, again = READ_OUT.unpack_from(frame.view, frame.out_off[0])
    records = abi.parse_dirents(frame.output_view(1))
    return B.Page(records, b"", offset, bool(again), page.snapshot_end)


# -------------------------------------------------------------------- misc

def statfs_outputs(frame: Frame, s: os.statvfs_result) -> None:
    STATFS_OUT.pack_into(frame.view, frame.out_off[0], s.f_blocks, s.f_bfree, s.f_bavail,
                         s.f_files, s.f_ffree, s.f_bsize, s.f_namemax, s.f_frsize)


def statfs_finalize(call: Any, s: os.statvfs_result, frame: Frame | None) -> R.StatFs:
    if frame is None:
        return R.StatFs(s.f_bsize, s.f_frsize, s.f_blocks, s.f_bfree, s.f_bavail, s.f_files,
                        s.f_ffree, s.f_favail, s.f_namemax)
    blocks, bfree, bavail, files, ffree, bsize, namelen, frsize = \
        STATFS_OUT.unpack_from(frame.view, frame.out_off[0])
    return R.StatFs(bsize, frsize, blocks, bfree, bavail, files, ffree, s.f_favail, namelen)


def access_backing(call: Any, frame: Frame | None) -> None:
    mask = call.req.mask if frame is None else \
        ACCESS_IN.unpack_from(frame.view, frame.in_off[0])[0]
    B.access(call.node, mask)


def setxattr_inputs(call: Any, frame: Frame) -> None:
    r = call.req
    SETXATTR_IN.pack_into(frame.view, frame.in_off[0], len(r.value), r.flags)
    _name(frame, 1, r.name)
    frame.set_input(2, r.value)


def getxattr_inputs(call: Any, frame: Frame) -> None:
    GETXATTR_IN.pack_into(frame.view, frame.in_off[0], call.req.size)
    _name(frame, 1, call.req.name)


def getxattr_backing(call: Any, frame: Frame | None) -> bytes:
    name = call.req.name if frame is None else frame.input_string(1)   # honours the name
    return B.getxattr(call.node, name)


def listxattr_inputs(call: Any, frame: Frame) -> None:
    GETXATTR_IN.pack_into(frame.view, frame.in_off[0], call.req.size)


def xattr_outputs(frame: Frame, value: bytes) -> None:
    if frame.shape.outputs[0].kind == "struct":   # size 0: fuse_getxattr_out.size
        GETXATTR_OUT.pack_into(frame.view, frame.out_off[0], len(value))
    else:
        frame.set_output(0, value[:frame.shape.out_window[0]])


def xattr_finalize(call: Any, value: bytes, frame: Frame | None) -> bytes:
    if frame is None or frame.shape.outputs[0].kind == "struct":
        return value
    return frame.output_bytes(0)


def listxattr_finalize(call: Any, value: bytes, frame: Frame | None) -> list[bytes]:
    return [n for n in xattr_finalize(call, value, frame).split(_NUL) if n]


def _row(op: str, record: type, target: str, as_caller: bool, inputs: Callable,
         backing: Callable, finalize: Callable = _none, **kw: Any) -> Row:
    return Row(op, record, target, as_caller, inputs, backing, finalize, **kw)


_NS = "parent"
TABLE: dict[str, Row] = {row.op: row for row in (
    _row("lookup", R.Lookup, _NS, True, lookup_inputs, B.lookup, lookup_finalize,
         outputs=lookup_outputs, cleanup=B.close_found, names=("name",),
         fields=("name", "out.nodeid", "out.attr.ino", "out.backing_action", "out.bpf_action")),
    _row("getattr", R.Getattr, "node", False, getattr_inputs, B.getattr, getattr_finalize,
         outputs=getattr_outputs,
         fields=("in.getattr_flags", "in.fh", "out.attr_valid", "out.attr.mode")),
    _row("setattr", R.Setattr, "node", True, setattr_inputs, setattr_backing,
         setattr_finalize, fields=("in.valid", "in.fh", "in.size", "in.mode", "in.uid",
                                   "in.gid", "in.atime", "in.mtime", "in.atimensec",
                                   "in.mtimensec")),
    _row("readlink", R.Readlink, "node", False, lambda c, f: _name(f, 0, b""), B.readlink,
         lambda c, v, f: v, fields=("name",)),
    _row("symlink", R.Symlink, _NS, True, symlink_inputs, B.symlink, created_finalize,
         names=("name",), fields=("name", "target")),
    _row("mknod", R.Mknod, _NS, True, mknod_inputs, mknod_backing, created_finalize,
         names=("name",), fields=("in.mode", "in.rdev", "in.umask", "name")),
    _row("mkdir", R.Mkdir, _NS, True, mkdir_inputs, mkdir_backing, created_finalize,
         names=("name",), fields=("in.mode", "in.umask", "name")),
    _row("unlink", R.Unlink, _NS, True, name_inputs, B.unlink, names=("name",),
         fields=("name",)),
    _row("rmdir", R.Rmdir, _NS, True, name_inputs, B.rmdir, names=("name",), fields=("name",)),
    _row("rename", R.Rename, _NS, True, rename_inputs, rename_backing,
         names=("name", "new_name"), fields=("in.newdir", "name", "newname")),
    _row("rename2", R.Rename, _NS, True, rename_inputs, rename_backing,
         names=("name", "new_name"), fields=("in.newdir", "in.flags", "name", "newname")),
    _row("link", R.Link, _NS, True, link_inputs, B.link, link_finalize, names=("new_name",),
         fields=("in.oldnodeid", "name"), ctx_nodeid_zero=True),
    _row("open", R.Open, "node", True, open_inputs, lambda c, f: B.open_file(c, open_flags(c, f)),
         open_finalize, cleanup=os.close, fields=("in.flags", "in.open_flags", "out.fh")),
    _row("create", R.Create, _NS, True, create_inputs, create_backing, create_finalize,
         outputs=_nothing, cleanup=B.close_made, names=("name",),
         fields=("in.flags", "in.mode", "in.umask", "name", "out.nodeid", "out.fh")),
    _row("read", R.Read, "file", False, read_inputs, B.read, read_finalize, outputs=rw_outputs,
         fields=("in.fh", "in.offset", "in.size", "out.ret"), may_block=True),
    _row("write", R.Write, "file", True, write_inputs, B.write, write_finalize,
         outputs=rw_outputs, fields=("in.fh", "in.offset", "in.size", "data", "out.ret"),
         may_block=True),
    _row("flush", R.Flush, "file", False, flush_inputs, B.flush, fields=("in.fh",),
         may_block=True),
    _row("release", R.Release, "file_release", False, release_inputs, lambda c, f: None,
         fields=("in.fh", "in.flags")),
    _row("fsync", R.Fsync, "file", False, fsync_inputs, fsync_backing,
         fields=("in.fh", "in.fsync_flags"), may_block=True),
    _row("lseek", R.Lseek, "file", False, lseek_inputs, lseek_backing, lseek_finalize,
         outputs=lseek_outputs, fields=("in.fh", "in.offset", "in.whence", "out.offset"),
         may_block=True),            # SEEK_DATA/SEEK_HOLE ask the backing fs's server
    _row("fallocate", R.Fallocate, "file", True, fallocate_inputs, fallocate_backing,
         fields=("in.fh", "in.offset", "in.length", "in.mode"), may_block=True),
    _row("copy_file_range", R.CopyFileRange, "file", True, copy_inputs, copy_backing,
         copy_finalize, outputs=_nothing,
         fields=("in.fh_in", "in.off_in", "in.nodeid_out", "in.fh_out", "in.off_out",
                 "in.len", "in.flags"), may_block=True),
    _row("opendir", R.Opendir, "node", True, open_inputs, lambda c, f: B.open_dir(c),
         lambda c, fd, f: c.engine.opened_dir(c, fd), cleanup=os.close,
         fields=("in.flags", "in.open_flags")),
    _row("readdir", R.Readdir, "dir", True, readdir_inputs, B.readdir_page, readdir_finalize,
         outputs=readdir_outputs,
         fields=("in.fh", "in.offset", "in.size", "out.offset", "out.again", "dirents")),
    _row("releasedir", R.Releasedir, "dir_release", False, release_inputs, lambda c, f: None,
         fields=("in.fh",)),
    _row("fsyncdir", R.Fsyncdir, "dir", False, fsync_inputs, fsync_backing,
         fields=("in.fh", "in.fsync_flags"), may_block=True),
    _row("statfs", R.Statfs, "node", False, lambda c, f: None, B.statfs, statfs_finalize,
         outputs=statfs_outputs, fields=("out.blocks", "out.bsize", "out.namelen")),
    _row("access", R.Access, "node", True,
         lambda c, f: ACCESS_IN.pack_into(f.view, f.in_off[0], c.req.mask), access_backing,
         fields=("in.mask",)),
    _row("setxattr", R.Setxattr, "node", True, setxattr_inputs, B.setxattr,
         fields=("in.size", "in.flags", "name", "value")),
    _row("getxattr", R.Getxattr, "node", True, getxattr_inputs, getxattr_backing,
         xattr_finalize, outputs=xattr_outputs, fields=("in.size", "name", "value")),
    _row("listxattr", R.Listxattr, "node", True, listxattr_inputs,
         lambda c, f: B.listxattr(c.node), listxattr_finalize, outputs=xattr_outputs,
         fields=("in.size", "list")),
    _row("removexattr", R.Removexattr, "node", True, name_inputs, B.removexattr,
         fields=("name",)),
)}

# Opcodes of the ABI the engine does not serve.
NOT_SERVED: dict[str, str] = {
    "canonical_path": "Android only",
}

# The operations that may wait on the backing filesystem for long: a transport hands its
# reading of requests to another thread before serving one (runtime/transport/session.py,
# fuse_adapter).  Everything else is cheap metadata work, run in the thread that read it.
MAY_BLOCK: frozenset[str] = frozenset(op for op, row in TABLE.items() if row.may_block)

BY_RECORD: dict[type, Row] = {row.record: row for row in TABLE.values() if row.op != "rename2"}


def row_for(request: Any) -> Row:
    """The row serving a request record (RENAME with flags is RENAME2)."""
    if type(request) is R.Rename and request.flags:
        return TABLE["rename2"]
    return BY_RECORD[type(request)]
