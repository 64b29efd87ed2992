"""RFC v1 packet rules for the verifier (spec §8.2, §12), mixed into `fdsl.vm.verifier._Verifier`.

Under an ABI whose `buffer_access` is "packet" (RFC v1):

* context fields are read with their exact width only (the RFC kernel rewrites
  each access to its internal struct); `in_args[i].value` / `out_args[j].value`
  give a packet pointer of that slot, `end_offset` its end;
* a packet access at `off` of `size` bytes needs `off + size <= range`, and a
  packet pointer gains its range the kernel's PTR_TO_PACKET way: on the branch
  where `ptr + k` is proven `<= end_offset` of the same slot, every packet
  pointer of that slot with the same variable-offset id gets range `k`;
  pointer plus an unknown scalar is allowed and starts a new id with range 0
  (the scalar is not bounded here, so such accesses stay run-time checked);
* nothing is stored through the context or a packet: arguments are written only
  through the pointer helpers 208/209 return, after its NULL check; the helper
  invalidates the slot's packet pointers;
* a known non-negative exit code must be one of the enumerated return codes.

Accesses through packets and helper buffers are `AccessCheck.FULL` for the VMs
(the region check), so memory safety does not rest on the proof above.
"""
from __future__ import annotations

from typing import Any

from fdsl.errors import VerifierError
from fdsl.vm import isa
from fdsl.vm.isa import Insn
from fdsl.vm.semantics import sext
from fdsl.vm.verifier_state import (CTX, PKT, PKT_END, SCALAR, UNINIT, UNKNOWN, WBUF,
                                    WBUF_OR_NULL, Reg, State)

OUT_SLOT_BASE = 8          # slot key of out_args[j] is 8 + j, of in_args[i] is i
MAX_WRITABLE_SIZE = 4096   # largest buffer helpers 208/209 may be asked for here

# (op, packet pointer on the left?) -> does the taken branch prove ptr <= end?
_PROVES_ON_TAKEN = {
    (isa.BPF_JLT, True): True, (isa.BPF_JLE, True): True,
    (isa.BPF_JGT, True): False, (isa.BPF_JGE, True): False,
    (isa.BPF_JGT, False): True, (isa.BPF_JGE, False): True,
    (isa.BPF_JLT, False): False, (isa.BPF_JLE, False): False,
}


def slot_name(key: int) -> str:
    return f"out_args[{key - OUT_SLOT_BASE}]" if key >= OUT_SLOT_BASE else f"in_args[{key}]"


class PacketRules:
    """The RFC v1 half of the walk: ctx loads, packet bounds, helpers 208/209, return codes."""

    abi: Any
    fresh_id: int

    def fail(self, pc: int, reason: str) -> VerifierError:
        raise NotImplementedError

    def _read(self, pc: int, st: State, r: int) -> Reg:
        raise NotImplementedError

    # ---------------------------------------------------------------- ctx

    def _packet_ctx_load(self, pc: int, off: int, size: int) -> Reg:
        field = self.abi.ctx_field_at(off)
        if field is None:
            raise self.fail(pc, f"ctx+{off} is not the start of a field of {self.abi.name}'s context")
        if field.size != size:
            raise self.fail(pc, f"ctx field {field.name} must be read with a {field.size}-byte load "
                            f"(got {size} bytes): {self.abi.name} context sizes are strict")
        if "[" not in field.name:
            return UNKNOWN
        array, index = field.name.split("[", 1)
        key = int(index.split("]", 1)[0]) + (OUT_SLOT_BASE if array == "out_args" else 0)
        member = field.name.rsplit(".", 1)[1]
        if member == "value":
            return Reg(PKT, 0, None, key)
        if member == "end_offset":
            return Reg(PKT_END, 0, None, key)
        return UNKNOWN

    # --------------------------------------------------------- arithmetic

    def _packet_arith(self, pc: int, insn: Insn, ptr: Reg, scalar: Reg) -> Reg | None:
        """pointer +/- scalar on packet kinds (None: not a packet, use the ordinary rules)."""
        if ptr.kind == PKT_END:
            raise self.fail(pc, f"arithmetic on packet_end of {slot_name(ptr.map)} prohibited")
        if ptr.kind != PKT or scalar.value is not None:
            return None
        if insn.op != isa.BPF_ADD:
            raise self.fail(pc, "only packet pointer + variable offset is allowed")
        self.fresh_id += 1
        return Reg(PKT, 0, None, ptr.map, self.fresh_id, 0)

    # ----------------------------------------------------------- branches

    def _packet_compare(self, pc: int, insn: Insn, st: State, a: Reg, b: Reg
                        ) -> tuple[State | None, State | None] | None:
        """A packet pointer against its slot's end (None: not such a comparison)."""
        if insn.cls != isa.BPF_JMP or insn.source != isa.BPF_X:
            return None
        if a.kind == PKT and b.kind == PKT_END:
            ptr, left = a, True
        elif a.kind == PKT_END and b.kind == PKT:
            ptr, left = b, False
        else:
            return None
        end = b if left else a
        proves = _PROVES_ON_TAKEN.get((insn.op, left))
        if proves is None or end.map != ptr.map:
            raise self.fail(pc, f"packet pointers may only be compared (<, <=, >, >=) against the "
                            f"end_offset of their own slot ({a.describe()} vs {b.describe()})")
        taken, fall = st, st.copy()
        _grant_range(taken if proves else fall, ptr)
        return taken, fall

    # -------------------------------------------------------------- memory

    def _packet_range(self, pc: int, base: Reg, off: int, size: int) -> None:
        if base.kind == PKT:
            if off < 0 or off + size > base.range:
                raise self.fail(pc, f"packet access {slot_name(base.map)}+{off} ({size} bytes) is not "
                                f"proven below its end_offset (proven: {base.range} bytes); compare "
                                "the pointer against end_offset first")
        elif base.kind == WBUF:
            if off < 0 or off + size > base.range:
                raise self.fail(pc, f"writable buffer access off {off} ({size} bytes) outside the "
                                f"{base.range} bytes the helper returned")

    def _packet_store_base(self, pc: int, base: Reg) -> None:
        if base.kind in (CTX, PKT, PKT_END):
            raise self.fail(pc, f"store through {base.describe()}: {self.abi.name} allows no stores "
                            "to the context or arguments except through the pointer "
                            "bpf_fuse_get_writeable_in/out (helpers 208/209) return")

    # ------------------------------------------------------------ helpers

    def _writable_call(self, pc: int, spec: Any, st: State) -> None:
        """Helpers 208/209: (ctx, index, value, size, copy) -> writable buffer or NULL."""
        direction = "in" if self.abi.writable_helpers.get("in") == spec.id else "out"
        count = self.abi.max_in_args if direction == "in" else self.abi.max_out_args
        if self._read(pc, st, 1).kind != CTX or st.regs[1].off != 0:
            raise self.fail(pc, f"{spec.name} ctx (r1) must be the context pointer")
        index = self._known(pc, st, 2, f"{spec.name} index")
        if not 0 <= index < count:
            raise self.fail(pc, f"{spec.name} index {index} out of range 0..{count - 1}")
        key = index + (OUT_SLOT_BASE if direction == "out" else 0)
        value = self._read(pc, st, 3)
        if value.kind != PKT or value.map != key or value.off != 0 or value.id != 0:
            raise self.fail(pc, f"{spec.name} value (r3) must be {slot_name(key)}.value as loaded "
                            f"from the context, got {value.describe()}")
        size = self._known(pc, st, 4, f"{spec.name} size")
        if not 0 < size <= MAX_WRITABLE_SIZE:
            raise self.fail(pc, f"{spec.name} size {sext(size, 64)} out of range 1..{MAX_WRITABLE_SIZE}")
        if self._read(pc, st, 5).kind != SCALAR:
            raise self.fail(pc, f"{spec.name} copy (r5) must be a scalar")
        _invalidate(st, key)
        st.regs[0] = Reg(WBUF_OR_NULL, 0, None, key, pc + 1, size)

    def _known(self, pc: int, st: State, r: int, what: str) -> int:
        reg = self._read(pc, st, r)
        if reg.kind != SCALAR or reg.value is None:
            raise self.fail(pc, f"{what} (r{r}) must be a known constant, got {reg.describe()}")
        return reg.value

    # --------------------------------------------------------------- exit

    def _packet_exit(self, pc: int, r0: Reg) -> None:
        if r0.value is None:
            return
        code = sext(r0.value & 0xFFFFFFFF, 32)
        allowed = self.abi.valid_returns("pre")
        if code >= 0 and code not in allowed:
            names = ", ".join(f"{n} {v}" for n, v in self.abi.return_codes.items())
            raise self.fail(pc, f"return code {code} is not one of {self.abi.name}'s ({names}) "
                            "or a negative errno")


def _grant_range(st: State, ptr: Reg) -> None:
    """ptr (off k) is proven <= end: every packet of its slot and id may access k bytes."""
    def grant(reg: Reg) -> Reg:
        if reg.kind == PKT and reg.map == ptr.map and reg.id == ptr.id and reg.range < ptr.off:
            return Reg(PKT, reg.off, None, reg.map, reg.id, ptr.off)
        return reg
    st.regs = [grant(r) for r in st.regs]
    st.spills = {slot: grant(r) for slot, r in st.spills.items()}


def _invalidate(st: State, key: int) -> None:
    """Helpers 208/209 may move the argument: its packet pointers are gone (regs and spills)."""
    def stale(reg: Reg) -> bool:
        return reg.kind in (PKT, PKT_END) and reg.map == key
    st.regs = [UNINIT if stale(r) else r for r in st.regs]
    for slot, reg in list(st.spills.items()):
        if stale(reg):
            del st.spills[slot]
            for i in range(slot, slot + 8):
                st.stack.pop(i, None)
