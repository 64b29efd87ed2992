"""loader: programs, maps, relocations, license, metadata; LoadError for everything bad."""
from __future__ import annotations

import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import C_PROGRAMS
from elf_builder import R_BPF_64_32, R_BPF_64_64, SHF_ALLOC, SHF_WRITE, STT_FUNC, ElfBuilder
from fdsl import abi
from fdsl.vm import isa
from fdsl.errors import LoadError
from fdsl.vm.loader import load_file, load_object

RET2 = bytes.fromhex("b700000002000000" "9500000000000000")
LD_MAP = bytes.fromhex("1801000000000000" "0000000000000000")


def map_record(mtype=abi.BPF_MAP_TYPE_HASH, key=4, value=8, entries=16) -> bytes:
    return struct.pack("<I4xQQI4x", mtype, key, value, entries)


def simple_object(**kw) -> ElfBuilder:
    b = ElfBuilder(**kw)
    b.program("fuse/root", RET2)
    b.section("license", b"GPL\0", flags=SHF_ALLOC | SHF_WRITE)
    return b


def test_c_objects_load(bpf_c_object):
    for name in C_PROGRAMS:
        obj = load_object(bpf_c_object(name))
        assert obj.license == "GPL"
        assert obj.metadata is None
        for prog in obj.programs.values():
            assert isa.encode(prog.insns) == prog.raw or prog.relocations
            assert prog.insns[-1].is_exit


def test_count_uid_maps_and_relocations(bpf_c_object):
    obj = load_object(bpf_c_object("count_uid"))
    assert [(m.index, m.name, m.type, m.key_size, m.value_size, m.max_entries) for m in obj.maps] == [
        (0, "calls_by_uid", abi.BPF_MAP_TYPE_HASH, 4, 8, 64),
        (1, "total", abi.BPF_MAP_TYPE_ARRAY, 4, 8, 1)]
    prog = obj.programs["fuse/count"]
    assert prog.name == "count_uid"
    assert [(r.symbol, r.map_index) for r in prog.relocations] == [
        ("calls_by_uid", 0), ("calls_by_uid", 0), ("total", 1)]
    for r in prog.relocations:
        insn = prog.insns[r.slot]
        assert insn.is_ld_imm64 and insn.src == abi.BPF_PSEUDO_MAP_FD
        assert insn.imm == r.map_index and insn.imm64 == r.map_index
        assert prog.insns[r.slot + 1] == isa.Insn(0)
    raw = isa.decode(prog.raw)
    assert raw[prog.relocations[0].slot].src == 0   # raw bytes are not patched
    assert obj.map_by_name("total").index == 1


def test_program_names(bpf_c_object):
    assert set(load_object(bpf_c_object("hide_name")).programs) == {"fuse/hide"}
    assert set(load_object(bpf_c_object("set_nodeid_fh")).programs) == {"fuse/ids"}


def test_arbitrary_section_name_and_metadata():
    b = ElfBuilder()
    b.program("test_trace", RET2)
    b.program("fuse/s1", RET2)
    meta = {"abi": abi.ABI_ID, "fdsl_version": "0", "source_sha256": "x", "files": [],
            "programs": {"fuse/s1": ""}, "scopes": [], "maps": [], "userspace": [],
            "caching": {"identity_dependent": False, "ops": []}, "logs": []}
    b.section(".fdsl.meta", json.dumps(meta).encode())
    obj = load_object(b.build())
    assert set(obj.programs) == {"test_trace", "fuse/s1"}
    assert obj.metadata == meta
    assert obj.meta is not None and obj.meta.programs == {"fuse/s1": ""}
    assert obj.license == ""


def test_handmade_map_relocation_with_section_symbol_addend():
    b = ElfBuilder()
    code = bytearray(LD_MAP + RET2)
    code[4:8] = struct.pack("<i", 32)     # addend in imm: second record of the section
    p = b.program("fuse/root", bytes(code))
    m = b.section("maps", map_record() + map_record(abi.BPF_MAP_TYPE_ARRAY, 4, 4, 2), flags=3)
    b.symbol("first", m, 0)
    b.symbol("second", m, 32)
    sect = b.symbol("", m, 0, type=3)
    b.rel(p, 0, sect)
    obj = load_object(b.build())
    assert [m.name for m in obj.maps] == ["first", "second"]
    assert obj.programs["fuse/root"].insns[0].imm == 1


def error_of(data: bytes) -> str:
    with pytest.raises(LoadError) as info:
        load_object(data)
    return str(info.value)


def test_not_elf_and_wrong_format():
    assert "bad magic" in error_of(b"hello world" * 10)
    assert "too short" in error_of(b"\x7fELF")
    good = simple_object().build()
    assert "endian" in error_of(good[:5] + b"\x02" + good[6:])
    assert "64-bit" in error_of(good[:4] + b"\x01" + good[5:])
    assert "EM_BPF" in error_of(simple_object(machine=62).build())
    assert "truncated" in error_of(good[: len(good) - 10])
    assert "relocatable" in error_of(good[:16] + b"\x02\x00" + good[18:])


def test_bad_sections():
    b = ElfBuilder()
    b.program("fuse/root", RET2[:12])
    assert "multiple of 8" in error_of(b.build())
    b = ElfBuilder()
    b.section("license", b"GPL\0")
    assert "no program" in error_of(b.build())
    b = simple_object()
    b.section("maps", bytes(20), flags=3)
    assert "multiple of 32" in error_of(b.build())
    b = simple_object()
    b.section("maps", map_record(mtype=27), flags=3)
    assert "unsupported map type" in error_of(b.build())
    b = simple_object()
    b.section("maps", map_record(abi.BPF_MAP_TYPE_ARRAY, key=8), flags=3)
    assert "key_size 4" in error_of(b.build())
    b = simple_object()
    b.section("maps", map_record(entries=1 << 31), flags=3)
    assert "MAX_MAP_BYTES" in error_of(b.build())
    b = simple_object()
    b.section(".fdsl.meta", b"{not json")
    assert "JSON" in error_of(b.build())
    b = simple_object()
    b.section(".fdsl.meta", b'{"abi": 1}')
    assert "schema" in error_of(b.build())


def test_bad_relocations():
    def with_reloc(sym_kind: str, rtype=R_BPF_64_64, offset=0, code=LD_MAP + RET2) -> str:
        b = ElfBuilder()
        p = b.program("fuse/root", code)
        m = b.section("maps", map_record(), flags=3)
        d = b.section(".rodata", b"abcd", flags=SHF_ALLOC)
        sym = {"map": b.symbol("m", m), "data": b.symbol("str", d),
               "func": b.symbol("f", p, 0, STT_FUNC)}.get(sym_kind, 99)
        b.rel(p, offset, sym, rtype)
        return error_of(b.build())

    assert "unknown symbol" in with_reloc("missing")
    assert "global data" in with_reloc("data")
    assert "bpf-to-bpf call" in with_reloc("func", R_BPF_64_32)
    assert "not a ld_imm64" in with_reloc("map", code=RET2 + RET2)
    assert "not an instruction" in with_reloc("map", offset=3)
    assert "not an instruction" in with_reloc("map", offset=800)
    assert "unsupported relocation type" in with_reloc("map", 7)


def test_pseudo_call_without_relocation():
    b = ElfBuilder()
    b.program("fuse/root", struct.pack("<BBhi", 0x85, 0x10, 0, 1) + RET2 + RET2)
    assert "bpf-to-bpf call" in error_of(b.build())


def test_c_objects_refused(bpf_c_object):
    assert "bpf-to-bpf" in error_of(bpf_c_object("bpf_call"))
    assert "global data" in error_of(bpf_c_object("global_data"))


def test_load_file(tmp_path, bpf_c_object):
    path = tmp_path / "x.o"
    path.write_bytes(bpf_c_object("hide_name"))
    assert "fuse/hide" in load_file(path).programs
    with pytest.raises(LoadError, match="missing.o"):
        load_file(tmp_path / "missing.o")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(data):
    for blob in (data, b"\x7fELF\x02\x01\x01" + data):
        try:
            load_object(blob)
        except LoadError:
            pass


@pytest.fixture(scope="module")
def real_objects(bpf_c_object):
    return [bpf_c_object(n) for n in C_PROGRAMS]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_mutated_objects(real_objects, data):
    blob = bytearray(data.draw(st.sampled_from(real_objects)))
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(blob) - 1))
        blob[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    try:
        load_object(bytes(blob))
    except LoadError:
        pass
