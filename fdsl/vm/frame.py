"""Argument frames: the context memory of one request shape, laid out once.

A `Frame` is one block of real memory holding the context of one ABI (ACK's
`struct fuse_bpf_args`, spec §4, or RFC v1's `struct __bpf_fuse_args`, §12.2)
and a window for every argument of one opcode (spec §9) at fixed addresses,
with the PRE and POST header images precompiled.  What differs between the
ABIs is data of their `abi.Abi` record, read once by `Layout`: the slot
fields, whether PRE `out_args` alias the inputs (ACK §6) or are absent (RFC
v1), whether POST appends the outputs to `in_args` (ACK) or leaves them in
`out_args` (RFC v1), and whether `end_offset` bounds the valid bytes (RFC
v1's packet pointers).  RFC v1 programs write arguments through helpers
208/209 (`Frame.writeable`), which return the argument's own window, so their
writes land in the request like ACK's stores through `out_args`.  A request:

    frame.begin(nodeid)                  # one copy: PRE header + zeroed windows
    codec.pack_into(frame.view, frame.in_off[0], ...)   # its few fields
    vm.run(frame.pre, caller)            # one ctypes call into the JIT
    frame.to_post(error_in)              # POST header over the same memory
    reader.unpack_from(frame.view, frame.out_off[0])    # only what finalize needs

Frames are cached per thread and shape (`frames_for()`), so nothing is
allocated per request.  `FieldCodec` compiles a `struct.Struct` for the named
fields of one argument (checked against `fdsl.abi` when built: a misspelt field
fails at import, not in a mounted request).

Every window is at least `BUFFER_WINDOW` bytes, zero past the valid bytes, so
any constant offset the verifier accepts is real memory for the JIT; `regions`
lists what a program may touch for the interpreter's bounds checks.
"""
from __future__ import annotations

import ctypes
import struct
import threading
from typing import Sequence

from fdsl import abi
from fdsl.vm.context import BUFFER_WINDOW, ArgBuffer
from fdsl.vm.maps import Region

_CTX_AREA = 256
_HEADER = struct.Struct("<QIIIII4x")          # nodeid, opcode, error_in, numargs, flags: both ABIs
_NODEID = struct.Struct("<Q")
_ERROR_IN = struct.Struct("<i")
_OPCODE_ERROR = struct.Struct("<Ii")          # opcode, error_in (offsets 8, 12)
_POST_COPY_START = abi.CTX_OPCODE
assert abi.CTX_ERROR_IN == abi.CTX_OPCODE + 4
assert all((f.name, f.offset) == (g.name, g.offset) for r in abi.ABIS.values()
           for f, g in zip(r.header_fields, abi.ACK.header_fields)), "shared context header"
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_M64 = (1 << 64) - 1
_FORMATS = {"u8": "B", "u16": "H", "u32": "I", "s32": "i", "u64": "Q", "s64": "q"}
_WIDTH = {4: _U32, 8: _U64}

ArgRef = tuple[str, int]        # ("in", i) or ("out", j): one argument of the opcode


class Layout:
    """How one ABI's context describes the arguments, read from its `abi.Abi` record."""

    def __init__(self, record: abi.Abi) -> None:
        self.abi = record
        self.ctx_size = record.ctx_size
        self.size_at = record.slot_fields["size"][0]
        # RFC v1: `end_offset` is the packet end, value + valid bytes; ACK leaves it 0
        self.end_at = record.slot_fields["end_offset"][0] \
            if record.packet else None
        self.pre_outs_alias_inputs = record.buffer_stores == "out_args"
        self.post_appends_outputs = record.post_appends_outputs
        # RFC v1 writes inputs through helper 208 in either phase; ACK's POST in_args are read-only
        self.post_inputs_writable = record.buffer_stores == "helpers"

    def slots(self, phase: str, n_in: int, n_out: int) -> tuple[list[ArgRef], list[ArgRef]]:
        """The arguments `in_args[...]` and `out_args[...]` show in `phase`, in slot order."""
        ins: list[ArgRef] = [("in", i) for i in range(n_in)]
        outs: list[ArgRef] = [("out", j) for j in range(n_out)]
        if phase == "pre":
            return ins, (ins if self.pre_outs_alias_inputs else [])
        return ins + (outs if self.post_appends_outputs else []), outs

    def slot_bases(self, phase: str, n_in: int, n_out: int) -> dict[ArgRef, list[int]]:
        """Context offsets of every slot each argument appears in during `phase`."""
        ins, outs = self.slots(phase, n_in, n_out)
        bases: dict[ArgRef, list[int]] = {}
        for refs, where in ((ins, self.abi.in_arg_offset), (outs, self.abi.out_arg_offset)):
            for k, ref in enumerate(refs):
                bases.setdefault(ref, []).append(where(k))
        return bases

    def pack_slot(self, image: bytearray, base: int, ptr: int, size: int, length: int,
                  capacity: int) -> None:
        values = {"value": ptr, "size": size & 0xFFFFFFFF, "max_size": capacity,
                  "end_offset": ptr + length if ptr and self.end_at is not None else 0}
        for name, (offset, width) in self.abi.slot_fields.items():
            _WIDTH[width].pack_into(image, base + offset, values[name])


_LAYOUTS: dict[str, Layout] = {}


def layout_of(record: abi.Abi) -> Layout:
    layout = _LAYOUTS.get(record.id)
    if layout is None:
        layout = _LAYOUTS[record.id] = Layout(record)
    return layout


def _round(n: int, to: int = 64) -> int:
    return (n + to - 1) // to * to


class FieldCodec:
    """A `struct.Struct` for some fields of one struct argument, in the given order.

    `FieldCodec(abi.FUSE_GETATTR_IN, "getattr_flags", "fh")` packs/unpacks those
    two fields at their offsets relative to the argument's start; `base` shifts
    them (an embedded struct, e.g. fuse_attr inside fuse_attr_out at 16)."""

    __slots__ = ("struct", "names", "codec", "pack_into", "unpack_from", "size")

    def __init__(self, cstruct: abi.CStruct, *names: str, base: int = 0,
                 prefix: str = "") -> None:
        fields = []
        for name in names:
            f = cstruct.field(prefix + name)
            if f is None:
                raise KeyError(f"{cstruct.name} has no field {prefix + name!r}")
            fields.append(f)
        order = sorted(range(len(fields)), key=lambda i: fields[i].offset)
        if order != list(range(len(fields))):
            raise ValueError(f"{cstruct.name}: fields must be listed in offset order: {names}")
        fmt, at = "<", 0
        for f in fields:
            if f.offset - base < at:
                raise ValueError(f"{cstruct.name}: overlapping fields {names}")
            fmt += "x" * (f.offset - base - at) + _FORMATS[f.ctype]
            at = f.offset - base + f.size
        self.struct = cstruct
        self.names = names
        self.codec = struct.Struct(fmt)
        self.pack_into = self.codec.pack_into
        self.unpack_from = self.codec.unpack_from
        self.size = at


class Shape:
    """The static layout of one request shape: an opcode and its output variant."""

    def __init__(self, spec: abi.OpSpec, outputs: tuple[abi.ArgSpec, ...], flags: int) -> None:
        self.spec = spec
        self.inputs = spec.inputs
        self.outputs = outputs
        self.flags = flags
        offset = _CTX_AREA
        self.in_off: list[int] = []
        self.in_window: list[int] = []
        self.out_off: list[int] = []
        self.out_window: list[int] = []
        for arg in self.inputs:
            if arg.null_value:
                self.in_off.append(0)
                self.in_window.append(0)
                continue
            window = _round(max(BUFFER_WINDOW, arg.capacity))
            self.in_off.append(offset)
            self.in_window.append(window)
            offset += window
        for arg in self.outputs:
            window = _round(max(BUFFER_WINDOW, arg.capacity))
            self.out_off.append(offset)
            self.out_window.append(window)
            offset += window
        self.total = offset
        # size fields fixed by the shape (structs, STATFS's 8); others follow the data
        self.in_size = [a.size_field if a.size_field is not None else
                        (a.size if a.kind == "struct" else 0) for a in self.inputs]
        self.out_size = [a.size_field if a.size_field is not None else
                         (a.size if a.kind == "struct" else 0) for a in self.outputs]


class FrameCtx:
    """One phase's view of a frame: what a VM runs on (`address`, `regions`) and
    what `fdsl run`/`fdsl test` read back (the `fdsl.vm.context.Context` interface)."""

    __slots__ = ("frame", "phase", "address", "regions")

    def __init__(self, frame: "Frame", phase: str, regions: list[Region]) -> None:
        self.frame = frame
        self.phase = phase
        self.address = frame.address
        self.regions = regions

    @property
    def op(self) -> abi.OpSpec:
        return self.frame.shape.spec

    @property
    def abi(self) -> abi.Abi:
        return self.frame.layout.abi

    @property
    def flags(self) -> int:
        return self.frame.shape.flags

    @property
    def nodeid(self) -> int:
        return int(_NODEID.unpack_from(self.frame.view, abi.CTX_NODEID)[0])

    @property
    def error_in(self) -> int:
        return int(_ERROR_IN.unpack_from(self.frame.view, abi.CTX_ERROR_IN)[0])

    @property
    def n_inputs(self) -> int:
        return len(self.frame.shape.inputs)

    def _buffer(self, ref: ArgRef, slot: str) -> ArgBuffer:
        f, s = self.frame, self.frame.shape
        kind, k = ref
        if kind == "in":
            writable = self.phase == "pre" or f.layout.post_inputs_writable
            return ArgBuffer(f.address + s.in_off[k] if s.in_off[k] else 0, f.in_size[k],
                             f.in_len[k], s.in_window[k], writable, slot)
        return ArgBuffer(f.address + s.out_off[k], f.out_size[k], f.out_len[k],
                         s.out_window[k], True, slot)

    def _buffers(self) -> tuple[list[ArgBuffer], list[ArgBuffer]]:
        s = self.frame.shape
        ins, outs = self.frame.layout.slots(self.phase, len(s.inputs), len(s.outputs))
        return ([self._buffer(r, f"in_args[{i}]") for i, r in enumerate(ins)],
                [self._buffer(r, f"out_args[{j}]") for j, r in enumerate(outs)])

    @property
    def in_args(self) -> list[ArgBuffer]:
        return self._buffers()[0]

    @property
    def out_args(self) -> list[ArgBuffer]:
        return self._buffers()[1]

    def read_arg(self, arg: ArgBuffer, length: int | None = None) -> bytes | None:
        """The bytes of one slot's argument (its valid ones, or `length` within its window)."""
        if not arg.address:
            return None
        return self.frame.read(arg.address - self.address,
                               arg.length if length is None else min(length, arg.window))

    def read_in(self, index: int, length: int | None = None) -> bytes | None:
        return self.read_arg(self.in_args[index], length)

    def read_out(self, index: int, length: int | None = None) -> bytes:
        return self.read_arg(self.out_args[index], length) or b""

    def inputs(self) -> list[bytes | None]:
        return [self.read_in(i) for i in range(self.n_inputs)]

    def outputs(self) -> list[bytes]:
        return [self.read_out(j) for j in range(len(self.out_args))]


class Frame:
    """The memory of one request shape on one thread (see the module docstring)."""

    def __init__(self, shape: Shape, layout: Layout | None = None) -> None:
        self.shape = shape
        self.layout = layout = layout or layout_of(abi.ACK)
        self._buf = (ctypes.c_ubyte * shape.total)()
        self.address = ctypes.addressof(self._buf)
        self.view = memoryview(self._buf).cast("B")
        self.in_off = shape.in_off
        self.out_off = shape.out_off
        self.in_len = [s for s in shape.in_size]      # valid bytes per argument
        self.in_size = list(shape.in_size)            # what the size field says
        self.out_len = [s for s in shape.out_size]
        self.out_size = list(shape.out_size)
        self.busy = False
        self.nodeid = 0
        self.phase = "pre"
        spec, n_in, n_out = shape.spec, len(shape.inputs), len(shape.outputs)
        self._in_ptr = in_ptr = [self.address + o if o else 0 for o in shape.in_off]
        self._out_ptr = out_ptr = [self.address + o for o in shape.out_off]
        ctx_size = layout.ctx_size
        # slot offsets of every argument, per phase (ACK PRE: in_args[i] and the aliasing
        # out_args[i]; ACK POST: outputs also in in_args[n + j]; RFC v1: one slot each)
        self._pre_bases = layout.slot_bases("pre", n_in, n_out)
        self._post_bases = layout.slot_bases("post", n_in, n_out)
        self._pre_image = self._image("pre", spec.number | abi.PREFILTER, shape.total)
        self._post_header = self._image("post", spec.number | abi.POSTFILTER, ctx_size)
        self._post_opcode = spec.number | abi.POSTFILTER
        self._post_tail = self._post_header[_POST_COPY_START:]
        # arguments whose slot follows the data (strings, buffers, NULL args); with packet
        # bounds (RFC v1) every argument's end_offset does
        packet = layout.end_at is not None
        self._variable_in = [i for i, a in enumerate(shape.inputs)
                             if packet or (a.kind != "struct" and a.size_field is None)]
        self._variable_out = [j for j, a in enumerate(shape.outputs)
                              if packet or (a.kind != "struct" and a.size_field is None)]
        self._in_follows = [i in self._variable_in for i in range(n_in)]
        # the header words each argument's size (and packet end) is written to, per phase
        self._pre_in_at = [self._words(self._pre_bases.get(("in", i), [])) for i in range(n_in)]
        self._post_in_at = [self._words(self._post_bases.get(("in", i), []))
                            for i in range(n_in)]
        self._post_out_at = [self._words(self._post_bases.get(("out", j), []))
                             for j in range(n_out)]
        ctx = Region(self.address, ctx_size, False, "ctx")
        ins_pre = [Region(p, w, True, f"in_args[{i}]")
                   for i, (p, w) in enumerate(zip(in_ptr, shape.in_window)) if p]
        ins_post = [Region(r.address, r.length, layout.post_inputs_writable, r.name)
                    for r in ins_pre]
        outs = [Region(p, w, True, f"out_args[{j}]")
                for j, (p, w) in enumerate(zip(out_ptr, shape.out_window))]
        self.pre = FrameCtx(self, "pre", [ctx, *ins_pre])
        self.post = FrameCtx(self, "post", [ctx, *ins_post, *outs])
        if layout.abi.writable_helpers:      # helpers 208/209 find this frame by its address
            from fdsl.vm.context_rfc_v1 import register_writer

            register_writer(self.address, self)

    def _arg(self, ref: ArgRef) -> tuple[int, int, int, int]:
        """(pointer, size field, valid bytes, capacity) of one argument as it is now."""
        kind, k = ref
        shape = self.shape
        if kind == "in":
            return (self._in_ptr[k], self.in_size[k], self.in_len[k],
                    shape.inputs[k].capacity or shape.in_window[k])
        return (self._out_ptr[k], self.out_size[k], self.out_len[k],
                shape.outputs[k].capacity or shape.out_window[k])

    def _image(self, phase: str, opcode: int, length: int) -> bytes:
        shape, layout = self.shape, self.layout
        ins, outs = layout.slots(phase, len(shape.inputs), len(shape.outputs))
        image = bytearray(length)
        _HEADER.pack_into(image, 0, 0, opcode, 0, len(ins), len(outs),
                          shape.flags & 0xFFFFFFFF)
        for ref, bases in (self._pre_bases if phase == "pre" else self._post_bases).items():
            for base in bases:
                layout.pack_slot(image, base, *self._arg(ref))
        return bytes(image)

    def _words(self, bases: list[int]) -> tuple[list[int], list[int]]:
        """(offsets of `size`, offsets of `end_offset`) in the slots at `bases`."""
        end_at = self.layout.end_at
        return ([b + self.layout.size_at for b in bases],
                [b + end_at for b in bases] if end_at is not None else [])

    def _put(self, words: tuple[list[int], list[int]], ptr: int, size: int, length: int) -> None:
        """An argument's new size (and packet end) into each slot it appears in."""
        view = self.view
        sizes, ends = words
        size &= 0xFFFFFFFF
        for at in sizes:
            _U32.pack_into(view, at, size)
        if ends:
            end = ptr + length if ptr else 0
            for at in ends:
                _U64.pack_into(view, at, end)

    # ------------------------------------------------------------ writing

    def begin(self, nodeid: int) -> None:
        """PRE: header image and zeroed windows; argument sizes back to the shape's."""
        self.view[:self.shape.total] = self._pre_image
        self.nodeid = nodeid & _M64
        self.phase = "pre"
        _NODEID.pack_into(self.view, abi.CTX_NODEID, self.nodeid)
        shape = self.shape
        self.in_len[:] = shape.in_size
        self.in_size[:] = shape.in_size
        self.out_len[:] = shape.out_size
        self.out_size[:] = shape.out_size

    def _copy(self, kind: str, start: int, window: int, index: int,
              data: bytes | bytearray | memoryview) -> int:
        n = len(data)
        if n > window:
            raise ValueError(f"{kind}[{index}]: {n} bytes exceed the window")
        self.view[start:start + n] = data
        return n

    def set_input(self, index: int, data: bytes | bytearray | memoryview) -> None:
        """The bytes of a string/buffer input (size field = their length)."""
        n = self._copy("in_args", self.in_off[index], self.shape.in_window[index], index, data)
        self.in_len[index] = n
        if self.shape.inputs[index].kind != "struct":
            self.in_size[index] = n
        if self._in_follows[index]:
            self._put(self._pre_in_at[index], self._in_ptr[index], self.in_size[index], n)

    def set_null_input(self, index: int, size: int) -> None:
        """An input the kernel passes as a NULL pointer with a size (WRITE's data)."""
        self.in_len[index] = 0
        self.in_size[index] = size
        self._put(self._pre_in_at[index], 0, size, 0)

    def set_output(self, index: int, data: bytes | bytearray | memoryview) -> None:
        """The bytes a backing step produced for a buffer output (size = their length)."""
        self.set_output_length(index, self._copy("out_args", self.out_off[index],
                                                 self.shape.out_window[index], index, data))

    def set_output_length(self, index: int, n: int) -> None:
        self.out_len[index] = n
        if self.shape.outputs[index].kind != "struct":
            self.out_size[index] = n
        if self.phase == "post":   # filled after to_post (the backing step's, a userspace reply)
            self._put(self._post_out_at[index], self._out_ptr[index], self.out_size[index], n)

    def to_post(self, error_in: int) -> None:
        """POST header over the same memory: inputs as PRE left them, outputs where the
        ABI puts them (ACK: appended to `in_args`; RFC v1: in `out_args` only)."""
        view = self.view
        view[_POST_COPY_START:self.layout.ctx_size] = self._post_tail   # nodeid stays
        _OPCODE_ERROR.pack_into(view, abi.CTX_OPCODE, self._post_opcode, error_in)
        self.phase = "post"
        for i in self._variable_in:
            self._put(self._post_in_at[i], self._in_ptr[i], self.in_size[i], self.in_len[i])
        for j in self._variable_out:
            self._put(self._post_out_at[j], self._out_ptr[j], self.out_size[j], self.out_len[j])

    def writeable(self, direction: str, index: int, value: int, size: int) -> int:
        """Helpers 208/209 (RFC v1, spec §8.2): the argument's own window when `size` fits
        its capacity, else 0 (NULL).  A variable-size argument takes `size` as its new
        size; a fixed-size one cannot grow.  Outputs exist in POST only."""
        if direction == "in":
            if index >= len(self.shape.inputs):
                return 0
            ref: ArgRef = ("in", index)
        else:
            if self.phase != "post" or index >= len(self.shape.outputs):
                return 0
            ref = ("out", index)
        ptr, _size, length, capacity = self._arg(ref)
        arg = (self.shape.inputs if direction == "in" else self.shape.outputs)[index]
        if not ptr or value != ptr or size > capacity:
            return 0
        if arg.variable:
            if direction == "in":
                self.in_len[index] = self.in_size[index] = size
            else:
                self.out_len[index] = self.out_size[index] = size
        elif size > length:
            return 0                    # fixed-size arguments cannot grow
        if direction == "in":
            words = (self._pre_in_at if self.phase == "pre" else self._post_in_at)[index]
        else:
            words = self._post_out_at[index]
        ptr, size_field, length, _capacity = self._arg(ref)
        self._put(words, ptr, size_field, length)
        return ptr

    # ------------------------------------------------------------ reading

    def read(self, offset: int, length: int) -> bytes:
        return bytes(self.view[offset:offset + length])

    def input_bytes(self, index: int) -> bytes:
        start = self.in_off[index]
        return bytes(self.view[start:start + self.in_len[index]])

    def input_string(self, index: int) -> bytes:
        """A NUL-terminated input without its NUL (as PRE may have rewritten it)."""
        data = self.input_bytes(index)
        cut = data.find(b"\0")
        return data if cut < 0 else data[:cut]

    def output_bytes(self, index: int) -> bytes:
        start = self.out_off[index]
        return bytes(self.view[start:start + self.out_len[index]])

    def output_view(self, index: int) -> memoryview:
        start = self.out_off[index]
        return self.view[start:start + self.out_len[index]]


_local = threading.local()
_SHAPES: dict[tuple[int, bool], Shape] = {}


def shape_of(spec: abi.OpSpec, xattr_size0: bool = False) -> Shape:
    key = (spec.number, xattr_size0)
    shape = _SHAPES.get(key)
    if shape is None:
        size = 0 if xattr_size0 else None
        shape = _SHAPES[key] = Shape(spec, abi.requests.outputs_for(spec, size),
                                     abi.requests.context_flags(spec, size))
    return shape


def acquire(spec: abi.OpSpec, xattr_size0: bool = False, record: abi.Abi = abi.ACK) -> Frame:
    """A free frame for this shape and ABI on this thread (`release` it when done).

    A nested request of the same shape on the same thread (rare: readdir looks
    entries up, create checks its name with a lookup) gets a fresh frame."""
    frames: dict[tuple[int, bool, str], Frame] | None = getattr(_local, "frames", None)
    if frames is None:
        frames = _local.frames = {}
    key = (spec.number, xattr_size0, record.id)
    frame = frames.get(key)
    if frame is None:
        frame = frames[key] = Frame(shape_of(spec, xattr_size0), layout_of(record))
    elif frame.busy:
        frame = Frame(frame.shape, frame.layout)
    frame.busy = True
    return frame


def release(frame: Frame) -> None:
    frame.busy = False


def write_struct_fields(frame: Frame, direction: str, index: int,
                        values: dict[str, int]) -> None:
    """Set named fields of a struct argument (slow path: `fdsl run`, userspace writes)."""
    shape = frame.shape
    arg = (shape.inputs if direction == "in" else shape.outputs)[index]
    base = (frame.in_off if direction == "in" else frame.out_off)[index]
    cstruct = arg.struct
    assert cstruct is not None, "not a struct argument"
    for name, value in values.items():
        f = cstruct.field(name)
        if f is None:
            raise KeyError(f"{cstruct.name} has no field {name!r}")
        bits = 8 * f.size
        v = int(value) & ((1 << bits) - 1)
        frame.view[base + f.offset:base + f.offset + f.size] = v.to_bytes(f.size, "little")


def read_struct(frame: Frame, direction: str, index: int) -> dict[str, int]:
    """Every field of a struct argument (slow path)."""
    shape = frame.shape
    arg = (shape.inputs if direction == "in" else shape.outputs)[index]
    base = (frame.in_off if direction == "in" else frame.out_off)[index]
    cstruct = arg.struct
    assert cstruct is not None, "not a struct argument"
    return cstruct.unpack(frame.view[base:base + cstruct.size])


def regions_of(frame: Frame, phase: str) -> Sequence[Region]:
    return (frame.pre if phase == "pre" else frame.post).regions

