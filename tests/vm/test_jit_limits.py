"""Huge programs are served by the interpreter, never minutes of LLVM (issue 11, item 12).

JIT of a 100k-instruction program took 326 s and 640 MB; now any program above
`MAX_JIT_SLOTS` stays on the interpreter under every backend, with the reason recorded.
"""
from __future__ import annotations

import pytest

from fdsl.vm import filterset, isa, simulate
from fdsl.vm.filterset import FilterSet
from elf_builder import ElfBuilder

ADD64_IMM = isa.BPF_ALU64 | isa.BPF_ADD | isa.BPF_K
MOV64_IMM = isa.BPF_ALU64 | isa.BPF_MOV | isa.BPF_K
EXIT = isa.BPF_JMP | isa.BPF_EXIT


def straight_line(slots: int) -> bytes:
    """r0 = 0; r0 += 1 (slots - 2 times); exit: r0 ends as slots - 2."""
    insns = [isa.Insn(MOV64_IMM, 0, 0, 0, 0)] + [isa.Insn(ADD64_IMM, 0, 0, 0, 1)] * (slots - 2)
    elf = ElfBuilder()
    elf.program("fuse/big", isa.encode(insns + [isa.Insn(EXIT, 0, 0, 0, 0)]))
    elf.section("license", b"GPL\0", flags=2)
    return elf.build()


@pytest.mark.parametrize("backend", ["jit", "auto"])
def test_a_program_above_the_jit_limit_runs_on_the_interpreter(backend):
    slots = filterset.MAX_JIT_SLOTS + 1
    filters = FilterSet.load(straight_line(slots), backend=backend)
    assert filters.wait_jit(timeout=600)
    assert filters.backend_of("fuse/big") == "interp"
    assert "MAX_JIT_SLOTS" in filters.jit_skipped["fuse/big"]
    request = simulate.prepare("getattr", "pre", {})
    assert filters.run("fuse/big", request.context, request.caller) == slots - 2


def test_a_program_within_the_limit_is_jitted():
    filters = FilterSet.load(straight_line(64), backend="jit")
    assert filters.backend_of("fuse/big") == "jit" and not filters.jit_skipped
    request = simulate.prepare("getattr", "pre", {})
    assert filters.run("fuse/big", request.context, request.caller) == 62
