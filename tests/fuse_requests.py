"""Filter request bytes as a fuse-bpf kernel sends them, written from spec §7/§10 directly
(struct formats here, not fdsl.abi, so a wrong table in fdsl would show)."""
from __future__ import annotations

import struct

PRE, POST = 0x10000, 0x20000
LOOKUP, GETATTR, OPEN, READDIR, GETXATTR, STATFS, FORGET = 1, 3, 14, 28, 22, 17, 2


def request(opcode: int, payload: bytes, nodeid: int = 1, unique: int = 7, uid: int = 1000,
            gid: int = 1000, pid: int = 4242, error_in: int = 0) -> bytes:
    header = struct.pack("<IIQQIIIi", 40 + len(payload), opcode, unique, nodeid, uid, gid,
                         pid, error_in)
    return header + payload


def entry_out(nodeid: int = 0, ino: int = 99, mode: int = 0o040755) -> bytes:
    """fuse_entry_out: nodeid@0 ... attr@40 (ino@40, mode@100)."""
    raw = bytearray(128)
    struct.pack_into("<Q", raw, 0, nodeid)
    struct.pack_into("<Q", raw, 40, ino)
    struct.pack_into("<I", raw, 100, mode)
    return bytes(raw)


def entry_bpf_out(backing_action: int = 0, backing_fd: int = 0, bpf_action: int = 0,
                  bpf_fd: int = 0) -> bytes:
    return struct.pack("<QQQQ", backing_action, backing_fd, bpf_action, bpf_fd)


def lookup_post(name: bytes, parent: int = 1, error_in: int = 0, nodeid: int = 0) -> bytes:
    return request(LOOKUP | POST, name + b"\0" + entry_out(nodeid) + entry_bpf_out(),
                   nodeid=parent, error_in=error_in)


def dirent(ino: int, off: int, name: bytes, typ: int = 8) -> bytes:
    rec = struct.pack("<QQII", ino, off, len(name), typ) + name
    return rec + bytes(-len(rec) % 8)


def read_in(fh: int = 5, offset: int = 0, size: int = 4096) -> bytes:
    return struct.pack("<QQIIQII", fh, offset, size, 0, 0, 0, 0)


def readdir_post(names: list[bytes], nodeid: int = 1, offset: int = 0) -> bytes:
    records = b"".join(dirent(100 + i, offset + i + 1, n) for i, n in enumerate(names))
    read_out = struct.pack("<QII", offset + len(names), 0, 0)
    return request(READDIR | POST, read_in(offset=offset) + read_out + records, nodeid=nodeid)


def parse_reply(raw: bytes) -> tuple[int, int, int, bytes]:
    """(len, error, unique, body) of a reply, checking len against the bytes."""
    length, error, unique = struct.unpack_from("<IiQ", raw)
    assert length == len(raw)
    return length, error, unique, raw[16:]


def parse_dirents(buf: bytes) -> list[tuple[int, int, bytes]]:
    out, at = [], 0
    while at < len(buf):
        ino, off, namelen, _typ = struct.unpack_from("<QQII", buf, at)
        out.append((ino, off, buf[at + 24:at + 24 + namelen]))
        at += (24 + namelen + 7) & ~7
    return out
