"""The RFC v1 record against the spec's numbers (§8.2, §12) and a clang-built C header.

The C oracle: tests/c/fuse_bpf_rfc_v1.h declares `struct __bpf_fuse_args` by
member types and order only; clang lays it out for BPF and every offset and
width must equal `fdsl.abi.RFC_V1`'s.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from fdsl import abi
from fdsl.abi import rfc_v1
from test_abi import _clang_record_layouts

V1 = abi.RFC_V1
HEADER = Path(__file__).parent.parent / "c" / "fuse_bpf_rfc_v1.h"


def test_context_layout_matches_spec_section_12_2():
    assert V1.ctx_size == 152
    assert [V1.in_arg_offset(i) for i in range(3)] == [32, 56, 80]
    assert [V1.out_arg_offset(j) for j in range(2)] == [104, 128]
    assert V1.slot_fields == {"value": (0, 8), "end_offset": (8, 8), "size": (16, 4),
                              "max_size": (20, 4)}
    with pytest.raises(IndexError):
        V1.in_arg_offset(3)
    with pytest.raises(IndexError):
        V1.out_arg_offset(2)
    header = {f.name: (f.offset, f.size) for f in V1.header_fields}
    assert header == {"nodeid": (0, 8), "opcode": (8, 4), "error_in": (12, 4),
                      "in_numargs": (16, 4), "out_numargs": (20, 4), "flags": (24, 4)}


def test_fields_tile_the_context_without_overlap():
    fields = V1.ctx_fields()
    for a, b in zip(fields, fields[1:]):
        assert a.offset + a.size <= b.offset, (a, b)
    assert fields[-1].offset + fields[-1].size == V1.ctx_size
    assert V1.ctx_field_at(128).name == "out_args[1].value"
    assert V1.ctx_field_at(28) is None          # padding


def test_strict_packet_rules_and_helper_stores():
    assert (V1.strict_ctx_sizes, V1.buffer_access, V1.buffer_stores) == (True, "packet", "helpers")
    assert (abi.ACK.strict_ctx_sizes, abi.ACK.buffer_access, abi.ACK.buffer_stores) == \
        (False, "constant", "out_args")
    assert V1.writable_helpers == {"in": 208, "out": 209}


def test_helpers_are_ack_five_plus_208_209():
    assert set(V1.helpers) == {1, 2, 6, 14, 15, 208, 209}
    assert set(abi.ACK.helpers) == {1, 2, 6, 14, 15}
    for hid, name in ((208, "fuse_get_writeable_in"), (209, "fuse_get_writeable_out")):
        h = V1.helpers[hid]
        assert h.name == name
        assert h.args == ("ctx", "arg_index", "arg_value", "buf_size", "scalar")
        assert h.returns == "writable_or_null"


def test_return_codes_match_section_12_2():
    assert V1.return_codes == {"CONTINUE": 0, "USER": 1, "USER_PREFILTER": 2, "POSTFILTER": 3,
                               "USER_POSTFILTER": 4}
    assert V1.valid_returns("pre") == {0, 1, 2, 3, 4}
    assert V1.valid_returns("post") == {0, 4}
    assert abi.ACK.valid_returns("pre") is None      # ACK: any bitmask


@pytest.mark.parametrize("ack, phase, code", [
    (abi.BACKING, "pre", 0), (0, "pre", 1), (abi.USER_FILTER | abi.BACKING, "pre", 2),
    (abi.BACKING | abi.POST_FILTER, "pre", 3), (abi.USER_FILTER, "post", 4), (0, "post", 0),
    (abi.BACKING, "post", 0),                        # B from POST is ignored (§6)
    (-2, "pre", -2), (-13, "post", -13),
    (abi.USER_FILTER, "pre", None),                  # prefilter then classic: no RFC v1 code
    (abi.USER_FILTER | abi.BACKING | abi.POST_FILTER, "pre", None),
])
def test_ack_return_mapping(ack, phase, code):
    assert V1.from_ack_return(ack, phase) == code
    assert abi.ACK.from_ack_return(ack, phase) == ack


def test_post_inputs_without_outputs():
    assert not V1.post_appends_outputs and abi.ACK.post_appends_outputs
    loc = V1.resolve_field("create", "post", "out.fh")
    assert (loc.read_args, loc.read_slot, loc.write_args, loc.write_slot) == ("out", 1, "out", 1)
    ack = abi.ACK.resolve_field("create", "post", "out.fh")
    assert (ack.read_args, ack.read_slot, ack.write_args, ack.write_slot) == ("in", 3, "out", 1)
    name = V1.resolve_field("create", "post", "name")
    assert (name.read_args, name.read_slot) == ("in", 1)


def test_prefilter_input_writes_go_through_writeable_in():
    loc = V1.resolve_field("mkdir", "pre", "in.mode")
    assert (loc.read_args, loc.read_slot, loc.write_args, loc.write_slot) == ("in", 0, "in", 0)
    assert V1.resolve_field("lookup", "pre", "name").write_slot is None


def test_opcodes_fit_three_in_two_out_and_no_android_opcode():
    assert "canonical_path" not in V1.ops and "canonical_path" in abi.ACK.ops
    for op in V1.ops.values():
        assert len(op.inputs) <= V1.max_in_args and len(op.outputs) <= V1.max_out_args, op.name
    assert V1.ops_by_number[1].name == "lookup"


def test_registered_and_chosen_by_metadata():
    assert abi.ABIS[V1.id] is V1 and abi.by_id("rfc-v1") is V1 and abi.by_id("ack") is abi.ACK
    assert abi.choose(V1.id) is V1 and abi.choose(abi.ACK.id) is abi.ACK
    assert abi.choose(None, "rfc-v1") is V1           # no metadata: --abi decides
    assert abi.choose(None) is abi.ACK
    assert abi.choose(V1.id, "rfc-v1") is V1
    with pytest.raises(abi.AbiChoiceError, match="contradicts"):
        abi.choose(abi.ACK.id, "rfc-v1")
    with pytest.raises(abi.AbiChoiceError, match="unknown ABI"):
        abi.choose(None, "v9")
    with pytest.raises(abi.AbiChoiceError, match="unknown ABI"):
        abi.choose("nonsense")


@pytest.mark.skipif(shutil.which("clang") is None, reason="clang is not installed")
def test_context_agrees_with_the_c_header(tmp_path):
    layouts = _clang_record_layouts(HEADER, tmp_path)
    ctx, slot = layouts["__bpf_fuse_args"], layouts["__bpf_fuse_arg"]
    assert ctx["size"] == V1.ctx_size
    assert slot["size"] == V1.slot_size
    for f in V1.header_fields:
        assert ctx["fields"][f.name] == f.offset, f.name
    assert ctx["fields"]["in_args"] == V1.in_arg_offset(0)
    assert ctx["fields"]["out_args"] == V1.out_arg_offset(0)
    assert V1.in_arg_offset(0) + V1.max_in_args * V1.slot_size == V1.out_arg_offset(0)
    for name, (offset, _size) in V1.slot_fields.items():
        assert slot["fields"][name] == offset, name
    assert rfc_v1.ARG_MAX_SIZE == slot["fields"]["max_size"]


@pytest.mark.skipif(shutil.which("clang") is None, reason="clang is not installed")
def test_every_context_field_offset_and_width_compile_in_c(tmp_path):
    """offsetof/sizeof of every field the record lists, as _Static_asserts clang must accept."""
    checks = "".join(
        f"_Static_assert(__builtin_offsetof(struct __bpf_fuse_args, {f.name}) == {f.offset}, \"{f.name}\");\n"
        f"_Static_assert(sizeof(((struct __bpf_fuse_args *)0)->{f.name}) == {f.size}, \"{f.name}\");\n"
        for f in V1.ctx_fields())
    src = tmp_path / "ctx_checks.c"
    src.write_text(f'#include "{HEADER.name}"\n{checks}')
    proc = subprocess.run(["clang", "-target", "bpf", "-fsyntax-only", "-I", str(HEADER.parent),
                           str(src)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert len(V1.ctx_fields()) == 6 + 4 * (V1.max_in_args + V1.max_out_args)
