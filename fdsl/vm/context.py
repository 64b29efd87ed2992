"""`struct fuse_bpf_args` in real memory, laid out exactly as the ACK kernel does.

`build_context(op, phase, inputs, outputs, ...)` fills the 224-byte context
(offsets from `fdsl.abi`, spec §4) and the argument buffers (§9) inside a
reusable per-thread `Arena`, then returns a `Context` whose `address` a VM
passes in r1.

Kernel behaviour reproduced (§6):
  * PRE: `out_args[i]` aliases `in_args[i]` (same pointer, same size) and
    `out_numargs = in_numargs`; the outputs are not visible.
  * POST: the outputs are appended to the inputs, `in_args[n + j] =
    out_args[j]`, and `in_numargs` grows; `error_in` carries the backing result.
  * `flags`: FUSE_BPF_FORCE / FUSE_BPF_OUT_ARGVAR from the opcode table
    (GETXATTR/LISTXATTR get OUT_ARGVAR only when their `size` is non-zero).
  * An argument whose kernel pointer is NULL (WRITE's data) has value 0.

Every argument buffer is backed by at least `BUFFER_WINDOW` bytes of real
memory, zero after the valid bytes, so any constant offset the verifier
accepts (< 4096) is in-bounds memory for the JIT.  `Context.regions` lists
the blocks a program may touch, for the interpreter's bounds checks: the
context itself (read-only), each argument buffer (writable in PRE, since
`out_args` alias the inputs; in POST only the outputs are writable).

Cost: the daemon builds one context per FUSE request, so the layout of a
request shape (op, phase, argument lengths, flags, arena) is computed once
and cached in the `Arena` as a `_Layout`: a ready-made image of the header,
the offsets to copy the arguments to, and the region/argument lists.  Per
call there is one header copy, one copy from the arena's zero block over the
windows (the previous run may have written anywhere in its writable windows),
one copy per argument, one `pack_into` for nodeid/opcode/error_in and a small
`Context`.  Memory is bounded: a layout holds only its ~224-byte header (not
a zeroed copy of its windows, which made every distinct name length or write
size cost 8-16 KiB per thread), and at most `MAX_LAYOUTS` are kept per arena.  An Arena is reused by every build on its thread, so a
`Context` stays valid until the next `build_context` on the same thread (pass
your own `Arena()` to keep several alive).
"""
from __future__ import annotations

from typing import Any

import ctypes
import struct
import threading
from dataclasses import dataclass

from fdsl import abi
from fdsl.vm.maps import Region

BUFFER_WINDOW = 4096
_CTX_AREA = 256                     # context size rounded up to keep buffers aligned
_CTX_STRUCT = struct.Struct("<QIIIII4x" + "I4xQQ" * (abi.MAX_IN_ARGS + abi.MAX_OUT_ARGS))
_HEAD = struct.Struct("<QII")       # nodeid, opcode, error_in: the per-request header words
assert _CTX_STRUCT.size == abi.CTX_SIZE
assert abi.in_arg_offset(0) == 32 and abi.out_arg_offset(0) == 152 and abi.ARG_VALUE == 8
assert (abi.CTX_NODEID, abi.CTX_OPCODE, abi.CTX_ERROR_IN) == (0, 8, 12)
MAX_LAYOUTS = 1024                  # per arena; the cache is dropped when it grows past this


def _round(n: int, to: int = 64) -> int:
    return (n + to - 1) // to * to


class Arena:
    """One growable block of real memory reused for successive contexts."""

    def __init__(self, capacity: int = _CTX_AREA + 5 * BUFFER_WINDOW) -> None:
        self._alloc(capacity)

    def _alloc(self, capacity: int) -> None:
        self.capacity = capacity
        self._buf = (ctypes.c_ubyte * capacity)()
        self.address = ctypes.addressof(self._buf)
        self.view = memoryview(self._buf).cast("B")
        self.zeros = memoryview(bytes(capacity))   # source of the per-build window reset
        # request shape -> _Layout; layouts hold absolute addresses, so a new block drops them
        self.layouts: dict[tuple, _Layout] = {}

    def reserve(self, capacity: int) -> None:
        if capacity > self.capacity:
            self._alloc(max(capacity, 2 * self.capacity))


_local = threading.local()


def thread_arena() -> Arena:
    arena = getattr(_local, "arena", None)
    if arena is None:
        arena = _local.arena = Arena()
    return arena


@dataclass(frozen=True)
class ArgBuffer:
    """One argument as placed in memory."""

    address: int          # 0 when the kernel passes NULL
    size: int             # what the context's `size` field says
    length: int           # valid bytes written at `address`
    window: int           # bytes of real memory at `address`
    writable: bool
    name: str


class _Layout:
    """Everything about a context that depends only on the request's shape (cached per Arena)."""

    __slots__ = ("arena", "address", "spec", "phase", "post", "flags", "opcode", "total", "image",
                 "in_copies", "out_copies", "args", "n_inputs", "_buffers", "_regions")

    def __init__(self, arena: Arena, spec: abi.OpSpec, phase: str, flags: int, total: int, image: bytes,
                 in_copies: tuple, out_copies: tuple, args: list[tuple]) -> None:
        self.arena = arena
        self.address = arena.address
        self.spec = spec
        self.phase = phase
        self.post = phase == "post"
        self.flags = flags
        self.opcode = spec.number | abi.PHASE_BITS[phase]
        self.total = total
        self.image = image              # the header (_CTX_AREA bytes), copied in by every build
        self.in_copies = in_copies      # (input index, start, end) of each buffer-backed input
        self.out_copies = out_copies
        self.args = args                # [(kind, address, size, length, window)] inputs then outputs
        self.n_inputs = sum(1 for a in args if a[0] == "in")
        self._buffers: tuple[list[ArgBuffer], list[ArgBuffer]] | None = None
        self._regions: list[Region] | None = None

    def buffers(self) -> tuple[list[ArgBuffer], list[ArgBuffer]]:
        if self._buffers is None:
            ins: list[ArgBuffer] = []
            outs: list[ArgBuffer] = []
            for kind, address, size, length, window in self.args:
                idx = len(ins) if kind == "in" else len(outs)
                writable = kind == "out" or not self.post
                buf = ArgBuffer(address, size, length, window if address else 0, writable,
                                f"{kind}_args[{idx}]")
                (ins if kind == "in" else outs).append(buf)
            self._buffers = (ins + outs, outs) if self.post else (ins, ins)
        return self._buffers

    def regions(self) -> list[Region]:
        if self._regions is None:
            in_args, out_args = self.buffers()
            regions = [Region(self.address, abi.CTX_SIZE, False, "ctx")]
            seen = set()
            for buf in in_args + out_args:
                if buf.address and buf.address not in seen:
                    seen.add(buf.address)
                    regions.append(Region(buf.address, buf.window, buf.writable, buf.name))
            self._regions = regions
        return self._regions


class Context:
    """A built context; valid until the next build in the same Arena."""

    __slots__ = ("address", "nodeid", "error_in", "_layout")

    def __init__(self, layout: _Layout, nodeid: int, error_in: int) -> None:
        self.address: int = layout.address
        self.nodeid = nodeid
        self.error_in = error_in
        self._layout = layout

    @property
    def op(self) -> abi.OpSpec:
        return self._layout.spec

    @property
    def phase(self) -> str:
        return self._layout.phase

    @property
    def flags(self) -> int:
        return self._layout.flags

    @property
    def arena(self) -> Arena:
        return self._layout.arena

    @property
    def n_inputs(self) -> int:
        return self._layout.n_inputs

    @property
    def opcode(self) -> int:
        return self._layout.opcode

    @property
    def in_args(self) -> list[ArgBuffer]:
        """As the context's in_args (POST: the inputs, then the outputs)."""
        return self._layout.buffers()[0]

    @property
    def out_args(self) -> list[ArgBuffer]:
        """As the context's out_args (PRE: the inputs again, aliased)."""
        return self._layout.buffers()[1]

    @property
    def regions(self) -> list[Region]:
        """Memory a program may access: the context (read-only) and every argument window.

        Shared by every context of the same layout: do not modify it."""
        return self._layout.regions()

    def _read(self, address: int, length: int) -> bytes:
        arena = self._layout.arena
        off = address - arena.address
        return bytes(arena.view[off:off + length])

    def header_bytes(self) -> bytes:
        return self._read(self.address, abi.CTX_SIZE)

    def read_in(self, index: int, length: int | None = None) -> bytes | None:
        """Current bytes of `in_args[index]` (its valid length by default); None if NULL."""
        arg = self.in_args[index]
        if not arg.address:
            return None
        return self._read(arg.address, arg.length if length is None else min(length, arg.window))

    def read_out(self, index: int, length: int | None = None) -> bytes:
        """Current bytes of `out_args[index]` (its valid length by default)."""
        arg = self.out_args[index]
        return self._read(arg.address, arg.length if length is None else min(length, arg.window))

    def outputs(self) -> list[bytes]:
        """The real outputs after a POST run (in PRE: the possibly modified inputs)."""
        return [self.read_out(j) for j in range(len(self.out_args))]

    def inputs(self) -> list[bytes | None]:
        """The op's own inputs (PRE modifications show here, through the aliasing)."""
        return [self.read_in(i) for i in range(self.n_inputs)]


def _opspec(op) -> abi.OpSpec:
    if isinstance(op, abi.OpSpec):
        return op
    if isinstance(op, int):
        return abi.OPS_BY_NUMBER[op & abi.OPCODE_MASK]
    return abi.OPS[op]


def default_flags(op: abi.OpSpec, inputs) -> int:
    """The context's flags for this op (§4: ARGVAR for getxattr/listxattr only with size > 0)."""
    flags = op.flags
    if op.name in ("getxattr", "listxattr") and inputs:
        size = abi.FUSE_GETXATTR_IN.unpack(bytes(inputs[0] or b""))["size"]
        if size == 0:
            flags &= ~abi.FLAG_OUT_ARGVAR
    return flags


_WINDOWS: dict[tuple[int, str, int], tuple[int, int | None]] = {}


def _window(spec: abi.OpSpec, kind: str, idx: int) -> tuple[int, int | None]:
    """(window bytes, fixed size field or None) of one argument, cached."""
    key = (spec.number, kind, idx)
    hit = _WINDOWS.get(key)
    if hit is None:
        args = spec.inputs if kind == "in" else spec.outputs
        arg = args[idx] if idx < len(args) else None
        window = _round(max(BUFFER_WINDOW, arg.capacity if arg else 0))
        hit = _WINDOWS[key] = (window, arg.size_field if arg else None)
    return hit


_BYTES = (bytes, bytearray, memoryview)
_M64 = 0xFFFFFFFFFFFFFFFF
_XATTR_OPS = ("getxattr", "listxattr")


def _shape(values) -> tuple:
    """Per argument: its length (bytes), or -1 - size for a NULL pointer (int or None)."""
    try:
        return tuple(map(len, values))
    except TypeError:
        return tuple(len(v) if isinstance(v, _BYTES) else -1 - int(v or 0) for v in values)


def build_context(op, phase: str, inputs, outputs=None, *,
                  nodeid: int = 0, error_in: int = 0, flags: int | None = None,
                  sizes: dict | None = None, arena: Arena | None = None) -> Context:
    """Lay out a context for `op` ("lookup", number or OpSpec) in `phase` ("pre"/"post").

    `inputs[i]`: bytes of the op's i-th input (valid bytes; the context's
    size field = their length), or an int = size of an argument passed as
    NULL (WRITE's data), or None = NULL of size 0.
    `outputs[j]` (POST only): bytes of the j-th output as the backing step
    left them.  `sizes` overrides size fields: {("in", i): n} / {("out", j): n}
    (default: the ArgSpec's `size_field`, e.g. STATFS's 8).
    """
    spec = op if isinstance(op, abi.OpSpec) else _opspec(op)
    if phase != "post" or not outputs:
        outputs = ()
    if flags is None:
        flags = spec.flags if spec.name not in _XATTR_OPS else default_flags(spec, inputs)
    if arena is None:
        arena = getattr(_local, "arena", None) or thread_arena()
    key = (spec.number, phase, flags, _shape(inputs), _shape(outputs) if outputs else (),
           tuple(sorted(sizes.items())) if sizes else None)
    layout = arena.layouts.get(key)
    if layout is None:
        layout = _new_layout(arena, key, spec, phase, inputs, outputs, flags, sizes)
    view = arena.view
    view[:_CTX_AREA] = layout.image
    view[_CTX_AREA:layout.total] = arena.zeros[_CTX_AREA:layout.total]
    for i, start, end in layout.in_copies:
        view[start:end] = inputs[i]
    for j, start, end in layout.out_copies:
        view[start:end] = outputs[j]
    _HEAD.pack_into(view, 0, nodeid & _M64, layout.opcode, error_in & 0xFFFFFFFF)
    return Context(layout, nodeid, error_in)


def _new_layout(arena: Arena, key: tuple, spec: abi.OpSpec, phase: str, inputs, outputs,
                flags: int, sizes: dict | None) -> _Layout:
    """Compute (and cache in the arena) the layout of one request shape."""
    post = phase == "post"
    if not post and phase != "pre":
        raise ValueError(f"phase must be 'pre' or 'post', not {phase!r}")
    n_in, n_out = len(inputs), len(outputs)
    if n_in + n_out > abi.MAX_IN_ARGS or n_out > abi.MAX_OUT_ARGS:
        raise ValueError("too many arguments: at most 5 in_args and 3 out_args")

    args: list[list[Any]] = []     # [kind, offset or None, size, length, window]
    copies: dict[str, list[tuple[int, int, int]]] = {"in": [], "out": []}
    offset = _CTX_AREA
    for kind, values in (("in", inputs), ("out", outputs)):
        for idx, value in enumerate(values):
            window, size_field = _window(spec, kind, idx)
            if isinstance(value, _BYTES):
                length = len(value)
                if length > window:
                    window = _round(length)
                size = length if size_field is None else size_field
                args.append([kind, offset, size, length, window])
                copies[kind].append((idx, offset, offset + length))
                offset += window
            else:  # NULL pointer, with a size (int) or without (None)
                args.append([kind, None, int(value or 0), 0, 0])
            if sizes and (kind, idx) in sizes:
                args[-1][2] = sizes[(kind, idx)]
    total = offset
    if total > arena.capacity:
        arena.reserve(total)        # a new block: the cached layouts were dropped with the old one
    base = arena.address
    built = [(kind, 0 if off is None else base + off, size, length, window)
             for kind, off, size, length, window in args]
    ctx_in = built
    ctx_out = built[n_in:] if post else built
    values = [0, spec.number | abi.PHASE_BITS[phase], 0, len(ctx_in), len(ctx_out), flags & 0xFFFFFFFF]
    for a in ctx_in:
        values += (a[2] & 0xFFFFFFFF, a[1], 0)
    values += _ZEROS[:3 * (abi.MAX_IN_ARGS - len(ctx_in))]
    for a in ctx_out:
        values += (a[2] & 0xFFFFFFFF, a[1], 0)
    values += _ZEROS[:3 * (abi.MAX_OUT_ARGS - len(ctx_out))]
    image = bytearray(_CTX_AREA)
    _CTX_STRUCT.pack_into(image, 0, *values)
    layout = _Layout(arena, spec, phase, flags, total, bytes(image), tuple(copies["in"]),
                     tuple(copies["out"]), built)
    if len(arena.layouts) >= MAX_LAYOUTS:
        arena.layouts.clear()
    arena.layouts[key] = layout
    return layout


_ZEROS = [0] * (3 * abi.MAX_IN_ARGS)
