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

Cost: one `struct.pack_into` for the context, one memmove per argument and a
memset of the used windows; an Arena is reused by every build on its thread,
so a `Context` stays valid until the next `build_context` on the same thread
(pass your own `Arena()` to keep several alive).
"""
from __future__ import annotations

import ctypes
import struct
import threading
from dataclasses import dataclass

from fdsl import abi
from fdsl.maps import Region

BUFFER_WINDOW = 4096
_CTX_AREA = 256                     # context size rounded up to keep buffers aligned
_CTX_STRUCT = struct.Struct("<QIIIII4x" + "I4xQQ" * (abi.MAX_IN_ARGS + abi.MAX_OUT_ARGS))
assert _CTX_STRUCT.size == abi.CTX_SIZE
assert abi.in_arg_offset(0) == 32 and abi.out_arg_offset(0) == 152 and abi.ARG_VALUE == 8


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


class Context:
    """A built context; valid until the next build in the same Arena."""

    __slots__ = ("address", "op", "phase", "nodeid", "error_in", "flags", "arena", "n_inputs",
                 "_args", "_post", "_n_ctx_in", "_cache")

    def __init__(self, address, op, phase, nodeid, error_in, flags, arena, args, post) -> None:
        self.address = address
        self.op: abi.OpSpec = op
        self.phase: str = phase
        self.nodeid: int = nodeid
        self.error_in: int = error_in
        self.flags: int = flags
        self.arena: Arena = arena
        self._args = args          # [(kind, address, size, length, window)] inputs then outputs
        self._post = post
        self.n_inputs = sum(1 for a in args if a[0] == "in")
        self._cache = None

    @property
    def opcode(self) -> int:
        return self.op.number | abi.PHASE_BITS[self.phase]

    def _buffers(self) -> tuple[list[ArgBuffer], list[ArgBuffer]]:
        if self._cache is None:
            ins, outs = [], []
            for kind, address, size, length, window in self._args:
                idx = len(ins) if kind == "in" else len(outs)
                writable = kind == "out" or not self._post
                buf = ArgBuffer(address, size, length, window if address else 0, writable,
                                f"{kind}_args[{idx}]")
                (ins if kind == "in" else outs).append(buf)
            self._cache = (ins + outs, outs) if self._post else (ins, ins)
        return self._cache

    @property
    def in_args(self) -> list[ArgBuffer]:
        """As the context's in_args (POST: the inputs, then the outputs)."""
        return self._buffers()[0]

    @property
    def out_args(self) -> list[ArgBuffer]:
        """As the context's out_args (PRE: the inputs again, aliased)."""
        return self._buffers()[1]

    @property
    def regions(self) -> list[Region]:
        """Memory a program may access: the context (read-only) and every argument window."""
        regions = [Region(self.address, abi.CTX_SIZE, False, "ctx")]
        seen = set()
        for buf in self.in_args + self.out_args:
            if buf.address and buf.address not in seen:
                seen.add(buf.address)
                regions.append(Region(buf.address, buf.window, buf.writable, buf.name))
        return regions

    def _read(self, address: int, length: int) -> bytes:
        off = address - self.arena.address
        return bytes(self.arena.view[off:off + length])

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
    post = phase == "post"
    if not post and phase != "pre":
        raise ValueError(f"phase must be 'pre' or 'post', not {phase!r}")
    if not post or not outputs:
        outputs = ()
    n_in, n_out = len(inputs), len(outputs)
    if n_in + n_out > abi.MAX_IN_ARGS or n_out > abi.MAX_OUT_ARGS:
        raise ValueError("too many arguments: at most 5 in_args and 3 out_args")
    if arena is None:
        arena = getattr(_local, "arena", None) or thread_arena()

    args = []
    offset = _CTX_AREA
    for kind, values in (("in", inputs), ("out", outputs)):
        for idx, value in enumerate(values):
            window, size_field = _window(spec, kind, idx)
            if isinstance(value, _BYTES):
                length = len(value)
                if length > window:
                    window = _round(length)
                size = length if size_field is None else size_field
                args.append([kind, offset, size, length, window, value])
                offset += window
            else:  # NULL pointer, with a size (int) or without (None)
                args.append([kind, 0, int(value or 0), 0, 0, None])
            if sizes and (kind, idx) in sizes:
                args[-1][2] = sizes[(kind, idx)]
    total = offset
    if total > arena.capacity:
        arena.reserve(total)
    base = arena.address
    view = arena.view
    ctypes.memset(base, 0, total)

    built = []
    for arg in args:
        kind, off, size, length, window, value = arg
        if value is not None:
            view[off:off + length] = value
            built.append((kind, base + off, size, length, window))
        else:
            built.append((kind, 0, size, 0, 0))
    if post:
        ctx_in = built
        ctx_out = built[n_in:]
    else:
        ctx_in = ctx_out = built
    if flags is None:
        flags = spec.flags if spec.name not in ("getxattr", "listxattr") else default_flags(spec, inputs)
    values = [nodeid & 0xFFFFFFFFFFFFFFFF, spec.number | abi.PHASE_BITS[phase],
              error_in & 0xFFFFFFFF, len(ctx_in), len(ctx_out), flags & 0xFFFFFFFF]
    for a in ctx_in:
        values += (a[2] & 0xFFFFFFFF, a[1], 0)
    values += _ZEROS[:3 * (abi.MAX_IN_ARGS - len(ctx_in))]
    for a in ctx_out:
        values += (a[2] & 0xFFFFFFFF, a[1], 0)
    values += _ZEROS[:3 * (abi.MAX_OUT_ARGS - len(ctx_out))]
    _CTX_STRUCT.pack_into(view, 0, *values)
    return Context(base, spec, phase, nodeid, error_in, flags, arena, built, post)


_ZEROS = [0] * (3 * abi.MAX_IN_ARGS)
