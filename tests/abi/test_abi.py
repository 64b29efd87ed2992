"""ABI tables against the spec's own quick-reference numbers and against C.

The C oracle: tests/c/fuse_structs.h declares every struct by member types
and order only; clang lays them out for BPF (`-fdump-record-layouts`) and the
offsets must equal the hand-written ones in `fdsl.abi`.  The context layout is
checked against the engine tests' own ACK header the same way.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from fdsl import abi

HEADER = Path(__file__).parent.parent / "c" / "fuse_bpf.h"          # the engine tests' ACK context
STRUCTS_HEADER = Path(__file__).parent.parent / "c" / "fuse_structs.h"  # every FUSE struct, by type only


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


def _clang_record_layouts(header: Path, tmp_path: Path) -> dict[str, dict]:
    """Offsets of every struct in `header`, as clang lays them out for BPF.

    Parses `-fdump-record-layouts`: nested members are flattened to dotted
    names by their indentation, like `fdsl.abi` flattens them.
    """
    src = tmp_path / "layouts.c"
    structs = re.findall(r"^struct (\w+) \{", header.read_text(), re.M)
    src.write_text(f'#include "{header.name}"\n' + "".join(f"struct {n} v_{n};\n" for n in structs))
    out = subprocess.run(["clang", "-target", "bpf", "-Xclang", "-fdump-record-layouts",
                          "-c", "-o", os.devnull, "-I", str(header.parent), str(src)],
                         capture_output=True, text=True, check=True).stdout
    layouts: dict[str, dict] = {}
    for block in out.split("*** Dumping AST Record Layout")[1:]:
        rows = [line for line in block.splitlines() if "|" in line]
        name = rows[0].split("struct", 1)[1].strip()
        fields: dict[str, int] = {}
        stack: list[tuple[int, str]] = []
        for row in rows[1:]:
            offset, member = row.split("|", 1)
            if member.strip().startswith("[sizeof="):
                layouts[name] = {"size": int(re.search(r"sizeof=(\d+)", member)[1]), "fields": fields}
                break
            depth = (len(member) - len(member.lstrip())) // 2
            member_name = member.split()[-1]
            stack = [s for s in stack if s[0] < depth] + [(depth, member_name)]
            fields[".".join(n for _, n in stack)] = int(offset)
    return layouts


@pytest.mark.skipif(shutil.which("clang") is None, reason="clang is not installed")
def test_struct_offsets_agree_with_the_c_header(tmp_path):
    layouts = _clang_record_layouts(STRUCTS_HEADER, tmp_path)
    assert set(abi.STRUCTS) <= set(layouts), "tests/c/fuse_structs.h lacks structs"
    for s in abi.STRUCTS.values():
        c = layouts[s.name]
        assert c["size"] == s.size, s.name
        for f in s.fields:
            assert c["fields"].get(f.name) == f.offset, f"{s.name}.{f.name}"


def test_context_offsets_agree_with_the_c_header(tmp_path):
    c = _clang_record_layouts(HEADER, tmp_path)["fuse_bpf_args"]
    assert c["size"] == abi.CTX_SIZE
    assert c["fields"]["nodeid"] == abi.CTX_NODEID
    assert c["fields"]["opcode"] == abi.CTX_OPCODE
    assert c["fields"]["error_in"] == abi.CTX_ERROR_IN
    assert c["fields"]["in_args"] == abi.in_arg_offset(0)
    assert c["fields"]["out_args"] == abi.out_arg_offset(0)


def test_dirents_fitting_counts_what_pack_dirents_packs():
    """The daemon sizes a READDIR page without packing it when no program reads it."""
    for lengths in ([], [1], [255] * 20, [1, 7, 8, 9, 200] * 30, [40] * 64, [41] * 64):
        entries = [(b"n" * n, i + 10, i + 3, abi.DT_REG) for i, n in enumerate(lengths)]
        for capacity in (0, 24, 32, 4096):
            data, count = abi.pack_dirents(entries, capacity)
            assert abi.dirents_fitting(entries, capacity) == count
            assert len(data) <= capacity
