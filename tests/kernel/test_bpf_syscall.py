"""The bpf(2) layer: attribute bytes against the kernel's uapi header, then the real syscall.

Oracle 1: a C program compiled here against `linux/bpf.h` fills `union
bpf_attr` through its named members and prints the bytes; ours must match
byte for byte (offsets, sizes, padding).  Oracle 2: this (mainline) kernel
itself: maps are created, updated and read through our layer, and a socket
filter that counts into a map through a relocated map fd is loaded and run
with BPF_PROG_TEST_RUN.  fuse-bpf's own program type does not exist here;
everything up to the type number is the same call.
"""
from __future__ import annotations

import ctypes
import errno
import os
import shutil
import struct
import subprocess

import pytest

from fdsl import abi
from fdsl.runtime.kernel import bpf, programs
from fdsl.vm import isa
from fdsl.vm.loader import load_object

C_ATTRS = r"""
#include <linux/bpf.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>

static void dump(const char *tag, const void *p, size_t n) {
    const unsigned char *b = p;
    printf("%s ", tag);
    for (size_t i = 0; i < n; i++) printf("%02x", b[i]);
    printf("\n");
}

int main(void) {
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.map_type = 2; a.key_size = 4; a.value_size = 8; a.max_entries = 3;
    a.map_flags = 0x11; a.inner_map_fd = 7; a.numa_node = 0x55;
    strcpy(a.map_name, "counter_c");
    dump("map_create", &a, offsetof(union bpf_attr, map_ifindex));

    memset(&a, 0, sizeof a);
    a.prog_type = 32; a.insn_cnt = 9; a.insns = 0x1122334455667788ULL;
    a.license = 0x0102030405060708ULL; a.log_level = 1; a.log_size = 4096;
    a.log_buf = 0xa0b0c0d0e0f00010ULL; a.kern_version = 0x77; a.prog_flags = 0x66;
    strcpy(a.prog_name, "fdsl_root");
    a.prog_ifindex = 0x44; a.expected_attach_type = 0x33;
    dump("prog_load", &a, offsetof(union bpf_attr, prog_btf_fd));

    memset(&a, 0, sizeof a);
    a.map_fd = 5; a.key = 0xdeadbeef00000001ULL; a.value = 0xfeedface00000002ULL; a.flags = 2;
    dump("map_elem", &a, offsetof(union bpf_attr, flags) + sizeof a.flags);
    printf("nr_bpf %ld\n", (long)SYS_bpf);
    return 0;
}
"""


@pytest.fixture(scope="module")
def c_oracle(tmp_path_factory) -> dict[str, str]:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None or not os.path.exists("/usr/include/linux/bpf.h"):
        pytest.skip("needs a C compiler and the linux uapi headers (linux-libc-dev)")
    d = tmp_path_factory.mktemp("bpfattr")
    (d / "attrs.c").write_text(C_ATTRS)
    subprocess.run([cc, "-o", str(d / "attrs"), str(d / "attrs.c")], check=True)
    out = subprocess.run([str(d / "attrs")], check=True, capture_output=True, text=True).stdout
    return dict(line.split(" ", 1) for line in out.splitlines())


def test_map_create_attr_matches_the_uapi_union(c_oracle):
    ours = bpf.MAP_CREATE_ATTR.pack(map_type=2, key_size=4, value_size=8, max_entries=3,
                                    map_flags=0x11, inner_map_fd=7, numa_node=0x55,
                                    map_name=bpf.object_name("counter_c"))
    assert ours.hex() == c_oracle["map_create"]
    assert len(ours) == 44


def test_prog_load_attr_matches_the_uapi_union(c_oracle):
    ours = bpf.PROG_LOAD_ATTR.pack(
        prog_type=32, insn_cnt=9, insns=0x1122334455667788, license=0x0102030405060708,
        log_level=1, log_size=4096, log_buf=0xa0b0c0d0e0f00010, kern_version=0x77,
        prog_flags=0x66, prog_name=bpf.object_name("fdsl_root"), prog_ifindex=0x44,
        expected_attach_type=0x33)
    assert ours.hex() == c_oracle["prog_load"]
    assert len(ours) == 72


def test_prog_load_attr_as_fdsl_sends_it():
    """Spec §2.1: type from sysfs, GPL license, expected_attach_type 0, no BTF; a log
    buffer only when one is given."""
    raw = bpf.prog_load_attr(33, 0x1000, 12, 0x2000, "fuse/root")
    prog_type, count, insns, lic, level, size, buf = struct.unpack_from("<IIQQIIQ", raw)
    assert (prog_type, count, insns, lic, level, size, buf) == (33, 12, 0x1000, 0x2000, 0, 0, 0)
    assert raw[48:64] == b"fuse_root".ljust(16, b"\0")
    assert raw[64:72] == bytes(8)
    with_log = bpf.prog_load_attr(33, 0x1000, 12, 0x2000, "x", 0x3000, 65536)
    assert struct.unpack_from("<IIQ", with_log, 24) == (1, 65536, 0x3000)


def test_map_elem_attr_matches_the_uapi_union(c_oracle):
    ours = bpf.MAP_ELEM_ATTR.pack(map_fd=5, key=0xdeadbeef00000001, value=0xfeedface00000002,
                                  flags=2)
    assert ours.hex() == c_oracle["map_elem"]


def test_syscall_number_is_the_headers_for_this_machine(c_oracle):
    assert bpf.syscall_number() == int(c_oracle["nr_bpf"])


def test_unknown_architecture_fails_loudly():
    with pytest.raises(bpf.UnknownArchitecture, match="'vax'.*not known"):
        bpf.syscall_number("vax")


def test_object_names_keep_only_what_the_kernel_accepts():
    assert bpf.object_name("fuse/s12") == b"fuse_s12"
    assert bpf.object_name("a-very-long-map-name-indeed") == b"a_very_long_map"
    assert len(bpf.object_name("x" * 40)) == bpf.BPF_OBJ_NAME_LEN - 1


def test_unknown_attr_field_is_a_programming_error():
    with pytest.raises(TypeError, match="no field bogus"):
        bpf.MAP_CREATE_ATTR.pack(bogus=1)


# ---------------------------------------------------------------- the real kernel

needs_bpf = pytest.mark.skipif(os.geteuid() != 0, reason="bpf(2) map/program creation needs root")

BPF_PROG_TYPE_SOCKET_FILTER = 1
BPF_PROG_TEST_RUN = 10
TEST_RUN_ATTR = bpf.AttrLayout("BPF_PROG_TEST_RUN", (
    ("prog_fd", 0, "I"), ("retval", 4, "I"), ("data_size_in", 8, "I"),
    ("data_size_out", 12, "I"), ("data_in", 16, "Q"), ("data_out", 24, "Q"),
    ("repeat", 32, "I"), ("duration", 36, "I")))


@needs_bpf
def test_array_map_update_and_lookup_through_the_layer():
    fd = bpf.map_create(abi.BPF_MAP_TYPE_ARRAY, 4, 8, 4, "fdsl_test")
    try:
        assert bpf.map_lookup(fd, struct.pack("<I", 2), 8) == bytes(8)
        bpf.map_update(fd, struct.pack("<I", 2), struct.pack("<Q", 41))
        assert bpf.map_lookup(fd, struct.pack("<I", 2), 8) == struct.pack("<Q", 41)
        assert bpf.map_lookup(fd, struct.pack("<I", 9), 8) is None   # out of range
        items = dict(bpf.map_items(fd, 4, 8))
        assert len(items) == 4 and items[struct.pack("<I", 2)] == struct.pack("<Q", 41)
    finally:
        os.close(fd)


@needs_bpf
def test_hash_map_iteration_and_a_bad_create():
    fd = bpf.map_create(abi.BPF_MAP_TYPE_HASH, 8, 8, 16, "h")
    try:
        for k in (3, 5, 8):
            bpf.map_update(fd, struct.pack("<Q", k), struct.pack("<Q", k * 10))
        assert sorted(struct.unpack("<QQ", k + v) for k, v in bpf.map_items(fd, 8, 8)) == \
            [(3, 30), (5, 50), (8, 80)]
        with pytest.raises(bpf.BpfError) as info:
            bpf.map_update(fd, struct.pack("<Q", 3), bytes(8), abi.BPF_NOEXIST)
        assert info.value.errno == errno.EEXIST
    finally:
        os.close(fd)
    with pytest.raises(bpf.BpfError, match="BPF_MAP_CREATE") as info:
        bpf.map_create(abi.BPF_MAP_TYPE_ARRAY, 3, 8, 4)   # arrays need 4-byte keys
    assert info.value.errno == errno.EINVAL


def _counting_filter() -> bytes:
    """A socket filter object (legacy maps section, one relocation) that adds 1 to
    counter[0] and returns 0 -- built by hand, independent of our compiler."""
    from elf_builder import ElfBuilder, STT_FUNC

    lo, hi = isa.ld_imm64(1, 0)
    code = [
        isa.Insn(0x62, 10, 0, -4, 0),          # *(u32 *)(r10 - 4) = 0
        lo, hi,                                # r1 = map (relocated)
        isa.Insn(0xBF, 2, 10),                 # r2 = r10
        isa.Insn(0x07, 2, 0, 0, -4),           # r2 += -4
        isa.Insn(0x85, 0, 0, 0, 1),            # call map_lookup_elem
        isa.Insn(0x15, 0, 0, 2, 0),            # if r0 == 0 goto +2
        isa.Insn(0xB7, 1, 0, 0, 1),            # r1 = 1
        isa.Insn(0xDB, 0, 1, 0, 0),            # lock *(u64 *)(r0 + 0) += r1
        isa.Insn(0xB7, 0, 0, 0, 0),            # r0 = 0
        isa.Insn(0x95),                        # exit
    ]
    elf = ElfBuilder()
    prog = elf.program("fuse/root", isa.encode(code))
    maps = elf.section(abi.MAPS_SECTION, bytes(abi.MAP_RECORD.pack(
        {"map_type": abi.BPF_MAP_TYPE_ARRAY, "key_size": 4, "value_size": 8, "max_entries": 1})))
    elf.section(abi.LICENSE_SECTION, b"GPL\0")
    sym = elf.symbol("counter", maps)
    elf.symbol("fdsl_root", prog, type=STT_FUNC)
    elf.rel(prog, 8, sym)
    return elf.build()


@needs_bpf
def test_relocated_program_counts_into_the_real_map():
    """Maps created, the ld_imm64 patched with the real fd, the program accepted by the
    kernel's verifier and run: the count arrives in the map we read back."""
    obj = load_object(_counting_filter())
    with programs.load(obj, BPF_PROG_TYPE_SOCKET_FILTER) as kobj:
        assert list(kobj.programs) == ["fuse/root"] and not kobj.rejected
        code = isa.decode(programs.relocated(obj.programs["fuse/root"], [m.fd for m in kobj.maps]))
        assert code[1].src == abi.BPF_PSEUDO_MAP_FD and code[1].imm == kobj.maps[0].fd
        packet = ctypes.create_string_buffer(bytes(64), 64)
        attr = TEST_RUN_ATTR.pack(prog_fd=kobj.prog_fd("fuse/root"), data_size_in=64,
                                  data_in=ctypes.addressof(packet), repeat=3)
        bpf.bpf(BPF_PROG_TEST_RUN, attr)
        [(key, value)] = kobj.maps[0].items()
        assert struct.unpack("<Q", value)[0] == 3


@needs_bpf
def test_rejection_carries_the_verifier_log_and_names_the_section():
    from elf_builder import ElfBuilder

    elf = ElfBuilder()
    elf.program("fuse/bad", isa.encode([isa.Insn(0x95)]))    # exit with r0 never set
    elf.section(abi.LICENSE_SECTION, b"GPL\0")
    obj = load_object(elf.build())
    with pytest.raises(programs.KernelLoadError) as info:
        programs.load(obj, BPF_PROG_TYPE_SOCKET_FILTER)
    message = str(info.value)
    assert "the kernel rejected section fuse/bad" in message
    assert "R0 !read_ok" in message                        # the kernel verifier's own words
    with programs.load(obj, BPF_PROG_TYPE_SOCKET_FILTER, keep_going=True) as kobj:
        assert not kobj.programs and "R0 !read_ok" in kobj.rejected["fuse/bad"].log


@needs_bpf
def test_a_daemonless_mount_finds_its_maps_again_by_id(tmp_path, monkeypatch):
    """The state file names maps by kernel id; `fdsl stats` reopens them and decodes keys."""
    from fdsl.runtime.kernel import stats

    obj = load_object(_counting_filter())
    with programs.load(obj, BPF_PROG_TYPE_SOCKET_FILTER) as kobj:
        records = stats.map_records(kobj.maps)
        assert records[0]["id"] > 0 and records[0]["name"] == "counter"
        kobj.maps[0].update(struct.pack("<I", 0), struct.pack("<Q", 5))
        mnt = str(tmp_path / "mnt")
        path = stats.state_path(mnt)
        stats.write_state(path, {"mode": "kernel, no daemon", "mountpoint": mnt,
                                 "backing": "/b", "policy": None, "started": 0, "maps": records,
                                 "metadata": None})
        try:
            assert os.stat(path).st_mode & 0o777 == 0o600
            reply = stats.daemonless_stats(mnt)
        finally:
            path.unlink()
        assert reply["maps"] == [{"name": "counter", "kind": "map", "key": "raw",
                                  "entries": [("0", 5)]}]
        assert stats.daemonless_stats(mnt) is None


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/fuse"),
                    reason="mounting needs root and /dev/fuse")
def test_the_common_mount_options_and_the_serving_session_work_on_this_kernel(tmp_path):
    """fuse-bpf's root_dir/root_bpf do not exist here, but the rest of the data string and
    the serving session (FUSE_INIT through the transport, kernel mode's dispatch table)
    are the same: a plain FUSE mount proves them."""
    from fdsl.runtime.daemon import MountStats
    from fdsl.runtime.kernel.mountopts import MountRequest, kernel_mount
    from fdsl.runtime.kernel.session import _unmount, start_session

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    dev = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    mstats = MountStats()
    session = None
    try:
        kernel_mount(MountRequest(dev, None, None), str(mnt))
        try:
            session = start_session(dev, None, 2, mstats)
            assert str(mnt) in open("/proc/self/mountinfo").read()
            with pytest.raises(OSError) as info:
                os.stat(mnt)                     # a classic GETATTR: ENOSYS in kernel mode
            assert info.value.errno == errno.ENOSYS
        finally:
            _unmount(str(mnt))
        assert session.finished.wait(5)          # ENODEV after the unmount ends it
        assert mstats.ops["getattr"] >= 1
    finally:
        if session is not None:
            session.close()
        os.close(dev)


def _printing_filter() -> bytes:
    """A socket filter calling bpf_trace_printk("fdsl-k\\n") with its format on the stack."""
    from elf_builder import ElfBuilder

    lo, hi = isa.ld_imm64(1, int.from_bytes(b"fdsl-k\n\0", "little"))
    code = [lo, hi,
            isa.Insn(0x7B, 10, 1, -8, 0),          # *(u64 *)(r10 - 8) = r1
            isa.Insn(0xBF, 1, 10),                 # r1 = r10
            isa.Insn(0x07, 1, 0, 0, -8),           # r1 += -8
            isa.Insn(0xB7, 2, 0, 0, 8),            # r2 = 8
            isa.Insn(0x85, 0, 0, 0, 6),            # call trace_printk
            isa.Insn(0xB7, 0, 0, 0, 0), isa.Insn(0x95)]
    elf = ElfBuilder()
    elf.program("fuse/root", isa.encode(code))
    elf.section(abi.LICENSE_SECTION, b"GPL\0")
    return elf.build()


@needs_bpf
def test_log_lines_come_from_trace_pipe():
    """What bpf_trace_printk writes is what read_trace returns (tracefs mounted for the
    test if it is not, and unmounted again)."""
    from fdsl.runtime.kernel import features, stats
    from fdsl.runtime.kernel.session import _unmount

    tracing = "/sys/kernel/tracing"
    mounted_here = False
    if features.trace_pipe() is None:
        if subprocess.run(["mount", "-t", "tracefs", "none", tracing]).returncode != 0:
            pytest.skip("tracefs cannot be mounted here")
        mounted_here = True
    try:
        stats.read_trace(limit=10_000)                      # drain what others left
        with programs.load(load_object(_printing_filter()), BPF_PROG_TYPE_SOCKET_FILTER) as kobj:
            packet = ctypes.create_string_buffer(64)
            bpf.bpf(BPF_PROG_TEST_RUN, TEST_RUN_ATTR.pack(
                prog_fd=kobj.prog_fd("fuse/root"), data_size_in=64,
                data_in=ctypes.addressof(packet), repeat=1))
        lines = stats.read_trace(wait=2.0)
        assert any(line.endswith("fdsl-k") for line in lines), lines
    finally:
        if mounted_here:
            _unmount(tracing)


@needs_bpf
def test_kernel_mode_daemon_answers_stats_from_the_kernel_maps(tmp_path):
    """The control socket of a kernel-mode daemon: same protocol as emulation's, counters
    read from the kernel's maps by fd."""
    import json
    import socket
    from fdsl.runtime.daemon import MountConfig, MountStats
    from fdsl.runtime.kernel.session import _control_thread, _EngineView, _NodeCount, _PolicyView

    obj = load_object(_counting_filter())
    with programs.load(obj, BPF_PROG_TYPE_SOCKET_FILTER) as kobj:
        kobj.maps[0].update(struct.pack("<I", 0), struct.pack("<Q", 9))
        cfg = MountConfig(backing="/b", mountpoint="/m", policy="p.bpf.o")
        path = tmp_path / "k.sock"
        listener = _control_thread(path, cfg, _EngineView(_NodeCount({1: None}), {}),
                                   _PolicyView(kobj, None), MountStats())
        assert listener is not None
        try:
            with socket.socket(socket.AF_UNIX) as conn:
                conn.connect(str(path))
                conn.sendall(b'{"cmd": "stats"}\n')
                reply = json.loads(conn.makefile().readline())
        finally:
            listener.close()
        assert reply["mode"] == "kernel" and reply["nodes"] == 1
        assert reply["maps"] == [{"name": "counter", "kind": "map", "key": "raw",
                                  "entries": [["0", 9]]}]
