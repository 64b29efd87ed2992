"""WRITE's arguments as the kernel gives them (spec 9): in_args[1] is the data,
passed as a NULL pointer whose size field is the byte count."""
from __future__ import annotations

import errno
import os
import struct

import pytest

from elf_builder import ElfBuilder
from fdsl import abi
from mounting import mounter, needs_fuse  # noqa: F401

pytestmark = [pytest.mark.mount, needs_fuse]


def insn(op: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", op, dst | (src << 4), off, imm)


LDXW, JNE_K, MOV_K, NEG, EXIT = 0x61, 0x55, 0xB7, 0x87, 0x95
WRITE_PRE = abi.OPS["write"].number | abi.PREFILTER

# if (ctx->opcode == WRITE|PRE) return -(int)ctx->in_args[1].size; return BACKING;
PROGRAM = b"".join([
    insn(LDXW, 6, 1, abi.CTX_OPCODE),
    insn(JNE_K, 6, 0, 3, WRITE_PRE),
    insn(LDXW, 0, 1, abi.in_arg_offset(1) + abi.ARG_SIZE),
    insn(NEG, 0),
    insn(EXIT),
    insn(MOV_K, 0, 0, 0, abi.BACKING),
    insn(EXIT),
])


def test_write_data_slot_carries_the_byte_count(mounter, tmp_path):
    elf = ElfBuilder()
    elf.program("fuse/root", PROGRAM)
    elf.section("license", b"GPL\0")
    policy = tmp_path / "w.bpf.o"
    policy.write_bytes(elf.build())
    backing, mnt = mounter.dirs()
    (backing / "f").write_bytes(b"")
    mounter.mount(policy, backing, mnt)
    fd = os.open(mnt / "f", os.O_WRONLY)
    try:
        with pytest.raises(OSError) as err:
            os.write(fd, b"x" * errno.EACCES)      # 13 bytes -> the filter returns -13
        assert err.value.errno == errno.EACCES
    finally:
        os.close(fd)
