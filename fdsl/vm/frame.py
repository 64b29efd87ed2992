"""Argument frames: the context memory of one request shape, laid out once.

A `Frame` is one block of real memory holding `struct fuse_bpf_args` (spec §4)
and a window for every argument of one opcode (spec §9) at fixed addresses,
with the PRE and POST header images precompiled (§6: PRE `out_args` alias the
inputs; POST appends the outputs to `in_args`).  A request:

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
_HEADER = struct.Struct("<QIIIII4x" + "I4xQQ" * (abi.MAX_IN_ARGS + abi.MAX_OUT_ARGS))
_NODEID = struct.Struct("<Q")
_ERROR_IN = struct.Struct("<i")
_OPCODE_ERROR = struct.Struct("<Ii")          # opcode, error_in (offsets 8, 12)
_POST_COPY_START = abi.CTX_OPCODE
assert abi.CTX_ERROR_IN == abi.CTX_OPCODE + 4
_U32 = struct.Struct("<I")
_M64 = (1 << 64) - 1
_FORMATS = {"u8": "B", "u16": "H", "u32": "I", "s32": "i", "u64": "Q", "s64": "q"}


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

    def _buffers(self) -> tuple[list[ArgBuffer], list[ArgBuffer]]:
        f, s = self.frame, self.frame.shape
        ins = [ArgBuffer(f.address + s.in_off[i] if s.in_off[i] else 0, f.in_size[i],
                         f.in_len[i], s.in_window[i], self.phase == "pre", f"in_args[{i}]")
               for i in range(len(s.inputs))]
        outs = [ArgBuffer(f.address + s.out_off[j], f.out_size[j], f.out_len[j],
                          s.out_window[j], True, f"out_args[{j}]")
                for j in range(len(s.outputs))]
        return (ins, ins) if self.phase == "pre" else (ins + outs, outs)

    @property
    def in_args(self) -> list[ArgBuffer]:
        return self._buffers()[0]

    @property
    def out_args(self) -> list[ArgBuffer]:
        return self._buffers()[1]

    def read_in(self, index: int, length: int | None = None) -> bytes | None:
        arg = self.in_args[index]
        if not arg.address:
            return None
        return self.frame.read(arg.address - self.address,
                               arg.length if length is None else min(length, arg.window))

    def read_out(self, index: int, length: int | None = None) -> bytes:
        arg = self.out_args[index]
        return self.frame.read(arg.address - self.address,
                               arg.length if length is None else min(length, arg.window))

    def inputs(self) -> list[bytes | None]:
        return [self.read_in(i) for i in range(self.n_inputs)]

    def outputs(self) -> list[bytes]:
        return [self.read_out(j) for j in range(len(self.out_args))]


class Frame:
    """The memory of one request shape on one thread (see the module docstring)."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
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
        spec, n_in, n_out = shape.spec, len(shape.inputs), len(shape.outputs)
        in_ptr = [self.address + o if o else 0 for o in shape.in_off]
        out_ptr = [self.address + o for o in shape.out_off]
        self._pre_image = self._image(spec.number | abi.PREFILTER,
                                      list(zip(shape.in_size, in_ptr)),
                                      list(zip(shape.in_size, in_ptr)), shape.total)
        self._post_header = self._image(
            spec.number | abi.POSTFILTER,
            list(zip(shape.in_size, in_ptr)) + list(zip(shape.out_size, out_ptr)),
            list(zip(shape.out_size, out_ptr)), abi.CTX_SIZE)
        self._post_opcode = spec.number | abi.POSTFILTER
        self._post_tail = self._post_header[_POST_COPY_START:]
        # arguments whose size field follows the data (strings, buffers, NULL args)
        self._variable_in = [i for i, a in enumerate(shape.inputs)
                             if a.kind != "struct" and a.size_field is None]
        self._variable_out = [j for j, a in enumerate(shape.outputs)
                              if a.kind != "struct" and a.size_field is None]
        ctx = Region(self.address, abi.CTX_SIZE, False, "ctx")
        ins_pre = [Region(p, w, True, f"in_args[{i}]")
                   for i, (p, w) in enumerate(zip(in_ptr, shape.in_window)) if p]
        ins_post = [Region(r.address, r.length, False, r.name) for r in ins_pre]
        outs = [Region(p, w, True, f"out_args[{j}]")
                for j, (p, w) in enumerate(zip(out_ptr, shape.out_window))]
        self.pre = FrameCtx(self, "pre", [ctx, *ins_pre])
        self.post = FrameCtx(self, "post", [ctx, *ins_post, *outs])
        # header offsets of the size fields of each argument, per phase
        self._in_size_at_pre = [(abi.in_arg_offset(i), abi.out_arg_offset(i))
                                for i in range(n_in)]
        self._in_size_at_post = [abi.in_arg_offset(i) for i in range(n_in)]
        self._out_size_at_post = [(abi.in_arg_offset(n_in + j), abi.out_arg_offset(j))
                                  for j in range(n_out)]

    def _image(self, opcode: int, ins: list, outs: list, length: int) -> bytes:
        values: list[int] = [0, opcode, 0, len(ins), len(outs), self.shape.flags & 0xFFFFFFFF]
        for size, ptr in ins:
            values += (size & 0xFFFFFFFF, ptr, 0)
        values += [0] * (3 * (abi.MAX_IN_ARGS - len(ins)))
        for size, ptr in outs:
            values += (size & 0xFFFFFFFF, ptr, 0)
        values += [0] * (3 * (abi.MAX_OUT_ARGS - len(outs)))
        image = bytearray(length)
        _HEADER.pack_into(image, 0, *values)
        return bytes(image)

    # ------------------------------------------------------------ writing

    def begin(self, nodeid: int) -> None:
        """PRE: header image and zeroed windows; argument sizes back to the shape's."""
        self.view[:self.shape.total] = self._pre_image
        self.nodeid = nodeid & _M64
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
            self._set_in_size(index, n)

    def set_null_input(self, index: int, size: int) -> None:
        """An input the kernel passes as a NULL pointer with a size (WRITE's data)."""
        self.in_len[index] = 0
        self._set_in_size(index, size)

    def _set_in_size(self, index: int, size: int) -> None:
        self.in_size[index] = size
        a, b = self._in_size_at_pre[index]
        _U32.pack_into(self.view, a, size & 0xFFFFFFFF)
        _U32.pack_into(self.view, b, size & 0xFFFFFFFF)

    def set_output(self, index: int, data: bytes | bytearray | memoryview) -> None:
        """The bytes a backing step produced for a buffer output (size = their length)."""
        self.set_output_length(index, self._copy("out_args", self.out_off[index],
                                                 self.shape.out_window[index], index, data))

    def set_output_length(self, index: int, n: int) -> None:
        self.out_len[index] = n
        if self.shape.outputs[index].kind != "struct":
            self.out_size[index] = n

    def to_post(self, error_in: int) -> None:
        """POST header over the same memory: inputs as PRE left them, outputs appended."""
        view = self.view
        view[_POST_COPY_START:abi.CTX_SIZE] = self._post_tail   # nodeid stays as PRE left it
        _OPCODE_ERROR.pack_into(view, abi.CTX_OPCODE, self._post_opcode, error_in)
        for i in self._variable_in:
            _U32.pack_into(view, self._in_size_at_post[i], self.in_size[i] & 0xFFFFFFFF)
        for j in self._variable_out:
            a, b = self._out_size_at_post[j]
            size = self.out_size[j] & 0xFFFFFFFF
            _U32.pack_into(view, a, size)
            _U32.pack_into(view, b, size)

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


def acquire(spec: abi.OpSpec, xattr_size0: bool = False) -> Frame:
    """A free frame for this shape on this thread (`release` it when done).

    A nested request of the same shape on the same thread (rare: readdir looks
    entries up, create checks its name with a lookup) gets a fresh frame."""
    frames: dict[tuple[int, bool], Frame] | None = getattr(_local, "frames", None)
    if frames is None:
        frames = _local.frames = {}
    key = (spec.number, xattr_size0)
    frame = frames.get(key)
    if frame is None:
        frame = frames[key] = Frame(shape_of(spec, xattr_size0))
    elif frame.busy:
        frame = Frame(frame.shape)
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

