"""RFC v1 programs (clang -target bpf against tests/c/fuse_bpf_rfc_v1.h) run in both VMs
over the RFC v1 context: the decisions the C says, the output written through helper 209,
and the interpreter and the JIT agreeing on every request."""
from __future__ import annotations

import ctypes
import struct

import pytest

from fdsl import abi
from fdsl.abi import rfc_v1
from fdsl.vm.context_rfc_v1 import build_rfc_v1_context
from fdsl.vm.helpers import Caller
from fdsl.vm.interpreter import Interpreter, Runtime
from fdsl.vm.jit import Jit
from fdsl.vm.loader import load_object
from fdsl.vm.verifier import verify_object

V1 = abi.RFC_V1
OPEN_OUT = bytes(abi.FUSE_OPEN_OUT.size)

# (section, op, phase, inputs, outputs, expected r0)
REQUESTS = [
    ("fuse/rfc_v1", "lookup", "pre", [b"secret\0"], [], -2),
    ("fuse/rfc_v1", "lookup", "pre", [b"secre\0"], [], rfc_v1.CONTINUE),
    ("fuse/rfc_v1", "lookup", "pre", [b"secrets\0"], [], rfc_v1.CONTINUE),
    ("fuse/rfc_v1", "lookup", "pre", [b"sec"], [], rfc_v1.CONTINUE),       # short: bounds check says no
    ("fuse/rfc_v1", "open", "pre", [bytes(8)], [], rfc_v1.POSTFILTER),
    ("fuse/rfc_v1", "open", "post", [bytes(8)], [OPEN_OUT], rfc_v1.CONTINUE),
    ("fuse/rfc_v1", "mkdir", "pre", [bytes(8), b"d\0"], [], rfc_v1.USER_PREFILTER),
    ("fuse/rfc_v1_var", "lookup", "pre", [b"abc\0"], [], rfc_v1.CONTINUE),
    ("fuse/rfc_v1_var", "lookup", "pre", [b"abcd"], [], -1),               # last byte is not NUL
]


@pytest.fixture(scope="module")
def programs(bpf_c_object):
    obj = load_object(bpf_c_object("rfc_v1_programs"))
    verified = verify_object(obj, abi_record=obj.abi("rfc-v1"))
    return {name: (obj.programs[name].insns, v) for name, v in verified.items()}


def _vms(programs, section):
    insns, verified = programs[section]
    return (Interpreter(insns, Runtime()), Jit(insns, Runtime(), verified=verified))


@pytest.mark.parametrize("section, op, phase, inputs, outputs, expected", REQUESTS)
def test_decisions_the_c_says_in_both_vms(programs, section, op, phase, inputs, outputs, expected):
    for vm in _vms(programs, section):
        ctx = build_rfc_v1_context(op, phase, inputs, outputs)
        r0 = vm.execute(ctx.address, ctx.regions, Caller())
        assert ctypes.c_int32(r0).value == expected, type(vm).__name__


def test_open_post_writes_fh_through_writeable_out(programs):
    for vm in _vms(programs, "fuse/rfc_v1"):
        ctx = build_rfc_v1_context("open", "post", [bytes(8)], [OPEN_OUT])
        assert vm.execute(ctx.address, ctx.regions, Caller()) == 0
        fh, = struct.unpack_from("<Q", ctx.outputs()[0])
        assert fh == 0x1234, type(vm).__name__
        assert ctx.out_args[0].modified


def test_post_inputs_carry_no_outputs():
    ctx = build_rfc_v1_context("open", "post", [bytes(8)], [OPEN_OUT])
    head = ctypes.string_at(ctx.address, V1.ctx_size)
    in_numargs, out_numargs = struct.unpack_from("<II", head, 16)
    assert (in_numargs, out_numargs) == (1, 1)
    value, end, size, max_size = struct.unpack_from("<QQII", head, V1.out_arg_offset(0))
    assert (end - value, size, max_size) == (abi.FUSE_OPEN_OUT.size,) * 3
    assert struct.unpack_from("<Q", head, V1.in_arg_offset(1))[0] == 0   # no appended output


def test_writeable_refuses_growing_a_fixed_size_argument():
    ctx = build_rfc_v1_context("open", "post", [bytes(8)], [OPEN_OUT])
    out = ctx.out_args[0]
    assert ctx.writeable("out", 0, out.address, 64) == 0
    assert ctx.writeable("out", 0, out.address + 1, 8) == 0             # not the slot's value
    assert ctx.writeable("out", 0, out.address, 16) == out.address
    name_ctx = build_rfc_v1_context("lookup", "pre", [b"a\0"])
    name = name_ctx.in_args[0]
    assert name_ctx.writeable("in", 0, name.address, 10) == name.address  # variable size grows
    assert struct.unpack_from("<I", ctypes.string_at(name_ctx.address, 64), 48)[0] == 10
