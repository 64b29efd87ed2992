"""isa: decoding is total, encoding round-trips, slot numbering, encoding checks."""
from __future__ import annotations

import struct

from hypothesis import given, settings, strategies as st

from fdsl.vm import isa
from fdsl.vm.isa import Insn


def slot(op, dst=0, src=0, off=0, imm=0) -> bytes:
    return struct.pack("<BBhi", op, dst | (src << 4), off, imm)


@settings(max_examples=200)
@given(st.binary(max_size=400).map(lambda b: b[: len(b) - len(b) % 8]))
def test_roundtrip_random_bytes(data):
    insns = isa.decode(data)
    assert len(insns) == len(data) // 8
    assert isa.encode(insns) == data


@settings(max_examples=100)
@given(st.binary(max_size=50))
def test_decode_is_total(data):
    insns = isa.decode(data)
    assert len(insns) == (len(data) + 7) // 8
    for insn in insns:
        isa.encoding_error(insn)  # never raises


def test_ld_imm64_takes_two_slots():
    data = slot(0xB7, 0, 0, 0, 1) + slot(0x18, 2, 0, 0, -1) + slot(0, 0, 0, 0, 0x7FFFFFFF) + slot(0x95)
    insns = isa.decode(data)
    assert [i.opcode for i in insns] == [0xB7, 0x18, 0x00, 0x95]
    assert insns[1].imm64 == 0x7FFFFFFF_FFFFFFFF
    assert insns[1].slots == 2 and insns[2].imm64 is None
    assert insns[2] == Insn(0, 0, 0, 0, 0x7FFFFFFF)
    assert isa.encode(insns) == data


def test_truncated_ld_imm64_and_fragment():
    insns = isa.decode(slot(0x18, 1, 0, 0, 5))
    assert insns[0].imm64 is None and insns[0].slots == 1
    assert isa.decode(b"\x95\x00\x00")[0] == Insn(0x95)


def test_ld_imm64_builder_and_patch():
    first, second = isa.ld_imm64(3, -1)
    assert first.imm == -1 and second.imm == -1 and first.imm64 == 2**64 - 1
    assert isa.decode(first.encode() + second.encode())[0].imm64 == 2**64 - 1
    p1, p2 = first.with_imm64(7, second)
    assert (p1.imm, p1.imm64, p2.imm) == (7, 7, 0)


def test_field_views():
    insn = isa.decode(slot(0x61, 1, 2, -8))[0]   # r1 = *(u32 *)(r2 - 8)
    assert (insn.cls, insn.size, insn.mode, insn.size_bytes) == (isa.BPF_LDX, isa.BPF_W, isa.BPF_MEM, 4)
    assert (insn.dst, insn.src, insn.off) == (1, 2, -8)
    jmp = isa.decode(slot(0x5D, 1, 2, 3))[0]     # if r1 != r2 goto +3
    assert jmp.op == isa.BPF_JNE and jmp.source == isa.BPF_X and jmp.is_cond_jump
    assert jmp.jump_target(10) == 14
    gotol = Insn(isa.JA32, imm=-5)
    assert gotol.is_branch and gotol.jump_target(10) == 6
    assert Insn(isa.CALL, imm=1).is_call and not Insn(isa.CALL).is_branch
    assert Insn(isa.EXIT).is_exit


VALID = [
    Insn(0x07, 1, 0, 0, 5), Insn(0x0F, 1, 2), Insn(0x04, 1, 0, 0, -1), Insn(0xBC, 1, 2),
    Insn(0x3F, 1, 2, 1), Insn(0x9F, 1, 2, 1), Insn(0x34, 1, 0, 1, 3),          # sdiv/smod (v4)
    Insn(0xBF, 1, 2, 8), Insn(0xBF, 1, 2, 32), Insn(0xBC, 1, 2, 16),             # movsx (v4)
    Insn(0xD4, 1, 0, 0, 16), Insn(0xDC, 1, 0, 0, 64), Insn(0xD7, 1, 0, 0, 32),   # le/be/bswap
    Insn(0x87, 1), Insn(0x84, 1),
    Insn(0x05, off=3), Insn(0x06, imm=-3), Insn(0x85, imm=15), Insn(0x95),
    Insn(0x15, 1, 0, 2, 7), Insn(0x1E, 1, 2, 2), Insn(0xDE, 1, 2, -2),
    Insn(0x18, 1, 1, 0, 0, 0), Insn(0x61, 1, 2, 4), Insn(0x91, 1, 2, 4), Insn(0x81, 1, 2),
    Insn(0x62, 10, 0, -8, 3), Insn(0x7B, 10, 1, -8), Insn(0x73, 10, 1, -1),
    Insn(0xDB, 1, 2, 0, 0x00), Insn(0xDB, 1, 2, 0, 0x01), Insn(0xC3, 1, 2, 0, 0x41),
    Insn(0xC3, 1, 2, 0, 0xA1), Insn(0xDB, 1, 2, 0, 0xE1), Insn(0xDB, 1, 2, 0, 0xF1),
    Insn(0xC3, 1, 2, 0, 0x50),
]
INVALID = [
    Insn(0x00), Insn(0xFF), Insn(0x07, 11), Insn(0x07, 1, 2, 0, 5),      # K with src set
    Insn(0x0F, 1, 2, 0, 5), Insn(0x3F, 1, 2, 2), Insn(0xBF, 1, 2, 7), Insn(0xB7, 1, 0, 8, 1),
    Insn(0xBC, 1, 2, 32), Insn(0xD4, 1, 0, 0, 8), Insn(0xDF, 1, 0, 0, 16), Insn(0x8F, 1, 2),
    Insn(0x95, imm=1), Insn(0x05, imm=1), Insn(0x06, off=1), Insn(0x85, src=4),
    Insn(0x20, imm=4), Insn(0x99, 1, 2), Insn(0xDB, 1, 2, 0, 0x02), Insn(0xD3, 1, 2),
    Insn(0x61, 1, 2, 0, 1), Insn(0x62, 1, 2), Insn(0x18, 1, 7), Insn(0xE5, 1),
    Insn(0x1D, 1, 2, 0, 5), Insn(0x98, 1, 2),
]


def test_valid_encodings():
    for insn in VALID:
        assert isa.encoding_error(insn) is None, insn


def test_invalid_encodings():
    for insn in INVALID:
        assert isa.encoding_error(insn) is not None, insn


def test_cpu_levels():
    assert "v4" in isa.encoding_error(Insn(0x3F, 1, 2, 1), cpu=3)
    assert "v4" in isa.encoding_error(Insn(0x06, imm=1), cpu=3)
    assert "v3" in isa.encoding_error(Insn(0x16, 1), cpu=2)
    assert "v2" in isa.encoding_error(Insn(0xA5, 1), cpu=1)
    assert "v3" in isa.encoding_error(Insn(0xDB, 1, 2, 0, 0x01), cpu=2)
    assert isa.encoding_error(Insn(0xDB, 1, 2, 0, 0x00), cpu=1) is None


def test_second_half():
    assert isa.second_half_error(Insn(0, imm=5)) is None
    assert isa.second_half_error(Insn(0x18)) is not None
