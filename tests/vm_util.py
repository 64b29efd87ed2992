"""Shared by the VM tests: a tiny assembler, a runner for both VMs, semantic cases.

`SEMANTIC_CASES` are (name, program, expected r0 as unsigned 64-bit); the
interpreter tests and the JIT tests both assert them.
"""
from __future__ import annotations

from fdsl.vm import isa
from fdsl.vm.context import build_context
from fdsl.vm.helpers import Caller
from fdsl.vm.interpreter import Interpreter, Runtime
from fdsl.vm.isa import Insn
from fdsl.vm.maps import MapTable

A64, A32 = isa.BPF_ALU64, isa.BPF_ALU
J64, J32 = isa.BPF_JMP, isa.BPF_JMP32
W, H, B, DW = isa.BPF_W, isa.BPF_H, isa.BPF_B, isa.BPF_DW
M64 = (1 << 64) - 1


def mov(dst: int, imm: int, cls: int = A64) -> Insn:
    return Insn(cls | isa.BPF_MOV | isa.BPF_K, dst, 0, 0, imm)


def movr(dst: int, src: int, cls: int = A64, off: int = 0) -> Insn:
    return Insn(cls | isa.BPF_MOV | isa.BPF_X, dst, src, off, 0)


def alu(op: int, dst: int, imm: int, cls: int = A64, off: int = 0) -> Insn:
    return Insn(cls | op | isa.BPF_K, dst, 0, off, imm)


def alur(op: int, dst: int, src: int, cls: int = A64, off: int = 0) -> Insn:
    return Insn(cls | op | isa.BPF_X, dst, src, off, 0)


def neg(dst: int, cls: int = A64) -> Insn:
    return Insn(cls | isa.BPF_NEG, dst)


def end(dst: int, bits: int, kind: int = isa.BPF_TO_BE, cls: int = A32) -> Insn:
    return Insn(cls | isa.BPF_END | kind, dst, 0, 0, bits)


def ldx(size: int, dst: int, src: int, off: int, sx: bool = False) -> Insn:
    mode = isa.BPF_MEMSX if sx else isa.BPF_MEM
    return Insn(isa.BPF_LDX | mode | size, dst, src, off, 0)


def stx(size: int, dst: int, src: int, off: int) -> Insn:
    return Insn(isa.BPF_STX | isa.BPF_MEM | size, dst, src, off, 0)


def st(size: int, dst: int, off: int, imm: int) -> Insn:
    return Insn(isa.BPF_ST | isa.BPF_MEM | size, dst, 0, off, imm)


def atomic(size: int, dst: int, src: int, off: int, op: int) -> Insn:
    return Insn(isa.BPF_STX | isa.BPF_ATOMIC | size, dst, src, off, op)


def jmp(op: int, dst: int, imm: int, off: int, cls: int = J64) -> Insn:
    return Insn(cls | op | isa.BPF_K, dst, 0, off, imm)


def jmpr(op: int, dst: int, src: int, off: int, cls: int = J64) -> Insn:
    return Insn(cls | op | isa.BPF_X, dst, src, off, 0)


def ja(off: int) -> Insn:
    return Insn(isa.JA, 0, 0, off, 0)


def gotol(imm: int) -> Insn:
    return Insn(isa.JA32, 0, 0, 0, imm)


def call(helper: int) -> Insn:
    return Insn(isa.CALL, 0, 0, 0, helper)


EXIT = Insn(isa.EXIT)


def ld64(dst: int, value: int) -> list[Insn]:
    return list(isa.ld_imm64(dst, value))


def ld_map(dst: int, index: int) -> list[Insn]:
    return list(isa.ld_imm64(dst, index, src=isa.BPF_PSEUDO_MAP_FD))


def prog(*parts) -> list[Insn]:
    out: list[Insn] = []
    for part in parts:
        out.extend(part if isinstance(part, (list, tuple)) else [part])
    return out


def ret(*body) -> list[Insn]:
    """A program: body then exit (r0 is the result)."""
    return prog(*body, EXIT)


def explosion(n: int) -> list[Insn]:
    """The verifier's worst case (issue 11, item 7): n diamonds each write 'a' or 'b' into
    byte i of a trace_printk format, so every path has a different valid format and a
    widened (unknown) format is refused: widening rolls back, 2^n precise states meet."""
    insns = [ldx(W, 6, 1, 8), st(DW, 10, -8, 0)]
    insns += [st(DW, 10, -16 - 8 * k, 0x2020202020202020) for k in range(8)]
    for i in range(n):
        insns += [jmp(isa.BPF_JSET, 6, 1 << (i % 32), 2), st(B, 10, -72 + i, 97), ja(1),
                  st(B, 10, -72 + i, 98)]
    return insns + [movr(1, 10), alu(isa.BPF_ADD, 1, -72), mov(2, 72), call(6), mov(0, 0), EXIT]


def sample_context():
    """A LOOKUP|PRE context with the name "hello" (in_args[0]) and its regions."""
    return build_context("lookup", "pre", [b"hello\0"], nodeid=5)


def make_vm(kind: str, insns, runtime: Runtime | None = None, **kw):
    if kind == "interp":
        return Interpreter(insns, runtime, **kw)
    from fdsl.vm.jit import Jit

    return Jit(insns, runtime, **kw)


def execute(kind: str, insns, ctx=None, caller: Caller = Caller(), runtime: Runtime | None = None, **kw):
    """Run raw (unverified) code on one VM; returns r0 (u64)."""
    ctx = ctx if ctx is not None else sample_context()
    vm = make_vm(kind, insns, runtime, **kw)
    return vm.execute(ctx.address, ctx.regions, caller)


def runtime_with(*specs) -> Runtime:
    """A runtime whose maps are described by (type, key_size, value_size, max_entries, name)."""
    from types import SimpleNamespace

    return Runtime(MapTable([SimpleNamespace(type=t, key_size=k, value_size=v, max_entries=n, name=name)
                             for t, k, v, n, name in specs]))


INT64_MIN = 1 << 63
SDIV, SMOD = 1, 1   # off=1 selects the signed form

SEMANTIC_CASES: list[tuple[str, list[Insn], int]] = [
    # --- division and modulo
    ("div64 by zero gives 0", ret(mov(0, 10), mov(1, 0), alur(isa.BPF_DIV, 0, 1)), 0),
    ("div64 by imm", ret(mov(0, 100), alu(isa.BPF_DIV, 0, 7)), 14),
    ("mod64 by zero keeps dst", ret(mov(0, -5), mov(1, 0), alur(isa.BPF_MOD, 0, 1)), M64 - 4),
    ("mod32 by zero zero-extends dst", ret(ld64(0, 0xFFFFFFFF00000007), mov(1, 0),
                                           alur(isa.BPF_MOD, 0, 1, A32)), 7),
    ("div32 checks only the low half of src", ret(mov(0, 9), ld64(1, 1 << 32),
                                                   alur(isa.BPF_DIV, 0, 1, A32)), 0),
    ("div64 does not ignore the high half", ret(ld64(0, 1 << 33), ld64(1, 1 << 32),
                                                alur(isa.BPF_DIV, 0, 1)), 2),
    ("div32 unsigned", ret(mov(0, -1), alu(isa.BPF_DIV, 0, 2, A32)), 0x7FFFFFFF),
    ("sdiv64 INT_MIN / -1", ret(ld64(0, INT64_MIN), mov(1, -1), alur(isa.BPF_DIV, 0, 1, off=SDIV)),
     INT64_MIN),
    ("smod64 INT_MIN % -1", ret(ld64(0, INT64_MIN), alu(isa.BPF_MOD, 0, -1, off=SMOD)), 0),
    ("sdiv64 truncates toward zero", ret(mov(0, -7), alu(isa.BPF_DIV, 0, 2, off=SDIV)), M64 - 2),
    ("smod64 sign of dividend", ret(mov(0, -7), alu(isa.BPF_MOD, 0, 2, off=SMOD)), M64),
    ("smod64 negative divisor", ret(mov(0, 7), alu(isa.BPF_MOD, 0, -2, off=SMOD)), 1),
    ("sdiv64 by zero", ret(mov(0, -7), mov(1, 0), alur(isa.BPF_DIV, 0, 1, off=SDIV)), 0),
    ("smod64 by zero", ret(mov(0, -7), mov(1, 0), alur(isa.BPF_MOD, 0, 1, off=SMOD)), M64 - 6),
    ("sdiv32 INT_MIN / -1", ret(mov(0, 0x80000000 - (1 << 32), A32), alu(isa.BPF_DIV, 0, -1, A32, SDIV)),
     0x80000000),
    ("sdiv32 negative", ret(mov(0, -9), alu(isa.BPF_DIV, 0, 2, A32, SDIV)), 0xFFFFFFFC),
    ("smod32 by zero zero-extends", ret(mov(0, -9), mov(1, 0), alur(isa.BPF_MOD, 0, 1, A32, SMOD)),
     0xFFFFFFF7),
    # --- shifts (masked) and arithmetic shift
    ("lsh64 masks the amount", ret(mov(0, 1), mov(1, 65), alur(isa.BPF_LSH, 0, 1)), 2),
    ("lsh32 masks the amount", ret(mov(0, 1), mov(1, 33), alur(isa.BPF_LSH, 0, 1, A32)), 2),
    ("lsh32 drops high bits", ret(mov(0, 3), alu(isa.BPF_LSH, 0, 31, A32)), 0x80000000),
    ("rsh64 logical", ret(mov(0, -1), alu(isa.BPF_RSH, 0, 60)), 0xF),
    ("arsh64", ret(mov(0, -16), alu(isa.BPF_ARSH, 0, 2)), M64 - 3),
    ("arsh32 zero-extends", ret(mov(0, 0x80000000 - (1 << 32), A32), alu(isa.BPF_ARSH, 0, 4, A32)),
     0xF8000000),
    ("rsh32 of a 64-bit value", ret(mov(0, -1), alu(isa.BPF_RSH, 0, 4, A32)), 0x0FFFFFFF),
    # --- 32-bit ops zero-extend, 64-bit imm sign-extends
    ("add32 wraps and zero-extends", ret(mov(0, -1), alu(isa.BPF_ADD, 0, 1, A32)), 0),
    ("add64 imm sign-extended", ret(mov(0, 0), alu(isa.BPF_ADD, 0, -1)), M64),
    ("mov32 imm -1", ret(mov(0, -1, A32)), 0xFFFFFFFF),
    ("mov32 reg truncates", ret(ld64(1, 0x123456789), movr(0, 1, A32)), 0x23456789),
    ("sub/mul/or/and/xor", ret(mov(0, 6), alu(isa.BPF_MUL, 0, 7), alu(isa.BPF_SUB, 0, 2),
                               alu(isa.BPF_OR, 0, 0x100), alu(isa.BPF_AND, 0, 0x1F0),
                               alu(isa.BPF_XOR, 0, 0x5)), 0x125),
    ("mul32 truncates", ret(ld64(0, 0x1_0000_0003), alu(isa.BPF_MUL, 0, 0x40000000, A32)), 0xC0000000),
    ("neg64", ret(mov(0, 5), neg(0)), M64 - 4),
    ("neg32", ret(mov(0, 5), neg(0, A32)), 0xFFFFFFFB),
    ("and32 with negative imm", ret(mov(0, -1), alu(isa.BPF_AND, 0, -16, A32)), 0xFFFFFFF0),
    # --- movsx (v4)
    ("movsx64 s8", ret(mov(1, 0x80), movr(0, 1, off=8)), M64 - 0x7F),
    ("movsx64 s16", ret(mov(1, 0x7FFF), movr(0, 1, off=16)), 0x7FFF),
    ("movsx64 s32", ret(ld64(1, 0x80000000), movr(0, 1, off=32)), 0xFFFFFFFF80000000),
    ("movsx32 s16", ret(mov(1, 0x8000), movr(0, 1, A32, off=16)), 0xFFFF8000),
    ("movsx32 s8", ret(mov(1, 0x17F), movr(0, 1, A32, off=8)), 0x7F),
    # --- byte order
    ("be16", ret(ld64(0, 0x0102030405060708), end(0, 16)), 0x0807),
    ("be32", ret(ld64(0, 0x0102030405060708), end(0, 32)), 0x08070605),
    ("be64", ret(ld64(0, 0x0102030405060708), end(0, 64)), 0x0807060504030201),
    ("le16 truncates", ret(ld64(0, 0x0102030405060708), end(0, 16, isa.BPF_TO_LE)), 0x0708),
    ("le32 truncates", ret(ld64(0, 0x0102030405060708), end(0, 32, isa.BPF_TO_LE)), 0x05060708),
    ("le64 is identity", ret(ld64(0, 0x0102030405060708), end(0, 64, isa.BPF_TO_LE)),
     0x0102030405060708),
    ("bswap16 (v4)", ret(ld64(0, 0x0102030405060708), end(0, 16, isa.BPF_TO_LE, A64)), 0x0807),
    ("bswap64 (v4)", ret(ld64(0, 0x0102030405060708), end(0, 64, isa.BPF_TO_LE, A64)),
     0x0807060504030201),
    # --- jumps
    ("jmp32 looks at the low half", ret(ld64(1, 1 << 32), mov(0, 1), jmp(isa.BPF_JEQ, 1, 0, 1, J32),
                                        mov(0, 2)), 1),
    ("jmp64 looks at all bits", ret(ld64(1, 1 << 32), mov(0, 1), jmp(isa.BPF_JEQ, 1, 0, 1),
                                    mov(0, 2)), 2),
    ("jslt signed", ret(mov(1, -1), mov(0, 1), jmp(isa.BPF_JSLT, 1, 0, 1), mov(0, 2)), 1),
    ("jlt unsigned", ret(mov(1, -1), mov(0, 1), jmp(isa.BPF_JLT, 1, 0, 1), mov(0, 2)), 2),
    ("jgt imm sign-extended", ret(mov(1, -1), mov(0, 1), jmp(isa.BPF_JGT, 1, -2, 1), mov(0, 2)), 1),
    ("jmp32 imm not extended", ret(mov(1, -1), mov(0, 1), jmp(isa.BPF_JEQ, 1, -1, 1, J32), mov(0, 2)), 1),
    ("jsgt32 signed low half", ret(ld64(1, 0x1_8000_0000), mov(0, 1), jmp(isa.BPF_JSGT, 1, 0, 1, J32),
                                   mov(0, 2)), 2),
    ("jset", ret(mov(1, 6), mov(0, 1), jmp(isa.BPF_JSET, 1, 4, 1), mov(0, 2)), 1),
    ("jset miss", ret(mov(1, 6), mov(0, 1), jmp(isa.BPF_JSET, 1, 8, 1), mov(0, 2)), 2),
    ("jne/jge/jle/jsge/jsle reg", ret(mov(0, 0), mov(1, 3), mov(2, 5),
                                      jmpr(isa.BPF_JNE, 1, 2, 1), alu(isa.BPF_OR, 0, 1),
                                      jmpr(isa.BPF_JGE, 2, 1, 1), alu(isa.BPF_OR, 0, 2),
                                      jmpr(isa.BPF_JLE, 2, 1, 1), alu(isa.BPF_OR, 0, 4),
                                      jmpr(isa.BPF_JSGE, 1, 2, 1), alu(isa.BPF_OR, 0, 8),
                                      jmpr(isa.BPF_JSLE, 1, 2, 1), alu(isa.BPF_OR, 0, 16)), 4 | 8),
    ("ja skips", ret(mov(0, 1), ja(1), mov(0, 2)), 1),
    ("gotol (v4) skips", ret(mov(0, 1), gotol(1), mov(0, 2)), 1),
    # --- memory: stack, sizes, sign-extending loads
    ("stack round trip", ret(ld64(1, 0x1122334455667788), stx(DW, 10, 1, -8), ldx(W, 0, 10, -4)),
     0x11223344),
    ("st imm sign-extends then truncates", ret(st(DW, 10, -8, -2), ldx(DW, 0, 10, -8)), M64 - 1),
    ("st byte", ret(st(DW, 10, -8, 0), st(B, 10, -7, 0x1FF), ldx(DW, 0, 10, -8)), 0xFF00),
    ("ldsx byte", ret(st(B, 10, -1, 0xFF), ldx(B, 0, 10, -1, sx=True)), M64),
    ("ldsx half", ret(st(H, 10, -2, 0x7FFF), ldx(H, 0, 10, -2, sx=True)), 0x7FFF),
    ("ldsx word", ret(st(W, 10, -4, -3), ldx(W, 0, 10, -4, sx=True)), M64 - 2),
    ("ldx zero-extends", ret(st(W, 10, -4, -3), ldx(W, 0, 10, -4)), 0xFFFFFFFD),
    ("pointer kept in a register", ret(movr(2, 10), alu(isa.BPF_ADD, 2, -16), st(DW, 2, 8, 9),
                                       ldx(DW, 0, 10, -8)), 9),
    ("pointer spilled and reloaded", ret(movr(2, 10), alu(isa.BPF_ADD, 2, -16), stx(DW, 10, 2, -24),
                                         st(DW, 10, -16, 33), ldx(DW, 3, 10, -24), ldx(DW, 0, 3, 0)), 33),
    # --- context reads
    ("ctx nodeid", ret(ldx(DW, 0, 1, 0)), 5),
    ("ctx opcode", ret(ldx(W, 0, 1, 8)), 0x10001),
    ("ctx in_numargs", ret(ldx(W, 0, 1, 16)), 1),
    ("buffer byte", ret(ldx(DW, 2, 1, 40), ldx(B, 0, 2, 1)), ord("e")),
    ("buffer zero padded", ret(ldx(DW, 2, 1, 40), ldx(DW, 0, 2, 4000)), 0),
    ("buffer write through out_args (PRE alias)", ret(ldx(DW, 2, 1, 160), st(B, 2, 0, ord("j")),
                                                      ldx(DW, 3, 1, 40), ldx(W, 0, 3, 0)),
     int.from_bytes(b"jell", "little")),
    # --- atomics
    ("atomic add64", ret(st(DW, 10, -8, 10), mov(1, 5), atomic(DW, 10, 1, -8, isa.BPF_ADD),
                         ldx(DW, 0, 10, -8)), 15),
    ("atomic fetch_add64 returns old", ret(st(DW, 10, -8, 10), mov(1, 5),
                                           atomic(DW, 10, 1, -8, isa.BPF_ADD | isa.BPF_FETCH),
                                           ldx(DW, 0, 10, -8), alu(isa.BPF_LSH, 0, 8),
                                           alur(isa.BPF_OR, 0, 1)), (15 << 8) | 10),
    ("atomic fetch_add32 zero-extends", ret(st(W, 10, -4, -1), mov(1, 1),
                                            atomic(W, 10, 1, -4, isa.BPF_ADD | isa.BPF_FETCH),
                                            movr(0, 1)), 0xFFFFFFFF),
    ("atomic add32 wraps in memory", ret(st(DW, 10, -8, -1), mov(1, 1), atomic(W, 10, 1, -8, isa.BPF_ADD),
                                         ldx(DW, 0, 10, -8)), 0xFFFFFFFF00000000),
    ("atomic or/and/xor", ret(st(DW, 10, -8, 0xF0), mov(1, 0x0F), atomic(DW, 10, 1, -8, isa.BPF_OR),
                              mov(1, 0x3C), atomic(DW, 10, 1, -8, isa.BPF_AND),
                              mov(1, 0x01), atomic(DW, 10, 1, -8, isa.BPF_XOR), ldx(DW, 0, 10, -8)), 0x3D),
    ("atomic fetch_or/and/xor", ret(st(DW, 10, -8, 0xF0), mov(1, 0x0F),
                                    atomic(DW, 10, 1, -8, isa.BPF_OR | isa.BPF_FETCH), movr(0, 1),
                                    mov(1, 0x3C), atomic(DW, 10, 1, -8, isa.BPF_AND | isa.BPF_FETCH),
                                    alu(isa.BPF_LSH, 0, 8), alur(isa.BPF_OR, 0, 1),
                                    mov(1, 1), atomic(W, 10, 1, -8, isa.BPF_XOR | isa.BPF_FETCH),
                                    alu(isa.BPF_LSH, 0, 8), alur(isa.BPF_OR, 0, 1)), 0xF0FF3C),
    ("xchg64", ret(st(DW, 10, -8, 7), mov(1, 9), atomic(DW, 10, 1, -8, isa.BPF_XCHG),
                   ldx(DW, 0, 10, -8), alu(isa.BPF_LSH, 0, 8), alur(isa.BPF_OR, 0, 1)), 0x907),
    ("xchg32", ret(st(DW, 10, -8, -1), mov(1, 2), atomic(W, 10, 1, -8, isa.BPF_XCHG),
                   ldx(DW, 0, 10, -8), alur(isa.BPF_ADD, 0, 1)), (0xFFFFFFFF00000002 + 0xFFFFFFFF) & M64),
    ("cmpxchg64 success", ret(st(DW, 10, -8, 7), mov(0, 7), mov(1, 9),
                              atomic(DW, 10, 1, -8, isa.BPF_CMPXCHG), ldx(DW, 2, 10, -8),
                              alu(isa.BPF_LSH, 2, 8), alur(isa.BPF_OR, 0, 2)), 0x907),
    ("cmpxchg64 failure", ret(st(DW, 10, -8, 7), mov(0, 6), mov(1, 9),
                              atomic(DW, 10, 1, -8, isa.BPF_CMPXCHG), ldx(DW, 2, 10, -8),
                              alu(isa.BPF_LSH, 2, 8), alur(isa.BPF_OR, 0, 2)), 0x707),
    ("cmpxchg32 compares the low half", ret(st(DW, 10, -8, 7), ld64(0, 0x5_0000_0007), mov(1, 9),
                                            atomic(W, 10, 1, -8, isa.BPF_CMPXCHG), ldx(DW, 2, 10, -8),
                                            alu(isa.BPF_LSH, 2, 8), alur(isa.BPF_OR, 0, 2)), 0x907),
    # --- helpers 14 / 15 (caller = Caller(1000, 100, 4242, 4240))
    ("uid_gid", ret(call(15)), (100 << 32) | 1000),
    ("pid_tgid", ret(call(14)), (4240 << 32) | 4242),
]

CASE_CALLER = Caller(uid=1000, gid=100, pid=4242, tgid=4240)

FAULT_CASES: list[tuple[str, list[Insn], int, str]] = [
    ("NULL read", ret(mov(1, 0), ldx(DW, 0, 1, 0)), 1, "invalid read of 8 bytes at 0x0"),
    ("NULL buffer (unused slot)", ret(ldx(DW, 2, 1, 64), ldx(B, 0, 2, 3)), 1,
     "invalid read of 1 bytes at 0x3"),
    ("store into ctx", ret(st(W, 1, 8, 0), mov(0, 0)), 0, "invalid write of 4 bytes"),
    ("above the stack", ret(st(DW, 10, 0, 1), mov(0, 0)), 0, "invalid write of 8 bytes"),
    ("below the stack", ret(ldx(DW, 0, 10, -520)), 0, "invalid read of 8 bytes"),
    ("straddles the stack top", ret(ldx(DW, 0, 10, -4)), 0, "invalid read of 8 bytes"),
    ("past the ctx", ret(ldx(DW, 0, 1, 220)), 0, "invalid read of 8 bytes"),
    ("wild pointer", ret(ld64(1, 0xDEAD0000), ldx(W, 0, 1, 0)), 2, "invalid read of 4 bytes at 0xdead0000"),
    ("atomic on ctx", ret(mov(2, 1), atomic(DW, 1, 2, 0, isa.BPF_ADD), mov(0, 0)), 1, "invalid write of 8"),
    ("fell off the end", [mov(0, 0)], 1, "fell off the end"),
]
