"""Static verifier for fuse-bpf programs, run before anything executes.

The kernel's verifier is the model (facts, not code): a structural pass over
the control-flow graph, then a path-sensitive abstract interpretation that
walks every path with a register/stack state and prunes paths that reach a
join point in a state already proven safe.  Because our programs run *inside
the daemon* (interpreter, or native code from the JIT), everything accepted
here must be memory-safe for our own process, so some rules are stricter than
ACK's (section 4.1 of the ABI spec):

* Buffers (`in_args[i].value` / `out_args[j].value`) are accessed at constant,
  non-negative offsets below `BUFFER_WINDOW` (4096): the context builder backs
  every argument with at least that many readable, zero-padded bytes.  The
  `value` pointers themselves may be NULL (WRITE's data, slots the opcode does
  not define): the verifier cannot know, so the VMs must null-check buffer
  pointers at run time (`VerifiedProgram.mem_kinds` says which accesses can
  hit a buffer).  To make "NULL-check the base register" sufficient, a buffer
  pointer may only be dereferenced (or given to trace_printk's `%s`) with a
  register offset of 0, i.e. as loaded from the context, with the constant in
  the instruction's offset field (what clang and our compiler emit).
  Arithmetic on it is otherwise allowed (it may come back to offset 0).
* Stores through `in_args` pointers are rejected (6.1+ kernels accept them).
  Stores into the context are all rejected, including the `out_args[j].value`
  slot the kernel accepts by accident.
* Pointers never leave the program: no pointer stores into buffers or map
  values, no pointer returned in r0, no pointer comparisons beyond NULL checks,
  no partial copies of pointers.
* Loops are rejected outright (every back-edge); the compiler never emits
  loops and clang -O2 output for our C tests has none.
* Unreachable code is rejected like the kernel does ("unreachable insn"), so
  every instruction a VM translates has been decoded and checked.
* Atomics (add/and/or/xor [fetch], xchg, cmpxchg; 4 or 8 bytes, naturally
  aligned) are accepted on map values, writable buffers and the stack, because
  clang emits them for `__sync_fetch_and_add` on map counters.

Rules the kernel has that are easy to miss, because LLVM breaks them in plain
C: an access reached with the context pointer on one path and another pointer
kind on another is rejected ("same insn cannot be used with different
pointers"), and so is a context access through a moved context pointer
("dereference of modified ctx ptr"), both with the kernel's words.

Limits (the kernel's complexity limits, and one for the work pruning itself
costs here; each rejection names the limit it hit): programs of at most
`MAX_PROGRAM_SLOTS` slots; at most `MAX_PROCESSED_INSNS` instructions processed
over all paths (the kernel's 1M "processed insns" budget); at most
`MAX_PENDING_BRANCHES` branch states waiting to be explored (the kernel's
8192-jump sequence limit); at most `MAX_TOTAL_STATES` states stored for pruning;
at most `MAX_WORK` units of work, one per instruction processed and one per
stored state a new state is compared with (pruning is what explodes: a
49-instruction program with 2^n distinct valid paths took minutes).  Like the
kernel (BPF_COMPLEXITY_LIMIT_STATES), a join point keeps at most
`MAX_STATES_PER_INSN` states; later ones are explored but not stored, so one
prune costs at most that many comparisons.

Abstract domain (per path): each register is NOT_INIT, a scalar (a known
64-bit constant or unknown), or a pointer kind with a constant offset (ctx,
read-only buffer, writable buffer, stack, map value, map value-or-NULL with an
id for the NULL check, map pointer).  The 512-byte stack is tracked per byte:
uninitialised, initialised-unknown, known value, or part of an 8-byte
pointer spill.  Known stack bytes let trace_printk formats be parsed, so its
arguments are checked (count, a number for each conversion but `%s`, whose
argument must be an argument buffer: no address is ever printed; a register
no path writes before the call may stand for a number, as the kernel, which
never looks at r3-r5, accepts: both VMs hold 0 there);
a format that is not a verification-time constant is rejected (the kernel
accepts it, but then the helper would dereference whatever r3-r5 hold).
`%s` pointers may still be NULL buffers or lack a NUL inside their region:
the helper reads them fault-tolerantly and bounded.

State pruning: at join points a new state is dropped when a stored state
*subsumes* it (dead registers, from a static liveness pass, are cleared
first).  When a join point collects more than `WIDEN_AFTER` states, the new
state is widened (joined with a stored one) and the more general state is
explored instead; if that widened exploration fails, everything derived from
it is discarded and the precise state is explored, so widening never causes a
false rejection, only extra work.  200-rule policies verify in a fraction of a
second.

Modules: `verifier_cfg` (structural pass), `verifier_state` (abstract domain,
lattice, the typed access facts), `verifier_calls` (helper calls against
`abi.HELPERS`), this one (the walk: ALU, branches, memory).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from fdsl import abi
from fdsl.errors import VerifierError
from fdsl.vm import isa
from fdsl.vm.context import BUFFER_WINDOW
from fdsl.vm.isa import Insn
from fdsl.vm.semantics import alu, bswap, condition, sext
from fdsl.vm.verifier_calls import BUF_OFF_REASON, HelperCalls
from fdsl.vm.verifier_cfg import MAX_PROGRAM_SLOTS, analyse
from fdsl.vm.verifier_packet import PacketRules
from fdsl.vm.verifier_state import (BUF_RO, BUF_RW, CTX, KIND_NAMES, MAP_PTR, MAP_VALUE, MAP_VALUE_OR_NULL,
                                    MISC, NOT_INIT, NULLABLE, OFFSET_KINDS, PKT, PKT_END, SCALAR, SPILL,
                                    STACK, UNINIT, UNKNOWN, WBUF,
                                    AccessCheck, Origin, PtrKind, Reg, State, access_check, const, join,
                                    mark_null, similarity, subsumes)

__all__ = ["verify", "verify_object", "VerifiedProgram", "AccessCheck", "PtrKind", "MAX_PROGRAM_SLOTS",
           "MAX_PROCESSED_INSNS", "MAX_PENDING_BRANCHES", "MAX_TOTAL_STATES", "MAX_STATES_PER_INSN",
           "MAX_WORK"]

MAX_PROCESSED_INSNS = 1_000_000
MAX_PENDING_BRANCHES = 8192
MAX_TOTAL_STATES = 32768
MAX_STATES_PER_INSN = 64
MAX_WORK = 500_000
WIDEN_AFTER = 8
STACK_SIZE = abi.STACK_SIZE
MAX_PTR_OFF = 1 << 29          # keep offsets small integers, like the kernel's BPF_MAX_VAR_OFF


@dataclass
class VerifiedProgram:
    """What a VM needs after verification.

    `mem_kinds[pc]`: the pointer kinds the base register of the load/store at
    `pc` had on any path; `checks[pc]` the run-time check a VM still owes that
    access (`AccessCheck`: none for ctx/stack/map values, a NULL check for
    argument buffers, a region check otherwise).  This is the JIT's trust
    contract, as typed facts.
    `dead`: instructions no feasible path reaches (constant-folded branches);
    a VM may translate them as traps.
    """

    section: str
    insns: list[Insn]
    maps: list[Any]
    mem_kinds: dict[int, frozenset[PtrKind]]
    checks: dict[int, AccessCheck]
    dead: frozenset[int]
    stack_depth: int
    processed: int
    states: int
    helpers_used: frozenset[int] = field(default_factory=frozenset)
    widenings: int = 0
    rollbacks: int = 0
    work: int = 0                   # units counted against MAX_WORK


# ------------------------------------------------------------------- API

def verify(program: Any, maps: Sequence[Any] = (), *, section: str = "prog",
           abi_record: abi.Abi | None = None) -> VerifiedProgram:
    """Verify one program under `abi_record` (ACK by default); raise `VerifierError(section, index, reason)`.

    `program` is a list of `isa.Insn`, raw bytes, or an object with an
    `insns` (or `code`/`data` bytes) attribute such as the loader's Program.
    `maps[i]` must have `key_size` and `value_size` (map "fd" i).
    """
    insns = _as_insns(program)
    return _Verifier(insns, list(maps), section, abi_record or abi.ACK).run()


def verify_object(obj: Any, *, sections: Iterable[str] | None = None,
                  abi_record: abi.Abi | None = None) -> dict[str, VerifiedProgram]:
    """Verify every program of a loaded `BpfObject`; raises on the first failure.

    The ABI is `abi_record`, else the one the object's metadata names (`BpfObject.abi`).
    """
    wanted = set(sections) if sections is not None else None
    if abi_record is None and hasattr(obj, "abi"):
        abi_record = obj.abi()
    out: dict[str, VerifiedProgram] = {}
    for name, prog in obj.programs.items():
        if wanted is None or name in wanted:
            out[name] = verify(prog, obj.maps, section=name, abi_record=abi_record)
    return out


def _as_insns(program: Any) -> list[Insn]:
    if isinstance(program, (bytes, bytearray, memoryview)):
        return isa.decode(bytes(program))
    if isinstance(program, list) and all(isinstance(i, Insn) for i in program):
        return program
    for attr in ("insns", "instructions"):
        value = getattr(program, attr, None)
        if value is not None:
            return _as_insns(list(value) if not isinstance(value, (bytes, bytearray)) else value)
    for attr in ("code", "data", "bytes"):
        value = getattr(program, attr, None)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return isa.decode(bytes(value))
    if isinstance(program, (tuple, list)):
        return list(program)
    raise TypeError(f"cannot verify {type(program).__name__}: expected insns or bytes")


# ------------------------------------------------------ scalar semantics

def _alu_const(op: int, a: int, b: int, bits: int) -> int | None:
    """BPF semantics of a binary ALU op on known operands (None = unknown).

    Shifts by the register width or more are left unknown: the result
    depends on masking that a program should not rely on.
    """
    if op in (isa.BPF_LSH, isa.BPF_RSH, isa.BPF_ARSH) and (b & ((1 << bits) - 1)) >= bits:
        return None
    return alu(op, bits == 64, a, b, 0)


def _cmp_const(op: int, a: int, b: int, bits: int) -> bool:
    return condition(op, bits == 64, a, b)


# -------------------------------------------------------------- verifier

class _Verifier(PacketRules, HelperCalls):
    def __init__(self, insns: list[Insn], maps: list[Any], section: str, abi_record: abi.Abi) -> None:
        self.abi = abi_record
        self.packet = abi_record.packet
        self.fresh_id = 0
        self.insns = insns
        self.maps = maps
        self.section = section
        self.n = len(insns)
        self.processed = 0
        self.visited = bytearray(self.n)
        self.mem_kinds: dict[int, set[PtrKind]] = {}
        self.helpers: set[int] = set()
        self.min_stack = 0
        self.explored: dict[int, list[tuple[State, tuple]]] = {}
        self.no_widen: set[int] = set()
        self.state_count = 0
        self.cur_tags: tuple = ()
        self.widenings = 0
        self.rollbacks = 0
        self.work = 0

    def fail(self, pc: int, reason: str) -> VerifierError:
        return VerifierError(self.section, pc, reason)

    def run(self) -> VerifiedProgram:
        structure = analyse(self.insns, self.fail, self.abi.helpers)
        self.second, self.succs = structure.second, structure.succs
        self.prune_points, self.live_in = structure.prune_points, structure.live_in
        self._explore()
        kinds = {pc: frozenset(ks) for pc, ks in self.mem_kinds.items()}
        dead = frozenset(i for i in range(self.n) if not self.visited[i] and i not in self.second)
        return VerifiedProgram(
            section=self.section, insns=self.insns, maps=self.maps,
            mem_kinds=kinds, checks={pc: access_check(ks) for pc, ks in kinds.items()},
            dead=dead,
            stack_depth=-self.min_stack, processed=self.processed, states=self.state_count,
            helpers_used=frozenset(self.helpers), widenings=self.widenings, rollbacks=self.rollbacks,
            work=self.work)

    # -------------------------------------------------------- exploration

    def _explore(self) -> None:
        regs = [UNINIT] * isa.REG_COUNT
        regs[1] = Reg(CTX)
        regs[isa.FP] = Reg(STACK)
        work: list[tuple[int, State]] = [(0, State(regs, {}, {}))]
        while work:
            pc, st = work.pop()
            self.cur_tags = st.tags
            try:
                self._run_path(pc, st, work)
            except VerifierError:
                if not self.cur_tags:
                    raise
                self._rollback(self.cur_tags[-1], work)

    def _too_complex(self, pc: int, what: str, limit: int, name: str) -> VerifierError:
        return self.fail(pc, f"program too complex: more than {limit} {what} ({name})")

    def _spend(self, pc: int, units: int) -> None:
        self.work += units
        if self.work > MAX_WORK:
            raise self._too_complex(pc, "units of verification work (instructions processed plus "
                                    "state comparisons)", MAX_WORK, "MAX_WORK")

    def _rollback(self, origin: Origin, work: list[tuple[int, State]]) -> None:
        """A widened state failed: forget everything derived from it, go precise."""
        self.rollbacks += 1
        self._spend(origin.pc, len(work) + self.state_count)
        work[:] = [(pc, s) for pc, s in work if origin not in s.tags]
        for pc, entries in self.explored.items():
            entries[:] = [(s, tags) for s, tags in entries if origin not in tags]
        self.no_widen.add(origin.pc)
        work.append((origin.pc, origin.precise))

    def _run_path(self, pc: int, st: State, work: list[tuple[int, State]]) -> None:
        insns = self.insns
        prune_points = self.prune_points
        while True:
            self.processed += 1
            if self.processed > MAX_PROCESSED_INSNS:
                raise self._too_complex(pc, "instructions processed", MAX_PROCESSED_INSNS,
                                        "MAX_PROCESSED_INSNS")
            self._spend(pc, 1)
            if pc in prune_points:
                pruned, st = self._prune(pc, st)
                if pruned:
                    return
            self.visited[pc] = 1
            insn = insns[pc]
            cls = insn.cls
            if cls == isa.BPF_ALU64 or cls == isa.BPF_ALU:
                self._alu(pc, insn, st)
                pc += 1
            elif cls == isa.BPF_LDX:
                self._load(pc, insn, st)
                pc += 1
            elif cls == isa.BPF_ST or cls == isa.BPF_STX:
                self._store(pc, insn, st)
                pc += 1
            elif insn.is_ld_imm64:
                self._ld_imm64(pc, insn, st)
                pc += 2
            elif insn.is_call:
                self._call(pc, insn, st)
                pc += 1
            elif insn.is_exit:
                r0 = st.regs[0]
                if r0.kind == NOT_INIT:
                    raise self.fail(pc, "exit with r0 uninitialised")
                if r0.kind != SCALAR:
                    raise self.fail(pc, f"exit returns a pointer in r0 ({r0.describe()})")
                if self.abi.return_style == "enumerated":
                    self._packet_exit(pc, r0)
                return
            elif insn.op == isa.BPF_JA:
                pc = insn.jump_target(pc)
            else:
                taken, fall = self._cond_jump(pc, insn, st)
                target = insn.jump_target(pc)
                if taken is not None and fall is not None:
                    if len(work) >= MAX_PENDING_BRANCHES:
                        raise self._too_complex(pc, "branches pending exploration",
                                                MAX_PENDING_BRANCHES, "MAX_PENDING_BRANCHES")
                    work.append((target, taken))
                    st, pc = fall, pc + 1
                elif taken is not None:
                    st, pc = taken, target
                else:
                    st, pc = fall, pc + 1  # type: ignore[assignment]

    def _prune(self, pc: int, st: State) -> tuple[bool, State]:
        """Drop `st` if a stored state at `pc` subsumes it; maybe widen it."""
        live = self.live_in[pc]
        regs = st.regs
        for r in range(10):
            if not live >> r & 1 and regs[r].kind != NOT_INIT:
                regs[r] = UNINIT
        entries = self.explored.setdefault(pc, [])
        self._spend(pc, len(entries))
        for old, _tags in entries:
            if subsumes(old, st):
                return True, st
        if len(entries) >= WIDEN_AFTER and pc not in self.no_widen:
            # join with the most similar recent state, so unrelated constants survive
            self._spend(pc, min(len(entries), 16) + 1)   # similarity to each, then a join
            partner = max(entries[-16:], key=lambda e: similarity(e[0], st))[0]
            wide = join(partner, st)
            self.widenings += 1
            if not subsumes(wide, st):  # pragma: no cover - join is an upper bound
                raise AssertionError("join is not an upper bound")
            origin = Origin(pc, st)
            wide.tags = st.tags + (origin,)
            self.cur_tags = wide.tags
            st = wide
        if len(entries) >= MAX_STATES_PER_INSN:
            return False, st          # explored, not stored (the kernel's per-insn cap)
        if self.state_count >= MAX_TOTAL_STATES:
            raise self._too_complex(pc, "verifier states stored", MAX_TOTAL_STATES, "MAX_TOTAL_STATES")
        entries.append((st.copy(), st.tags))
        self.state_count += 1
        return False, st

    # ---------------------------------------------------------- registers

    def _read(self, pc: int, st: State, r: int) -> Reg:
        reg = st.regs[r]
        if reg.kind == NOT_INIT:
            raise self.fail(pc, f"read of uninitialised register r{r}")
        return reg

    def _write(self, pc: int, st: State, r: int, reg: Reg) -> None:
        if r == isa.FP:
            raise self.fail(pc, "frame pointer r10 is read only")
        st.regs[r] = reg

    def _ld_imm64(self, pc: int, insn: Insn, st: State) -> None:
        if insn.src == isa.BPF_PSEUDO_MAP_FD:
            if not 0 <= insn.imm < len(self.maps):
                raise self.fail(pc, f"invalid map index {insn.imm} ({len(self.maps)} maps)")
            self._write(pc, st, insn.dst, Reg(MAP_PTR, map=insn.imm))
        else:
            self._write(pc, st, insn.dst, const(insn.imm64 or 0))

    def _alu(self, pc: int, insn: Insn, st: State) -> None:
        op = insn.op
        bits = 64 if insn.cls == isa.BPF_ALU64 else 32
        dst_r = insn.dst
        if insn.source == isa.BPF_X and op not in (isa.BPF_NEG, isa.BPF_END):
            src = self._read(pc, st, insn.src)
        else:
            src = const(insn.imm)  # sign-extended to 64 bits
            if op in (isa.BPF_DIV, isa.BPF_MOD) and insn.imm == 0:
                raise self.fail(pc, "division by zero")
            if op in (isa.BPF_LSH, isa.BPF_RSH, isa.BPF_ARSH) and not 0 <= insn.imm < bits:
                raise self.fail(pc, f"invalid shift by {insn.imm}")
        if op == isa.BPF_MOV:
            if src.kind != SCALAR:
                if bits == 32:
                    raise self.fail(pc, f"32-bit copy of pointer r{insn.src} ({src.describe()})")
                self._write(pc, st, dst_r, src)
                return
            value = src.value
            self._write(pc, st, dst_r, UNKNOWN if value is None else const(value & ((1 << bits) - 1)))
            return
        dst = self._read(pc, st, dst_r)
        if op == isa.BPF_NEG or op == isa.BPF_END:
            if dst.kind != SCALAR:
                raise self.fail(pc, f"arithmetic on pointer r{dst_r} ({dst.describe()}) prohibited")
            if dst.value is None:
                result = UNKNOWN
            elif op == isa.BPF_NEG:
                result = const((-dst.value) & ((1 << bits) - 1))
            elif insn.source == isa.BPF_TO_LE:
                result = const(dst.value & ((1 << insn.imm) - 1))
            else:
                result = const(bswap(dst.value, insn.imm))
            self._write(pc, st, dst_r, result)
            return
        if dst.kind == SCALAR and src.kind == SCALAR:
            if dst.value is None or src.value is None:
                result = UNKNOWN
            else:
                value = _alu_const(op, dst.value, src.value, bits)
                result = UNKNOWN if value is None else const(value)
            self._write(pc, st, dst_r, result)
            return
        self._write(pc, st, dst_r, self._pointer_arith(pc, insn, dst, src, bits))

    def _pointer_arith(self, pc: int, insn: Insn, dst: Reg, src: Reg, bits: int) -> Reg:
        """Only pointer +/- constant on pointers with a tracked offset."""
        op = insn.op
        if dst.kind != SCALAR and src.kind != SCALAR:
            raise self.fail(pc, f"arithmetic between two pointers ({dst.describe()}, {src.describe()}) prohibited")
        ptr, scalar = (dst, src) if dst.kind != SCALAR else (src, dst)
        if bits == 32:
            raise self.fail(pc, f"32-bit arithmetic on pointer ({ptr.describe()}) prohibited")
        if not (op == isa.BPF_ADD or (op == isa.BPF_SUB and dst.kind != SCALAR)):
            raise self.fail(pc, f"pointer arithmetic other than +/- constant prohibited ({ptr.describe()})")
        if self.packet:
            moved = self._packet_arith(pc, insn, ptr, scalar)
            if moved is not None:
                return moved
        if ptr.kind not in OFFSET_KINDS:
            if ptr.kind in NULLABLE:
                raise self.fail(pc, f"arithmetic on {KIND_NAMES[ptr.kind]} prohibited; check it against 0 first")
            raise self.fail(pc, f"arithmetic on {KIND_NAMES[ptr.kind]} prohibited")
        if scalar.value is None:
            what = {BUF_RO: "invalid variable buffer offset", BUF_RW: "invalid variable buffer offset",
                    STACK: "variable stack offset", MAP_VALUE: "variable map value offset",
                    CTX: "variable ctx offset", WBUF: "variable writable buffer offset"}[ptr.kind]
            raise self.fail(pc, f"{what} (pointer plus unknown scalar)")
        delta = sext(scalar.value, 64)
        off = ptr.off + delta if op == isa.BPF_ADD else ptr.off - delta
        if not -MAX_PTR_OFF <= off <= MAX_PTR_OFF:
            raise self.fail(pc, f"pointer offset {off} out of range")
        return Reg(ptr.kind, off, None, ptr.map, ptr.id, ptr.range)

    # ------------------------------------------------------------ branches

    def _cond_jump(self, pc: int, insn: Insn, st: State) -> tuple[State | None, State | None]:
        """(state if taken, state if not taken); None for an infeasible side."""
        op = insn.op
        bits = 64 if insn.cls == isa.BPF_JMP else 32
        a = self._read(pc, st, insn.dst)
        if insn.source == isa.BPF_X:
            b = self._read(pc, st, insn.src)
        else:
            b = const(insn.imm)
        if a.kind == SCALAR and b.kind == SCALAR:
            if a.value is not None and b.value is not None:
                if _cmp_const(op, a.value, b.value, bits):
                    return st, None
                return None, st
            taken, fall = st, st.copy()
            if bits == 64 and op in (isa.BPF_JEQ, isa.BPF_JNE):
                eq_state = taken if op == isa.BPF_JEQ else fall
                if a.value is None and b.value is not None:
                    eq_state.regs[insn.dst] = b
                elif b.value is None and a.value is not None and insn.source == isa.BPF_X:
                    eq_state.regs[insn.src] = a
            return taken, fall
        # a pointer is involved: only NULL checks (and, for packets, checks against their end)
        if self.packet:
            split = self._packet_compare(pc, insn, st, a, b)
            if split is not None:
                return split
        ptr, other = (a, b) if a.kind != SCALAR else (b, a)
        if bits != 64 or op not in (isa.BPF_JEQ, isa.BPF_JNE) or other.kind != SCALAR or other.value != 0:
            raise self.fail(pc, f"pointer comparison prohibited ({a.describe()} vs {b.describe()}); "
                            "only == 0 / != 0 NULL checks are allowed")
        if ptr.kind in NULLABLE:
            null, nonnull = st, st.copy()
            mark_null(null, ptr.id, const(0))
            mark_null(nonnull, ptr.id, None)
            return (null, nonnull) if op == isa.BPF_JEQ else (nonnull, null)
        if ptr.kind in (BUF_RO, BUF_RW, PKT, PKT_END):
            return st, st.copy()   # argument pointers may be NULL (run-time checked)
        # ctx, stack, map value and map pointers are never NULL
        return (None, st) if op == isa.BPF_JEQ else (st, None)

    # -------------------------------------------------------------- memory

    def _note(self, pc: int, kind: PtrKind) -> None:
        """Record the base's kind; one instruction may not see ctx and another kind.

        The kernel rewrites and checks context accesses per instruction, so it
        refuses an access reached with the context on one path and any other
        pointer on another (`reg_type_mismatch` in do_check), with this message."""
        kinds = self.mem_kinds.get(pc)
        if kinds is None:
            self.mem_kinds[pc] = {kind}
            return
        if kind not in kinds and CTX in kinds | {kind}:
            seen = ", ".join(sorted(KIND_NAMES[k] for k in kinds | {kind}))
            raise self.fail(pc, f"same insn cannot be used with different pointers ({seen})")
        kinds.add(kind)

    def _base(self, pc: int, st: State, r: int, write: bool) -> Reg:
        base = self._read(pc, st, r)
        if base.kind == SCALAR:
            raise self.fail(pc, f"invalid memory access through scalar r{r} (not a pointer)")
        if base.kind in NULLABLE:
            what = "map value" if base.kind == MAP_VALUE_OR_NULL else "writable buffer"
            raise self.fail(pc, f"possibly NULL {what} pointer r{r} dereferenced; check it against 0 first")
        if base.kind == PKT_END:
            raise self.fail(pc, f"cannot dereference packet_end r{r} (it is one past the argument)")
        if write and self.packet:
            self._packet_store_base(pc, base)
        if base.kind == MAP_PTR:
            raise self.fail(pc, f"cannot access map pointer r{r} directly")
        if write and base.kind == CTX:
            raise self.fail(pc, "store into the context is not allowed")
        if base.kind == CTX and base.off:
            # the kernel's check_ptr_off_reg: context fields are reached from the
            # context pointer itself, with the offset in the instruction
            raise self.fail(pc, f"dereference of modified ctx ptr R{r} off={base.off} disallowed")
        if write and base.kind == BUF_RO:
            raise self.fail(pc, "store through read-only in_args buffer (write through out_args instead)")
        if base.off and base.kind in (BUF_RO, BUF_RW):
            raise self.fail(pc, BUF_OFF_REASON.format(r=r, off=base.off))
        self._note(pc, base.kind)
        return base

    def _check_range(self, pc: int, base: Reg, off: int, size: int) -> None:
        kind = base.kind
        if kind == STACK:
            if off < -STACK_SIZE or off + size > 0:
                raise self.fail(pc, f"stack access out of range (fp{off:+d}, {size} bytes; allowed fp-512..fp)")
            if off % size:
                raise self.fail(pc, f"misaligned stack access (fp{off:+d}, {size} bytes)")
            if off < self.min_stack:
                self.min_stack = off
        elif kind in (BUF_RO, BUF_RW):
            if off < 0:
                raise self.fail(pc, f"negative buffer offset {off}")
            if off + size > BUFFER_WINDOW:
                raise self.fail(pc, f"buffer access beyond the {BUFFER_WINDOW}-byte window (off {off}, {size} bytes)")
        elif kind == MAP_VALUE:
            value_size = self._map_attr(pc, base.map, "value_size")
            if off < 0 or off + size > value_size:
                raise self.fail(pc, f"map value access out of range (off {off}, {size} bytes, value_size {value_size})")
        elif kind == CTX:
            ctx_size = self.abi.ctx_size
            if off < 0 or off + size > ctx_size:
                raise self.fail(pc, f"context access out of range (off {off}, {size} bytes, ctx is {ctx_size})")
        elif kind in (PKT, WBUF):
            self._packet_range(pc, base, off, size)

    def _map_attr(self, pc: int, index: int, name: str) -> int:
        try:
            return int(getattr(self.maps[index], name))
        except (AttributeError, IndexError, TypeError, ValueError):
            raise self.fail(pc, f"map {index} has no usable {name}") from None

    def _load(self, pc: int, insn: Insn, st: State) -> None:
        base = self._base(pc, st, insn.src, write=False)
        size = insn.size_bytes
        off = base.off + insn.off
        self._check_range(pc, base, off, size)
        if base.kind == CTX:
            result = self._ctx_load(pc, off, size)
        elif base.kind == STACK:
            result = self._stack_read(pc, st, off, size)
        else:
            result = UNKNOWN
        self._write(pc, st, insn.dst, result)

    def _ctx_load(self, pc: int, off: int, size: int) -> Reg:
        if self.packet:
            return self._packet_ctx_load(pc, off, size)
        for slot, direction in _VALUE_SLOTS.items():
            if off < slot + 8 and slot < off + size:
                if off != slot or size != 8:
                    raise self.fail(pc, f"{direction}_args value pointer at ctx+{slot} must be read with one "
                                    f"8-byte load (got {size} bytes at ctx+{off})")
                return Reg(BUF_RO if direction == "in" else BUF_RW)
        return UNKNOWN

    def _stack_read(self, pc: int, st: State, off: int, size: int) -> Reg:
        stack = st.stack
        if size == 8:
            spilled = st.spills.get(off)
            if spilled is not None:
                return spilled
        value = 0
        known = True
        for i in range(size - 1, -1, -1):
            b = stack.get(off + i)
            if b is None:
                raise self.fail(pc, f"read of uninitialised stack byte fp{off + i:+d}")
            if b == SPILL:
                raise self.fail(pc, f"partial read of spilled pointer at fp{(off + i) & ~7:+d}")
            if b == MISC:
                known = False
            else:
                value = value << 8 | b
        return const(value) if known else UNKNOWN

    def _stack_write(self, st: State, off: int, size: int, value: Reg) -> None:
        stack, spills = st.stack, st.spills
        # a partial overwrite of a spilled pointer destroys the rest of it
        for slot in {(off) & ~7, (off + size - 1) & ~7}:
            if slot in spills and not (size == 8 and off == slot):
                del spills[slot]
                for i in range(slot, slot + 8):
                    stack.pop(i, None)
        if value.kind != SCALAR:
            spills[off] = value
            for i in range(off, off + 8):
                stack[i] = SPILL
            return
        spills.pop(off, None)
        if value.value is None:
            for i in range(off, off + size):
                stack[i] = MISC
        else:
            v = value.value
            for i in range(off, off + size):
                stack[i] = v & 0xFF
                v >>= 8

    def _store(self, pc: int, insn: Insn, st: State) -> None:
        if insn.mode == isa.BPF_ATOMIC:
            self._atomic(pc, insn, st)
            return
        base = self._base(pc, st, insn.dst, write=True)
        size = insn.size_bytes
        off = base.off + insn.off
        self._check_range(pc, base, off, size)
        if insn.cls == isa.BPF_ST:
            value = const(insn.imm)
        else:
            value = self._read(pc, st, insn.src)
        if value.kind != SCALAR:
            if base.kind != STACK:
                raise self.fail(pc, f"storing pointer r{insn.src} ({value.describe()}) into "
                                f"{KIND_NAMES[base.kind]} leaks it")
            if size != 8:
                raise self.fail(pc, f"partial spill of pointer r{insn.src} ({size} bytes)")
        if base.kind == STACK:
            self._stack_write(st, off, size, value)

    def _atomic(self, pc: int, insn: Insn, st: State) -> None:
        base = self._base(pc, st, insn.dst, write=True)
        size = insn.size_bytes
        off = base.off + insn.off
        self._check_range(pc, base, off, size)
        if off % size:
            raise self.fail(pc, f"misaligned atomic access (off {off}, {size} bytes)")
        src = self._read(pc, st, insn.src)
        if src.kind != SCALAR:
            raise self.fail(pc, f"atomic operand r{insn.src} is a pointer ({src.describe()})")
        if insn.imm == isa.BPF_CMPXCHG:
            r0 = self._read(pc, st, 0)
            if r0.kind != SCALAR:
                raise self.fail(pc, "cmpxchg comparand r0 is a pointer")
        if base.kind == STACK:
            if off in st.spills:
                raise self.fail(pc, f"atomic operation on spilled pointer at fp{off:+d}")
            self._stack_read(pc, st, off, size)  # must be initialised scalar bytes
            self._stack_write(st, off, size, UNKNOWN)
        if insn.imm == isa.BPF_CMPXCHG:
            self._write(pc, st, 0, UNKNOWN)
        elif insn.imm & isa.BPF_FETCH:
            self._write(pc, st, insn.src, UNKNOWN)


_VALUE_SLOTS: dict[int, str] = abi.value_pointer_offsets()
