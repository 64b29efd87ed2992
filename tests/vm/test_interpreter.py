"""Reference semantics of the interpreter: ALU, jumps, memory, atomics, helpers, faults."""
from __future__ import annotations

import errno

import pytest

from fdsl import abi
from fdsl.vm import isa
from fdsl.errors import VmFault
from fdsl.vm.helpers import Caller
from fdsl.vm.interpreter import Interpreter, Memory, Runtime, alu, s32
from fdsl.vm.maps import Region

from vm_util import (DW, EXIT, W, alur, atomic, call, execute, ja,
                     jmp, ld64, ld_map, ldx, mov, movr, prog, ret, runtime_with, sample_context, st, stx)


def test_alu_function_matches_kernel_rules():
    assert alu(isa.BPF_DIV, False, 7, 0, 0) == 0
    assert alu(isa.BPF_MOD, True, 7, 0, 0) == 7
    assert alu(isa.BPF_MOD, False, (1 << 40) | 7, 0, 0) == 7
    assert alu(isa.BPF_RSH, True, 1 << 63, 64 + 63, 0) == 1


def test_run_returns_signed_32bit():
    ctx = sample_context()
    vm = Interpreter(ret(mov(0, -2)))
    assert vm.execute(ctx.address, ctx.regions, Caller()) == (1 << 64) - 2
    assert vm.run(ctx, Caller()) == -2
    # only the low 32 bits count
    assert Interpreter(ret(ld64(0, 0x1_0000_0002))).run(ctx, Caller()) == 2
    assert s32(0x80000000) == -(1 << 31)


def test_budget_stops_a_runaway_loop():
    with pytest.raises(VmFault) as info:
        execute("interp", prog(mov(0, 0), ja(-1), EXIT), budget=1000)
    assert info.value.index == 1
    assert "budget" in info.value.reason


def test_budget_counts_instructions_exactly():
    # 3 instructions execute: fits a budget of 3, not of 2
    program = ret(mov(0, 1), mov(0, 2))
    assert execute("interp", program, budget=3) == 2
    with pytest.raises(VmFault) as info:
        execute("interp", program, budget=2)
    assert info.value.index == 2


def test_memory_regions():
    import ctypes

    buf = ctypes.create_string_buffer(16)
    base = ctypes.addressof(buf)
    mem = Memory([Region(base, 16, False, "ro")])
    assert mem.check(base, 16, False)
    assert not mem.check(base, 16, True)
    assert not mem.check(base + 1, 16, False)
    assert not mem.check(base - 1, 2, False)
    with pytest.raises(VmFault):
        mem.store(3, base, 4, 0)


def test_read_only_inputs_in_post():
    """In POST the inputs are read-only, the outputs writable (context regions)."""
    from fdsl.vm.context import build_context

    ctx = build_context("lookup", "post", [b"a\0"], [bytes(128), bytes(32)])
    write_in = ret(ldx(DW, 2, 1, 40), st(W, 2, 0, 1), mov(0, 0))
    with pytest.raises(VmFault, match="invalid write"):
        Interpreter(write_in).run(ctx, Caller())
    write_out = ret(ldx(DW, 2, 1, 160), st(DW, 2, 0, 77), mov(0, 0))
    assert Interpreter(write_out).run(ctx, Caller()) == 0
    assert int.from_bytes(ctx.read_out(0)[:8], "little") == 77


def test_helpers_see_the_caller():
    ctx = sample_context()
    vm = Interpreter(ret(call(15), movr(6, 0), call(14), alur(isa.BPF_ADD, 0, 6)))
    caller = Caller(uid=1, gid=2, pid=3, tgid=4)
    assert vm.execute(ctx.address, ctx.regions, caller) == ((2 << 32) | 1) + ((4 << 32) | 3)


def test_call_clobbers_argument_registers():
    program = ret(mov(1, 5), mov(5, 6), call(15), movr(0, 1), alur(isa.BPF_ADD, 0, 5))
    assert execute("interp", program) == 0


def hash_and_array():
    return runtime_with((abi.BPF_MAP_TYPE_HASH, 4, 8, 4, "h"), (abi.BPF_MAP_TYPE_ARRAY, 4, 8, 2, "a"))


def test_map_update_and_lookup():
    rt = hash_and_array()
    program = ret(
        st(W, 10, -4, 7), st(DW, 10, -16, 40),                 # key 7, value 40
        ld_map(1, 0), movr(2, 10), alu_add(2, -4), movr(3, 10), alu_add(3, -16), mov(4, abi.BPF_ANY),
        call(2),                                               # update h[7] = 40
        ld_map(1, 0), movr(2, 10), alu_add(2, -4), call(1),    # r0 = &h[7]
        jmp(isa.BPF_JEQ, 0, 0, 3),
        mov(1, 2), atomic(DW, 0, 1, 0, isa.BPF_ADD),           # h[7] += 2
        ldx(DW, 0, 0, 0),
    )
    assert execute("interp", program, runtime=rt) == 42
    assert rt.maps[0].int_items() == [(7, 42)]


def alu_add(dst, imm):
    from vm_util import alu as alu_insn

    return alu_insn(isa.BPF_ADD, dst, imm)


def test_map_lookup_missing_is_null_and_update_errors():
    rt = hash_and_array()
    lookup_missing = ret(st(W, 10, -4, 9), ld_map(1, 0), movr(2, 10), alu_add(2, -4), call(1))
    assert execute("interp", lookup_missing, runtime=rt) == 0
    # array: index 5 >= max_entries -> NULL on lookup, -E2BIG on update
    array_oob = ret(st(W, 10, -4, 5), st(DW, 10, -16, 1), ld_map(1, 1), movr(2, 10), alu_add(2, -4),
                    movr(3, 10), alu_add(3, -16), mov(4, 0), call(2))
    assert execute("interp", array_oob, runtime=rt) == (-errno.E2BIG) & ((1 << 64) - 1)


def test_helper_with_bad_pointer_faults():
    rt = hash_and_array()
    program = ret(ld_map(1, 0), mov(2, 0), call(1))
    with pytest.raises(VmFault) as info:
        execute("interp", program, runtime=rt)
    assert info.value.index == 3 and "helper 1" in info.value.reason


def test_direct_access_through_map_pointer_faults():
    rt = hash_and_array()
    with pytest.raises(VmFault, match="invalid read"):
        execute("interp", ret(ld_map(1, 0), ldx(DW, 0, 1, 0)), runtime=rt)


def test_trace_printk_goes_to_the_sink():
    rt = Runtime()
    fmt = b"n=%d\0\0\0\0"
    program = ret(ld64(1, int.from_bytes(fmt, "little")), stx(DW, 10, 1, -8),
                  movr(1, 10), alu_add(1, -8), mov(2, 5), mov(3, -3), call(6))
    assert execute("interp", program, runtime=rt) == 4
    assert rt.sink.recent() == ["n=-3"]


def test_unknown_helper_faults():
    with pytest.raises(VmFault, match="unknown helper"):
        execute("interp", ret(call(99)))
