"""The daemon's RFC v1 argument frames against the independent RFC v1 context builder
(fdsl.vm.context_rfc_v1): the same header for the same request, helpers 208/209 writing
into the frame the backing step reads, and `disasm --abi` naming RFC v1's fields."""
from __future__ import annotations

import ctypes
import struct

import pytest

from fdsl import abi
from fdsl.vm import frame as frames
from fdsl.vm.context_rfc_v1 import build_rfc_v1_context, get_writeable
from mounting import fdsl

V1 = abi.RFC_V1
_SLOT = struct.Struct("<QQII")

# (op, phase, inputs, outputs)
REQUESTS = [
    ("lookup", "pre", [b"secret\0"], []),
    ("lookup", "post", [b"name\0"], [bytes(abi.FUSE_ENTRY_OUT.size),
                                     bytes(abi.FUSE_ENTRY_BPF_OUT.size)]),
    ("mkdir", "pre", [bytes(abi.FUSE_MKDIR_IN.size), b"dir\0"], []),
    ("open", "post", [bytes(abi.FUSE_OPEN_IN.size)], [bytes(abi.FUSE_OPEN_OUT.size)]),
    ("getattr", "post", [bytes(abi.FUSE_GETATTR_IN.size)], [bytes(abi.FUSE_ATTR_OUT.size)]),
]


def header(view: bytes) -> tuple:
    """numargs, opcode, flags, then (size, end - value, max_size, value != 0) of every slot."""
    in_n, out_n = struct.unpack_from("<II", view, 16)
    slots = []
    for where in [V1.in_arg_offset(i) for i in range(V1.max_in_args)] + \
                 [V1.out_arg_offset(j) for j in range(V1.max_out_args)]:
        value, end, size, max_size = _SLOT.unpack_from(view, where)
        slots.append((size, end - value if value else end, max_size, bool(value)))
    opcode, flags = struct.unpack_from("<I", view, 8)[0], struct.unpack_from("<I", view, 24)[0]
    return (in_n, out_n, opcode, flags, tuple(slots))


def frame_for(op: str, phase: str, inputs, outputs) -> frames.Frame:
    frame = frames.Frame(frames.shape_of(V1.ops[op]), frames.layout_of(V1))
    frame.begin(1)
    for i, data in enumerate(inputs):
        frame.set_input(i, data)
    for j, data in enumerate(outputs):
        frame.set_output(j, data)
    if phase == "post":
        frame.to_post(0)
    return frame


@pytest.mark.parametrize("op, phase, inputs, outputs", REQUESTS)
def test_frame_header_is_the_context_builders(op, phase, inputs, outputs):
    frame = frame_for(op, phase, inputs, outputs)
    ctx = build_rfc_v1_context(op, phase, inputs, outputs)
    assert header(bytes(frame.view[:V1.ctx_size])) == \
        header(ctypes.string_at(ctx.address, V1.ctx_size))
    if phase == "post":                 # RFC v1: POST in_args are the inputs only
        assert len(frame.post.in_args) == len(inputs)
        assert len(frame.post.out_args) == len(outputs)


def test_helper_208_rewrites_the_name_the_backing_step_reads():
    frame = frame_for("lookup", "pre", [b"a\0"], [])
    name = frame.address + frame.in_off[0]
    assert get_writeable(frame.address, V1.writable_helpers["in"], 0, name, 7) == name
    frame.view[frame.in_off[0]:frame.in_off[0] + 7] = b"secret\0"
    assert frame.input_string(0) == b"secret"
    value, end, size, _max = _SLOT.unpack_from(frame.view, V1.in_arg_offset(0))
    assert (value, end - value, size) == (name, 7, 7)
    # not its own slot's pointer, too big, an output in PRE: NULL
    assert get_writeable(frame.address, V1.writable_helpers["in"], 0, name + 1, 4) == 0
    assert get_writeable(frame.address, V1.writable_helpers["in"], 0, name, 4096) == 0
    assert get_writeable(frame.address, V1.writable_helpers["out"], 0, name, 4) == 0


def test_helper_209_cannot_grow_a_fixed_size_output():
    frame = frame_for("open", "post", [bytes(8)], [bytes(abi.FUSE_OPEN_OUT.size)])
    out = frame.address + frame.out_off[0]
    assert get_writeable(frame.address, V1.writable_helpers["out"], 0, out, 64) == 0
    assert get_writeable(frame.address, V1.writable_helpers["out"], 0, out, 16) == out
    assert frame.out_len[0] == abi.FUSE_OPEN_OUT.size


def test_ack_frames_are_unchanged_by_the_layout():
    """ACK: PRE out_args alias the inputs, POST appends the outputs to in_args."""
    frame = frames.Frame(frames.shape_of(abi.OPS["open"]))
    frame.begin(1)
    assert [a.address for a in frame.pre.out_args] == [a.address for a in frame.pre.in_args]
    frame.to_post(0)
    assert len(frame.post.in_args) == 2
    assert frame.post.in_args[1].address == frame.post.out_args[0].address




def test_disasm_names_the_context_fields_of_the_objects_abi(bpf_c_object, tmp_path):
    obj = tmp_path / "pair.v1.o"
    obj.write_bytes(bpf_c_object("abi_pair", "-DRFC_V1"))
    v1 = fdsl("disasm", "--abi", "rfc-v1", str(obj))
    assert v1.returncode == 0, v1.stderr
    for name in ("opcode", "in_args[0].value", "in_args[0].end_offset", "in_args[1].end_offset",
                 "out_args[0].value"):
        assert f"; ctx {name}\n" in v1.stdout, name
    ack = fdsl("disasm", str(obj))              # the same loads read as ACK's layout
    assert "; ctx in_args[1].size\n" in ack.stdout and "end_offset" not in ack.stdout.replace(
        "in_args[0].end_offset", "")
    assert fdsl("disasm", "--abi", "v9", str(obj)).returncode == 2
