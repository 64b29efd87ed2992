"""Faults: a program that faults at run time, or that the verifier rejected,
fails the operations that run it with EIO and the daemon keeps serving;
SIGTERM unmounts cleanly."""
from __future__ import annotations

import errno
import os
import signal
import struct
import time

import pytest

from elf_builder import ElfBuilder
from mounting import is_mounted, mounter, needs_fuse  # noqa: F401

pytestmark = [pytest.mark.mount, needs_fuse]


def insn(op: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", op, dst | (src << 4), off, imm)


LDXW, LDXDW, LDXB, JNE_K, MOV_K, EXIT = 0x61, 0x79, 0x71, 0x55, 0xB7, 0x95

# LOOKUP|PRE of a name starting with 'b' dereferences in_args[1].value, which is
# NULL for LOOKUP (one input): the verifier cannot know, the VM faults.
FAULTING = b"".join([
    insn(LDXW, 6, 1, 8),              # r6 = ctx->opcode
    insn(JNE_K, 6, 0, 5, 0x10001),    # if r6 != LOOKUP|PRE goto ok
    insn(LDXDW, 2, 1, 40),            # r2 = in_args[0].value (name)
    insn(LDXB, 3, 2, 0),              # r3 = name[0]
    insn(JNE_K, 3, 0, 2, ord("b")),   # if r3 != 'b' goto ok
    insn(LDXDW, 2, 1, 64),            # r2 = in_args[1].value (NULL)
    insn(LDXB, 0, 2, 0),              # fault
    insn(MOV_K, 0, 0, 0, 2),          # ok: r0 = BACKING
    insn(EXIT),
])

REJECTED = insn(EXIT)  # r0 is never written: the verifier refuses it


def obj(code: bytes) -> bytes:
    b = ElfBuilder()
    b.program("fuse/root", code)
    b.section("license", b"GPL\0")
    return b.build()


@pytest.mark.parametrize("backend", ["jit", "interp"])
def test_faulting_filter_gives_eio_and_daemon_survives(mounter, tmp_path, backend):
    policy = tmp_path / "fault.bpf.o"
    policy.write_bytes(obj(FAULTING))
    b, mnt = mounter.dirs()
    (b / "bad").write_text("x")
    (b / "good").write_text("fine")
    m = mounter.mount(policy, b, mnt, options=f"backend={backend}")
    for _ in range(3):
        with pytest.raises(OSError) as err:
            os.stat(mnt / "bad")
        assert err.value.errno == errno.EIO
    assert (mnt / "good").read_text() == "fine"
    assert m.alive()
    stats = m.stats()
    assert any("fault" in line for line in stats["daemon_logs"])


def test_verifier_rejection_fails_its_operations_with_eio(mounter, tmp_path):
    policy = tmp_path / "rejected.bpf.o"
    policy.write_bytes(obj(REJECTED))
    b, mnt = mounter.dirs()
    (b / "f").write_text("x")
    m = mounter.mount(policy, b, mnt)
    for attempt in (lambda: os.stat(mnt / "f"), lambda: os.listdir(mnt)):
        with pytest.raises(OSError) as err:
            attempt()
        assert err.value.errno == errno.EIO
    assert m.alive()
    logs = "\n".join(m.stats()["daemon_logs"])
    assert "rejected" in logs and "insn 0" in logs


def test_malformed_object_refuses_the_mount(mounter, tmp_path):
    policy = tmp_path / "garbage.bpf.o"
    policy.write_bytes(b"\x7fELF" + b"\0" * 60)
    b, mnt = mounter.dirs()
    m = mounter.mount(policy, b, mnt, expect_fail=True)
    assert "cannot load policy" in m.error
    assert not is_mounted(mnt)


def test_sigterm_unmounts_cleanly(mounter):
    b, mnt = mounter.dirs()
    (b / "f").write_text("x")
    m = mounter.mount("", b, mnt)
    assert (mnt / "f").read_text() == "x"
    os.kill(m.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while (is_mounted(mnt) or m.alive()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_mounted(mnt) and not m.alive()


def test_vanished_backing_files_give_errors(mounter):
    b, mnt = mounter.dirs()
    (b / "d").mkdir()
    (b / "d" / "f").write_text("x")
    m = mounter.mount("", b, mnt)
    fh = open(mnt / "d" / "f")
    assert os.listdir(mnt / "d") == ["f"]
    os.unlink(b / "d" / "f")
    os.rmdir(b / "d")
    assert fh.read() == "x"  # the open file keeps its backing inode
    fh.close()
    with pytest.raises(OSError):
        (mnt / "d" / "new").write_text("y")
    time.sleep(1.1)
    assert not (mnt / "d").exists()
    assert m.alive()
