"""Helper calls: each call checked against its signature in `abi.HELPERS`.

Argument kinds (see `fdsl.abi.ack.HelperSpec`): "map" an ld_imm64 map pointer,
"key"/"value" initialised memory of that map's key/value size, "scalar", and
trace_printk's "fmt"/"size"/"any" (a verification-time constant format on the
stack whose conversions say what r3-r5 must be: a number for every conversion
but `%s`, whose argument must be a request's argument buffer, so no address or
spilled pointer byte is ever printed).  The return kind gives r0.
"""
from __future__ import annotations

from typing import Any, Sequence

from fdsl import abi
from fdsl.errors import VerifierError
from fdsl.vm.isa import Insn
from fdsl.vm.verifier_cfg import use_def
from fdsl.vm.semantics import sext
from fdsl.vm.verifier_state import (BUF_RO, BUF_RW, PKT, MAP_PTR, MAP_VALUE, MAP_VALUE_OR_NULL,
                                    NOT_INIT, SCALAR, SPILL, STACK, UNINIT, UNKNOWN, Reg, State)

STACK_SIZE = abi.STACK_SIZE
BUF_OFF_REASON = ("buffer pointer r{r} is used with a register offset of {off}: dereference the pointer "
                  "as loaded from the context and put the constant in the instruction's offset "
                  "(VMs NULL-check the register itself)")


def printk_conversions(fmt: bytes) -> list[str] | str:
    """Argument kinds ('s' string pointer, 'v' value) of a trace_printk format.

    Returns an error string for a format the kernel would refuse to print.
    """
    text = fmt.split(b"\0", 1)[0]
    kinds: list[str] = []
    i = 0
    while i < len(text):
        if text[i] != ord("%"):
            i += 1
            continue
        i += 1
        if i < len(text) and text[i] == ord("%"):
            i += 1
            continue
        while i < len(text) and chr(text[i]) in "-+ #0123456789.lhz":
            i += 1
        if i >= len(text):
            return "incomplete format conversion"
        conv = chr(text[i])
        i += 1
        if conv == "s":
            kinds.append("s")
        elif conv == "p":
            ext = text[i:i + 2]
            if ext in (b"ks", b"us"):
                kinds.append("s")
                i += 2
            else:
                while i < len(text) and chr(text[i]).isalpha():
                    i += 1
                kinds.append("v")
        elif conv in "diuxXc":
            kinds.append("v")
        else:
            return f"unsupported format conversion %{conv}"
    return kinds


def zero_masks(insns: Sequence[Insn], succs: Sequence[tuple[int, ...]]) -> list[int]:
    """Per slot, the registers that are 0 there on every path: the VMs start with
    r2-r9 = 0 and zero r1-r5 after each helper call; any other write ends it."""
    n = len(insns)
    preds = [0] * n
    for i in range(n):
        for s in succs[i]:
            preds[s] += 1
    ALL = (1 << 11) - 1
    zero_in = [ALL] * n
    zero_in[0] = ALL & ~(1 << 1 | 1 << 10)          # r1 = ctx, r10 = frame pointer
    ready = [0]
    while ready:                                    # topological order (the CFG has no loops)
        i = ready.pop()
        if insns[i].is_call:
            out = (zero_in[i] | 0b111110) & ~1       # r1-r5 zeroed, r0 = the result
        else:
            out = zero_in[i] & ~use_def(insns[i])[1]
        for s in succs[i]:
            zero_in[s] &= out
            preds[s] -= 1
            if preds[s] == 0:
                ready.append(s)
    return zero_in


class HelperCalls:
    """The helper-call part of the verifier (mixed into `fdsl.vm.verifier._Verifier`)."""

    helpers: set[int]
    maps: list[Any]
    abi: Any

    def _writable_call(self, pc: int, spec: Any, st: State) -> None:
        raise NotImplementedError

    succs: list[tuple[int, ...]]
    insns: list[Insn]
    _zero_masks: list[int] | None = None

    # provided by the verifier class this is mixed into
    def fail(self, pc: int, reason: str) -> VerifierError:
        raise NotImplementedError

    def _zero_at(self, pc: int) -> int:
        """Bitmask of registers that hold 0 before `pc` on every path (see `zero_masks`)."""
        if self._zero_masks is None:
            self._zero_masks = zero_masks(self.insns, self.succs)
        return self._zero_masks[pc]

    def _read(self, pc: int, st: State, r: int) -> Reg:
        raise NotImplementedError

    def _check_range(self, pc: int, base: Reg, off: int, size: int) -> None:
        raise NotImplementedError

    def _map_attr(self, pc: int, index: int, name: str) -> int:
        raise NotImplementedError

    def _call(self, pc: int, insn: Insn, st: State) -> None:
        spec = self.abi.helpers[insn.imm]     # the structural pass refused any other id
        self.helpers.add(spec.id)
        if spec.returns == "writable_or_null":
            self._writable_call(pc, spec, st)
            for r in range(1, 6):
                st.regs[r] = UNINIT
            return
        map_index = -1
        if "fmt" in spec.args:
            self._printk(pc, st)
        for i, kind in enumerate(spec.args):
            r = i + 1
            if kind == "map":
                map_index = self._map_arg(pc, st, r)
            elif kind in ("key", "value"):
                size = self._map_attr(pc, map_index, f"{kind}_size")
                self._mem_arg(pc, st, r, size, f"map {kind}")
            elif kind == "scalar":
                reg = self._read(pc, st, r)
                if reg.kind != SCALAR:
                    what = spec.arg_names[i] if i < len(spec.arg_names) else f"argument {r}"
                    raise self.fail(pc, f"{spec.name} {what} (r{r}) must be a scalar, got {reg.describe()}")
        regs = st.regs
        for r in range(1, 6):
            regs[r] = UNINIT
        if spec.returns == "map_value_or_null":
            regs[0] = Reg(MAP_VALUE_OR_NULL, 0, None, map_index, pc + 1)
        else:
            regs[0] = UNKNOWN

    def _mem_arg(self, pc: int, st: State, r: int, size: int, what: str, *, stack_only: bool = False) -> None:
        """r points to `size` initialised readable bytes (stack or map value)."""
        reg = self._read(pc, st, r)
        allowed = (STACK,) if stack_only else (STACK, MAP_VALUE)
        if reg.kind not in allowed:
            where = "stack" if stack_only else "stack or map value"
            raise self.fail(pc, f"{what} (r{r}) must point to {where}, got {reg.describe()}")
        if size <= 0:
            raise self.fail(pc, f"{what} (r{r}) has invalid size {size}")
        self._check_range(pc, reg, reg.off, 1)
        self._check_range(pc, reg, reg.off + size - 1, 1)
        if reg.kind == STACK:
            for i in range(reg.off, reg.off + size):
                b = st.stack.get(i)
                if b is None:
                    raise self.fail(pc, f"{what} (r{r}) reads uninitialised stack byte fp{i:+d}")
                if b == SPILL:
                    raise self.fail(pc, f"{what} (r{r}) would leak a spilled pointer at fp{i & ~7:+d}")

    def _map_arg(self, pc: int, st: State, r: int) -> int:
        reg = self._read(pc, st, r)
        if reg.kind != MAP_PTR:
            raise self.fail(pc, f"r{r} must be a map pointer (ld_imm64 of a map), got {reg.describe()}")
        return reg.map

    def _printk(self, pc: int, st: State) -> None:
        size_reg = self._read(pc, st, 2)
        if size_reg.kind != SCALAR or size_reg.value is None:
            raise self.fail(pc, f"trace_printk fmt_size (r2) must be a known constant, got {size_reg.describe()}")
        size = size_reg.value
        if not 0 < size <= STACK_SIZE:
            raise self.fail(pc, f"trace_printk fmt_size {sext(size, 64)} out of range 1..{STACK_SIZE}")
        self._mem_arg(pc, st, 1, size, "trace_printk fmt", stack_only=True)
        start = st.regs[1].off
        raw = bytearray()
        for i in range(start, start + size):
            b = st.stack[i]
            if b < 0:
                # the helper would read r3-r5 as the format says: it must be known here
                raise self.fail(pc, f"trace_printk format byte fp{i:+d} is not a constant known "
                                "at verification time (build the format on the stack)")
            if b == 0:
                break
            raw.append(b)
        kinds = printk_conversions(bytes(raw))
        if isinstance(kinds, str):
            raise self.fail(pc, f"trace_printk format: {kinds}")
        if len(kinds) > 3:
            raise self.fail(pc, f"trace_printk format has {len(kinds)} conversions (at most 3)")
        for i, kind in enumerate(kinds):
            r = 3 + i
            reg = st.regs[r]
            if reg.kind == NOT_INIT:
                # The kernel never looks at r3-r5 (trace_printk declares only the
                # format and its size): clang leaves the register of a conversion
                # without argument unset and ACK loads that.  Both VMs start with
                # r2-r9 = 0 and zero r1-r5 after every call, so a register that no
                # path writes before this call prints 0.  One written on another
                # path (pruning may not tell) could print a pointer: refused; so is
                # %s, which reads memory.
                if kind == "s":
                    raise self.fail(pc, f"trace_printk %s argument {i + 1} (r{r}) is uninitialised: the "
                                    "kernel accepts it, but here %s must be given an argument buffer "
                                    "(the helper reads the string from memory)")
                if not self._zero_at(pc) & (1 << r):
                    raise self.fail(pc, f"trace_printk argument {i + 1} (r{r}) is uninitialised here "
                                    "but written on another path (it could print a pointer)")
                continue
            if kind == "s":
                # only a request's name/data buffer (RFC v1: a packet proven to hold at
                # least one byte): the stack may hold spilled pointers whose bytes %s would print
                if reg.kind not in (BUF_RO, BUF_RW, PKT):
                    raise self.fail(pc, f"trace_printk %s argument r{r} must be an argument buffer "
                                    f"(a name), got {reg.describe()}")
                if reg.off:
                    raise self.fail(pc, BUF_OFF_REASON.format(r=r, off=reg.off))
                self._check_range(pc, reg, reg.off, 1)
            elif reg.kind != SCALAR:
                # pointers never leave the program: %llx/%p of one would print an address
                raise self.fail(pc, f"trace_printk argument {i + 1} (r{r}) is a pointer "
                                f"({reg.describe()}); only numbers, and %s of a name, can be printed")
