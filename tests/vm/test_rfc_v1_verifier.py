"""The verifier under RFC v1 (spec §8.2, §12): C built with clang -target bpf against
tests/c/fuse_bpf_rfc_v1.h, each -D variant breaking one packet rule, plus hand-built
instructions for what C cannot say."""
from __future__ import annotations

import pytest

from fdsl import abi
from fdsl.errors import VerifierError
from fdsl.vm import isa
from fdsl.vm.loader import load_object
from fdsl.vm.verifier import verify, verify_object
from fdsl.vm.verifier_state import AccessCheck

V1 = abi.RFC_V1


def _load(bpf_c_object, *defines):
    return load_object(bpf_c_object("rfc_v1_programs", *(f"-D{d}" for d in defines)))


def test_rfc_v1_c_programs_verify(bpf_c_object):
    obj = _load(bpf_c_object)
    verified = verify_object(obj, abi_record=V1)
    assert set(verified) == {"fuse/rfc_v1", "fuse/rfc_v1_var"}
    assert 209 in verified["fuse/rfc_v1"].helpers_used
    # packet and helper-buffer accesses stay run-time checked in the VMs
    assert AccessCheck.FULL in verified["fuse/rfc_v1"].checks.values()


def test_objects_without_metadata_take_the_requested_abi(bpf_c_object):
    obj = _load(bpf_c_object)
    assert obj.abi("rfc-v1") is V1
    verify_object(obj, abi_record=obj.abi("rfc-v1"))


def test_the_same_c_is_rejected_under_ack(bpf_c_object):
    """ACK has no helper 209 and no packet pointers: the object is not an ACK program."""
    with pytest.raises(VerifierError):
        verify_object(_load(bpf_c_object), abi_record=abi.ACK)


@pytest.mark.parametrize("define, section, message", [
    ("NO_BOUNDS_CHECK", "fuse/rfc_v1", "not proven below its end_offset"),
    ("NO_BOUNDS_CHECK", "fuse/rfc_v1_var", "not proven below its end_offset"),
    ("STORE_THROUGH_PACKET", "fuse/rfc_v1", "allows no stores"),
    ("NO_NULL_CHECK", "fuse/rfc_v1", "possibly NULL writable buffer"),
    ("BAD_RETURN", "fuse/rfc_v1", "return code 7 is not one of"),
])
def test_each_broken_rule_is_rejected(bpf_c_object, define, section, message):
    obj = _load(bpf_c_object, define)
    with pytest.raises(VerifierError, match=message):
        verify(obj.programs[section], obj.maps, section=section, abi_record=V1)


def _ldx(size, dst, src, off):
    return isa.Insn(isa.BPF_LDX | isa.BPF_MEM | size, dst, src, off, 0)


def _exit0():
    return [isa.Insn(isa.BPF_ALU64 | isa.BPF_MOV | isa.BPF_K, 0, 0, 0, 0),
            isa.Insn(isa.BPF_JMP | isa.BPF_EXIT, 0, 0, 0, 0)]


def test_context_field_sizes_are_strict():
    ok = [_ldx(isa.BPF_W, 2, 1, 8)] + _exit0()                      # opcode, 4 bytes
    verify(ok, abi_record=V1)
    wide = [_ldx(isa.BPF_DW, 2, 1, 8)] + _exit0()                   # opcode read as 8 bytes
    with pytest.raises(VerifierError, match="must be read with a 4-byte load"):
        verify(wide, abi_record=V1)
    verify(wide, abi_record=abi.ACK)                                # ACK: any width
    inside = [_ldx(isa.BPF_W, 2, 1, 32 + 4)] + _exit0()             # middle of in_args[0].value
    with pytest.raises(VerifierError, match="not the start of a field"):
        verify(inside, abi_record=V1)


def test_no_store_into_the_context():
    store = [isa.Insn(isa.BPF_ST | isa.BPF_MEM | isa.BPF_W, 1, 0, 12, 0)] + _exit0()
    with pytest.raises(VerifierError, match="allows no stores"):
        verify(store, abi_record=V1)


def test_packet_compared_against_another_slots_end_gains_nothing():
    prog = [_ldx(isa.BPF_DW, 2, 1, V1.in_arg_offset(0)),            # in_args[0].value
            _ldx(isa.BPF_DW, 3, 1, V1.in_arg_offset(1) + 8),        # in_args[1].end_offset
            isa.Insn(isa.BPF_ALU64 | isa.BPF_MOV | isa.BPF_X, 4, 2, 0, 0),
            isa.Insn(isa.BPF_ALU64 | isa.BPF_ADD | isa.BPF_K, 4, 0, 0, 1),
            isa.Insn(isa.BPF_JMP | isa.BPF_JGT | isa.BPF_X, 4, 3, 1, 0),
            _ldx(isa.BPF_B, 0, 2, 0)] + _exit0()
    with pytest.raises(VerifierError, match="end_offset of their own slot"):
        verify(prog, abi_record=V1)
    prog[1] = _ldx(isa.BPF_DW, 3, 1, V1.in_arg_offset(0) + 8)       # its own end: accepted
    verify(prog, abi_record=V1)


def _mov_k(dst, imm):
    return isa.Insn(isa.BPF_ALU64 | isa.BPF_MOV | isa.BPF_K, dst, 0, 0, imm)


def _mov_x(dst, src):
    return isa.Insn(isa.BPF_ALU64 | isa.BPF_MOV | isa.BPF_X, dst, src, 0, 0)


def _writeable_out_call(value_reg=6, size=8):
    """r9 = ctx; r6/r7 = out_args[0].value/end_offset; r0 = bpf_fuse_get_writeable_out(...)."""
    return [_mov_x(9, 1),
            _ldx(isa.BPF_DW, 6, 1, V1.out_arg_offset(0)),
            _ldx(isa.BPF_DW, 7, 1, V1.out_arg_offset(0) + 8),
            _ldx(isa.BPF_DW, 8, 1, V1.in_arg_offset(0)),
            _mov_x(1, 9), _mov_k(2, 0), _mov_x(3, value_reg), _mov_k(4, size), _mov_k(5, 1),
            isa.Insn(isa.BPF_JMP | isa.BPF_CALL, 0, 0, 0, 209)]


def test_writeable_pointer_after_its_null_check_may_be_stored_through():
    prog = _writeable_out_call() + [
        isa.Insn(isa.BPF_JMP | isa.BPF_JEQ | isa.BPF_K, 0, 0, 1, 0),
        isa.Insn(isa.BPF_ST | isa.BPF_MEM | isa.BPF_DW, 0, 0, 0, 0x1234)] + _exit0()
    verify(prog, abi_record=V1)
    beyond = list(prog)
    beyond[-3] = isa.Insn(isa.BPF_ST | isa.BPF_MEM | isa.BPF_DW, 0, 0, 8, 0x1234)   # past 8 bytes
    with pytest.raises(VerifierError, match="outside the 8 bytes"):
        verify(beyond, abi_record=V1)


def test_the_helper_invalidates_the_slots_packet_pointers():
    prog = _writeable_out_call() + [_ldx(isa.BPF_B, 2, 6, 0)] + _exit0()
    with pytest.raises(VerifierError, match="uninitialised register r6"):
        verify(prog, abi_record=V1)
    other_slot = _writeable_out_call() + [_mov_x(2, 8)] + _exit0()      # in_args[0] stays valid
    verify(other_slot, abi_record=V1)


def test_the_helper_needs_its_own_slots_value():
    with pytest.raises(VerifierError, match=r"must be out_args\[0\].value"):
        verify(_writeable_out_call(value_reg=8) + _exit0(), abi_record=V1)
    with pytest.raises(VerifierError, match="size 0 out of range"):
        verify(_writeable_out_call(size=0) + _exit0(), abi_record=V1)


def _printk_name(proven: bool):
    """trace_printk("%s", in_args[0].value), the name proven to hold a byte or not."""
    fmt = int.from_bytes(b"%s\0\0", "little")
    prog = [_ldx(isa.BPF_DW, 6, 1, V1.in_arg_offset(0)),
            _ldx(isa.BPF_DW, 7, 1, V1.in_arg_offset(0) + 8),
            isa.Insn(isa.BPF_ST | isa.BPF_MEM | isa.BPF_DW, 10, 0, -8, fmt)]
    if proven:
        prog += [_mov_x(2, 6), isa.Insn(isa.BPF_ALU64 | isa.BPF_ADD | isa.BPF_K, 2, 0, 0, 1),
                 isa.Insn(isa.BPF_JMP | isa.BPF_JGT | isa.BPF_X, 2, 7, 5, 0)]   # to the exit
    prog += [_mov_x(1, 10), isa.Insn(isa.BPF_ALU64 | isa.BPF_ADD | isa.BPF_K, 1, 0, 0, -8),
             _mov_k(2, 3), _mov_x(3, 6),
             isa.Insn(isa.BPF_JMP | isa.BPF_CALL, 0, 0, 0, 6)]
    return prog + _exit0()


def test_printk_takes_a_name_packet_proven_to_hold_a_byte():
    """What `log "%s", name` compiles to under RFC v1 (fdsl.compile.effects.emit_log)."""
    verify(_printk_name(proven=True), abi_record=V1)
    with pytest.raises(VerifierError, match="not proven below its end_offset"):
        verify(_printk_name(proven=False), abi_record=V1)
