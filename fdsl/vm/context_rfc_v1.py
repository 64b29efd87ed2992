"""`struct __bpf_fuse_args` (RFC v1, spec §12.2) in real memory, and helpers 208/209 behind it.

`build_rfc_v1_context(op, phase, inputs, outputs, ...)` lays out the 152-byte
context and one `BUFFER_WINDOW`-byte block per argument: `value` points at the
bytes, `end_offset` one past the valid ones, `size` is the valid length and
`max_size` the argument's capacity.  RFC v1's POST `in_args` are the inputs
only; the outputs stay in `out_args` (unlike ACK, §12.1).  In PRE the outputs
are not visible (`out_numargs` 0).  `flags` carries the request's
FUSE_BPF_FORCE/OUT_ARGVAR bits as ACK's context does (§4), like the daemon's
RFC v1 frames (`fdsl.vm.frame`).

Helpers 208/209 (`bpf_fuse_get_writeable_in/out`, §8.2) find the context by its
address (r1) in a registry of live contexts (these and the daemon's RFC v1
argument frames, `fdsl.vm.frame`, both `register_writer`) and return the argument's own block when
`size` fits (fixed-size arguments cannot grow; variable-size ones get their
size set, up to `max_size`), else NULL.  The block is always writable memory
for the VMs; it is the verifier that allows stores only through the helper's
pointer.  A context stays registered as long as it is alive.
"""
from __future__ import annotations

import ctypes
import struct
import weakref
from typing import Any, Sequence

from fdsl import abi
from fdsl.abi import rfc_v1
from fdsl.vm.context import BUFFER_WINDOW
from fdsl.vm.maps import Region

V1 = abi.RFC_V1
_HEADER = struct.Struct("<QIIIII4x")
_SLOT = struct.Struct("<QQII")
assert _HEADER.size == rfc_v1.IN_ARGS_BASE and _SLOT.size == rfc_v1.ARG_SLOT_SIZE

# context address -> the live object whose `writeable(direction, index, value, size)`
# serves helpers 208/209 for it (an `RfcContext` or an RFC v1 `fdsl.vm.frame.Frame`)
_writers: "weakref.WeakValueDictionary[int, Any]" = weakref.WeakValueDictionary()


def register_writer(address: int, writer: Any) -> None:
    """Serve helpers 208/209 for the context at `address` with `writer` while it lives."""
    _writers[address] = writer


class RfcArg:
    """One argument block: where it is, its valid length, its capacity, whether it may grow."""

    def __init__(self, spec: abi.ArgSpec, address: int, length: int, slot: int) -> None:
        self.spec = spec
        self.address = address
        self.length = length
        self.capacity = min(spec.size or BUFFER_WINDOW, BUFFER_WINDOW)
        self.slot = slot              # context offset of this slot
        self.modified = False


class RfcContext:
    """A built RFC v1 context; pass `address` in r1 and `regions` to the interpreter."""

    def __init__(self, op: abi.OpSpec, phase: str, inputs: Sequence[bytes | None],
                 outputs: Sequence[bytes], nodeid: int, error_in: int) -> None:
        post = phase == "post"
        self.op, self.phase = op, phase
        shown_outputs = list(outputs) if post else []
        total = 256 + BUFFER_WINDOW * (len(inputs) + len(shown_outputs))
        self._buf = (ctypes.c_ubyte * total)()
        self.address = ctypes.addressof(self._buf)
        self.in_args: list[RfcArg] = []
        self.out_args: list[RfcArg] = []
        block = self.address + 256
        for kind, specs, values, where in (("in", op.inputs, inputs, V1.in_arg_offset),
                                           ("out", op.outputs, shown_outputs, V1.out_arg_offset)):
            for i, (spec, value) in enumerate(zip(specs, values)):
                data = bytes(value or b"")[:BUFFER_WINDOW]
                address = block if value is not None else 0
                if address:
                    ctypes.memmove(address, data, len(data))
                block += BUFFER_WINDOW
                (self.in_args if kind == "in" else self.out_args).append(
                    RfcArg(spec, address, len(data), where(i)))
        opcode = op.number | abi.PHASE_BITS[phase]
        _HEADER.pack_into(self._buf, 0, nodeid, opcode, error_in & 0xFFFFFFFF, len(self.in_args),
                          len(self.out_args), abi.requests.context_flags(op))
        for arg in self.in_args + self.out_args:
            self._write_slot(arg)
        register_writer(self.address, self)

    def _write_slot(self, arg: RfcArg) -> None:
        end = arg.address + arg.length if arg.address else 0
        _SLOT.pack_into(self._buf, arg.slot, arg.address, end, arg.length, arg.capacity)

    @property
    def regions(self) -> list[Region]:
        """The context (read-only) and every argument block (writable: see the module doc)."""
        regions = [Region(self.address, V1.ctx_size, False, "ctx")]
        for kind, args in (("in_args", self.in_args), ("out_args", self.out_args)):
            regions += [Region(a.address, BUFFER_WINDOW, True, f"{kind}[{i}]")
                        for i, a in enumerate(args) if a.address]
        return regions

    def read(self, arg: RfcArg) -> bytes | None:
        if not arg.address:
            return None
        return ctypes.string_at(arg.address, arg.length)

    def inputs(self) -> list[bytes | None]:
        return [self.read(a) for a in self.in_args]

    def outputs(self) -> list[bytes | None]:
        return [self.read(a) for a in self.out_args]

    def writeable(self, direction: str, index: int, value: int, size: int) -> int:
        """Helper 208/209: the argument's block if `size` fits, else 0 (NULL)."""
        args = self.in_args if direction == "in" else self.out_args
        if not 0 <= index < len(args):
            return 0
        arg = args[index]
        if not arg.address or value != arg.address or size > arg.capacity:
            return 0
        if arg.spec.variable:
            arg.length = size
        elif size > arg.length:
            return 0                  # fixed-size arguments cannot grow
        arg.modified = True
        self._write_slot(arg)
        return arg.address


def build_rfc_v1_context(op: str | abi.OpSpec, phase: str, inputs: Sequence[bytes | None] = (),
                         outputs: Sequence[bytes] = (), *, nodeid: int = 1,
                         error_in: int = 0) -> RfcContext:
    spec = op if isinstance(op, abi.OpSpec) else V1.ops[op]
    return RfcContext(spec, phase, inputs, outputs, nodeid, error_in)


def get_writeable(ctx_address: int, helper_id: int, index: int, value: int, size: int) -> int:
    """Helpers 208/209 as the VMs call them (r1..r4); 0 unless r1 is a live RFC v1 context."""
    ctx = _writers.get(ctx_address)
    if ctx is None:
        return 0
    direction = "in" if helper_id == V1.writable_helpers["in"] else "out"
    return ctx.writeable(direction, index & 0xFFFFFFFF, value, size)
