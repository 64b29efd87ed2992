"""Verifier work is bounded like the kernel's complexity limits, and each rejection names
the limit it hit (issue 11, item 7).  Bounds are asserted by outcome (verdict, counters),
never by time: a 49-instruction program once took 208 s."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fdsl.vm import isa, verifier
from fdsl.vm.verifier import verify
from fdsl.errors import VerifierError

from test_verifier import B, DW, MAPS, RET0, W, alu, call, ja, jmp, ldx, mov, movr, st_imm
from vm_util import explosion


def test_state_explosion_is_rejected_naming_the_work_limit():
    with pytest.raises(VerifierError) as err:
        verify(explosion(40), MAPS, section="x")
    assert "program too complex" in err.value.reason and "MAX_WORK" in err.value.reason


def test_a_small_explosion_still_verifies_within_the_budget():
    result = verify(explosion(8), MAPS, section="x")
    assert result.rollbacks > 0 and result.work <= verifier.MAX_WORK


def test_states_per_instruction_cap_never_changes_the_verdict(monkeypatch):
    full = verify(explosion(8), MAPS, section="x")
    monkeypatch.setattr(verifier, "MAX_STATES_PER_INSN", 2)
    capped = verify(explosion(8), MAPS, section="x")
    assert capped.states < full.states          # accepted all the same, storing fewer states


def test_total_states_limit_is_named(monkeypatch):
    monkeypatch.setattr(verifier, "MAX_TOTAL_STATES", 50)
    with pytest.raises(VerifierError, match="MAX_TOTAL_STATES"):
        verify(explosion(8), MAPS, section="x")


def test_pending_branches_limit_is_named():
    forks = verifier.MAX_PENDING_BRANCHES + 10
    insns = [ldx(W, 6, 1, 8)]
    for i in range(forks):   # every fork leaves its taken side pending until the end
        insns.append(jmp(isa.BPF_JSET, 6, 1 << (i % 32), forks - i))
    insns += RET0 + RET0[-1:]
    with pytest.raises(VerifierError, match="MAX_PENDING_BRANCHES"):
        verify(insns[:-1], MAPS, section="x")


def test_processed_insns_limit_is_named(monkeypatch):
    monkeypatch.setattr(verifier, "MAX_PROCESSED_INSNS", 100)
    with pytest.raises(VerifierError, match="MAX_PROCESSED_INSNS"):
        verify(explosion(8), MAPS, section="x")


_diamond = st.tuples(st.sampled_from([isa.BPF_JSET, isa.BPF_JEQ, isa.BPF_JGT]), st.integers(0, 31),
                     st.integers(-72, -1), st.integers(0, 255), st.integers(0, 255))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_diamond, min_size=1, max_size=40), st.booleans())
def test_fuzzed_diamond_chains_stay_within_the_work_budget(diamonds, printk):
    """Diamond chains writing stack bytes (the shape that explodes): the verdict always comes
    within MAX_WORK, and a complexity rejection names its limit."""
    insns = [ldx(W, 6, 1, 8)] + [st_imm(DW, 10, -8 - 8 * k, 0x2020202020202020) for k in range(9)]
    for op, bit, off, a, b in diamonds:
        insns += [jmp(op, 6, 1 << bit, 2), st_imm(B, 10, off, a), ja(1), st_imm(B, 10, off, b)]
    if printk:
        insns += [st_imm(B, 10, -1, 0), movr(1, 10), alu(isa.BPF_ADD, 1, -72), mov(2, 72), call(6)]
    insns += RET0
    try:
        result = verify(insns, MAPS, section="fuzz")
    except VerifierError as err:
        if "too complex" in err.reason:
            assert "MAX_" in err.reason
    else:
        assert result.work <= verifier.MAX_WORK
