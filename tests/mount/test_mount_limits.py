"""Resource bounds through a real mount (issue 11): a program the verifier would explore
forever, oversized maps, a 20,000-name deny list."""
from __future__ import annotations

import errno
import os

import pytest

from elf_builder import ElfBuilder
from fdsl import abi
from fdsl.vm import isa
from mounting import is_mounted, mounter, needs_fuse  # noqa: F401
from vm_util import explosion

pytestmark = [pytest.mark.mount, needs_fuse]


def obj(code: bytes, maps: bytes = b"") -> bytes:
    b = ElfBuilder()
    b.program("fuse/root", code)
    b.section("license", b"GPL\0")
    if maps:
        b.section("maps", maps, flags=3)
    return b.build()


def test_state_explosion_mounts_and_fails_its_operations(mounter, tmp_path):
    """The mount becomes ready (the verifier gives up at MAX_WORK) and the program's
    operations fail with EIO, naming the limit in the daemon's log."""
    policy = tmp_path / "explode.bpf.o"
    policy.write_bytes(obj(isa.encode(explosion(40))))
    b, mnt = mounter.dirs()
    (b / "f").write_text("x")
    m = mounter.mount(policy, b, mnt, options="backend=interp")
    with pytest.raises(OSError) as err:
        os.stat(mnt / "f")
    assert err.value.errno == errno.EIO
    assert "MAX_WORK" in "\n".join(m.stats()["daemon_logs"])


def test_maps_over_the_memory_budget_refuse_the_mount(mounter, tmp_path):
    record = abi.MAP_RECORD.pack(dict(map_type=abi.BPF_MAP_TYPE_HASH, key_size=1, value_size=1,
                                      max_entries=1 << 28))
    ret = isa.encode([isa.Insn(isa.BPF_ALU64 | isa.BPF_MOV | isa.BPF_K, 0, 0, 0, abi.BACKING),
                      isa.Insn(isa.EXIT)])
    policy = tmp_path / "maps.bpf.o"
    policy.write_bytes(obj(ret, record * 64))
    b, mnt = mounter.dirs()
    m = mounter.mount(policy, b, mnt, expect_fail=True)
    assert "MAX_MAP" in m.error and "Traceback" not in m.error
    assert not is_mounted(mnt)


def test_a_20000_name_deny_list_hides_through_the_mount(mounter, tmp_path):
    names = ", ".join(f'"secret-{i:05d}"' for i in range(20000))
    policy = tmp_path / "denylist.fdsl"
    policy.write_text(f"set blocked = {{{names}}}\nhide name in blocked\n")
    b, mnt = mounter.dirs()
    (b / "secret-19999").write_text("hidden")
    (b / "visible").write_text("shown")
    mounter.mount(policy, b, mnt)
    assert sorted(os.listdir(mnt)) == ["visible"]
    assert not os.path.exists(mnt / "secret-19999")
    assert (mnt / "visible").read_text() == "shown"
