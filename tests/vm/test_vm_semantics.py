"""Every instruction's semantics and every fault, asserted on both VMs.

The cases (tests/vm_util.py) carry concrete expected values, so the
interpreter and the JIT are each checked against the kernel's rules, not
only against each other.
"""
from __future__ import annotations

import pytest

from fdsl.errors import VmFault
from vm_util import CASE_CALLER, FAULT_CASES, SEMANTIC_CASES, execute

BACKENDS = ["interp", "jit"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,program,expected", SEMANTIC_CASES, ids=[c[0] for c in SEMANTIC_CASES])
def test_semantics(backend, name, program, expected):
    assert execute(backend, program, caller=CASE_CALLER) == expected


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,program,index,reason", FAULT_CASES, ids=[c[0] for c in FAULT_CASES])
def test_faults(backend, name, program, index, reason):
    with pytest.raises(VmFault) as info:
        execute(backend, program)
    assert info.value.index == index
    assert reason in info.value.reason
