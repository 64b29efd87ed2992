"""Policies whose BPF would be too large get a clean outcome, never an LLVM abort.

LLVM's BPF backend kills the whole process ("Branch target out of insn
range") when a branch needs more than a 16-bit offset, so the compiler
(1) matches very costly name-suffix rules in the daemon instead, and
(2) measures big programs before emitting the object.
"""
from __future__ import annotations

import pytest

from fdsl.compile import objfile
from fdsl.compile.driver import compile_source
from fdsl.errors import PolicyError


def test_costly_suffix_patterns_run_in_the_daemon():
    suffixes = ", ".join(f'"*{chr(97 + i) * 120}"' for i in range(6))
    result = compile_source(f"hide name like {{{suffixes}}}\n", "big.fdsl")
    lookup = result.plan.scopes[0].entry("lookup", "pre")
    assert lookup.rules and not lookup.bpf_rules, "the costly rule stayed in BPF"
    assert "would unroll" in lookup.user_rules[0].reason
    assert objfile.instruction_count(result.obj) < 200


def test_short_suffixes_stay_in_bpf():
    result = compile_source('hide name like "*.key"\n', "small.fdsl")
    lookup = result.plan.scopes[0].entry("lookup", "pre")
    assert lookup.bpf_rules and not lookup.user_rules


def _straight_line_ir(stores: int) -> str:
    """One huge basic block of volatile byte stores through the argument pointer."""
    body = "\n".join(f"  %p{i} = getelementptr i8, ptr %out, i64 {i % 4096}\n"
                     f"  store volatile i8 {i % 127}, ptr %p{i}" for i in range(stores))
    return (f'target triple = "bpfel"\n'
            f'define i64 @big(ptr %out) section "fuse/big" {{\n{body}\n  ret i64 2\n}}\n')


@pytest.mark.slow
def test_a_program_beyond_the_branch_range_is_refused_cleanly():
    with pytest.raises(objfile.ProgramTooLarge, match="fuse/big would be"):
        objfile.build(_straight_line_ir(objfile.MAX_PROGRAM_SLOTS + 100), want_asm=False)


def test_too_large_is_a_policy_error_through_the_compiler(monkeypatch):
    monkeypatch.setattr(objfile, "MAX_PROGRAM_SLOTS", 50)
    with pytest.raises(PolicyError, match="BPF branches span at most 50"):
        compile_source('hide name like {"*.key", "*.pem", "*.crt"}\n', "p.fdsl", want_asm=True)


def test_slot_count_from_assembly_equals_the_object():
    result = compile_source('hide name like {"*.key", "id_?sa"}\non all pre { log "x %d", uid }\n',
                            "p.fdsl")
    real = {name: len(code) // 8 for name, code in objfile.program_sections(result.obj).items()}
    assert objfile.program_slots_in_asm(result.asm) == real
