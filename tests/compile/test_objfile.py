"""Object file shape: sections, symbols, relocations, license, helper calls."""
from __future__ import annotations

import struct

import pytest

from fdsl import abi
from fdsl.compile.metadata import Metadata

from backend_util import compile_text, elf, insns, objdump

POLICY = """
counter ops
counter by_uid[u32] hash max 128
default allow
on lookup pre {
  count ops
  count by_uid[uid]
  if name == "secret" { deny ENOENT }
  if name like "*.key" { log "hidden %s for %d", name, pid }
}
on getattr post { out.attr.mode &= 0o7555 }
on readdir post { drop entries where name matches "^\\\\." }
under "private" {
  on all pre { if uid != 1000 { deny EACCES } }
}
under "vendor" passthrough
"""

ALLOWED_HELPERS = {1, 2, 6, 14, 15}
BPF_CALL = 0x85
BPF_JMP_JA_OR_EXIT = {0x05, 0x95}


@pytest.fixture(scope="module")
def result():
    return compile_text(POLICY)


def test_objdump_reads_it(result, tmp_path):
    out = objdump(result.obj, tmp_path)
    assert "fuse/root" in out and "fuse/s1" in out and "fuse/s2" in out


def test_elf_header(result):
    e = elf(result.obj)
    assert e.elfclass == 64 and e.little_endian
    assert e["e_machine"] == "EM_BPF"
    assert e["e_type"] == "ET_REL"


def test_sections(result):
    names = {s.name for s in elf(result.obj).iter_sections()}
    assert {"fuse/root", "fuse/s1", "fuse/s2", "maps", "license", ".fdsl.meta"} <= names
    for banned in (".BTF", ".BTF.ext", ".eh_frame", ".data", ".rodata", ".bss"):
        assert banned not in names
    assert not any(n.startswith((".rodata", ".data", ".debug", ".rel.eh")) for n in names)


def test_license(result):
    assert elf(result.obj).get_section_by_name("license").data() == b"GPL\0"


def test_maps_records_and_symbols(result):
    e = elf(result.obj)
    maps = e.get_section_by_name("maps")
    data = maps.data()
    assert len(data) == 64
    symtab = e.get_section_by_name(".symtab")
    syms = {s.name: s for s in symtab.iter_symbols()}
    records = {}
    for name in ("ops", "by_uid"):
        sym = syms[name]
        assert sym["st_info"]["bind"] == "STB_GLOBAL"
        assert e.get_section(sym["st_shndx"]).name == "maps"
        off = sym["st_value"]
        records[name] = struct.unpack_from("<IxxxxQQI", data, off)
    assert records["ops"] == (abi.BPF_MAP_TYPE_ARRAY, 4, 8, 1)
    assert records["by_uid"] == (abi.BPF_MAP_TYPE_HASH, 4, 8, 128)


def test_map_relocations_are_ld_imm64(result):
    e = elf(result.obj)
    rel = e.get_section_by_name(".relfuse/root")
    symtab = e.get_section(rel["sh_link"])
    code = insns(result.obj, "fuse/root")
    targets = set()
    for r in rel.iter_relocations():
        assert r["r_info_type"] == 1  # R_BPF_64_64
        op = code[r["r_offset"] // 8][0]
        assert op == 0x18, "relocation not on an ld_imm64"
        targets.add(symtab.get_symbol(r["r_info_sym"]).name)
    assert targets == {"ops", "by_uid"}


def test_only_allowed_helpers_and_no_bpf_calls(result):
    for section in ("fuse/root", "fuse/s1", "fuse/s2"):
        for op, _dst, src, _off, imm in insns(result.obj, section):
            if op == BPF_CALL:
                assert src == 0, "bpf-to-bpf call"
                assert imm in ALLOWED_HELPERS
            assert op != 0x8d, "callx (indirect call)"


def test_no_stores_to_ctx_register_r1_at_entry(result):
    # r1 is the context on entry; the first instruction must not store through it.
    op, dst, src, off, imm = insns(result.obj, "fuse/root")[0]
    assert op & 0x07 not in (0x02, 0x03) or dst != 1


def test_metadata_section_round_trips(result):
    raw = elf(result.obj).get_section_by_name(".fdsl.meta").data()
    meta = Metadata.from_json(raw)
    assert meta == result.metadata
    assert meta.abi == abi.ABI_ID
    assert meta.programs == {"fuse/root": "", "fuse/s1": "private", "fuse/s2": "vendor"}
    assert [m.name for m in meta.maps] == ["ops", "by_uid"]
    assert meta.maps[1].key == "uid"
    assert meta.caching.identity_dependent
    assert [u.op for u in meta.userspace] == ["readdir", "readdir"]
    assert meta.logs and meta.logs[0].fmt == "hidden %s for %d"
    assert len(meta.source_sha256) == 64


def test_function_symbols(result):
    syms = {s.name: s for s in elf(result.obj).get_section_by_name(".symtab").iter_symbols()}
    for name, section in (("fdsl_root", "fuse/root"), ("fdsl_s1", "fuse/s1")):
        assert syms[name]["st_info"]["type"] == "STT_FUNC"
