"""What each BPF ALU, jump and atomic operation computes, on plain integers.

One definition shared by the interpreter (which executes it) and the
verifier (which folds constants with it), so the two can never disagree
about a result.  Register values are unsigned 64-bit Python ints.
"""
from __future__ import annotations

from fdsl.vm import isa
from fdsl.vm.isa import Insn

MASK64 = 0xFFFFFFFFFFFFFFFF
MASK32 = 0xFFFFFFFF


def s64(value: int) -> int:
    value &= MASK64
    return value - (1 << 64) if value >> 63 else value


def s32(value: int) -> int:
    value &= MASK32
    return value - (1 << 32) if value >> 31 else value


def sext(value: int, bits: int) -> int:
    """Sign-extend the low `bits` of value to a Python int."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _trunc_div(a: int, b: int) -> int:
    """C division (truncates toward zero); b != 0."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _trunc_mod(a: int, b: int) -> int:
    """C remainder (sign of the dividend); b != 0."""
    return a - b * _trunc_div(a, b)


def bswap(value: int, bits: int) -> int:
    return int.from_bytes((value & ((1 << bits) - 1)).to_bytes(bits // 8, "little"), "big")


def alu(op: int, is64: bool, dst: int, src: int, off: int) -> int:
    """Result of one ALU operation on unsigned register values (BPF_END excluded).

    `src` is already the operand (register value, or imm sign-extended to 64
    bits).  Returns the new unsigned 64-bit value of dst.
    """
    bits = 64 if is64 else 32
    mask = MASK64 if is64 else MASK32
    a, b = dst & mask, src & mask
    if op == isa.BPF_ADD:
        r = a + b
    elif op == isa.BPF_SUB:
        r = a - b
    elif op == isa.BPF_MUL:
        r = a * b
    elif op == isa.BPF_DIV:
        if b == 0:
            r = 0
        elif off == 1:  # sdiv; INT_MIN / -1 wraps to INT_MIN
            r = _trunc_div(sext(a, bits), sext(b, bits))
        else:
            r = a // b
    elif op == isa.BPF_MOD:
        if b == 0:
            r = a  # unchanged (the 32-bit form still zero-extends)
        elif off == 1:
            r = _trunc_mod(sext(a, bits), sext(b, bits))
        else:
            r = a % b
    elif op == isa.BPF_OR:
        r = a | b
    elif op == isa.BPF_AND:
        r = a & b
    elif op == isa.BPF_XOR:
        r = a ^ b
    elif op == isa.BPF_LSH:
        r = a << (b & (bits - 1))
    elif op == isa.BPF_RSH:
        r = a >> (b & (bits - 1))
    elif op == isa.BPF_ARSH:
        r = sext(a, bits) >> (b & (bits - 1))
    elif op == isa.BPF_NEG:
        r = -a
    elif op == isa.BPF_MOV:
        r = sext(src, off) if off else b  # movsx: off = source width
    else:
        raise ValueError(f"not an ALU op: {op:#x}")
    return r & mask


def byteswap_insn(insn: Insn, value: int) -> int:
    """BPF_END: to_le truncates (little-endian host), to_be / bswap reverse bytes."""
    bits = insn.imm
    if insn.cls == isa.BPF_ALU and insn.source == isa.BPF_TO_LE:
        return value & ((1 << bits) - 1)
    return bswap(value, bits)


def condition(op: int, is64: bool, a: int, b: int) -> bool:
    """Outcome of a conditional jump on unsigned operands (already widened)."""
    bits = 64 if is64 else 32
    mask = (1 << bits) - 1
    a &= mask
    b &= mask
    if op == isa.BPF_JEQ:
        return a == b
    if op == isa.BPF_JNE:
        return a != b
    if op == isa.BPF_JGT:
        return a > b
    if op == isa.BPF_JGE:
        return a >= b
    if op == isa.BPF_JLT:
        return a < b
    if op == isa.BPF_JLE:
        return a <= b
    if op == isa.BPF_JSET:
        return bool(a & b)
    sa, sb = sext(a, bits), sext(b, bits)
    if op == isa.BPF_JSGT:
        return sa > sb
    if op == isa.BPF_JSGE:
        return sa >= sb
    if op == isa.BPF_JSLT:
        return sa < sb
    if op == isa.BPF_JSLE:
        return sa <= sb
    raise ValueError(f"not a conditional jump: {op:#x}")


def atomic_result(op: int, old: int, operand: int, mask: int) -> int:
    """New memory value of a (non-xchg, non-cmpxchg) atomic op."""
    op &= ~isa.BPF_FETCH
    if op == isa.BPF_ADD:
        return (old + operand) & mask
    if op == isa.BPF_OR:
        return old | operand
    if op == isa.BPF_AND:
        return old & operand
    if op == isa.BPF_XOR:
        return old ^ operand
    raise ValueError(f"not an atomic op: {op:#x}")
