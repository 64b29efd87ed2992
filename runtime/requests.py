"""What a transport hands the engine and gets back: typed requests and results.

One frozen record per FUSE opcode the engine serves (`Engine.dispatch(record)`),
each carrying the `Caller`; results are `Entry`, `Attr`, `Opened`, `StatFs`,
`DirEntry` lists, bytes or ints.  `Attr.pack_attr_out` / `Entry.pack_entry_out`
build the FUSE reply bytes with the codecs the operation table uses for the
arguments, so a /dev/fuse transport encodes replies without a dict per field.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from fdsl import abi
from fdsl.vm.helpers import Caller

_NS = 10**9
# fuse_attr in offset order (the one codec for attributes, arguments and replies)
ATTR_FIELDS = ("ino", "size", "blocks", "atime", "mtime", "ctime", "atimensec", "mtimensec",
               "ctimensec", "mode", "nlink", "uid", "gid", "rdev", "blksize", "flags")
ATTR = struct.Struct("<QQQQQQIIIIIIIIII")
assert ATTR.size == abi.FUSE_ATTR.size
assert tuple(f.name for f in abi.FUSE_ATTR.fields) == ATTR_FIELDS
_ATTR_OUT_HEAD = struct.Struct("<QI4x")          # attr_valid, attr_valid_nsec
_ENTRY_OUT_HEAD = struct.Struct("<QQQQII")       # nodeid, generation, entry/attr valid (+nsec)
_M32 = 0xFFFFFFFF


def _split(seconds: float) -> tuple[int, int]:
    whole = int(seconds)
    return whole, int((seconds - whole) * _NS)


@dataclass(slots=True)
class Attr:
    """Attributes of a node as FUSE reports them (`ino` = our node id)."""

    ino: int
    mode: int
    nlink: int
    uid: int
    gid: int
    rdev: int
    size: int
    blocks: int
    blksize: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    timeout: float = 1.0

    @classmethod
    def from_stat(cls, nodeid: int, st: os.stat_result, timeout: float) -> "Attr":
        return cls(nodeid, st.st_mode, st.st_nlink, st.st_uid, st.st_gid, st.st_rdev,
                   st.st_size, st.st_blocks, st.st_blksize, st.st_atime_ns, st.st_mtime_ns,
                   st.st_ctime_ns, timeout)

    @classmethod
    def from_fuse(cls, values: tuple, timeout: float) -> "Attr":
        """From the fields of a fuse_attr (ATTR order), as a postfilter left them."""
        (ino, size, blocks, atime, mtime, ctime, atimensec, mtimensec, ctimensec, mode, nlink,
         uid, gid, rdev, blksize, _flags) = values
        return cls(ino, mode, nlink, uid, gid, rdev, size, blocks, blksize,
                   atime * _NS + atimensec, mtime * _NS + mtimensec, ctime * _NS + ctimensec,
                   timeout)

    def fuse_values(self) -> tuple[int, ...]:
        """The fuse_attr fields in ATTR order."""
        a, m, c = self.atime_ns, self.mtime_ns, self.ctime_ns
        return (self.ino, self.size, self.blocks, a // _NS, m // _NS, c // _NS, a % _NS,
                m % _NS, c % _NS, self.mode, self.nlink, self.uid, self.gid,
                self.rdev & _M32, self.blksize, 0)

    def pack_attr_out(self) -> bytes:
        """The GETATTR/SETATTR reply body (fuse_attr_out, 104 bytes)."""
        out = bytearray(abi.FUSE_ATTR_OUT.size)
        _ATTR_OUT_HEAD.pack_into(out, 0, *_split(self.timeout))
        ATTR.pack_into(out, 16, *self.fuse_values())
        return bytes(out)


def stat_values(nodeid: int, st: os.stat_result) -> tuple[int, ...]:
    """fuse_attr fields (ATTR order) straight from a stat result."""
    a, m, c = st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns
    return (nodeid, st.st_size, st.st_blocks, a // _NS, m // _NS, c // _NS, a % _NS,
            m % _NS, c % _NS, st.st_mode, st.st_nlink, st.st_uid, st.st_gid,
            st.st_rdev & _M32, st.st_blksize, 0)


@dataclass(slots=True)
class Entry:
    """Reply to lookup/create/mkdir/...: node id, attributes, cache timeouts."""

    nodeid: int
    attr: Attr
    entry_timeout: float
    generation: int = 0

    def pack_entry_out(self) -> bytes:
        """The LOOKUP/MKNOD/... reply body (fuse_entry_out, 128 bytes)."""
        out = bytearray(abi.FUSE_ENTRY_OUT.size)
        ev, evn = _split(self.entry_timeout)
        av, avn = _split(self.attr.timeout)
        _ENTRY_OUT_HEAD.pack_into(out, 0, self.nodeid, self.generation, ev, av, evn, avn)
        ATTR.pack_into(out, 40, *self.attr.fuse_values())
        return bytes(out)


@dataclass(slots=True)
class DirEntry:
    name: bytes
    entry: Entry | None      # None: no attributes ("." / "..", or a lookup that failed)
    next_offset: int
    ino: int = 0             # inode number reported when `entry` is None
    dtype: int = 0           # DT_* type reported when `entry` is None (0 = unknown)


@dataclass(slots=True)
class Opened:
    """Reply to open/opendir/create: our file handle (and the new entry for create)."""

    fh: int
    entry: Entry | None = None


@dataclass(slots=True)
class StatFs:
    bsize: int
    frsize: int
    blocks: int
    bfree: int
    bavail: int
    files: int
    ffree: int
    favail: int
    namemax: int


# ------------------------------------------------------------------ requests

@dataclass(frozen=True, slots=True)
class Lookup:
    caller: Caller
    parent: int
    name: bytes


@dataclass(frozen=True, slots=True)
class Getattr:
    caller: Caller
    nodeid: int
    fh: int | None = None
    flags: int = 0                 # getattr_flags (FUSE_GETATTR_FH when fh is set)


@dataclass(frozen=True, slots=True)
class Setattr:
    """What to change; None = leave alone.  `*_now` = UTIME_NOW."""

    caller: Caller
    nodeid: int
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime_ns: int | None = None
    mtime_ns: int | None = None
    atime_now: bool = False
    mtime_now: bool = False
    fh: int | None = None


@dataclass(frozen=True, slots=True)
class Readlink:
    caller: Caller
    nodeid: int


@dataclass(frozen=True, slots=True)
class Symlink:
    caller: Caller
    parent: int
    name: bytes
    target: bytes


@dataclass(frozen=True, slots=True)
class Mknod:
    caller: Caller
    parent: int
    name: bytes
    mode: int
    rdev: int
    umask: int


@dataclass(frozen=True, slots=True)
class Mkdir:
    caller: Caller
    parent: int
    name: bytes
    mode: int
    umask: int


@dataclass(frozen=True, slots=True)
class Unlink:
    caller: Caller
    parent: int
    name: bytes


@dataclass(frozen=True, slots=True)
class Rmdir:
    caller: Caller
    parent: int
    name: bytes


@dataclass(frozen=True, slots=True)
class Rename:
    caller: Caller
    parent: int
    name: bytes
    new_parent: int
    new_name: bytes
    flags: int = 0                 # RENAME_* (non-zero: FUSE_RENAME2)


@dataclass(frozen=True, slots=True)
class Link:
    caller: Caller
    nodeid: int
    new_parent: int
    new_name: bytes


@dataclass(frozen=True, slots=True)
class Open:
    caller: Caller
    nodeid: int
    flags: int


@dataclass(frozen=True, slots=True)
class Create:
    caller: Caller
    parent: int
    name: bytes
    mode: int
    flags: int
    umask: int


@dataclass(frozen=True, slots=True)
class Read:
    caller: Caller | None          # None: the opener's
    fh: int
    offset: int
    size: int


@dataclass(frozen=True, slots=True)
class Write:
    caller: Caller | None
    fh: int
    offset: int
    data: bytes | memoryview       # a view of the transport's read buffer: valid during dispatch


@dataclass(frozen=True, slots=True)
class Flush:
    caller: Caller | None
    fh: int


@dataclass(frozen=True, slots=True)
class Release:
    caller: Caller | None
    fh: int


@dataclass(frozen=True, slots=True)
class Fsync:
    caller: Caller | None
    fh: int
    datasync: bool


@dataclass(frozen=True, slots=True)
class Lseek:
    """SEEK_DATA/SEEK_HOLE (the kernel answers SEEK_SET/CUR/END itself); the new offset."""

    caller: Caller | None
    fh: int
    offset: int
    whence: int


@dataclass(frozen=True, slots=True)
class Fallocate:
    caller: Caller | None
    fh: int
    offset: int
    length: int
    mode: int = 0                  # FALLOC_FL_*


@dataclass(frozen=True, slots=True)
class CopyFileRange:
    """Copy `len` bytes from the file `fh` (the source) to `fh_out`; the bytes copied."""

    caller: Caller | None
    fh: int
    off_in: int
    fh_out: int
    off_out: int
    len: int
    flags: int = 0


@dataclass(frozen=True, slots=True)
class Opendir:
    caller: Caller
    nodeid: int
    flags: int = os.O_RDONLY | os.O_DIRECTORY


@dataclass(frozen=True, slots=True)
class Readdir:
    """Up to `limit` entries after `offset` (READDIRPLUS: each `Entry` counts a lookup)."""

    caller: Caller | None
    fh: int
    offset: int
    limit: int = 32


@dataclass(frozen=True, slots=True)
class Releasedir:
    caller: Caller | None
    fh: int


@dataclass(frozen=True, slots=True)
class Fsyncdir:
    caller: Caller | None
    fh: int
    datasync: bool


@dataclass(frozen=True, slots=True)
class Statfs:
    caller: Caller
    nodeid: int


@dataclass(frozen=True, slots=True)
class Access:
    caller: Caller
    nodeid: int
    mask: int


@dataclass(frozen=True, slots=True)
class Setxattr:
    caller: Caller
    nodeid: int
    name: bytes
    value: bytes
    flags: int = 0


@dataclass(frozen=True, slots=True)
class Getxattr:
    caller: Caller
    nodeid: int
    name: bytes
    size: int = abi.requests.XATTR_SIZE_UNKNOWN


@dataclass(frozen=True, slots=True)
class Listxattr:
    caller: Caller
    nodeid: int
    size: int = abi.requests.XATTR_SIZE_UNKNOWN


@dataclass(frozen=True, slots=True)
class Removexattr:
    caller: Caller
    nodeid: int
    name: bytes


Request = (Lookup | Getattr | Setattr | Readlink | Symlink | Mknod | Mkdir | Unlink | Rmdir
           | Rename | Link | Open | Create | Read | Write | Flush | Release | Fsync | Lseek
           | Fallocate | CopyFileRange | Opendir | Readdir | Releasedir | Fsyncdir | Statfs
           | Access | Setxattr | Getxattr | Listxattr | Removexattr)
