"""ABI tables against the spec's own quick-reference numbers and against C.

The C oracle compiles `_Static_assert(offsetof(...) == N)` for every field of
every struct in `fdsl.abi` with `clang -target bpf`, using the ACK header in
tests/c/ that was transcribed separately from the spec: a wrong offset in
either place fails to compile.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from fdsl import abi

HEADER = Path(__file__).parent / "c" / "fuse_bpf_ack.h"


def test_context_layout_matches_spec_section_4():
    assert abi.CTX_SIZE == 224
    assert [abi.in_arg_offset(i) for i in range(5)] == [32, 56, 80, 104, 128]
    assert [abi.out_arg_offset(j) for j in range(3)] == [152, 176, 200]
    assert abi.in_arg_offset(4) + abi.ARG_SLOT_SIZE <= abi.out_arg_offset(0)
    assert abi.out_arg_offset(2) + abi.ARG_SLOT_SIZE == abi.CTX_SIZE


@pytest.mark.parametrize("struct, field, offset", [
    # spec §9 "Commonly filtered fields, as byte offsets inside the argument"
    ("fuse_entry_out", "nodeid", 0), ("fuse_entry_out", "attr.ino", 40),
    ("fuse_entry_out", "attr.size", 48), ("fuse_entry_out", "attr.mode", 100),
    ("fuse_entry_out", "attr.nlink", 104), ("fuse_entry_out", "attr.uid", 108),
    ("fuse_entry_out", "attr.gid", 112), ("fuse_entry_bpf_out", "backing_action", 0),
    ("fuse_entry_bpf_out", "backing_fd", 8), ("fuse_entry_bpf_out", "bpf_action", 16),
    ("fuse_entry_bpf_out", "bpf_fd", 24), ("fuse_read_in", "fh", 0),
    ("fuse_read_in", "offset", 8), ("fuse_read_in", "size", 16), ("fuse_open_out", "fh", 0),
    ("fuse_attr_out", "attr.mode", 76), ("fuse_attr_out", "attr.uid", 84),
    ("fuse_attr_out", "attr.gid", 88),
])
def test_quick_reference_offsets(struct, field, offset):
    assert abi.STRUCTS[struct].field(field).offset == offset


def test_fields_fit_inside_their_structs():
    for s in abi.STRUCTS.values():
        for f in s.fields:
            assert f.offset + f.size <= s.size, (s.name, f.name)
        offsets = [f.offset for f in s.fields]
        assert len(offsets) == len(set(offsets)), s.name


def test_postfilter_slots_append_outputs_to_inputs():
    loc = abi.resolve_field("create", "post", "out.fh")
    assert (loc.read_slot, loc.write_slot, loc.offset) == (3, 1, 0)
    loc = abi.resolve_field("lookup", "post", ("out", "nodeid"))
    assert (loc.read_slot, loc.write_slot, loc.effective) == (1, 0, True)
    assert not abi.resolve_field("lookup", "post", "out.attr.mode").effective


def test_prefilter_writes_go_through_the_aliasing_out_slot():
    loc = abi.resolve_field("mkdir", "pre", "in.mode")
    assert (loc.read_slot, loc.write_slot, loc.effective) == (0, 0, True)
    assert abi.resolve_field("mkdir", "pre", "out.attr.mode") is None
    assert abi.resolve_field("lookup", "pre", "name").write_slot is None
    assert not abi.resolve_field("getattr", "pre", "in.fh").effective


def test_every_opcode_fits_the_context_slots():
    for op in abi.OPS.values():
        assert len(op.inputs) <= 3 and len(op.outputs) <= 2, op.name
        assert len(op.inputs) + len(op.outputs) <= abi.MAX_IN_ARGS, op.name


def test_opcode_numbers_match_section_11():
    expected = {"lookup": 1, "getattr": 3, "setattr": 4, "readlink": 5, "symlink": 6,
                "mknod": 8, "mkdir": 9, "unlink": 10, "rmdir": 11, "rename": 12, "link": 13,
                "open": 14, "read": 15, "write": 16, "statfs": 17, "release": 18, "fsync": 20,
                "setxattr": 21, "getxattr": 22, "listxattr": 23, "removexattr": 24,
                "flush": 25, "opendir": 27, "readdir": 28, "releasedir": 29, "fsyncdir": 30,
                "access": 34, "create": 35, "fallocate": 43, "rename2": 45, "lseek": 46,
                "copy_file_range": 47, "canonical_path": 2016}
    assert {name: op.number for name, op in abi.OPS.items()} == expected


def _c_struct_name(name: str) -> str | None:
    return {"fuse_bpf_rw_result": None, "bpf_map_def_legacy": None,
            "fuse_in_header": None, "fuse_out_header": None}.get(name, name)


@pytest.mark.skipif(shutil.which("clang") is None, reason="clang is not installed")
def test_struct_offsets_agree_with_the_c_header(tmp_path):
    if not HEADER.exists():
        pytest.skip("tests/c/fuse_bpf_ack.h not present")
    lines = ['#include "fuse_bpf_ack.h"', "#include <stddef.h>"]
    checked = 0
    for s in abi.STRUCTS.values():
        c_name = _c_struct_name(s.name)
        if c_name is None or f"struct {c_name} " not in HEADER.read_text() + " ":
            continue
        lines.append(f"_Static_assert(sizeof(struct {c_name}) == {s.size}, \"{c_name} size\");")
        for f in s.fields:
            member = f.name
            lines.append(f"_Static_assert(offsetof(struct {c_name}, {member}) == {f.offset}, "
                         f"\"{c_name}.{member}\");")
        checked += 1
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines) + "\n")
    proc = subprocess.run(["clang", "-target", "bpf", "-O2", "-fsyntax-only",
                           "-I", str(HEADER.parent), str(src)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert checked >= 5, "the header declares too few of our structs to be an oracle"
