"""Disassembler printing LLVM's BPF assembly syntax.

`format_insn` gives, for every instruction llvm-objdump 14 decodes, exactly
the text `llvm-objdump -d` prints after the hex bytes (jump labels such as
`<LBB0_2>` left out).  32-bit atomics other than a plain `lock ... +=` use
the text objdump prints with `--mattr=+alu32`.  Instructions objdump 14 does
not know (v4's sdiv/smod, movsx, bswap, ldsx, gotol, ST with immediate, and
mod/jset, which LLVM 14 never emits) use the syntax of newer LLVM releases.
Invalid encodings print as `<unknown>`, as objdump does.

`ctx_notes(insns, record)` names the context field each load reads, in the
layout of the object's ABI (`; ctx in_args[0].end_offset` under RFC v1,
`; ctx out_args[0].value` under ACK), from the registers' provenance.
"""
from __future__ import annotations

from dataclasses import dataclass

from fdsl import abi
from fdsl.vm import isa
from fdsl.vm.flow import provenance
from fdsl.vm.isa import Insn

_ALU_SYM = {
    isa.BPF_ADD: "+=", isa.BPF_SUB: "-=", isa.BPF_MUL: "*=", isa.BPF_DIV: "/=",
    isa.BPF_OR: "|=", isa.BPF_AND: "&=", isa.BPF_LSH: "<<=", isa.BPF_RSH: ">>=",
    isa.BPF_MOD: "%=", isa.BPF_XOR: "^=", isa.BPF_MOV: "=", isa.BPF_ARSH: "s>>=",
}
_JMP_SYM = {
    isa.BPF_JEQ: "==", isa.BPF_JGT: ">", isa.BPF_JGE: ">=", isa.BPF_JSET: "&",
    isa.BPF_JNE: "!=", isa.BPF_JSGT: "s>", isa.BPF_JSGE: "s>=", isa.BPF_JLT: "<",
    isa.BPF_JLE: "<=", isa.BPF_JSLT: "s<", isa.BPF_JSLE: "s<=",
}
_SIZE_NAME = {isa.BPF_W: "32", isa.BPF_H: "16", isa.BPF_B: "8", isa.BPF_DW: "64"}
_ATOMIC_NAME = {isa.BPF_ADD: "add", isa.BPF_OR: "or", isa.BPF_AND: "and", isa.BPF_XOR: "xor"}
_ATOMIC_SYM = {isa.BPF_ADD: "+=", isa.BPF_OR: "|=", isa.BPF_AND: "&=", isa.BPF_XOR: "^="}

UNKNOWN = "<unknown>"


def _mem(reg: int, off: int) -> str:
    return f"r{reg} + {off}" if off >= 0 else f"r{reg} - {-off}"


def _rel(off: int) -> str:
    return f"+{off}" if off >= 0 else str(off)


def _s64(value: int) -> int:
    return value - (1 << 64) if value & (1 << 63) else value


def format_insn(insn: Insn) -> str:
    """objdump's text for one instruction (the first slot of a ld_imm64)."""
    if insn.cls == isa.BPF_LD and insn.mode in (isa.BPF_ABS, isa.BPF_IND) and insn.size != isa.BPF_DW:
        where = str(insn.imm) if insn.mode == isa.BPF_ABS else f"r{insn.src}"
        return f"r0 = *(u{_SIZE_NAME[insn.size]} *)skb[{where}]"
    if isa.encoding_error(insn) is not None:
        return UNKNOWN
    cls = insn.cls
    if cls in (isa.BPF_ALU, isa.BPF_ALU64):
        return _format_alu(insn)
    if cls in (isa.BPF_JMP, isa.BPF_JMP32):
        return _format_jmp(insn)
    if cls == isa.BPF_LD:  # ld_imm64
        if insn.imm64 is None:
            return UNKNOWN
        if insn.src:
            return f"ld_pseudo\tr{insn.dst}, {insn.src}, {insn.imm & 0xFFFFFFFF}"
        return f"r{insn.dst} = {_s64(insn.imm64)} ll"
    size = _SIZE_NAME[insn.size]
    if cls == isa.BPF_LDX:
        sign = "s" if insn.mode == isa.BPF_MEMSX else "u"
        return f"r{insn.dst} = *({sign}{size} *)({_mem(insn.src, insn.off)})"
    if cls == isa.BPF_ST:
        return f"*(u{size} *)({_mem(insn.dst, insn.off)}) = {insn.imm}"
    if insn.mode == isa.BPF_MEM:
        return f"*(u{size} *)({_mem(insn.dst, insn.off)}) = r{insn.src}"
    return _format_atomic(insn)


def _format_alu(insn: Insn) -> str:
    r = "r" if insn.cls == isa.BPF_ALU64 else "w"
    op, d = insn.op, insn.dst
    if op == isa.BPF_NEG:
        return f"{r}{d} = -{r}{d}"
    if op == isa.BPF_END:
        if insn.cls == isa.BPF_ALU64:
            return f"r{d} = bswap{insn.imm} r{d}"
        kind = "be" if insn.source == isa.BPF_TO_BE else "le"
        return f"r{d} = {kind}{insn.imm} r{d}"
    operand = f"{r}{insn.src}" if insn.source == isa.BPF_X else str(insn.imm)
    if op == isa.BPF_MOV and insn.off:
        return f"{r}{d} = (s{insn.off}){operand}"
    sym = _ALU_SYM[op]
    if op in (isa.BPF_DIV, isa.BPF_MOD) and insn.off == 1:
        sym = "s" + sym
    return f"{r}{d} {sym} {operand}"


def _format_jmp(insn: Insn) -> str:
    op = insn.op
    if op == isa.BPF_JA:
        return f"gotol {_rel(insn.imm)}" if insn.cls == isa.BPF_JMP32 else f"goto {_rel(insn.off)}"
    if op == isa.BPF_CALL:
        return f"call {insn.imm}"
    if op == isa.BPF_EXIT:
        return "exit"
    r = "r" if insn.cls == isa.BPF_JMP else "w"
    operand = f"{r}{insn.src}" if insn.source == isa.BPF_X else str(insn.imm)
    return f"if {r}{insn.dst} {_JMP_SYM[op]} {operand} goto {_rel(insn.off)}"


def _format_atomic(insn: Insn) -> str:
    is64 = insn.size == isa.BPF_DW
    r = "r" if is64 else "w"
    width = "64" if is64 else "32"
    addr = _mem(insn.dst, insn.off)
    s, code = insn.src, insn.imm
    if code == isa.BPF_XCHG:
        return f"r{s} = xchg_64({addr}, r{s})" if is64 else f"w{s} = xchg32_32({addr}, w{s})"
    if code == isa.BPF_CMPXCHG:
        if is64:
            return f"r0 = cmpxchg_64({addr}, r0, r{s})"
        return f"w0 = cmpxchg32_32({addr}, w0, w{s})"
    base = code & ~isa.BPF_FETCH
    if code & isa.BPF_FETCH:
        return f"{r}{s} = atomic_fetch_{_ATOMIC_NAME[base]}((u{width} *)({addr}), {r}{s})"
    if base == isa.BPF_ADD:  # plain xadd: objdump prints r even for the 32-bit form
        return f"lock *(u{width} *)({addr}) += r{s}"
    return f"lock *(u{width} *)({addr}) {_ATOMIC_SYM[base]} {r}{s}"


@dataclass(frozen=True)
class Line:
    slot: int
    text: str


def disassemble(insns: list[Insn]) -> list[Line]:
    """One `Line` per instruction; second halves of ld_imm64 are skipped."""
    lines: list[Line] = []
    i = 0
    while i < len(insns):
        insn = insns[i]
        lines.append(Line(i, format_insn(insn)))
        i += 2 if insn.is_ld_imm64 and insn.imm64 is not None else 1
    return lines


def render(insns: list[Insn], notes: dict[int, str] | None = None) -> str:
    """objdump-like listing: `slot:<TAB>text`, plus `; note` lines (e.g. relocations)."""
    out = []
    for line in disassemble(insns):
        out.append(f"{line.slot:>8}:\t{line.text}")
        if notes and line.slot in notes:
            out.append(f"\t\t; {notes[line.slot]}")
    return "\n".join(out) + ("\n" if out else "")


def ctx_notes(insns: list[Insn], record: abi.Abi) -> dict[int, str]:
    """slot -> "ctx FIELD" for every load from the context (`FIELD+N` inside a field)."""
    notes: dict[int, str] = {}
    fields = record.ctx_fields()
    for pc, regs in provenance(insns).items():
        insn = insns[pc]
        kind = regs[insn.src] if insn.cls == isa.BPF_LDX else None
        if kind is None or kind[0] != "ctx":
            continue
        offset = kind[1] + insn.off
        field = next((f for f in fields if f.offset <= offset < f.offset + f.size), None)
        if field is None:
            notes[pc] = f"ctx +{offset} (no {record.name} field)"
        else:
            inside = offset - field.offset
            notes[pc] = f"ctx {field.name}" + (f"+{inside}" if inside else "")
    return notes
