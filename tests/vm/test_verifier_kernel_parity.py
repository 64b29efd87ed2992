"""Our verifier gives the ACK kernel's verdict on clang objects (issue 15).

What the kernel refuses we refuse, with its reason: one instruction reached
with the context pointer on one path and another pointer on another ("same
insn cannot be used with different pointers"), a context access through a
moved context pointer ("dereference of modified ctx ptr").  What it accepts
we accept unless the daemon's memory safety needs more: trace_printk with
uninitialised argument registers the format uses as values is loaded (the
kernel never looks at r3-r5; our VMs hold 0 there), unless another path
writes the register (it could print a pointer) or the conversion is a `%s`
(it reads memory): those are refused.
"""
from __future__ import annotations

import pytest

from fdsl.errors import VerifierError
from fdsl.vm import loader, simulate, verifier
from fdsl.vm.filterset import FilterSet
from fdsl.vm.helpers import Caller


def verdicts(obj: bytes) -> dict[str, str]:
    loaded = loader.load_object(obj)
    out = {}
    for section, program in loaded.programs.items():
        try:
            verifier.verify(program, loaded.maps, section=section)
            out[section] = "ok"
        except VerifierError as err:
            out[section] = str(err)
    return out


@pytest.mark.parametrize("cpu", ["v1", "v3"])
def test_ctx_and_buffer_merged_into_one_load_is_refused(bpf_c_object, cpu):
    [verdict] = verdicts(bpf_c_object("ctx_merge", f"-mcpu={cpu}")).values()
    assert "same insn cannot be used with different pointers (ctx, readonly buffer)" in verdict


def test_ctx_loads_kept_apart_are_accepted(bpf_c_object):
    assert verdicts(bpf_c_object("ctx_merge", "-mcpu=v3", "-DKEEP_APART")) == {"fuse/root": "ok"}


def test_moved_ctx_pointer_is_refused(bpf_c_object):
    [verdict] = verdicts(bpf_c_object("ctx_moved", "-mcpu=v3")).values()
    assert "dereference of modified ctx ptr R1 off=" in verdict


def test_printk_with_an_unused_uninitialised_register(bpf_c_object):
    found = verdicts(bpf_c_object("printk_unused", "-mcpu=v3"))
    assert found["fuse/values"] == "ok"
    assert "trace_printk %s argument 3 (r5) is uninitialised" in found["fuse/string"]
    assert "must be given an argument buffer" in found["fuse/string"]


@pytest.mark.parametrize("backend", ["interp", "jit"])
def test_printk_with_an_unused_register_runs(bpf_c_object, backend):
    fs = FilterSet.load(bpf_c_object("printk_unused", "-mcpu=v3"), backend=backend, partial=True)
    prepared = simulate.prepare("getattr", "pre", {"nodeid": 42})
    assert fs.run("fuse/values", prepared.context, Caller()) == 2
    [line] = fs.log_sink.recent()
    assert line.startswith("op 65539 node 42 third ")
