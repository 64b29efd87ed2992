"""The verifier's abstract domain: pointer kinds, register values, path states, the lattice.

A path state holds, per register, NOT_INIT, a scalar (known 64-bit constant or
unknown) or a pointer kind with a constant offset; and the 512-byte stack per
byte (uninitialised, initialised-unknown, a known byte, or part of an 8-byte
pointer spill).  `subsumes` and `join` are what state pruning and widening in
`fdsl.vm.verifier` rely on.  `AccessCheck` is the verifier's typed promise to
the VMs about each memory access (the JIT's trust contract).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

U64 = (1 << 64) - 1


class PtrKind(enum.IntEnum):
    """What a register holds, as far as the verifier knows."""

    NOT_INIT = 0
    SCALAR = 1
    CTX = 2
    BUF_RO = 3
    BUF_RW = 4
    STACK = 5
    MAP_VALUE = 6
    MAP_VALUE_OR_NULL = 7
    MAP_PTR = 8
    PKT = 9                  # RFC v1 packet pointer (an argument's `value`), `range` bytes proven
    PKT_END = 10             # RFC v1 packet end (an argument's `end_offset`)
    WBUF = 11                # RFC v1 writable buffer from helper 208/209, `range` bytes long
    WBUF_OR_NULL = 12        # the same before its NULL check

    def __str__(self) -> str:
        return KIND_NAMES[self]


(NOT_INIT, SCALAR, CTX, BUF_RO, BUF_RW, STACK, MAP_VALUE, MAP_VALUE_OR_NULL, MAP_PTR,
 PKT, PKT_END, WBUF, WBUF_OR_NULL) = PtrKind

KIND_NAMES = {
    NOT_INIT: "uninitialised", SCALAR: "scalar", CTX: "ctx", BUF_RO: "readonly buffer",
    BUF_RW: "writable buffer", STACK: "stack", MAP_VALUE: "map_value",
    MAP_VALUE_OR_NULL: "map_value_or_null", MAP_PTR: "map_ptr",
    PKT: "packet", PKT_END: "packet_end", WBUF: "writable helper buffer",
    WBUF_OR_NULL: "writable_buffer_or_null",
}
MEMORY_KINDS = frozenset({STACK, BUF_RO, BUF_RW, MAP_VALUE, PKT, WBUF})
OFFSET_KINDS = frozenset({CTX, STACK, BUF_RO, BUF_RW, MAP_VALUE, PKT, WBUF})
NULLABLE = {MAP_VALUE_OR_NULL: MAP_VALUE, WBUF_OR_NULL: WBUF}   # kind before -> after a NULL check

# --- stack byte states (values 0..255 are known bytes) ---
MISC = -1     # initialised, value unknown
SPILL = -2    # part of an 8-byte spilled pointer (see State.spills)


class AccessCheck(enum.Enum):
    """The run-time check a VM still owes one load/store after verification."""

    NONE = "none"    # proven in bounds on every path (ctx, stack, map value)
    NULL = "null"    # an argument buffer: in its window unless the pointer is NULL
    FULL = "full"    # anything else: check against the memory regions


def access_check(kinds: frozenset[PtrKind]) -> AccessCheck:
    """The check an access needs, given every pointer kind its base had on some path."""
    if kinds and kinds <= {CTX, STACK, MAP_VALUE}:
        return AccessCheck.NONE
    if kinds and kinds <= {BUF_RO, BUF_RW}:
        return AccessCheck.NULL
    return AccessCheck.FULL


@dataclass(frozen=True, slots=True)
class Reg:
    """Abstract value of one register (or of one spilled stack slot)."""

    kind: PtrKind
    off: int = 0                 # constant offset of a pointer
    value: int | None = None     # known constant of a scalar (unsigned 64-bit)
    map: int = -1                # map index for map_ptr / map_value kinds; argument slot of packets
    id: int = 0                  # NULL-check id of *_or_null (call site + 1); variable-offset id of packets
    range: int = 0               # packet: bytes proven below end_offset; writable buffer: its size

    def describe(self) -> str:
        if self.kind == SCALAR:
            return "scalar" if self.value is None else f"scalar {self.value:#x}"
        if self.kind == PKT:
            return f"packet{self.off:+d} (range {self.range})"
        if self.kind in OFFSET_KINDS or self.kind in NULLABLE:
            return f"{KIND_NAMES[self.kind]}{self.off:+d}"
        return KIND_NAMES[self.kind]


UNINIT = Reg(NOT_INIT)
UNKNOWN = Reg(SCALAR)
_CONSTS: dict[int, Reg] = {}


def const(value: int) -> Reg:
    value &= U64
    reg = _CONSTS.get(value)
    if reg is None:
        reg = Reg(SCALAR, value=value)
        if len(_CONSTS) < 4096:
            _CONSTS[value] = reg
    return reg


class State:
    """One path's registers and stack; copied at every branch."""

    __slots__ = ("regs", "stack", "spills", "tags")

    def __init__(self, regs: list[Reg], stack: dict[int, int], spills: dict[int, Reg],
                 tags: tuple = ()) -> None:
        self.regs = regs
        self.stack = stack        # byte offset (-512..-1) -> MISC | SPILL | 0..255
        self.spills = spills      # 8-aligned slot offset -> pointer Reg
        self.tags = tags          # widening origins this state descends from

    def copy(self) -> "State":
        return State(list(self.regs), dict(self.stack), dict(self.spills), self.tags)



@dataclass(eq=False)
class Origin:
    """A widening: the precise state to fall back to if the wider one fails."""

    pc: int
    precise: State


def mark_null(st: State, null_id: int, as_null: Reg | None) -> None:
    """Resolve every copy of a map_value_or_null with this id (regs and spills)."""
    def resolve(reg: Reg) -> Reg:
        if as_null is not None:
            return as_null
        return Reg(NULLABLE[reg.kind], reg.off, None, reg.map, 0, reg.range)

    regs = st.regs
    for r in range(len(regs)):
        reg = regs[r]
        if reg.kind in NULLABLE and reg.id == null_id:
            regs[r] = resolve(reg)
    for slot, reg in list(st.spills.items()):
        if reg.kind in NULLABLE and reg.id == null_id:
            new = resolve(reg)
            if new.kind == SCALAR:
                del st.spills[slot]
                for i in range(8):
                    st.stack[slot + i] = 0
            else:
                st.spills[slot] = new


# -------------------------------------------------------- state lattice

def reg_subsumes(old: Reg, new: Reg) -> bool:
    if old is new or old.kind == NOT_INIT:
        return True
    if old.kind == SCALAR and old.value is None:
        return new.kind == SCALAR
    if old.kind == PKT and new.kind == PKT:     # more bytes proven is safe wherever fewer were
        return (old.off, old.map, old.id) == (new.off, new.map, new.id) and old.range <= new.range
    return old == new


def subsumes(old: State, new: State) -> bool:
    """True if every path safe from `old` is safe from `new` (old is more general)."""
    for o, nw in zip(old.regs, new.regs):
        if o is not nw and not reg_subsumes(o, nw):
            return False
    new_stack = new.stack
    for off, ob in old.stack.items():
        nb = new_stack.get(off)
        if nb is None:
            return False
        if ob == nb:
            continue
        if ob == MISC and nb != SPILL:
            continue
        return False
    for slot, reg in old.spills.items():
        if new.spills.get(slot) != reg:
            return False
    return True


def similarity(a: State, b: State) -> tuple[int, int]:
    """How many registers and stack bytes two states share (widening partner choice)."""
    regs = sum(1 for x, y in zip(a.regs, b.regs) if x == y)
    b_stack = b.stack
    return regs, sum(1 for off, v in a.stack.items() if b_stack.get(off) == v)


def join(a: State, b: State) -> State:
    """Least general state (in our lattice) that subsumes both."""
    regs = []
    for x, y in zip(a.regs, b.regs):
        if x == y:
            regs.append(x)
        elif x.kind == SCALAR and y.kind == SCALAR:
            regs.append(UNKNOWN)
        else:
            regs.append(UNINIT)
    spills = {slot: reg for slot, reg in a.spills.items() if b.spills.get(slot) == reg}
    stack: dict[int, int] = {}
    b_stack = b.stack
    for off, xb in a.stack.items():
        yb = b_stack.get(off)
        if yb is None:
            continue
        if xb == yb:
            if xb != SPILL or (off & ~7) in spills:
                stack[off] = xb
        elif xb != SPILL and yb != SPILL:
            stack[off] = MISC
    return State(regs, stack, spills, ())

