"""Register provenance over a program's control-flow graph, shared by the JIT and `disasm`.

`provenance(insns)` is a forward dataflow to a fixpoint: before each reachable
slot, which registers hold the context or the stack pointer plus a known
constant offset (("ctx", 8): r1 + 8), None where the paths disagree or the
value is anything else.  The JIT uses it to check context accesses statically;
`fdsl disasm` to name the context fields a load reads.
"""
from __future__ import annotations

from typing import Sequence

from fdsl.vm import isa
from fdsl.vm.isa import Insn

# A register's kind: ("ctx", off) / ("stack", off from r10) / None (unknown).
Kind = tuple[str, int] | None


def successors(insns: Sequence[Insn], pc: int) -> list[int]:
    """Slots control may reach after `pc` (a ld_imm64 takes two)."""
    insn = insns[pc]
    if insn.is_exit:
        return []
    if insn.is_branch:
        if insn.is_cond_jump:
            return [pc + 1, insn.jump_target(pc)]
        return [insn.jump_target(pc)]
    return [pc + (2 if insn.is_ld_imm64 and insn.imm64 is not None else 1)]


def provenance(insns: Sequence[Insn]) -> dict[int, list[Kind]]:
    """Register kinds before each reachable slot (forward dataflow to a fixpoint)."""
    n = len(insns)
    start: list[Kind] = [None] * isa.REG_COUNT
    start[1] = ("ctx", 0)
    start[10] = ("stack", 0)
    state: dict[int, list[Kind]] = {0: start}
    work = [0]
    while work:
        pc = work.pop()
        regs = list(state[pc])
        _transfer(insns[pc], regs)
        for nxt in successors(insns, pc):
            if not 0 <= nxt < n:
                continue
            old = state.get(nxt)
            if old is None:
                state[nxt] = regs
                work.append(nxt)
                continue
            merged = [a if a == b else None for a, b in zip(old, regs)]
            if merged != old:
                state[nxt] = merged
                work.append(nxt)
    return state


def _transfer(insn: Insn, regs: list[Kind]) -> None:
    cls = insn.cls
    if cls == isa.BPF_ALU64 and insn.dst < isa.FP:
        kind = regs[insn.dst]
        if insn.op == isa.BPF_MOV and insn.source == isa.BPF_X and insn.off == 0:
            regs[insn.dst] = regs[insn.src]
        elif insn.op in (isa.BPF_ADD, isa.BPF_SUB) and insn.source == isa.BPF_K and kind:
            delta = insn.imm if insn.op == isa.BPF_ADD else -insn.imm
            regs[insn.dst] = (kind[0], kind[1] + delta)
        else:
            regs[insn.dst] = None
    elif cls in (isa.BPF_ALU, isa.BPF_LDX, isa.BPF_LD) and insn.dst < isa.FP:
        regs[insn.dst] = None
    elif cls == isa.BPF_STX and insn.mode == isa.BPF_ATOMIC:
        if insn.imm == isa.BPF_CMPXCHG:
            regs[0] = None
        elif insn.imm & isa.BPF_FETCH and insn.src < isa.FP:
            regs[insn.src] = None
    elif insn.is_call:
        for r in range(6):
            regs[r] = None
