"""Static verifier: one rejection per rule, acceptance of real programs, fuzzing."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fdsl import abi
from fdsl.vm import isa, verifier
from fdsl.errors import VerifierError
from fdsl.vm.isa import Insn
from fdsl.vm.loader import MapSpec
from fdsl.vm.verifier import AccessCheck, PtrKind, verify

from conftest import C_PROGRAMS  # the C programs the loader accepts (others test LoadErrors)

HERE = Path(__file__).parent.parent
C_DIR = HERE / "c"
EXAMPLES = HERE.parent / "examples"

# ------------------------------------------------------------ tiny assembler

A64, A32 = isa.BPF_ALU64, isa.BPF_ALU
K, X = isa.BPF_K, isa.BPF_X


def mov(dst: int, imm: int) -> Insn:
    return Insn(A64 | isa.BPF_MOV | K, dst, 0, 0, imm)


def movr(dst: int, src: int) -> Insn:
    return Insn(A64 | isa.BPF_MOV | X, dst, src)


def alu(op: int, dst: int, imm: int, cls: int = A64) -> Insn:
    return Insn(cls | op | K, dst, 0, 0, imm)


def alur(op: int, dst: int, src: int, cls: int = A64) -> Insn:
    return Insn(cls | op | X, dst, src)


def ldx(size: int, dst: int, src: int, off: int) -> Insn:
    return Insn(isa.BPF_LDX | isa.BPF_MEM | size, dst, src, off)


def stx(size: int, dst: int, src: int, off: int) -> Insn:
    return Insn(isa.BPF_STX | isa.BPF_MEM | size, dst, src, off)


def st_imm(size: int, dst: int, off: int, imm: int) -> Insn:
    return Insn(isa.BPF_ST | isa.BPF_MEM | size, dst, 0, off, imm)


def jmp(op: int, dst: int, imm: int, off: int, cls: int = isa.BPF_JMP) -> Insn:
    return Insn(cls | op | K, dst, 0, off, imm)


def jmpr(op: int, dst: int, src: int, off: int) -> Insn:
    return Insn(isa.BPF_JMP | op | X, dst, src, off)


def ja(off: int) -> Insn:
    return Insn(isa.JA, 0, 0, off)


def call(helper: int) -> Insn:
    return Insn(isa.CALL, 0, 0, 0, helper)


def ld_map(dst: int, index: int) -> list[Insn]:
    return list(isa.ld_imm64(dst, index, src=isa.BPF_PSEUDO_MAP_FD))


def ld64(dst: int, value: int) -> list[Insn]:
    return list(isa.ld_imm64(dst, value))


EXIT = Insn(isa.EXIT)
B, H, W, DW = isa.BPF_B, isa.BPF_H, isa.BPF_W, isa.BPF_DW
IN0 = abi.in_arg_offset(0) + abi.ARG_VALUE     # 40
OUT0 = abi.out_arg_offset(0) + abi.ARG_VALUE   # 160

MAPS = [MapSpec(0, "h", abi.BPF_MAP_TYPE_HASH, 4, 8, 64),
        MapSpec(1, "a", abi.BPF_MAP_TYPE_ARRAY, 4, 16, 1)]


def prog(*parts) -> list[Insn]:
    out: list[Insn] = []
    for p in parts:
        out.extend(p if isinstance(p, list) else [p])
    return out


def ok(*parts, maps=MAPS):
    return verify(prog(*parts), maps, section="test")


def rejected(*parts, maps=MAPS, index: int | None = None, match: str = "") -> VerifierError:
    with pytest.raises(VerifierError) as info:
        verify(prog(*parts), maps, section="test")
    err = info.value
    assert err.section == "test"
    if index is not None:
        assert err.index == index, err
    assert match.lower() in err.reason.lower(), err
    return err


RET0 = [mov(0, 0), EXIT]
# r2 = fp-4 with an initialised 4-byte key
KEY = [st_imm(W, 10, -4, 7), movr(2, 10), alu(isa.BPF_ADD, 2, -4)]


# ------------------------------------------------------------ structure

def test_minimal_program_accepted():
    result = ok(RET0)
    assert result.dead == frozenset() and result.processed == 2


def test_empty_program():
    rejected(match="empty", index=0)


def test_unknown_opcode():
    rejected(mov(0, 0), Insn(0xFF), EXIT, index=1, match="opcode")
    rejected(Insn(0x00), EXIT, index=0, match="opcode")


def test_reserved_fields():
    # ALU with an immediate must have src_reg 0
    rejected(Insn(A64 | isa.BPF_MOV | K, 0, 3, 0, 1), EXIT, index=0, match="src_reg")
    # exit with a non-zero imm
    rejected(mov(0, 0), Insn(isa.EXIT, imm=1), index=1, match="reserved")
    # register numbers above r10
    rejected(mov(11, 0), EXIT, index=0, match="register")


def test_v4_only_instructions_rejected():
    rejected(mov(0, 0), Insn(A64 | isa.BPF_DIV | K, 0, 0, 1, 3), EXIT, index=1, match="v4")
    rejected(mov(0, 0), Insn(isa.JA32, imm=0), EXIT, index=1)


def test_legacy_packet_access_rejected():
    rejected(Insn(isa.BPF_LD | isa.BPF_ABS | W, 0, 0, 0, 0), EXIT, index=0, match="packet")


def test_jump_out_of_range():
    rejected(mov(0, 0), ja(5), EXIT, index=1, match="out of range")
    rejected(mov(0, 0), ja(-3), EXIT, index=1, match="out of range")


def test_jump_into_ld_imm64_second_slot():
    rejected(mov(0, 0), jmp(isa.BPF_JEQ, 0, 0, 1), ld64(1, 5), EXIT, index=1, match="middle of ld_imm64")


def test_truncated_ld_imm64():
    data = isa.encode(prog(mov(0, 0), EXIT)) + isa.ld_imm64(1, 1)[0].encode()
    with pytest.raises(VerifierError, match="second slot"):
        verify(data, MAPS, section="test")


def test_invalid_second_half():
    first, _ = isa.ld_imm64(1, 5)
    rejected(first, Insn(0, 1), mov(0, 0), EXIT, index=1, match="second half")


def test_falls_off_the_end():
    rejected(mov(0, 0), index=0, match="falls off")
    rejected(mov(0, 0), jmp(isa.BPF_JEQ, 0, 0, -2), index=1, match="")


def test_unreachable_code_rejected():
    """Like the kernel: every instruction must be structurally reachable."""
    rejected(mov(0, 0), EXIT, mov(0, 1), EXIT, index=2, match="unreachable")


def test_back_edge_rejected():
    rejected(mov(0, 0), alu(isa.BPF_ADD, 0, 1), jmp(isa.BPF_JLT, 0, 10, -2), EXIT,
             index=2, match="back-edge")


def test_backward_jump_without_loop_accepted():
    # 0: r0 = 0; 1: goto 4; 2: r0 = 1; 3: exit; 4: r0 = 2; 5: goto 2 -- backward but acyclic
    ok(mov(0, 0), ja(2), mov(0, 1), EXIT, mov(0, 2), ja(-4))


def test_program_too_large():
    insns = [mov(0, 0)] * verifier.MAX_PROGRAM_SLOTS + [EXIT]
    rejected(insns, match="too large")


def test_program_too_complex(monkeypatch):
    monkeypatch.setattr(verifier, "MAX_PROCESSED_INSNS", 50)
    insns = [ldx(W, 2, 1, 8)]
    for i in range(30):  # 30 independent diamonds, each needs both sides
        insns += [jmp(isa.BPF_JEQ, 2, i, 1), mov(3, i), mov(4, i)]
    rejected(insns, RET0, match="too complex")


# ------------------------------------------------------------ registers

def test_uninitialised_register_read():
    rejected(movr(0, 3), EXIT, index=0, match="uninitialised register r3")


def test_exit_with_uninitialised_r0():
    rejected(EXIT, index=0, match="r0 uninitialised")


def test_return_pointer_rejected():
    rejected(movr(0, 10), EXIT, index=1, match="pointer")
    rejected(movr(0, 1), EXIT, index=1, match="pointer")


def test_frame_pointer_read_only():
    rejected(mov(10, 0), RET0, index=0, match="read only")


def test_division_by_zero_immediate():
    rejected(mov(0, 1), alu(isa.BPF_DIV, 0, 0), EXIT, index=1, match="division by zero")


def test_invalid_shift():
    rejected(mov(0, 1), alu(isa.BPF_LSH, 0, 64), EXIT, index=1, match="shift")
    rejected(mov(0, 1), alu(isa.BPF_LSH, 0, 32, A32), EXIT, index=1, match="shift")


def test_constant_branch_folding_skips_dead_side():
    # r0 = 1; if r0 == 1 goto ok; <dead: read uninit r5>; ok: exit
    result = ok(mov(0, 1), jmp(isa.BPF_JEQ, 0, 1, 2), movr(0, 5), EXIT, EXIT)
    assert result.dead == frozenset({2, 3})


def test_alu32_zero_extends_constants():
    # w0 = -1 gives 0xffffffff, so "r0 s< 0" is never taken
    ok(alu(isa.BPF_MOV, 0, -1, A32), jmp(isa.BPF_JSLT, 0, 0, 2), mov(0, 0), EXIT, movr(0, 5), EXIT)


# ------------------------------------------------------------ stack

def test_uninitialised_stack_read():
    rejected(ldx(DW, 0, 10, -8), EXIT, index=0, match="uninitialised stack")
    # partially initialised
    rejected(st_imm(W, 10, -8, 1), ldx(DW, 0, 10, -8), EXIT, index=1, match="uninitialised stack")


def test_stack_out_of_range():
    rejected(st_imm(DW, 10, -520, 0), RET0, index=0, match="stack access out of range")
    rejected(st_imm(DW, 10, 0, 0), RET0, index=0, match="stack access out of range")
    rejected(movr(2, 10), alu(isa.BPF_ADD, 2, -1000), st_imm(B, 2, 0, 0), RET0, index=2,
             match="out of range")


def test_misaligned_stack_access():
    rejected(st_imm(DW, 10, -12, 0), RET0, index=0, match="misaligned")


def test_variable_stack_offset():
    rejected(ldx(W, 2, 1, 8), movr(3, 10), alur(isa.BPF_ADD, 3, 2), RET0, index=2,
             match="variable stack offset")


def test_stack_constants_round_trip():
    # store a constant, read it back and use it as a constant pointer offset
    ok(st_imm(DW, 10, -8, -16), ldx(DW, 2, 10, -8), movr(3, 10), alur(isa.BPF_ADD, 3, 2),
       st_imm(DW, 3, 0, 1), RET0)


def test_pointer_spill_and_fill():
    result = ok(ldx(DW, 2, 1, OUT0), stx(DW, 10, 2, -8), mov(2, 0), ldx(DW, 3, 10, -8),
                st_imm(B, 3, 5, 1), RET0)
    assert result.mem_kinds[4] == frozenset({PtrKind.BUF_RW})
    assert result.checks[4] is AccessCheck.NULL


def test_partial_pointer_spill_and_fill_rejected():
    rejected(stx(W, 10, 1, -8), RET0, index=0, match="partial spill")
    rejected(stx(DW, 10, 1, -8), ldx(W, 0, 10, -8), EXIT, index=1, match="spilled pointer")
    # overwriting half of a spilled pointer destroys the rest of it
    rejected(stx(DW, 10, 1, -8), st_imm(W, 10, -8, 0), ldx(DW, 0, 10, -8), EXIT, index=2,
             match="uninitialised stack")


# ------------------------------------------------------------ context

def test_context_reads():
    ok(ldx(DW, 2, 1, 0), ldx(W, 2, 1, abi.CTX_OPCODE), ldx(B, 2, 1, 223),
       ldx(DW, 2, 1, abi.in_arg_offset(4) + abi.ARG_VALUE), RET0)


def test_context_read_out_of_range():
    rejected(ldx(W, 0, 1, abi.CTX_SIZE), EXIT, index=0, match="context access out of range")
    rejected(ldx(DW, 0, 1, 220), EXIT, index=0, match="out of range")
    rejected(ldx(B, 0, 1, -1), EXIT, index=0, match="out of range")


def test_context_pointer_slots_need_8_byte_loads():
    rejected(ldx(W, 0, 1, IN0), EXIT, index=0, match="8-byte load")
    rejected(ldx(DW, 0, 1, IN0 + 4), EXIT, index=0, match="8-byte load")
    rejected(ldx(B, 0, 1, OUT0 + 7), EXIT, index=0, match="8-byte load")


def test_store_into_context_rejected():
    rejected(st_imm(W, 1, abi.CTX_OPCODE, 0), RET0, index=0, match="context")
    rejected(mov(2, 0), stx(W, 1, 2, abi.in_arg_offset(0)), RET0, index=1, match="context")
    # ACK accepts this one by accident; we do not
    rejected(ldx(DW, 2, 1, OUT0), stx(DW, 1, 2, OUT0), RET0, index=1, match="context")


def test_ctx_pointer_is_not_null():
    # "if r1 == 0" on ctx is never taken: the dead side may be anything
    ok(jmp(isa.BPF_JEQ, 1, 0, 1), ja(1), movr(0, 1), mov(0, 0), EXIT)


# ------------------------------------------------------------ buffers

def test_in_args_buffer_is_read_only():
    ok(ldx(DW, 2, 1, IN0), ldx(B, 0, 2, 0), EXIT)
    rejected(ldx(DW, 2, 1, IN0), st_imm(B, 2, 0, 0), RET0, index=1, match="read-only")


def test_out_args_buffer_is_writable():
    result = ok(ldx(DW, 2, 1, OUT0), st_imm(DW, 2, 8, 5), mov(3, 1), stx(W, 2, 3, 4092), RET0)
    assert PtrKind.BUF_RW in result.mem_kinds[1]


def test_buffer_variable_offset():
    rejected(ldx(DW, 2, 1, IN0), ldx(W, 3, 1, abi.in_arg_offset(0)), alur(isa.BPF_ADD, 2, 3),
             ldx(B, 0, 2, 0), EXIT, index=2, match="invalid variable buffer offset")


def test_buffer_negative_offset():
    rejected(ldx(DW, 2, 1, IN0), ldx(B, 0, 2, -1), EXIT, index=1, match="negative buffer offset")
    rejected(ldx(DW, 2, 1, OUT0), st_imm(B, 2, -4, 0), RET0, index=1, match="negative")


def test_buffer_beyond_window():
    rejected(ldx(DW, 2, 1, IN0), ldx(DW, 0, 2, verifier.BUFFER_WINDOW - 4), EXIT, index=1,
             match="window")
    rejected(ldx(DW, 2, 1, OUT0), st_imm(B, 2, verifier.BUFFER_WINDOW, 0), RET0, index=1, match="window")
    ok(ldx(DW, 2, 1, IN0), ldx(DW, 0, 2, verifier.BUFFER_WINDOW - 8), EXIT)


def test_buffer_access_needs_the_pointer_as_loaded():
    """A NULL buffer pointer plus a register offset would slip past the VM's NULL check."""
    rejected(ldx(DW, 2, 1, IN0), alu(isa.BPF_ADD, 2, 100), ldx(B, 0, 2, 0), EXIT, index=2,
             match="register offset of 100")
    rejected(movr(6, 1), fmt_on_stack(b"%s\0"), ldx(DW, 3, 6, IN0), alu(isa.BPF_ADD, 3, 1), mov(2, 3),
             call(6), EXIT, index=9, match="register offset")
    # arithmetic that comes back to offset 0 is fine
    ok(ldx(DW, 2, 1, IN0), alu(isa.BPF_ADD, 2, 100), alu(isa.BPF_SUB, 2, 100), ldx(B, 0, 2, 3), EXIT)


def test_storing_pointer_into_buffer_leaks():
    rejected(ldx(DW, 2, 1, OUT0), stx(DW, 2, 10, 0), RET0, index=1, match="leak")


def test_buffer_null_check_allowed():
    # WRITE's data may be NULL: a guard is fine (both sides explored)
    ok(ldx(DW, 2, 1, IN0), jmp(isa.BPF_JEQ, 2, 0, 2), ldx(B, 0, 2, 0), EXIT, mov(0, 0), EXIT)


# ------------------------------------------------------------ pointer rules

def test_pointer_arithmetic_other_than_constant_offsets():
    rejected(movr(2, 10), alu(isa.BPF_MUL, 2, 2), RET0, index=1, match="other than +/- constant")
    rejected(movr(2, 10), alu(isa.BPF_ADD, 2, -8, A32), RET0, index=1, match="32-bit")
    rejected(movr(2, 10), alur(isa.BPF_ADD, 2, 1), RET0, index=1, match="two pointers")
    rejected(mov(2, 8), alur(isa.BPF_SUB, 2, 10), RET0, index=1, match="other than")
    rejected(alu(isa.BPF_MOV, 2, 0, A32), alur(isa.BPF_MOV, 2, 10, A32), RET0, index=1, match="32-bit copy")
    rejected(ld_map(2, 0), alu(isa.BPF_ADD, 2, 8), RET0, index=2, match="map_ptr")


def test_pointer_comparisons_that_leak():
    rejected(ldx(DW, 2, 1, IN0), jmp(isa.BPF_JGT, 2, 5, 0), RET0, index=1, match="pointer comparison")
    rejected(ldx(DW, 2, 1, IN0), jmp(isa.BPF_JEQ, 2, 5, 0), RET0, index=1, match="pointer comparison")
    rejected(jmpr(isa.BPF_JEQ, 1, 10, 0), RET0, index=0, match="pointer comparison")
    rejected(ldx(DW, 2, 1, IN0), jmp(isa.BPF_JEQ, 2, 0, 0, cls=isa.BPF_JMP32), RET0, index=1,
             match="pointer comparison")


def test_dereference_of_scalar():
    rejected(mov(2, 4096), ldx(B, 0, 2, 0), EXIT, index=1, match="scalar")


# ------------------------------------------------------------ helpers

def test_unknown_helpers_rejected():
    for helper in (0, 3, 5, 7, 12, 16, 208):
        rejected(call(helper), RET0, index=0, match="not available")
    rejected(Insn(isa.CALL, 0, isa.BPF_PSEUDO_CALL, 0, 1), RET0, index=0, match="bpf-to-bpf")


def test_helpers_without_arguments_clobber_r1_to_r5():
    ok(call(14), call(15), EXIT)
    rejected(call(15), movr(0, 1), EXIT, index=1, match="uninitialised register r1")
    rejected(mov(5, 1), call(14), movr(0, 5), EXIT, index=2, match="r5")


def test_map_lookup_accepted_with_null_check():
    result = ok(KEY, ld_map(1, 0), call(1), jmp(isa.BPF_JEQ, 0, 0, 2),
                ldx(DW, 3, 0, 0), st_imm(DW, 0, 0, 1), RET0)
    assert result.mem_kinds[8] == frozenset({PtrKind.MAP_VALUE})
    assert result.checks[8] is AccessCheck.NONE


def test_map_lookup_wrong_arguments():
    rejected(KEY, mov(1, 0), call(1), RET0, index=4, match="map pointer")
    rejected(movr(2, 10), alu(isa.BPF_ADD, 2, -4), ld_map(1, 0), call(1), RET0, index=4,
             match="uninitialised stack")
    rejected(movr(2, 1), ld_map(1, 0), call(1), RET0, index=3, match="must point to stack")
    # key_size 4 does not fit at fp-2
    rejected(st_imm(H, 10, -2, 0), movr(2, 10), alu(isa.BPF_ADD, 2, -2), ld_map(1, 0), call(1), RET0,
             index=5, match="out of range")
    rejected(KEY, ld_map(1, 5), call(1), RET0, index=3, match="invalid map index")


def test_map_value_without_null_check():
    rejected(KEY, ld_map(1, 0), call(1), ldx(DW, 3, 0, 0), RET0, index=6, match="possibly NULL")
    rejected(KEY, ld_map(1, 0), call(1), alu(isa.BPF_ADD, 0, 8), RET0, index=6, match="map_value_or_null")
    rejected(KEY, ld_map(1, 0), call(1), EXIT, index=6, match="pointer")


def test_null_check_through_a_copy_and_a_spill():
    ok(KEY, ld_map(1, 0), call(1), movr(6, 0), stx(DW, 10, 0, -16), jmp(isa.BPF_JNE, 6, 0, 2),
       mov(0, 0), EXIT, ldx(DW, 7, 10, -16), ldx(DW, 0, 7, 0), st_imm(DW, 6, 0, 0), EXIT)


def test_map_value_access_out_of_range():
    rejected(KEY, ld_map(1, 0), call(1), jmp(isa.BPF_JEQ, 0, 0, 1), ldx(DW, 0, 0, 4), RET0,
             index=7, match="map value access out of range")
    rejected(KEY, ld_map(1, 1), call(1), jmp(isa.BPF_JEQ, 0, 0, 1), ldx(DW, 0, 0, -8), RET0,
             index=7, match="out of range")
    ok(KEY, ld_map(1, 1), call(1), jmp(isa.BPF_JEQ, 0, 0, 1), ldx(DW, 0, 0, 8), RET0)


def test_storing_pointer_into_map_value_leaks():
    rejected(KEY, ld_map(1, 0), call(1), jmp(isa.BPF_JEQ, 0, 0, 1), stx(DW, 0, 10, 0), RET0,
             index=7, match="leak")


def test_map_update_arguments():
    value = [st_imm(DW, 10, -16, 1), movr(3, 10), alu(isa.BPF_ADD, 3, -16)]
    ok(KEY, value, ld_map(1, 0), mov(4, 0), call(2), EXIT)
    # value_size of map 1 is 16: only 8 bytes initialised at fp-16
    rejected(KEY, value, ld_map(1, 1), mov(4, 0), call(2), EXIT, index=9, match="uninitialised stack")
    rejected(KEY, value, ld_map(1, 0), movr(4, 10), call(2), EXIT, index=9, match="flags")
    rejected(KEY, value, ld_map(1, 0), call(2), EXIT, index=8, match="uninitialised register r4")
    rejected(KEY, ldx(DW, 3, 1, OUT0), ld_map(1, 0), mov(4, 0), call(2), EXIT, index=7,
             match="must point to stack or map value")


FMT = b"x=%d\0"  # 5 bytes at fp-8


def fmt_on_stack(text: bytes = FMT) -> list[Insn]:
    padded = text.ljust(8, b"\0")
    return ld64(1, int.from_bytes(padded, "little")) + [stx(DW, 10, 1, -8), movr(1, 10),
                                                        alu(isa.BPF_ADD, 1, -8)]


def test_trace_printk_accepted():
    ok(fmt_on_stack(), mov(2, len(FMT)), mov(3, 42), call(6), EXIT)
    ok(movr(6, 1), fmt_on_stack(b"%s\0"), mov(2, 3), ldx(DW, 3, 6, IN0), call(6), EXIT)


@pytest.mark.parametrize("fmt, setup", [
    (b"%llx", [movr(3, 6)]),                                    # the context address
    (b"%p\0", [movr(3, 10)]),                                   # a stack address
    (b"%d\0", [ldx(DW, 3, 6, IN0)]),                            # a buffer address as a number
    (b"%lu", [*ld_map(3, 0)]),                                  # a map pointer
    (b"%s\0", [movr(3, 10), alu(isa.BPF_ADD, 3, -8)]),           # %s of the stack (spills)
])
def test_trace_printk_never_prints_a_pointer(fmt, setup):
    """Pointers never leave the program (issue 11, item 14): %s only of an argument buffer."""
    err = rejected(movr(6, 1), fmt_on_stack(fmt), *setup, mov(2, len(fmt)), call(6), RET0)
    assert "pointer" in err.reason or "argument buffer" in err.reason


def test_trace_printk_wrong_arguments():
    rejected(movr(6, 1), fmt_on_stack(), ldx(W, 2, 6, 0), mov(3, 1), call(6), EXIT, index=8,
             match="known constant")
    # a conversion's register that another path writes (it could hold anything there)
    rejected(movr(6, 1), fmt_on_stack(), mov(2, len(FMT)), ldx(W, 7, 6, 8), jmp(isa.BPF_JEQ, 7, 0, 1),
             mov(3, 1), call(6), EXIT, index=10, match="argument 1 (r3) is uninitialised here but written")
    rejected(fmt_on_stack(), mov(2, 16), mov(3, 1), call(6), EXIT, index=7, match="out of range")
    rejected(fmt_on_stack(), alu(isa.BPF_ADD, 1, -8), mov(2, 16), mov(3, 1), call(6), EXIT, index=8,
             match="uninitialised stack")
    rejected(fmt_on_stack(), mov(2, 0), mov(3, 1), call(6), EXIT, index=7, match="out of range")
    rejected(fmt_on_stack(b"%s\0"), mov(2, 3), mov(3, 1), call(6), EXIT, index=7, match="%s")
    rejected(fmt_on_stack(b"%d%d%d%d"), mov(2, 8), mov(3, 1), mov(4, 1), mov(5, 1), call(6), EXIT,
             index=9, match="at most 3")
    rejected(ldx(DW, 2, 1, IN0), movr(1, 2), mov(2, 4), call(6), EXIT, index=3, match="must point to stack")


def test_trace_printk_unwritten_argument_register_accepted():
    """As in the kernel, which never looks at r3-r5: a register no path writes (the VMs
    hold 0 there) may stand for a conversion without argument; not for a %s."""
    ok(fmt_on_stack(), mov(2, len(FMT)), call(6), EXIT)
    ok(fmt_on_stack(), mov(2, len(FMT)), mov(3, 5), call(15), movr(1, 10), alu(isa.BPF_ADD, 1, -8),
       mov(2, len(FMT)), call(6), EXIT)               # r3 written, but zeroed by the first call
    rejected(fmt_on_stack(b"%s\0"), mov(2, 3), call(6), EXIT, index=6, match="%s argument 1 (r3) is uninit")


def test_trace_printk_format_must_be_known():
    rejected(ldx(DW, 2, 1, 0), stx(DW, 10, 2, -8), movr(1, 10), alu(isa.BPF_ADD, 1, -8),
             mov(2, 8), call(6), EXIT, index=5, match="not a constant")
    # bytes after the terminating NUL do not matter
    ok(ldx(W, 2, 1, 8), stx(W, 10, 2, -4), st_imm(W, 10, -8, int.from_bytes(b"ok\0\0", "little")),
       movr(1, 10), alu(isa.BPF_ADD, 1, -8), mov(2, 8), call(6), EXIT)


# ------------------------------------------------------------ atomics

def test_atomic_add_on_map_value():
    atomic = Insn(isa.BPF_STX | isa.BPF_ATOMIC | DW, 0, 3, 0, isa.BPF_ADD)
    ok(KEY, ld_map(1, 0), call(1), jmp(isa.BPF_JEQ, 0, 0, 2), mov(3, 1), atomic, RET0)
    ro_atomic = Insn(isa.BPF_STX | isa.BPF_ATOMIC | W, 2, 3, 0, isa.BPF_ADD)
    rejected(ldx(DW, 2, 1, IN0), mov(3, 1), ro_atomic, RET0, index=2, match="read-only")
    ctx_atomic = Insn(isa.BPF_STX | isa.BPF_ATOMIC | W, 1, 3, 8, isa.BPF_ADD)
    rejected(mov(3, 1), ctx_atomic, RET0, index=1, match="context")


def test_atomics_on_the_stack():
    fetch_add = Insn(isa.BPF_STX | isa.BPF_ATOMIC | DW, 10, 3, -8, isa.BPF_ADD | isa.BPF_FETCH)
    ok(st_imm(DW, 10, -8, 1), mov(3, 1), fetch_add, movr(0, 3), EXIT)
    rejected(mov(3, 1), fetch_add, RET0, index=1, match="uninitialised stack")
    # an atomic add must not turn a spilled pointer into a scalar
    rejected(stx(DW, 10, 1, -8), mov(3, 1), fetch_add, RET0, index=2, match="spilled pointer")
    xchg_ptr = Insn(isa.BPF_STX | isa.BPF_ATOMIC | DW, 10, 1, -8, isa.BPF_XCHG)
    rejected(st_imm(DW, 10, -8, 1), xchg_ptr, RET0, index=1, match="pointer")


# ------------------------------------------------------------ pruning

def _rule_chain(rules: int) -> list[Insn]:
    """A compiler-shaped program: per rule, compare the opcode and a name byte."""
    insns = [movr(6, 1), ldx(W, 7, 6, abi.CTX_OPCODE), ldx(DW, 8, 6, IN0)]
    for i in range(rules):
        # if opcode != X goto next; if name[0] != c goto next; log; r0 = -i; exit; next:
        body = prog(fmt_on_stack(), mov(2, len(FMT)), movr(3, 7), call(6), mov(0, -(i + 1)), EXIT)
        insns += [jmp(isa.BPF_JNE, 7, 0x10001 + i % 40, 2 + len(body)),
                  ldx(B, 2, 8, i % 64), jmp(isa.BPF_JNE, 2, 97 + i % 26, len(body))] + body
    return insns + [mov(0, 2), EXIT]


def test_200_rule_policy_verifies_in_linear_work():
    """Work, not wall-clock time (timings belong in bench/): each insn is processed
    fewer than three times on average."""
    insns = _rule_chain(200)
    result = verify(insns, MAPS, section="fuse/root")
    assert result.processed < 3 * len(insns)


def test_diamonds_with_distinct_constants_are_widened():
    """Dead-register liveness and widening keep 2^n paths from exploding."""
    insns = [ldx(W, 2, 1, 8)]
    for i in range(40):   # each diamond leaves a different constant on the stack
        insns += [jmp(isa.BPF_JEQ, 2, i, 2), st_imm(DW, 10, -8 * (i % 8 + 1), i), ja(1),
                  st_imm(DW, 10, -8 * (i % 8 + 1), i + 1000)]
    result = verify(insns + RET0, MAPS, section="t")
    assert result.processed < 5000


def test_widening_keeps_constants_shared_with_a_similar_state():
    """r7 (the printk size) takes two values; the stack differs on every path."""
    insns = [ldx(W, 6, 1, 8)]
    for i in range(12):
        insns += [mov(7, 5), mov(8, 100 + i), jmp(isa.BPF_JSET, 6, 1 << i, 2), mov(7, 8), mov(8, i),
                  stx(DW, 10, 8, -24 - 8 * (i % 6))]
    insns += fmt_on_stack() + [movr(2, 7), ldx(DW, 3, 10, -24), call(6), EXIT]
    result = ok(insns)
    assert result.widenings > 0 and result.rollbacks == 0
    assert result.processed < 5000


def test_widening_never_causes_false_rejection():
    """When a widened state fails, the precise state is explored instead."""
    insns = [ldx(W, 6, 1, 8), mov(7, 5)]
    for i in range(12):  # r7 (the printk size) is different on every path
        insns += [jmp(isa.BPF_JSET, 6, 1 << i, 1), mov(7, 5 + i)]
    fmt = ld64(1, int.from_bytes(FMT.ljust(8, b"\0"), "little"))
    insns += fmt + [stx(DW, 10, 1, -16), st_imm(DW, 10, -8, 0), movr(1, 10), alu(isa.BPF_ADD, 1, -16),
                    movr(2, 7), mov(3, 0), call(6), EXIT]
    result = ok(insns)
    assert result.widenings > 0 and result.rollbacks > 0


# ------------------------------------------------------------ real programs

def _clang() -> str:
    path = shutil.which("clang")
    assert path is not None, "clang is missing (scripts/setup.sh installs it)"
    return path


def compile_c(source: Path, out_dir: Path) -> bytes:
    out = out_dir / (source.stem + ".o")
    subprocess.run([_clang(), "-target", "bpf", "-O2", "-mcpu=v3", "-c", str(source), "-o", str(out)],
                   check=True, capture_output=True)
    return out.read_bytes()


@pytest.mark.parametrize("cflags", [(), ("-mcpu=v3",)], ids=["default-cpu", "v3"])
@pytest.mark.parametrize("name", C_PROGRAMS)
def test_c_test_programs_accepted(bpf_c_object, name, cflags):
    from fdsl.vm.loader import load_object
    obj = load_object(bpf_c_object(name, *cflags))
    results = verifier.verify_object(obj)
    assert results and all(r.processed > 0 for r in results.values())


BAD_C = """
#include "fuse_bpf.h"
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
SEC("fuse/bad") int bad(struct fuse_bpf_args *fa) { return bpf_ktime_get_ns() & 1; }
char _license[] SEC("license") = "GPL";
"""


def test_cli_verify(tmp_path, capsys):
    from fdsl.cli import main
    good = tmp_path / "good.o"
    good.write_bytes(compile_c(C_DIR / "count_uid.c", tmp_path))
    assert main(["verify", str(good)]) == 0
    assert "fuse/count: ok" in capsys.readouterr().out
    bad_src = tmp_path / "bad.c"
    bad_src.write_text(BAD_C)
    (tmp_path / "fuse_bpf.h").write_text((C_DIR / "fuse_bpf.h").read_text())
    bad = tmp_path / "bad.o"
    bad.write_bytes(compile_c(bad_src, tmp_path))
    assert main(["verify", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "fuse/bad: rejected: insn 0: helper 5" in err


_COMPILE = """
import sys
try:
    from fdsl.compile.driver import compile_file
except ImportError as err:
    print(f"compiler not importable yet: {err}", file=sys.stderr)
    sys.exit(3)
from fdsl import abi
with open(sys.argv[2], "wb") as out:
    out.write(compile_file(sys.argv[1], abi_record=abi.by_id(sys.argv[3])).obj)
"""


def compile_policy(path: Path, tmp_path: Path, abi_name: str = "ack") -> bytes:
    """Compile (for `abi_name`) in a child process: an LLVM fatal error must not kill the test run.

    A compiler failure fails the test (with the compiler's message): every
    example must compile and verify.
    """
    out = tmp_path / (path.stem + ".bpf.o")
    proc = subprocess.run([sys.executable, "-c", _COMPILE, str(path), str(out), abi_name],
                          capture_output=True, text=True, timeout=600, cwd=HERE.parent)
    if proc.returncode:
        lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if "error" in line.lower()]
        last = (errors or lines or [f"exit status {proc.returncode}"])[-1]
        pytest.fail(f"compiler failed on {path.name}: {last}")
    return out.read_bytes()


def _load_compiled(data: bytes, path: Path):
    from fdsl.errors import LoadError
    from fdsl.vm.loader import load_object
    try:
        return load_object(data)
    except LoadError as err:
        pytest.fail(f"compiled {path.name} does not load: {err}")


def _example_files() -> list[Path]:
    return sorted(EXAMPLES.rglob("*.fdsl")) if EXAMPLES.is_dir() else []


def test_examples_exist():
    assert _example_files(), f"no policies under {EXAMPLES}"


@pytest.mark.parametrize("abi_name", ["ack", "rfc-v1"])
@pytest.mark.parametrize("path", _example_files(), ids=lambda p: p.name)
def test_examples_accepted(path, tmp_path, abi_name):
    """Under the rules of the ABI the object's metadata names (RFC v1: packet bounds)."""
    obj = _load_compiled(compile_policy(path, tmp_path, abi_name), path)
    assert obj.abi().aliases[0] == abi_name
    results = verifier.verify_object(obj)
    assert results and all(r.processed > 0 for r in results.values())


def _policy_with_rules(count: int) -> str:
    ops = ["lookup", "mkdir", "unlink", "open", "getattr", "create", "rmdir"]
    lines = ["default allow"]
    for i in range(count):
        op = ops[i % len(ops)]
        if op in ("open", "getattr"):
            lines.append(f"on {op} pre {{ if uid == {2000 + i} {{ deny EPERM }} }}")
        else:
            lines.append(f'on {op} pre {{ if name == "file{i}" and uid != {1000 + i} {{ deny EACCES }} }}')
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("abi_name", ["ack", "rfc-v1"])
def test_compiled_200_rule_policy_verifies_in_linear_work(tmp_path, abi_name):
    """Work, not wall-clock time (timings belong in bench/compile_bench.py)."""
    src = tmp_path / "rules200.fdsl"
    src.write_text(_policy_with_rules(200))
    obj = _load_compiled(compile_policy(src, tmp_path, abi_name), src)
    results = verifier.verify_object(obj)
    for section, r in results.items():
        assert r.processed < 3 * len(r.insns), (section, r.processed, len(r.insns))


# ------------------------------------------------------------ fuzzing

_interesting_opcodes = sorted({
    *(c | op | s for c in (A64, A32) for op in isa.ALU_OPS for s in (K, X)),
    *(c | op | s for c in (isa.BPF_JMP, isa.BPF_JMP32) for op in
      (*isa.COND_JMP_OPS, isa.BPF_JA, isa.BPF_CALL, isa.BPF_EXIT) for s in (K, X)),
    *(c | isa.BPF_MEM | sz for c in (isa.BPF_LDX, isa.BPF_ST, isa.BPF_STX) for sz in (B, H, W, DW)),
    isa.BPF_STX | isa.BPF_ATOMIC | W, isa.BPF_STX | isa.BPF_ATOMIC | DW, isa.LD_IMM64, 0,
})

_insn = st.builds(
    Insn,
    opcode=st.one_of(st.sampled_from(_interesting_opcodes), st.integers(0, 255)),
    dst=st.one_of(st.integers(0, 10), st.integers(0, 15)),
    src=st.one_of(st.integers(0, 10), st.just(0), st.just(1)),
    off=st.one_of(st.integers(-4, 8), st.sampled_from([-8, -16, -512, 40, 160, 4095]),
                  st.integers(-(1 << 15), (1 << 15) - 1)),
    imm=st.one_of(st.integers(-8, 16), st.sampled_from([1, 2, 6, 14, 15, 0x10001]),
                  st.integers(-(1 << 31), (1 << 31) - 1)),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_insn, min_size=0, max_size=24), st.booleans())
def test_random_programs_never_crash(insns, end_with_exit):
    data = isa.encode(insns) + (isa.encode([mov(0, 0), EXIT]) if end_with_exit else b"")
    try:
        result = verify(data, MAPS, section="fuzz")
    except VerifierError as err:
        assert err.section == "fuzz" and isinstance(err.index, int) and err.reason
        if "too complex" in err.reason:
            assert "MAX_" in err.reason      # the limit hit is named (issue 11, item 7)
    else:
        assert 0 < result.processed and result.work <= verifier.MAX_WORK
