"""Partial loads: one rejected program fails its own runs, not the whole object.

This is what lets the daemon answer EIO for exactly the operations whose
program the verifier refused while everything else keeps being served.
"""
from __future__ import annotations

import pytest

from fdsl import abi
from fdsl.vm import isa, simulate
from fdsl.vm.filterset import FilterSet, ProgramRejected
from fdsl.errors import VerifierError, VmFault
from elf_builder import ElfBuilder

MOV64_IMM = isa.BPF_ALU64 | isa.BPF_MOV | isa.BPF_K
EXIT = isa.BPF_JMP | isa.BPF_EXIT


def _object_with_good_and_bad_program() -> bytes:
    good = isa.encode([isa.Insn(MOV64_IMM, 0, 0, 0, abi.BACKING), isa.Insn(EXIT, 0, 0, 0, 0)])
    bad = isa.encode([isa.Insn(EXIT, 0, 0, 0, 0)])   # exit with r0 never set
    elf = ElfBuilder()
    elf.program("fuse/good", good)
    elf.program("fuse/bad", bad)
    elf.section("license", b"GPL\0", flags=2)
    return elf.build()


def test_strict_load_refuses_the_whole_object():
    with pytest.raises(VerifierError) as err:
        FilterSet.load(_object_with_good_and_bad_program(), backend="interp")
    assert err.value.section == "fuse/bad"


@pytest.mark.parametrize("backend", ["interp", "jit"])
def test_partial_load_fails_only_the_rejected_program(backend):
    filters = FilterSet.load(_object_with_good_and_bad_program(), backend=backend, partial=True)
    assert set(filters.rejected) == {"fuse/bad"}
    request = simulate.prepare("getattr", "pre", {})
    assert filters.run("fuse/good", request.context, request.caller) == abi.BACKING
    with pytest.raises(ProgramRejected) as fault:
        filters.run("fuse/bad", request.context, request.caller)
    assert isinstance(fault.value, VmFault)            # the daemon's EIO path
    assert "rejected by the verifier" in fault.value.reason
