"""JIT, first half: verified BPF -> LLVM IR (the shape is described in `fdsl.vm.jit`).

Static pointer provenance (which loads/stores are provably in bounds), the
budget analysis and the IR builder; the env-record layout and fault codes the
generated code shares with the Python side of the JIT are defined here too.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import llvmlite.binding as llvm
import llvmlite.ir as ir

from fdsl import abi
from fdsl.vm import isa
from fdsl.vm.interpreter import (MASK64, STACK_SIZE)
from fdsl.vm.flow import Kind, provenance as _provenance, successors as _successors
from fdsl.vm.isa import Insn
from fdsl.vm.verifier_state import AccessCheck

log = logging.getLogger("fdsl.vm.jit")


# ------------------------------------------------------------------ the env record shared with native code

ENV_FAULT = 2          # fault code (0 = none), see FAULT_*
ENV_FAULT_INDEX = 3    # slot of the faulting instruction (budget: block start)
ENV_FAULT_ARG = 4      # faulting address (access) / index in block (budget)
ENV_FAULT_SIZE = 5     # access size
ENV_REGIONS = 6        # address of the region table: (start, end, writable) u64 triples
ENV_NREGIONS = 7
ENV_STACK = 8          # set by the code on entry: its stack's lowest address (for helpers)
ENV_MAPS = 9           # address of the u64 array of map handles (ld_imm64 of map i loads [i])
ENV_HELPER = 10        # address of the helper callback (not baked in: cached code outlives a process)
ENV_WORDS = 11

FAULT_NONE = 0
FAULT_READ = 1
FAULT_WRITE = 2
FAULT_BUDGET = 3
FAULT_FELL_OFF = 4
FAULT_HELPER = 5       # a helper raised VmFault; the reason waits in the run state
FAULT_INVALID = 6      # an instruction the JIT does not translate (never in verified code)

I64 = ir.IntType(64)
I32 = ir.IntType(32)
I16 = ir.IntType(16)
I8 = ir.IntType(8)
I1 = ir.IntType(1)
INT_OF_SIZE = {1: I8, 2: I16, 4: I32, 8: I64}
RUN_FAULTED = 1 << 40   # bpf_run's result when the run faulted (any s32 is smaller)


# ------------------------------------------------------------------ static pointer provenance
# (register kinds: fdsl.vm.flow)


def _leaders(insns: Sequence[Insn]) -> list[int]:
    """Slots that start a basic block: 0, jump targets, slots after a jump/exit."""
    n = len(insns)
    leaders = {0}
    pc = 0
    while pc < n:
        insn = insns[pc]
        step = 2 if insn.is_ld_imm64 and insn.imm64 is not None else 1
        if insn.is_branch:
            target = insn.jump_target(pc)
            if 0 <= target < n:
                leaders.add(target)
            if pc + 1 < n:
                leaders.add(pc + 1)
        elif insn.is_exit and pc + 1 < n:
            leaders.add(pc + 1)
        pc += step
    return sorted(leaders)


def _may_exceed(insns: Sequence[Insn], kinds: dict[int, list[Kind]], budget: int) -> bool:
    """Can a run execute more than `budget` instructions?  Not if the control-flow graph
    has no cycle (each instruction then runs at most once) and at most `budget`
    instructions are reachable: the verifier rejects loops, so verified code needs
    no instruction counter."""
    if len(kinds) > budget:
        return True
    n = len(insns)
    state = dict.fromkeys(kinds, 0)          # 0 new, 1 on the DFS stack, 2 done
    for root in kinds:
        if state[root]:
            continue
        state[root] = 1
        stack = [(root, iter(_successors(insns, root)))]
        while stack:
            pc, succ = stack[-1]
            nxt = next(succ, None)
            if nxt is None:
                state[pc] = 2
                stack.pop()
            elif 0 <= nxt < n and nxt in state:
                if state[nxt] == 1:
                    return True             # a back edge: a loop
                if state[nxt] == 0:
                    state[nxt] = 1
                    stack.append((nxt, iter(_successors(insns, nxt))))
    return False


# ------------------------------------------------------------------ IR generation

@dataclass
class _Block:
    start: int
    slots: list[int] = field(default_factory=list)   # slots of the insns executed in it
    bb: ir.Block | None = None


class _Codegen:
    """Builds the LLVM module for one program."""

    def __init__(self, insns: Sequence[Insn], nmaps: int, budget: int,
                 checks: dict[int, AccessCheck] | None) -> None:
        self.insns = list(insns)
        self.nmaps = nmaps
        self.budget = budget
        self.checks = checks
        self.needs_regions = False   # does any access walk the region table?
        self.uses_callbacks = False  # does any call go back into Python?
        self.module = ir.Module(name="bpf")
        self.module.triple = llvm.get_process_triple()
        # bpf_prog(ctx, env, uid, gid, pid, tgid) -> r0; a fault is reported in env
        self.fn = ir.Function(self.module, ir.FunctionType(I64, [I64] * 6), name="bpf_prog")
        self.blocks: dict[int, _Block] = {}
        self.kinds = _provenance(self.insns)
        self.counted = _may_exceed(self.insns, self.kinds, budget)

    # -- entry point
    def build(self) -> tuple[str, dict[int, list[int]]]:
        fn = self.fn
        entry = fn.append_basic_block("entry")
        b = self.b = ir.IRBuilder(entry)
        self.ctx_arg, self.env_arg, uid, gid, pid, tgid = fn.args
        self.env_ptr = b.inttoptr(self.env_arg, I64.as_pointer())
        b.store(ir.Constant(I64, FAULT_NONE), self._env_slot(ENV_FAULT))
        self.uid_gid = self._pack32(gid, uid)      # helper 15
        self.pid_tgid = self._pack32(tgid, pid)    # helper 14
        self.regs = [b.alloca(I64, name=f"r{i}") for i in range(isa.REG_COUNT)]
        stack = b.alloca(ir.ArrayType(I8, STACK_SIZE), name="stack")
        stack.align = 16
        self.stack_lo = b.ptrtoint(stack, I64)
        b.store(self.stack_lo, self._env_slot(ENV_STACK))
        self.count = b.alloca(I64, name="count")
        for i, reg in enumerate(self.regs):
            b.store(ir.Constant(I64, 0), reg)
        b.store(self.ctx_arg, self.regs[1])
        b.store(b.add(self.stack_lo, ir.Constant(I64, STACK_SIZE)), self.regs[10])
        b.store(ir.Constant(I64, 0), self.count)
        self.regions = b.load(self._env_slot(ENV_REGIONS))
        self.nregions = b.load(self._env_slot(ENV_NREGIONS))

        # one shared fault exit; each fault site feeds its record in through phis
        self.fault_bb = fn.append_basic_block("fault")
        b.position_at_end(self.fault_bb)
        self.fault_phis = [b.phi(I64, name=n) for n in ("fault_code", "fault_index", "fault_arg", "fault_size")]
        b.position_at_end(entry)
        self._fell_off: dict[int, ir.Block] = {}
        n = len(self.insns)
        leaders = _leaders(self.insns)
        ends = dict(zip(leaders, leaders[1:] + [n]))
        for start in leaders:
            if start in self.kinds:           # unreachable code is not emitted
                self.blocks[start] = _Block(start, bb=fn.append_basic_block(f"L{start}"))
        b.branch(self._target_bb(0))
        for start in sorted(self.blocks):
            self._emit_block(self.blocks[start], ends[start])

        # fault exit: record the fault in env and return 0
        b.position_at_end(self.fault_bb)
        record: list[ir.Value] = self.fault_phis
        if not self.fault_phis[0].incomings:   # no fault site: unreachable, phis would be invalid
            self.fault_bb.instructions.clear()
            record = [ir.Constant(I64, 0)] * 4
        for value, word in zip(record, (ENV_FAULT, ENV_FAULT_INDEX, ENV_FAULT_ARG, ENV_FAULT_SIZE)):
            b.store(value, self._env_slot(word))
        b.ret(ir.Constant(I64, 0))
        self._emit_run_wrapper()
        return str(self.module), {blk.start: blk.slots for blk in self.blocks.values()}

    def _emit_run_wrapper(self) -> None:
        """`bpf_run`: r0 as a sign-extended s32, or RUN_FAULTED when the run faulted.

        Folding the fault check and the s32 conversion into native code saves
        the Python side two steps per call (the daemon's hot path).
        """
        run = ir.Function(self.module, self.fn.function_type, name="bpf_run")
        b = ir.IRBuilder(run.append_basic_block("entry"))
        r0 = b.call(self.fn, list(run.args))
        env = b.inttoptr(run.args[1], I64.as_pointer())
        fault = b.load(b.gep(env, [ir.Constant(I32, ENV_FAULT)]))
        value = b.sext(b.trunc(r0, I32), I64)
        faulted = b.icmp_unsigned("!=", fault, ir.Constant(I64, FAULT_NONE))
        b.ret(b.select(faulted, ir.Constant(I64, RUN_FAULTED), value))

    def _pack32(self, high: ir.Value, low: ir.Value) -> ir.Value:
        b = self.b
        mask = ir.Constant(I64, 0xFFFFFFFF)
        return b.or_(b.shl(b.and_(high, mask), ir.Constant(I64, 32)), b.and_(low, mask))

    # -- small utilities
    def _env_slot(self, word: int) -> ir.Value:
        return self.b.gep(self.env_ptr, [ir.Constant(I32, word)])

    def _fault(self, code: int, index: int | ir.Value, arg: int | ir.Value, size: int) -> None:
        """Record a fault and jump to the shared fault exit (ends the current block)."""
        b = self.b
        as_val = lambda v: v if isinstance(v, ir.Value) else ir.Constant(I64, v)  # noqa: E731
        for phi, value in zip(self.fault_phis, (code, index, arg, size)):
            phi.add_incoming(as_val(value), b.block)
        b.branch(self.fault_bb)

    def _reg(self, r: int) -> ir.Value:
        return self.b.load(self.regs[r])

    def _set(self, r: int, value: ir.Value) -> None:
        self.b.store(value, self.regs[r])

    def _target_bb(self, target: int) -> ir.Block:
        """The block of a jump target; outside the program: a fault naming the target."""
        blk = self.blocks.get(target)
        if blk is not None:
            return blk.bb
        bb = self._fell_off.get(target)
        if bb is None:
            bb = self._fell_off[target] = self._fresh(f"off{target}")
            here = self.b.block
            self.b.position_at_end(bb)
            self._fault(FAULT_FELL_OFF, target, 0, 0)
            self.b.position_at_end(here)
        return bb

    def _fresh(self, name: str) -> ir.Block:
        return self.fn.append_basic_block(name)

    # -- blocks
    def _emit_block(self, blk: _Block, end: int) -> None:
        b = self.b
        b.position_at_end(blk.bb)
        pc = blk.start
        slots = []
        while pc < end:
            slots.append(pc)
            insn = self.insns[pc]
            pc += 2 if insn.is_ld_imm64 and insn.imm64 is not None else 1
        blk.slots = slots
        if not self.counted:
            self._emit_body(slots, pc)
            return
        # budget: count the whole block on entry (the fault names the right slot)
        old = b.load(self.count)
        new = b.add(old, ir.Constant(I64, len(slots)))
        b.store(new, self.count)
        over = b.icmp_unsigned(">", new, ir.Constant(I64, self.budget))
        ok_bb, over_bb = self._fresh(f"L{blk.start}_body"), self._fresh(f"L{blk.start}_budget")
        b.cbranch(over, over_bb, ok_bb)
        b.position_at_end(over_bb)
        self._fault(FAULT_BUDGET, blk.start, b.sub(ir.Constant(I64, self.budget), old), 0)
        b.position_at_end(ok_bb)
        self._emit_body(slots, pc)

    def _emit_body(self, slots: list[int], end: int) -> None:
        for slot in slots:
            if self._emit_insn(slot):   # True: the instruction ended the block
                return
        # fell through into the next block (or off the end)
        self.b.branch(self._target_bb(end))

    def _emit_insn(self, pc: int) -> bool:
        insn = self.insns[pc]
        cls = insn.cls
        if cls in (isa.BPF_ALU, isa.BPF_ALU64):
            self._alu(insn, pc)
            return False
        if cls in (isa.BPF_JMP, isa.BPF_JMP32):
            return self._jmp(insn, pc)
        if cls == isa.BPF_LDX and insn.mode in (isa.BPF_MEM, isa.BPF_MEMSX) and insn.dst < isa.FP:
            size = insn.size_bytes
            ptr = self._address(pc, insn.src, insn.off, size, write=False)
            value = self.b.load(ptr, align=1)
            if size < 8:
                value = self.b.sext(value, I64) if insn.mode == isa.BPF_MEMSX else self.b.zext(value, I64)
            self._set(insn.dst, value)
            return False
        if cls == isa.BPF_ST and insn.mode == isa.BPF_MEM:
            size = insn.size_bytes
            ptr = self._address(pc, insn.dst, insn.off, size, write=True)
            self.b.store(ir.Constant(INT_OF_SIZE[size], insn.imm & ((1 << 8 * size) - 1)), ptr, align=1)
            return False
        if cls == isa.BPF_STX and insn.mode == isa.BPF_MEM:
            size = insn.size_bytes
            ptr = self._address(pc, insn.dst, insn.off, size, write=True)
            value = self._reg(insn.src)
            if size < 8:
                value = self.b.trunc(value, INT_OF_SIZE[size])
            self.b.store(value, ptr, align=1)
            return False
        if (cls == isa.BPF_STX and insn.mode == isa.BPF_ATOMIC and insn.size in (isa.BPF_W, isa.BPF_DW)
                and insn.imm in isa.ATOMIC_OPS):
            self._atomic(insn, pc)
            return False
        if insn.is_ld_imm64 and insn.imm64 is not None and insn.dst < isa.FP:
            if insn.src == 0:
                self._set(insn.dst, ir.Constant(I64, insn.imm64))
                return False
            if insn.src == isa.BPF_PSEUDO_MAP_FD and 0 <= insn.imm < self.nmaps:
                table = self.b.inttoptr(self.b.load(self._env_slot(ENV_MAPS)), I64.as_pointer())
                self._set(insn.dst, self.b.load(self.b.gep(table, [ir.Constant(I64, insn.imm)])))
                return False
        self._fault(FAULT_INVALID, pc, insn.opcode, 0)
        return True

    # -- memory
    def _address(self, pc: int, base: int, off: int, size: int, write: bool) -> ir.Value:
        """Pointer for an access of `size` at base+off; emits the run-time check unless
        the base is statically the context/stack with an in-bounds constant offset."""
        b = self.b
        kind = self.kinds[pc][base]
        base_value = self._reg(base)
        addr = b.add(base_value, ir.Constant(I64, off & MASK64))
        check = "full"
        if kind is not None:
            where, delta = kind
            lo = delta + off
            if where == "stack" and -STACK_SIZE <= lo and lo + size <= 0:
                check = "none"
            elif where == "ctx" and not write and 0 <= lo and lo + size <= abi.CTX_SIZE:
                check = "none"
        verified = self.checks.get(pc) if self.checks is not None else None
        if check == "full" and verified is not None:
            check = verified.value      # the verifier's typed promise for this access
        if check == "null":
            # a verified buffer access is in its window unless the pointer is NULL
            ok = b.icmp_unsigned("!=", base_value, ir.Constant(I64, 0))
        elif check == "full":
            self.needs_regions = True
            ok = b.call(self._checker(), [addr, ir.Constant(I64, size), ir.Constant(I1, int(write)),
                                          self.stack_lo, self.regions, self.nregions])
        if check != "none":
            ok_bb, bad_bb = self._fresh(f"a{pc}_ok"), self._fresh(f"a{pc}_bad")
            b.cbranch(ok, ok_bb, bad_bb)
            b.position_at_end(bad_bb)
            self._fault(FAULT_WRITE if write else FAULT_READ, pc, addr, size)
            b.position_at_end(ok_bb)
        return b.inttoptr(addr, INT_OF_SIZE[size].as_pointer())

    _check_fn: ir.Function | None = None

    def _checker(self) -> ir.Function:
        """`i1 check(addr, size, write, stack_lo, regions, n)`: the interpreter's region test."""
        if self._check_fn is not None:
            return self._check_fn
        fn = ir.Function(self.module, ir.FunctionType(I1, [I64, I64, I1, I64, I64, I64]), name="check")
        fn.linkage = "internal"
        addr, size, write, stack_lo, regions, n = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        end = b.add(addr, size)
        no_wrap = b.icmp_unsigned(">=", end, addr)
        in_stack = b.and_(b.and_(b.icmp_unsigned(">=", addr, stack_lo),
                                 b.icmp_unsigned("<=", end, b.add(stack_lo, ir.Constant(I64, STACK_SIZE)))),
                          no_wrap)
        yes = fn.append_basic_block("yes")
        no = fn.append_basic_block("no")
        loop = fn.append_basic_block("loop")
        body = fn.append_basic_block("body")
        hit = fn.append_basic_block("hit")
        b.cbranch(in_stack, yes, loop)
        entry_bb = b.block

        b.position_at_end(loop)
        i = b.phi(I64)
        i.add_incoming(ir.Constant(I64, 0), entry_bb)
        more = b.icmp_unsigned("<", i, n)
        b.cbranch(more, body, no)

        b.position_at_end(body)
        table = b.inttoptr(regions, I64.as_pointer())
        base = b.mul(i, ir.Constant(I64, 3))
        lo = b.load(b.gep(table, [base]))
        hi = b.load(b.gep(table, [b.add(base, ir.Constant(I64, 1))]))
        inside = b.and_(b.and_(b.icmp_unsigned("<=", lo, addr), b.icmp_unsigned("<=", end, hi)), no_wrap)
        nxt = b.add(i, ir.Constant(I64, 1))
        i.add_incoming(nxt, body)
        b.cbranch(inside, hit, loop)

        b.position_at_end(hit)
        writable = b.load(b.gep(table, [b.add(base, ir.Constant(I64, 2))]))
        allowed = b.or_(b.not_(write), b.icmp_unsigned("!=", writable, ir.Constant(I64, 0)))
        b.ret(allowed)

        b.position_at_end(yes)
        b.ret(ir.Constant(I1, 1))
        b.position_at_end(no)
        b.ret(ir.Constant(I1, 0))
        self._check_fn = fn
        return fn

    def _atomic(self, insn: Insn, pc: int) -> None:
        b = self.b
        size = insn.size_bytes
        ptr = self._address(pc, insn.dst, insn.off, size, write=True)
        operand = self._reg(insn.src)
        if size == 4:
            operand = b.trunc(operand, I32)
        widen = (lambda v: b.zext(v, I64)) if size == 4 else (lambda v: v)
        op = insn.imm
        if op == isa.BPF_CMPXCHG:
            expected = self._reg(0)
            if size == 4:
                expected = b.trunc(expected, I32)
            pair = b.cmpxchg(ptr, expected, operand, "seq_cst", "seq_cst")
            self._set(0, widen(b.extract_value(pair, 0)))
            return
        name = {isa.BPF_XCHG: "xchg", isa.BPF_ADD: "add", isa.BPF_OR: "or", isa.BPF_AND: "and",
                isa.BPF_XOR: "xor"}[op if op == isa.BPF_XCHG else op & ~isa.BPF_FETCH]
        old = b.atomic_rmw(name, ptr, operand, "seq_cst")
        if op & isa.BPF_FETCH:
            self._set(insn.src, widen(old))

    # -- ALU
    def _alu(self, insn: Insn, pc: int) -> None:
        b = self.b
        is64 = insn.cls == isa.BPF_ALU64
        op = insn.op
        if insn.dst >= isa.FP or op not in isa.ALU_OPS:
            self._fault(FAULT_INVALID, pc, insn.opcode, 0)
            b.position_at_end(self._fresh(f"dead{pc}"))
            return
        ty = I64 if is64 else I32
        bits = 64 if is64 else 32
        dst = self._reg(insn.dst)
        a = dst if is64 else b.trunc(dst, I32)
        if op == isa.BPF_END:
            width = insn.imm
            if not is64 and insn.source == isa.BPF_TO_LE:
                r64 = b.and_(dst, ir.Constant(I64, (1 << width) - 1)) if width < 64 else dst
            else:
                wt = INT_OF_SIZE[width // 8]
                swapped = b.call(self._bswap(wt), [b.trunc(dst, wt) if width < 64 else dst])
                r64 = b.zext(swapped, I64) if width < 64 else swapped
            self._set(insn.dst, r64)
            return
        if insn.source == isa.BPF_X:
            src = self._reg(insn.src)
            bv = src if is64 else b.trunc(src, I32)
        else:
            src = ir.Constant(I64, insn.imm & MASK64)
            bv = ir.Constant(ty, insn.imm & ((1 << bits) - 1))
        zero, one = ir.Constant(ty, 0), ir.Constant(ty, 1)
        if op == isa.BPF_ADD:
            r = b.add(a, bv)
        elif op == isa.BPF_SUB:
            r = b.sub(a, bv)
        elif op == isa.BPF_MUL:
            r = b.mul(a, bv)
        elif op in (isa.BPF_DIV, isa.BPF_MOD):
            is_zero = b.icmp_unsigned("==", bv, zero)
            if insn.off == 1:  # signed: guard /0 and INT_MIN / -1
                minus1 = ir.Constant(ty, (1 << bits) - 1)
                is_m1 = b.icmp_unsigned("==", bv, minus1)
                safe = b.select(b.or_(is_zero, is_m1), one, bv)
                if op == isa.BPF_DIV:
                    r = b.select(is_zero, zero, b.select(is_m1, b.sub(zero, a), b.sdiv(a, safe)))
                else:
                    r = b.select(is_zero, a, b.select(is_m1, zero, b.srem(a, safe)))
            else:
                safe = b.select(is_zero, one, bv)
                if op == isa.BPF_DIV:
                    r = b.select(is_zero, zero, b.udiv(a, safe))
                else:
                    r = b.select(is_zero, a, b.urem(a, safe))
        elif op == isa.BPF_OR:
            r = b.or_(a, bv)
        elif op == isa.BPF_AND:
            r = b.and_(a, bv)
        elif op == isa.BPF_XOR:
            r = b.xor(a, bv)
        elif op in (isa.BPF_LSH, isa.BPF_RSH, isa.BPF_ARSH):
            amount = b.and_(bv, ir.Constant(ty, bits - 1))
            r = {isa.BPF_LSH: b.shl, isa.BPF_RSH: b.lshr, isa.BPF_ARSH: b.ashr}[op](a, amount)
        elif op == isa.BPF_NEG:
            r = b.sub(zero, a)
        elif op == isa.BPF_MOV:
            if insn.off in (8, 16, 32) and insn.source == isa.BPF_X:
                narrow = b.trunc(src, INT_OF_SIZE[insn.off // 8])
                r = b.sext(narrow, ty)
            else:
                r = bv
        else:  # pragma: no cover - ALU_OPS is exhausted above
            raise AssertionError(op)
        self._set(insn.dst, r if is64 else b.zext(r, I64))

    _bswaps: dict[int, ir.Function]

    def _bswap(self, ty: ir.IntType) -> ir.Function:
        if not hasattr(self, "_bswaps"):
            self._bswaps = {}
        fn = self._bswaps.get(ty.width)
        if fn is None:
            fn = self._bswaps[ty.width] = self.module.declare_intrinsic("llvm.bswap", [ty])
        return fn

    # -- jumps, calls, exit
    _PREDICATES = {
        isa.BPF_JEQ: ("==", False), isa.BPF_JNE: ("!=", False),
        isa.BPF_JGT: (">", False), isa.BPF_JGE: (">=", False),
        isa.BPF_JLT: ("<", False), isa.BPF_JLE: ("<=", False),
        isa.BPF_JSGT: (">", True), isa.BPF_JSGE: (">=", True),
        isa.BPF_JSLT: ("<", True), isa.BPF_JSLE: ("<=", True),
    }

    def _jmp(self, insn: Insn, pc: int) -> bool:
        b = self.b
        op = insn.op
        is64 = insn.cls == isa.BPF_JMP
        if op == isa.BPF_EXIT and is64:
            b.ret(self._reg(0))
            return True
        if op == isa.BPF_CALL and is64:
            self._call(insn, pc)
            return False
        if op == isa.BPF_JA:
            b.branch(self._target_bb(insn.jump_target(pc)))
            return True
        if op not in isa.COND_JMP_OPS:
            self._fault(FAULT_INVALID, pc, insn.opcode, 0)
            return True
        ty = I64 if is64 else I32
        a = self._reg(insn.dst)
        if insn.source == isa.BPF_X:
            bv = self._reg(insn.src)
            if not is64:
                bv = b.trunc(bv, I32)
        else:
            bv = ir.Constant(ty, insn.imm & (MASK64 if is64 else 0xFFFFFFFF))
        if not is64:
            a = b.trunc(a, I32)
        if op == isa.BPF_JSET:
            cond = b.icmp_unsigned("!=", b.and_(a, bv), ir.Constant(ty, 0))
        else:
            pred, signed = self._PREDICATES[op]
            cond = b.icmp_signed(pred, a, bv) if signed else b.icmp_unsigned(pred, a, bv)
        b.cbranch(cond, self._target_bb(insn.jump_target(pc)), self._target_bb(pc + 1))
        return True

    def _call(self, insn: Insn, pc: int) -> None:
        b = self.b
        if insn.src != 0:
            self._fault(FAULT_INVALID, pc, insn.opcode, 0)
            b.position_at_end(self._fresh(f"dead{pc}"))
            return
        helper = insn.imm
        if helper == 15:
            r0 = self.uid_gid
        elif helper == 14:
            r0 = self.pid_tgid
        else:
            self.uses_callbacks = True
            cb_ty = ir.FunctionType(I64, [I64] * 8)
            cb = b.inttoptr(b.load(self._env_slot(ENV_HELPER)), cb_ty.as_pointer())
            args = [self.env_arg, ir.Constant(I64, helper & MASK64), ir.Constant(I64, pc)]
            args += [self._reg(r) for r in range(1, 6)]
            r0 = b.call(cb, args)
            failed = b.icmp_unsigned("!=", b.load(self._env_slot(ENV_FAULT)), ir.Constant(I64, 0))
            ok_bb, bad_bb = self._fresh(f"c{pc}_ok"), self._fresh(f"c{pc}_bad")
            b.cbranch(failed, bad_bb, ok_bb)
            b.position_at_end(bad_bb)
            self._fault(FAULT_HELPER, pc, 0, 0)
            b.position_at_end(ok_bb)
        self._set(0, r0)
        for r in range(1, 6):
            self._set(r, ir.Constant(I64, 0))
