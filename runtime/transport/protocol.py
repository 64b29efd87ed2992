"""The FUSE wire format: request headers in, reply bytes out.

Layouts come from `fdsl.abi` (spec §10 plus the transport's own messages);
this module only binds them to precompiled `struct` codecs and turns engine
results (`Attr`, `Entry`, ...) into reply bytes without building dicts, since
it runs for every request.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Iterable

from fdsl import abi

from ..identity import Caller

IN_HEADER = abi.FUSE_IN_HEADER.codec            # len, opcode, unique, nodeid, uid, gid, pid, error_in
OUT_HEADER = abi.FUSE_OUT_HEADER.codec          # len, error, unique
IN_HEADER_SIZE = IN_HEADER.size
OUT_HEADER_SIZE = OUT_HEADER.size
ENTRY_OUT = abi.FUSE_ENTRY_OUT.codec
ATTR_OUT = abi.FUSE_ATTR_OUT.codec
OPEN_OUT = abi.FUSE_OPEN_OUT.codec
WRITE_OUT = abi.FUSE_WRITE_OUT.codec
STATFS_OUT = abi.FUSE_STATFS_OUT.codec
GETXATTR_OUT = abi.FUSE_GETXATTR_OUT.codec
LSEEK_OUT = abi.FUSE_LSEEK_OUT.codec
DIRENT = abi.FUSE_DIRENT.codec
POLL_OUT = abi.FUSE_POLL_OUT.codec

# Opcode numbers by name: the fuse-bpf ones (abi.OPS) and the rest (§11).
OPCODES: dict[str, int] = {**{op.name: op.number for op in abi.OPS.values()},
                           **abi.NON_BPF_OPCODES}
OPCODE_NAMES: dict[int, str] = {v: k for k, v in OPCODES.items()}

FOPEN_PASSTHROUGH = abi.FOPEN["FOPEN_PASSTHROUGH"]
FOPEN_NOFLUSH = abi.FOPEN["FOPEN_NOFLUSH"]
FOPEN_KEEP_CACHE = abi.FOPEN["FOPEN_KEEP_CACHE"]
FOPEN_CACHE_DIR = abi.FOPEN["FOPEN_CACHE_DIR"]


class ProtocolError(Exception):
    """A request the kernel side sent that cannot be decoded (answered with EIO)."""


@dataclass(slots=True)
class Request:
    """One decoded request: the header's fields and a view of the payload.

    `body` is only valid until the handler returns (the read buffer is reused)."""

    opcode: int
    unique: int
    nodeid: int
    uid: int
    gid: int
    pid: int
    error_in: int
    body: memoryview

    @property
    def name(self) -> str:
        return abi.opcode_name(self.opcode)

    def caller(self, umask: int = 0o022) -> Caller:
        return Caller(uid=self.uid, gid=self.gid, pid=self.pid, umask=umask)

    def struct(self, codec: struct.Struct, offset: int = 0) -> tuple[Any, ...]:
        """The fixed-size argument at `offset` (ProtocolError if the payload is short)."""
        if len(self.body) < offset + codec.size:
            raise ProtocolError(f"{self.name}: payload of {len(self.body)} bytes, "
                                f"need {offset + codec.size}")
        return codec.unpack_from(self.body, offset)

    def names(self, offset: int = 0, count: int = 1) -> list[bytes]:
        """`count` NUL-terminated strings starting at `offset`."""
        out, data = [], self.body
        for _ in range(count):
            end = bytes(data[offset:]).find(b"\0") if offset < len(data) else -1
            if end < 0:
                raise ProtocolError(f"{self.name}: unterminated name")
            out.append(bytes(data[offset:offset + end]))
            offset += end + 1
        return out


def parse(buf: bytearray | memoryview, n: int) -> Request:
    """Decode the request in the first `n` bytes of `buf`."""
    if n < IN_HEADER_SIZE:
        raise ProtocolError(f"short read: {n} bytes, the header alone is {IN_HEADER_SIZE}")
    length, opcode, unique, nodeid, uid, gid, pid, error_in = IN_HEADER.unpack_from(buf)
    if length != n:
        raise ProtocolError(f"header says {length} bytes, read {n} (opcode {opcode})")
    # total_extlen (u16 at 36, mainline) is 0: we negotiate no request extensions.
    return Request(opcode, unique, nodeid, uid, gid, pid, error_in,
                   memoryview(buf)[IN_HEADER_SIZE:n])


def out_header(unique: int, error: int, payload_len: int) -> bytes:
    return OUT_HEADER.pack(OUT_HEADER_SIZE + payload_len, -error if error > 0 else error, unique)


# ----------------------------------------------------------------- encoders

_SPLIT: dict[float, tuple[int, int]] = {}     # the few timeouts a mount uses, split once


def split_timeout(seconds: float) -> tuple[int, int]:
    """(seconds, nanoseconds) of a timeout, as entry and attr replies carry it."""
    got = _SPLIT.get(seconds)
    if got is None:
        got = (0, 0)
        if seconds > 0:
            whole = int(seconds)
            got = (whole, int((seconds - whole) * 1e9))
        if len(_SPLIT) < 64:
            _SPLIT[seconds] = got
    return got


_U64 = (1 << 64) - 1


def signed64(value: int) -> int:
    """A u64 field the kernel fills from an s64 (times before 1970)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def attr_values(attr: Any) -> tuple[int, ...]:
    """fuse_attr fields, in layout order, from an engine `Attr`."""
    a, m, c = attr.atime_ns, attr.mtime_ns, attr.ctime_ns
    return (attr.ino, attr.size, attr.blocks, (a // 1_000_000_000) & _U64,
            (m // 1_000_000_000) & _U64, (c // 1_000_000_000) & _U64, a % 1_000_000_000, m % 1_000_000_000, c % 1_000_000_000,
            attr.mode, attr.nlink, attr.uid & 0xFFFFFFFF, attr.gid & 0xFFFFFFFF,
            attr.rdev & 0xFFFFFFFF, attr.blksize & 0xFFFFFFFF, 0)


def entry_values(entry: Any) -> tuple[int, ...]:
    """fuse_entry_out fields, in layout order, from an engine `Entry`."""
    es, ens = split_timeout(entry.entry_timeout)
    as_, ans = split_timeout(entry.attr.timeout)
    return (entry.nodeid, entry.generation, es, as_, ens, ans, *attr_values(entry.attr))


def entry_out(entry: Any) -> bytes:
    return ENTRY_OUT.pack(*entry_values(entry))


def attr_out(attr: Any) -> bytes:
    s, ns = split_timeout(attr.timeout)
    return ATTR_OUT.pack(s, ns, 0, *attr_values(attr))


def open_out(fh: int, open_flags: int = 0, backing_id: int = 0) -> bytes:
    return OPEN_OUT.pack(fh, open_flags, backing_id)


def statfs_out(s: Any) -> bytes:
    return STATFS_OUT.pack(s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize,
                           s.namemax, s.frsize, 0)


_PADDING = [bytes(n) for n in range(8)]        # records are 8-byte aligned
_NO_ENTRY = bytes(ENTRY_OUT.size)
# fuse_entry_out followed by the fuse_dirent header: one pack per READDIRPLUS record
_DIRENTPLUS_HEAD = struct.Struct("<" + ENTRY_OUT.format.lstrip("<") + DIRENT.format.lstrip("<"))


def dirent(ino: int, next_offset: int, dtype: int, name: bytes) -> bytes:
    n = len(name)                               # the header is 24 bytes: pad the name
    return DIRENT.pack(ino, next_offset, n, dtype) + name + _PADDING[-n & 7]


def direntplus(entry: Any | None, ino: int, next_offset: int, dtype: int, name: bytes) -> bytes:
    """One READDIRPLUS record; `entry` None = the name only (node id 0: the kernel
    links nothing, but lists the name with inode number `ino`)."""
    if entry is None:
        return _NO_ENTRY + dirent(ino, next_offset, dtype, name)
    attr, n = entry.attr, len(name)
    return _DIRENTPLUS_HEAD.pack(*entry_values(entry), attr.ino, next_offset, n,
                                 (attr.mode >> 12) & 0o17) + name + _PADDING[-n & 7]


def xattr_list(names: Iterable[bytes]) -> bytes:
    return b"".join(n + b"\0" for n in names)
