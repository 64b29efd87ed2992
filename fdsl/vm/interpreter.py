"""Reference interpreter: the exact semantics of every instruction `fdsl.vm.isa` decodes.

This is the executable definition the JIT is tested against, so it favours
clarity over speed and checks everything at run time:

* every load/store is bounds-checked against the memory regions of the run
  (context regions, the 512-byte stack, map value storage); a bad access
  raises `VmFault(slot, reason)` instead of touching memory;
* ALU semantics are the kernel's after its verifier fix-ups: division by zero
  gives 0, modulo by zero leaves dst unchanged (32-bit: zero-extended),
  `INT_MIN / -1` gives `INT_MIN` and `INT_MIN % -1` gives 0, shift amounts are
  masked to the operand width, 32-bit operations zero-extend into 64 bits;
* an instruction budget turns a runaway program into a fault.

Memory is real (ctypes): pointers held in registers are real addresses, so the
helpers (`fdsl.vm.helpers`) and the context (`fdsl.vm.context`) see the same bytes as
the JIT'd code does.
"""
from __future__ import annotations

import ctypes
import threading
from typing import Callable, Sequence

from fdsl.vm import isa
from fdsl.errors import VmFault
from fdsl.vm.helpers import Caller, Helpers, LogSink
from fdsl.vm.isa import Insn
from fdsl.vm.maps import MapTable, Region
from fdsl.vm.semantics import (MASK32, MASK64, alu, atomic_result, byteswap_insn, condition,  # noqa: F401
                            s32, sext)

STACK_SIZE = 512
DEFAULT_BUDGET = 1_000_000

# One lock for all interpreted atomics: a read-modify-write must not interleave
# with another thread's on the same map value.
_ATOMIC_LOCK = threading.Lock()



# ------------------------------------------------------------------ fault reasons (shared with the JIT)

def reason_access(kind: str, size: int, addr: int) -> str:
    return f"invalid {kind} of {size} bytes at {addr:#x}"


REASON_BUDGET = "instruction budget exhausted"
REASON_FELL_OFF = "fell off the end of the program"


# ------------------------------------------------------------------ memory

class BadAccess(Exception):
    """A helper's pointer argument is outside every region (becomes a VmFault)."""

    def __init__(self, kind: str, size: int, address: int) -> None:
        super().__init__(reason_access(kind, size, address))


class Memory:
    """The accessible regions of one run, with checked loads and stores.

    Also the `fdsl.vm.helpers.Memory` the helpers read their pointer arguments
    through, so a helper cannot read outside what the program may read.
    """

    def __init__(self, regions: Sequence[Region]) -> None:
        self.regions = [r for r in regions if r.length > 0]

    def check(self, addr: int, size: int, write: bool) -> bool:
        for r in self.regions:
            if r.address <= addr and addr + size <= r.address + r.length:
                return r.writable or not write
        return False

    def load(self, pc: int, addr: int, size: int) -> int:
        if not self.check(addr, size, False):
            raise VmFault(pc, reason_access("read", size, addr))
        return int.from_bytes(ctypes.string_at(addr, size), "little")

    def store(self, pc: int, addr: int, size: int, value: int) -> None:
        if not self.check(addr, size, True):
            raise VmFault(pc, reason_access("write", size, addr))
        ctypes.memmove(addr, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"), size)

    def read(self, address: int, size: int) -> bytes:
        """helpers.Memory protocol."""
        if not self.check(address, size, False):
            raise BadAccess("read", size, address)
        return ctypes.string_at(address, size)


# ------------------------------------------------------------------ what both VMs share

HelperCall = Callable[[int, tuple[int, int, int, int, int], int], int]
"""A helper call as a VM sees it: (helper id, (r1..r5), pc) -> r0."""


class Runtime:
    """Maps, helpers and log sink of one loaded object, shared by its VMs.

    `map_handle(i)` is what `ld_imm64` of map i loads (the map's handle
    address, which the helpers resolve back); `regions` is the map value
    storage every run may access.
    """

    def __init__(self, maps: MapTable | None = None, sink: LogSink | None = None) -> None:
        self.maps = maps if maps is not None else MapTable([])
        self.sink = sink if sink is not None else LogSink()
        self.regions: list[Region] = self.maps.regions()
        self._handles = [m.handle for m in self.maps]

    def map_handle(self, index: int) -> int:
        if not 0 <= index < len(self._handles):
            raise VmFault(-1, f"no map with index {index}")
        return self._handles[index]

    def helper_call(self, memory: Memory, caller: Caller) -> HelperCall:
        """The helper dispatcher for one run: pointers are read through `memory`."""
        helpers = Helpers(self.maps, self.sink, memory, resolve_map=self.maps.by_handle)

        def call(helper_id: int, args: tuple[int, int, int, int, int], pc: int) -> int:
            try:
                return helpers.call(helper_id, *args, caller=caller)
            except BadAccess as err:
                raise VmFault(pc, f"helper {helper_id}: {err}") from None
            except ValueError as err:
                raise VmFault(pc, f"helper {helper_id}: {err}") from None

        return call


# ------------------------------------------------------------------ the interpreter

class Interpreter:
    """Executes one program over real memory with run-time checks."""

    def __init__(self, insns: Sequence[Insn], runtime: Runtime | None = None, *,
                 budget: int = DEFAULT_BUDGET) -> None:
        self.insns = list(insns)
        self.runtime = runtime if runtime is not None else Runtime()
        self.map_handle = self.runtime.map_handle
        self.budget = budget

    def run(self, ctx, caller: Caller) -> int:
        """Run on a `fdsl.vm.context.Context`; r0 as a signed 32-bit value."""
        return s32(self.execute(ctx.address, ctx.regions, caller))

    def execute(self, ctx_address: int, regions: Sequence[Region], caller: Caller) -> int:
        """Run from slot 0 with r1 = ctx_address; returns r0 (unsigned 64-bit)."""
        stack = ctypes.create_string_buffer(STACK_SIZE)
        stack_base = ctypes.addressof(stack)
        mem = Memory([Region(stack_base, STACK_SIZE, True, "stack"), *regions, *self.runtime.regions])
        helper = self.runtime.helper_call(mem, caller)
        reg = [0] * isa.REG_COUNT
        reg[1] = ctx_address & MASK64
        reg[10] = stack_base + STACK_SIZE
        insns = self.insns
        count = len(insns)
        pc = 0
        executed = 0
        while True:
            if not 0 <= pc < count:
                raise VmFault(pc, REASON_FELL_OFF)
            executed += 1
            if executed > self.budget:
                raise VmFault(pc, REASON_BUDGET)
            insn = insns[pc]
            cls = insn.opcode & 0x07
            if cls == isa.BPF_ALU64 or cls == isa.BPF_ALU:
                self._alu(insn, reg, pc)
                pc += 1
            elif cls == isa.BPF_JMP or cls == isa.BPF_JMP32:
                op = insn.opcode & 0xF0
                if op == isa.BPF_EXIT and cls == isa.BPF_JMP:
                    return reg[0]
                if op == isa.BPF_CALL and cls == isa.BPF_JMP:
                    if insn.src != 0:
                        raise VmFault(pc, "bpf-to-bpf and kfunc calls are not supported")
                    args = (reg[1], reg[2], reg[3], reg[4], reg[5])
                    reg[0] = helper(insn.imm, args, pc) & MASK64
                    reg[1] = reg[2] = reg[3] = reg[4] = reg[5] = 0  # caller-saved: clobbered
                    pc += 1
                elif op == isa.BPF_JA:
                    pc = insn.jump_target(pc)
                elif op in isa.COND_JMP_OPS:
                    b = reg[insn.src] if insn.source == isa.BPF_X else insn.imm & MASK64
                    taken = condition(op, cls == isa.BPF_JMP, reg[insn.dst], b)
                    pc = pc + 1 + insn.off if taken else pc + 1
                else:
                    raise VmFault(pc, f"invalid instruction {insn.opcode:#04x}")
            elif cls == isa.BPF_LDX:
                size = insn.size_bytes
                value = mem.load(pc, (reg[insn.src] + insn.off) & MASK64, size)
                if insn.mode == isa.BPF_MEMSX:
                    value = sext(value, 8 * size) & MASK64
                elif insn.mode != isa.BPF_MEM:
                    raise VmFault(pc, f"invalid instruction {insn.opcode:#04x}")
                self._set(reg, insn.dst, value, pc)
                pc += 1
            elif cls == isa.BPF_ST:
                if insn.mode != isa.BPF_MEM:
                    raise VmFault(pc, f"invalid instruction {insn.opcode:#04x}")
                mem.store(pc, (reg[insn.dst] + insn.off) & MASK64, insn.size_bytes, insn.imm)
                pc += 1
            elif cls == isa.BPF_STX:
                addr = (reg[insn.dst] + insn.off) & MASK64
                if insn.mode == isa.BPF_MEM:
                    mem.store(pc, addr, insn.size_bytes, reg[insn.src])
                elif insn.mode == isa.BPF_ATOMIC and insn.size in (isa.BPF_W, isa.BPF_DW):
                    self._atomic(insn, reg, mem, addr, pc)
                else:
                    raise VmFault(pc, f"invalid instruction {insn.opcode:#04x}")
                pc += 1
            elif insn.opcode == isa.LD_IMM64 and insn.imm64 is not None:
                if insn.src == 0:
                    value = insn.imm64
                elif insn.src == isa.BPF_PSEUDO_MAP_FD:
                    try:
                        value = self.map_handle(insn.imm)
                    except VmFault as fault:
                        raise VmFault(pc, fault.reason) from None
                else:
                    raise VmFault(pc, f"unsupported ld_imm64 src_reg {insn.src}")
                self._set(reg, insn.dst, value, pc)
                pc += 2
            else:
                raise VmFault(pc, f"invalid instruction {insn.opcode:#04x}")

    @staticmethod
    def _set(reg: list[int], dst: int, value: int, pc: int) -> None:
        if dst >= isa.FP:
            raise VmFault(pc, f"write to r{dst}")
        reg[dst] = value & MASK64

    def _alu(self, insn: Insn, reg: list[int], pc: int) -> None:
        is64 = insn.cls == isa.BPF_ALU64
        op = insn.op
        if insn.dst >= isa.FP or insn.src >= isa.REG_COUNT:
            raise VmFault(pc, f"invalid register in {insn.opcode:#04x}")
        if op == isa.BPF_END:
            value = byteswap_insn(insn, reg[insn.dst])
        elif op in isa.ALU_OPS:
            src = reg[insn.src] if insn.source == isa.BPF_X else insn.imm & MASK64
            value = alu(op, is64, reg[insn.dst], src, insn.off)
        else:
            raise VmFault(pc, f"invalid instruction {insn.opcode:#04x}")
        reg[insn.dst] = value

    @staticmethod
    def _atomic(insn: Insn, reg: list[int], mem: Memory, addr: int, pc: int) -> None:
        size = insn.size_bytes
        mask = MASK64 if size == 8 else MASK32
        op = insn.imm
        if op not in isa.ATOMIC_OPS:
            raise VmFault(pc, f"invalid atomic op {op:#x}")
        if not mem.check(addr, size, True):
            raise VmFault(pc, reason_access("write", size, addr))
        with _ATOMIC_LOCK:
            old = mem.load(pc, addr, size)
            operand = reg[insn.src] & mask
            if op == isa.BPF_CMPXCHG:
                if old == reg[0] & mask:
                    mem.store(pc, addr, size, operand)
                reg[0] = old
            elif op == isa.BPF_XCHG:
                mem.store(pc, addr, size, operand)
                reg[insn.src] = old
            else:
                mem.store(pc, addr, size, atomic_result(op, old, operand, mask))
                if op & isa.BPF_FETCH:
                    reg[insn.src] = old
