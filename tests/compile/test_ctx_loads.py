"""No load or store is reached with a context pointer on one path and another pointer kind on another.

The kernel rewrites and checks context accesses per instruction and refuses
one instruction used with two pointer kinds ("same insn cannot be used with
different pointers").  LLVM's tail merging produced exactly that when rules
logged a context field and an argument field at the same offset (`nodeid` at
ctx+0, `in.fh` at buffer+0) in a per-opcode logging policy.  Every program
here is verified and every memory access's pointer kinds are checked with
the verifier's per-instruction record (`VerifiedProgram.mem_kinds`).
"""
from __future__ import annotations

import pytest

from fdsl import abi
from fdsl.compile.driver import compile_source
from fdsl.vm import loader, verifier


def _offset0_fields(op: str, phase: str) -> list[str]:
    return [loc.path for loc in abi.fields_of(op, phase)
            if not loc.is_string and loc.ctype != "buffer" and loc.offset == 0 and loc.size == 8]


def per_op_logging(every: int, same_format: bool) -> str:
    """One rule per opcode and phase logging `nodeid` (ctx+0) or an argument's
    first 8-byte field (buffer+0), alternating with period `every`."""
    lines = []
    for i, (op, spec) in enumerate((o, s) for o, s in abi.OPS.items() if s.number != 2016):
        for phase in ("pre", "post"):
            fields = _offset0_fields(op, phase)
            if not fields:
                continue
            arg = "nodeid" if (2 * i + (phase == "post")) % every == 0 else fields[0]
            fmt = "v %llu" if same_format else f"{op} {phase} %llu"
            lines.append(f'on {op} {phase} {{ log "{fmt}", {arg} }}')
    return "\n".join(lines) + "\n"


def mixed_accesses(text: str, record: abi.Abi = abi.ACK) -> dict[str, dict[int, frozenset[str]]]:
    obj = loader.load_object(compile_source(text, "gen.fdsl", abi_record=record).obj)
    found = {}
    for section, program in obj.programs.items():
        verified = verifier.verify(program, obj.maps, section=section, abi_record=obj.abi())
        assert verified.mem_kinds, "no memory access recorded: the check below would be vacuous"
        mixed = {pc: kinds for pc, kinds in verified.mem_kinds.items()
                 if verifier.PtrKind.CTX in kinds and len(kinds) > 1}
        if mixed:
            found[section] = mixed
    return found


ABIS = pytest.mark.parametrize("record", [abi.ACK, abi.RFC_V1], ids=lambda r: r.id)


@ABIS
@pytest.mark.parametrize("every", [2, 3, 5])
@pytest.mark.parametrize("same_format", [True, False])
def test_per_op_logging_keeps_ctx_loads_apart(every: int, same_format: bool, record) -> None:
    assert mixed_accesses(per_op_logging(every, same_format), record) == {}


@ABIS
def test_shared_rules_with_ctx_and_argument_fields(record) -> None:
    text = ('on all pre { log "op %u node %llu", op, nodeid }\n'
            'on read, write, flush, release pre { log "fh %llu", in.fh }\n'
            'on lookup post { log "new node %llu", out.nodeid }\n'
            'on getattr pre { if nodeid == 1 { log "root %llu", nodeid } }\n')
    assert mixed_accesses(text, record) == {}
