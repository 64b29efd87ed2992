"""Wire bytes of the fuse-bpf daemon protocol: filter requests, their replies, and the
LOOKUP reply with the `fuse_entry_bpf_out` block (spec §3.2, §7, §10).

Pure functions over bytes, so every layout is testable without a fuse-bpf
kernel.  A filter request is an ordinary FUSE request whose opcode carries
`PREFILTER` (0x10000) or `POSTFILTER` (0x20000); its payload is the argument
list of that phase (PRE: the inputs; POST: inputs then outputs) concatenated
without padding, each at its current size; a POSTFILTER header carries the
backing result as `error_in`, an s32 at offset 36.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from fdsl import abi

IN_HEADER = abi.FUSE_IN_HEADER          # 40 bytes
OUT_HEADER = abi.FUSE_OUT_HEADER        # 16 bytes
ENTRY_OUT_SIZE = abi.FUSE_ENTRY_OUT.size
ENTRY_BPF_OUT_SIZE = abi.FUSE_ENTRY_BPF_OUT.size
_OUT_HEAD = struct.Struct("<IiQ")


class ProtocolError(ValueError):
    """A request that does not have the shape its opcode promises."""


@dataclass(frozen=True)
class InHeader:
    length: int
    opcode: int                 # with the phase bit, as sent
    unique: int
    nodeid: int
    uid: int
    gid: int
    pid: int
    error_in: int               # s32 at offset 36: the backing result of a POSTFILTER

    @property
    def plain_opcode(self) -> int:
        return self.opcode & abi.OPCODE_MASK

    @property
    def phase(self) -> str | None:
        """"pre", "post", or None for a classic request."""
        if self.opcode & abi.PREFILTER:
            return "pre"
        if self.opcode & abi.POSTFILTER:
            return "post"
        return None


def parse_header(request: bytes | memoryview) -> InHeader:
    if len(request) < IN_HEADER.size:
        raise ProtocolError(f"request of {len(request)} bytes is shorter than fuse_in_header")
    h = IN_HEADER.unpack(request[:IN_HEADER.size])
    if h["len"] != len(request):
        raise ProtocolError(f"fuse_in_header.len {h['len']} but {len(request)} bytes read")
    return InHeader(h["len"], h["opcode"], h["unique"], h["nodeid"], h["uid"], h["gid"],
                    h["pid"], h["error_in"])


def reply(unique: int, body: bytes = b"", error: int = 0) -> bytes:
    """fuse_out_header + body; `error` is a positive errno (sent negated, without a body)."""
    if error:
        return _OUT_HEAD.pack(OUT_HEADER.size, -abs(error), unique)
    return _OUT_HEAD.pack(OUT_HEADER.size + len(body), 0, unique) + body


# ------------------------------------------------------- §3.2 lookup block

@dataclass(frozen=True)
class EntryBpfOut:
    """`struct fuse_entry_bpf_out`: what to do with the child's backing and program."""

    backing_action: int = abi.ACTION_KEEP
    backing_fd: int = 0
    bpf_action: int = abi.ACTION_KEEP
    bpf_fd: int = 0

    def pack(self) -> bytes:
        return bytes(abi.FUSE_ENTRY_BPF_OUT.pack({
            "backing_action": self.backing_action, "backing_fd": self.backing_fd,
            "bpf_action": self.bpf_action, "bpf_fd": self.bpf_fd}))

    @classmethod
    def unpack(cls, raw: bytes) -> "EntryBpfOut":
        v = abi.FUSE_ENTRY_BPF_OUT.unpack(raw)
        return cls(v["backing_action"], v["backing_fd"], v["bpf_action"], v["bpf_fd"])


def lookup_body(entry_out: bytes, block: EntryBpfOut | None) -> bytes:
    """A LOOKUP (or LOOKUP|POSTFILTER) reply's body: 128 bytes of fuse_entry_out, then
    exactly 32 of fuse_entry_bpf_out when there is a block (128 alone = no extension)."""
    if len(entry_out) != ENTRY_OUT_SIZE:
        raise ValueError(f"fuse_entry_out must be {ENTRY_OUT_SIZE} bytes, not {len(entry_out)}")
    return bytes(entry_out) + (block.pack() if block is not None else b"")


# ------------------------------------------------------- §7 filter requests

def output_specs(op: abi.OpSpec, first_input: bytes | None) -> list[abi.ArgSpec]:
    """The outputs of this request: GETXATTR/LISTXATTR with `size` 0 (a size query)
    return a fuse_getxattr_out instead of the buffer (spec §9)."""
    if op.name in ("getxattr", "listxattr") and first_input is not None \
            and abi.FUSE_GETXATTR_IN.unpack(first_input)["size"] == 0:
        return [abi.ArgSpec("out", "struct", abi.FUSE_GETXATTR_OUT, abi.FUSE_GETXATTR_OUT.size)]
    return list(op.outputs)


@dataclass
class FilterRequest:
    header: InHeader
    op: abi.OpSpec
    phase: str                  # "pre" | "post"
    inputs: list[bytes]
    outputs: list[bytes]        # POST only
    output_specs: list[abi.ArgSpec]

    @property
    def error_in(self) -> int:
        return self.header.error_in if self.phase == "post" else 0


def _arg_size(op: abi.OpSpec, arg: abi.ArgSpec, payload: bytes, at: int, last: bool) -> int:
    """Bytes of one argument starting at `at` (the kernel sends each at its size)."""
    rest = len(payload) - at
    if arg.kind == "struct":
        size = arg.size_field if arg.size_field is not None else arg.size
        if arg.variable:          # LOOKUP's fuse_entry_bpf_out: present or not
            return min(size, rest)
        return size
    if arg.kind == "string":
        end = payload.find(b"\0", at)
        if end < 0:
            raise ProtocolError(f"{op.name}: argument {arg.alias!r} is not NUL-terminated")
        return end + 1 - at
    if arg.null_value:            # WRITE's data: a NULL pointer in fuse-bpf, nothing sent
        return 0
    if last:
        return rest
    raise ProtocolError(f"{op.name}: buffer {arg.alias!r} before the last argument")


def split_args(op: abi.OpSpec, phase: str, payload: bytes
               ) -> tuple[list[bytes], list[bytes], list[abi.ArgSpec]]:
    """(inputs, outputs, output specs) of a filter request's payload."""
    first_in = payload[:op.inputs[0].size] if op.inputs and op.inputs[0].kind == "struct" else None
    outs = output_specs(op, first_in)
    args = list(op.inputs) + (outs if phase == "post" else [])
    values: list[bytes] = []
    at = 0
    for i, arg in enumerate(args):
        size = _arg_size(op, arg, payload, at, i == len(args) - 1)
        if at + size > len(payload):
            raise ProtocolError(f"{op.name}|{phase}: argument {arg.alias!r} needs {size} bytes, "
                                f"{len(payload) - at} left")
        values.append(payload[at:at + size])
        at += size
    if at != len(payload):
        raise ProtocolError(f"{op.name}|{phase}: {len(payload) - at} bytes after the last argument")
    n_in = len(op.inputs)
    return values[:n_in], values[n_in:], outs


def parse_filter(header: InHeader, payload: bytes) -> FilterRequest:
    """A filter request from its decoded header and payload (what a transport hands over)."""
    phase = header.phase
    if phase is None:
        raise ProtocolError(f"opcode {header.opcode:#x} is not a filter request")
    if header.opcode & abi.PREFILTER and header.opcode & abi.POSTFILTER:
        raise ProtocolError(f"opcode {header.opcode:#x} has both phase bits")
    op = abi.OPS_BY_NUMBER.get(header.plain_opcode)
    if op is None:
        raise ProtocolError(f"filter request for unknown opcode {header.plain_opcode}")
    inputs, outputs, specs = split_args(op, phase, bytes(payload))
    return FilterRequest(header, op, phase, inputs, outputs, specs)


def parse_filter_request(request: bytes) -> FilterRequest:
    return parse_filter(parse_header(request), bytes(request[IN_HEADER.size:]))


def filter_body(args: list[bytes]) -> bytes:
    """PRE: the (possibly changed) inputs; POST: the outputs, in order, at their sizes."""
    return b"".join(bytes(a) for a in args)


# ------------------------------------------------------- dirent records

_DIRENT = struct.Struct("<QQII")


@dataclass(frozen=True)
class Dirent:
    ino: int
    off: int
    type: int
    name: bytes

    def pack(self) -> bytes:
        body = _DIRENT.pack(self.ino, self.off, len(self.name), self.type) + self.name
        return body + bytes(-len(body) % 8)


def parse_dirents(buf: bytes) -> list[Dirent]:
    """fuse_dirent records (24 + name, padded to 8) as READDIR's buffer holds them."""
    out: list[Dirent] = []
    at = 0
    while at + _DIRENT.size <= len(buf):
        ino, off, namelen, typ = _DIRENT.unpack_from(buf, at)
        end = at + _DIRENT.size + namelen
        if namelen == 0 or end > len(buf):
            raise ProtocolError(f"dirent at {at}: bad name length {namelen}")
        out.append(Dirent(ino, off, typ, bytes(buf[at + _DIRENT.size:end])))
        at = (end + 7) & ~7
    if at < len(buf) and any(buf[at:]):
        raise ProtocolError(f"{len(buf) - at} stray bytes after the last dirent")
    return out
