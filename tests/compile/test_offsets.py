"""Table-driven: every field of every opcode/phase is read and written where abi says.

For each opcode in abi.OPS and phase, one policy reads every numeric field
(and compares every name); for each writable field one policy writes it.
The disassembly's load/store offsets must equal the ABI tables.
"""
from __future__ import annotations

import pytest

from fdsl import abi

from backend_util import compile_text, memory_accesses, objdump

CASES = [(op, phase) for op in abi.OPS for phase in ("pre", "post")]


def _fields(op: str, phase: str):
    return abi.fields_of(op, phase)


def _ref(path: str) -> str:
    return path


@pytest.mark.parametrize("op,phase", CASES, ids=[f"{o}-{p}" for o, p in CASES])
def test_reads_use_abi_offsets(op, phase, tmp_path):
    fields = [f for f in _fields(op, phase) if f.ctype not in ("buffer",)]
    lines = []
    for f in fields:
        if f.is_string:
            lines.append(f'if {_ref(f.path)} == "ab" {{ deny EIO }}')
        else:
            lines.append(f"if {_ref(f.path)} == 7 {{ deny EIO }}")
    lines.append("if nodeid == 9 { deny EIO }")
    if phase == "post":
        lines.append("if error == 5 { deny EIO }")
    text = f"on {op} {phase} {{\n" + "\n".join(lines) + "\n}\n"
    result = compile_text(text)
    ctx_loads, ctx_stores, reads, _ = memory_accesses(objdump(result.obj, tmp_path))
    assert not ctx_stores, "program stores into the context"
    assert (abi.CTX_OPCODE, 32) in ctx_loads
    assert (abi.CTX_NODEID, 64) in ctx_loads
    assert ((abi.CTX_ERROR_IN, 32) in ctx_loads) == (phase == "post")
    n_slots = len(abi.OPS[op].inputs) + (len(abi.OPS[op].outputs) if phase == "post" else 0)
    allowed_ctx = {abi.CTX_OPCODE, abi.CTX_NODEID, abi.CTX_ERROR_IN}
    for slot in range(n_slots):
        allowed_ctx |= {abi.in_arg_offset(slot) + abi.ARG_SIZE, abi.in_arg_offset(slot) + abi.ARG_VALUE}
    for off, bits in ctx_loads:
        assert off in allowed_ctx, f"reads ctx+{off} which {op} {phase} does not define"
        if off in (abi.CTX_NODEID,) or (off - abi.ARG_VALUE - abi.in_arg_offset(0)) % abi.ARG_SLOT_SIZE == 0:
            assert bits == 64
        else:
            assert bits == 32
    for f in fields:
        value_at = abi.in_arg_offset(f.read_slot) + abi.ARG_VALUE
        if f.is_string:
            assert (abi.in_arg_offset(f.read_slot) + abi.ARG_SIZE, 32) in ctx_loads, f.path
            # "ab": one 2-byte load at offset 0, after the size test; nothing past the constant
            assert (value_at, 16, 0) in reads, f"{f.path}: {sorted(reads)}"
            assert not any(r[0] == value_at and r[2] + r[1] // 8 > 2 for r in reads), "read past the constant"
        else:
            assert (value_at, f.size * 8, f.offset) in reads, f"{op} {phase} {f.path}: {sorted(reads)}"
            assert f.offset + f.size <= f.arg.size


WRITES = [(op, phase, f.path) for op, phase in CASES for f in abi.fields_of(op, phase)
          if f.write_slot is not None]


@pytest.mark.parametrize("op,phase,path", WRITES, ids=[f"{o}-{p}-{f}" for o, p, f in WRITES])
def test_writes_go_through_out_args(op, phase, path, tmp_path):
    f = abi.resolve_field(op, phase, path)
    result = compile_text(f"on {op} {phase} {{ {path} = 0x5a }}\n")
    ctx_loads, ctx_stores, _, writes = memory_accesses(objdump(result.obj, tmp_path))
    assert not ctx_stores
    target = abi.out_arg_offset(f.write_slot) + abi.ARG_VALUE
    assert (target, 64) in ctx_loads
    assert writes == {(target, f.size * 8, f.offset)}, f"{op} {phase} {path}: {writes}"


BUFFERS = [(op, phase, f.path) for op, phase in CASES for f in abi.fields_of(op, phase)
           if f.ctype == "buffer"]


@pytest.mark.parametrize("op,phase,path", BUFFERS, ids=[f"{o}-{p}-{f}" for o, p, f in BUFFERS])
def test_buffers_cannot_be_read(op, phase, path):
    """Data buffers have no BPF-readable layout: the checker refuses them everywhere."""
    from fdsl.lang import parser
    from fdsl.lang.checker import check

    policy, sources, _ = parser.parse_source(f'on {op} {phase} {{ if {path} == "x" {{ deny EIO }} }}\n', "t")
    messages = [d.message for d in check(policy, sources)]
    assert f"'{path}' is a data buffer and cannot be read by a filter" in messages
