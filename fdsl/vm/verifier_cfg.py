"""The verifier's structural pass: decoding checks, the control-flow graph, liveness.

Before any path is walked: every opcode and reserved field is valid for cpu v3
and allowed for the fuse program type, ld_imm64 pairs are whole, jumps land on
instructions, there are no loops (back-edges) and no unreachable code; then
the join points (where state pruning happens) and a static register liveness
(pruning ignores dead registers) are computed once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from fdsl import abi
from fdsl.errors import VerifierError
from fdsl.vm import isa
from fdsl.vm.isa import Insn

MAX_PROGRAM_SLOTS = 100_000


def helper_arg_regs(helper_id: int) -> tuple[int, ...]:
    """Registers a helper call reads (r1..rN, N its most declared arguments in any ABI).

    Liveness only: counting too many registers live is safe, too few is not.
    """
    counts = [len(a.helpers[helper_id].args) for a in abi.ABIS.values() if helper_id in a.helpers]
    return tuple(range(1, max(counts) + 1)) if counts else ()


@dataclass(frozen=True)
class Structure:
    """What the walk needs from the structural pass."""

    second: frozenset[int]                 # second slots of ld_imm64
    succs: list[tuple[int, ...]]
    prune_points: frozenset[int]           # slots with more than one predecessor
    live_in: list[int]                     # bitmask of registers live before each slot


def analyse(insns: Sequence[Insn], fail: Callable[[int, str], VerifierError],
            helpers: Mapping[int, Any] = abi.HELPERS) -> Structure:
    """Opcodes, reserved fields, jump targets, no loops, no unreachable code."""
    n = len(insns)
    if n == 0:
        raise fail(0, "empty program")
    if n > MAX_PROGRAM_SLOTS:
        raise fail(MAX_PROGRAM_SLOTS, f"program too large ({n} slots, limit {MAX_PROGRAM_SLOTS})")
    second: set[int] = set()
    i = 0
    while i < n:
        insn = insns[i]
        err = isa.encoding_error(insn, cpu=3)
        if err is None:
            err = unsupported(insn, helpers)
        if err is not None:
            raise fail(i, err)
        if insn.is_ld_imm64:
            if i + 1 >= n or insn.imm64 is None:
                raise fail(i, "ld_imm64 is missing its second slot")
            err = isa.second_half_error(insns[i + 1])
            if err is not None:
                raise fail(i + 1, err)
            second.add(i + 1)
            i += 2
        else:
            i += 1

    succs: list[tuple[int, ...]] = [()] * n
    for i in range(n):
        if i in second:
            continue
        insn = insns[i]
        if insn.is_exit:
            succs[i] = ()
            continue
        nxt = i + insn.slots
        if insn.is_branch:
            target = insn.jump_target(i)
            if not 0 <= target < n:
                raise fail(i, f"jump out of range (target {target}, program has {n} slots)")
            if target in second:
                raise fail(i, f"jump into the middle of ld_imm64 at {target - 1}")
            if insn.op == isa.BPF_JA:
                succs[i] = (target,)
                continue
            succs[i] = (nxt, target) if nxt != target else (nxt,)
        else:
            succs[i] = (nxt,)
        if nxt >= n:
            raise fail(i, "program falls off the end (last insn is not exit or goto)")

    # iterative DFS: back-edges (loops) and reachability
    WHITE, GREY, BLACK = 0, 1, 2
    color = bytearray(n)
    postorder: list[int] = []
    stack = [(0, 0)]
    color[0] = GREY
    while stack:
        node, k = stack[-1]
        if k < len(succs[node]):
            stack[-1] = (node, k + 1)
            nxt = succs[node][k]
            if color[nxt] == GREY:
                raise fail(node, f"back-edge from insn {node} to {nxt} (loops are not allowed)")
            if color[nxt] == WHITE:
                color[nxt] = GREY
                stack.append((nxt, 0))
        else:
            color[node] = BLACK
            postorder.append(node)
            stack.pop()
    for i in range(n):
        if i not in second and color[i] == WHITE:
            raise fail(i, "unreachable insn")

    preds = [0] * n
    for i in postorder:
        for s in succs[i]:
            preds[s] += 1
    prune_points = frozenset(i for i in range(n) if preds[i] > 1)

    # static register liveness (backward, once: the CFG is a DAG)
    live = [0] * n
    for i in postorder:  # successors come before their predecessors
        out = 0
        for s in succs[i]:
            out |= live[s]
        use, defs = use_def(insns[i])
        live[i] = use | (out & ~defs)
    return Structure(frozenset(second), succs, prune_points, live)


def unsupported(insn: Insn, helpers: Mapping[int, Any] = abi.HELPERS) -> str | None:
    """Valid eBPF that the fuse program type (or this verifier) refuses."""
    if insn.is_ld_imm64 and insn.src not in (0, isa.BPF_PSEUDO_MAP_FD):
        return f"unsupported ld_imm64 src_reg {insn.src} (only constants and map fds)"
    if insn.is_call:
        if insn.src == isa.BPF_PSEUDO_CALL:
            return "bpf-to-bpf calls are not supported"
        if insn.src != 0:
            return "kfunc calls are not supported"
        if insn.imm not in helpers:
            allowed = ", ".join(str(h) for h in sorted(helpers))
            return f"helper {insn.imm} is not available to fuse programs (allowed: {allowed})"
    if insn.is_alu and (insn.op == isa.BPF_END) and insn.cls == isa.BPF_ALU64:
        return "bswap needs cpu v4"
    return None


def use_def(insn: Insn) -> tuple[int, int]:
    """Register bitmasks read and written by one instruction."""
    cls, op = insn.cls, insn.op
    d, s = 1 << insn.dst, 1 << insn.src
    if cls in (isa.BPF_ALU, isa.BPF_ALU64):
        if op == isa.BPF_MOV:
            return (s if insn.source == isa.BPF_X else 0), d
        if op in (isa.BPF_NEG, isa.BPF_END) or insn.source == isa.BPF_K:
            return d, d
        return d | s, d
    if cls in (isa.BPF_JMP, isa.BPF_JMP32):
        if insn.is_call:
            use = 0
            for r in helper_arg_regs(insn.imm):
                use |= 1 << r
            return use, 0b111111
        if insn.is_exit:
            return 1, 0
        if op == isa.BPF_JA:
            return 0, 0
        return (d | s) if insn.source == isa.BPF_X else d, 0
    if cls == isa.BPF_LDX:
        return s, d
    if cls == isa.BPF_ST:
        return d, 0
    if cls == isa.BPF_STX:
        if insn.mode == isa.BPF_ATOMIC:
            if insn.imm == isa.BPF_CMPXCHG:
                return d | s | 1, 1
            return d | s, (s if insn.imm & isa.BPF_FETCH else 0)
        return d | s, 0
    if insn.is_ld_imm64:
        return 0, d
    return 0, 0
