"""context: struct fuse_bpf_args in real memory, PRE aliasing, POST appending; simulate."""
from __future__ import annotations

import ctypes
import struct
import threading

import pytest

from fdsl import abi
from fdsl.vm.context import BUFFER_WINDOW, MAX_LAYOUTS, Arena, build_context, thread_arena
from fdsl.vm.simulate import RequestError, parse_errno, prepare, request_args


def u32(addr: int) -> int:
    return ctypes.c_uint32.from_address(addr).value


def u64(addr: int) -> int:
    return ctypes.c_uint64.from_address(addr).value


def slot(ctx, kind: str, i: int) -> tuple[int, int, int]:
    base = ctx.address + (abi.in_arg_offset(i) if kind == "in" else abi.out_arg_offset(i))
    return (u32(base + abi.ARG_SIZE), u64(base + abi.ARG_VALUE), u64(base + abi.ARG_END_OFFSET))


def test_lookup_pre_layout_and_aliasing():
    ctx = build_context("lookup", "pre", [b"secret\0"], nodeid=77)
    a = ctx.address
    assert u64(a + abi.CTX_NODEID) == 77
    assert u32(a + abi.CTX_OPCODE) == 1 | abi.PREFILTER
    assert u32(a + abi.CTX_ERROR_IN) == 0
    assert (u32(a + abi.CTX_IN_NUMARGS), u32(a + abi.CTX_OUT_NUMARGS)) == (1, 1)
    assert u32(a + abi.CTX_FLAGS) == abi.FLAG_OUT_ARGVAR
    size, value, end = slot(ctx, "in", 0)
    assert (size, end) == (7, 0) and ctypes.string_at(value, 7) == b"secret\0"
    assert slot(ctx, "out", 0) == (size, value, 0)             # out_args[0] aliases in_args[0]
    assert slot(ctx, "in", 1) == (0, 0, 0) and slot(ctx, "out", 1) == (0, 0, 0)
    assert ctypes.string_at(value + 7, BUFFER_WINDOW - 7) == bytes(BUFFER_WINDOW - 7)
    ctypes.memmove(value, b"S", 1)                             # a PRE write through out_args
    assert ctx.inputs() == [b"Secret\0"] and ctx.outputs() == [b"Secret\0"]
    regions = ctx.regions
    assert regions[0].address == a and regions[0].length == abi.CTX_SIZE and not regions[0].writable
    assert [(r.address, r.length, r.writable) for r in regions[1:]] == [(value, BUFFER_WINDOW, True)]


def test_lookup_post_appends_outputs():
    feo = abi.FUSE_ENTRY_OUT.pack({"nodeid": 9, "attr.mode": 0o100644})
    ctx = build_context("lookup", "post", [b"a\0"], [bytes(feo), bytes(32)], nodeid=1, error_in=-2)
    a = ctx.address
    assert u32(a + abi.CTX_OPCODE) == 1 | abi.POSTFILTER
    assert struct.unpack("<i", ctypes.string_at(a + abi.CTX_ERROR_IN, 4))[0] == -2
    assert (u32(a + abi.CTX_IN_NUMARGS), u32(a + abi.CTX_OUT_NUMARGS)) == (3, 2)
    name, out0, out1 = slot(ctx, "in", 0), slot(ctx, "in", 1), slot(ctx, "in", 2)
    assert slot(ctx, "out", 0) == out0 and slot(ctx, "out", 1) == out1
    assert (out0[0], out1[0]) == (128, 32) and name[0] == 2
    assert len({name[1], out0[1], out1[1]}) == 3
    assert u64(out0[1]) == 9 and u32(out0[1] + 100) == 0o100644
    writable = {r.address: r.writable for r in ctx.regions[1:]}
    assert writable == {name[1]: False, out0[1]: True, out1[1]: True}
    ctypes.c_uint64.from_address(out0[1]).value = 0x1234
    assert abi.FUSE_ENTRY_OUT.unpack(ctx.read_out(0))["nodeid"] == 0x1234


def test_flags_null_and_size_fields():
    assert build_context("fsync", "pre", [bytes(16)]).flags == abi.FLAG_FORCE
    assert build_context("open", "pre", [bytes(8)]).flags == 0
    getx = lambda size: build_context("getxattr", "pre", [abi.FUSE_GETXATTR_IN.pack({"size": size}),
                                                          b"user.x\0"]).flags
    assert getx(0) == 0 and getx(100) == abi.FLAG_OUT_ARGVAR
    ctx = build_context("write", "pre", [abi.FUSE_WRITE_IN.pack({"size": 10}), 10])
    assert slot(ctx, "in", 1) == (10, 0, 0)                    # WRITE's data: NULL, size 10
    assert ctx.read_in(1) is None and len(ctx.regions) == 2
    ctx = build_context("statfs", "post", [], [bytes(80)])
    assert slot(ctx, "in", 0)[0] == 8 and slot(ctx, "out", 0)[0] == 8   # §9: size says 8
    assert len(ctx.read_out(0)) == 80
    big = build_context("setxattr", "pre", [bytes(16), b"user.a\0", b"v" * 65536])
    assert big.in_args[2].window >= 65536 and slot(big, "in", 2)[0] == 65536


def test_arena_reuse_zeroes_and_threads():
    arena = Arena()
    ctx = build_context("lookup", "pre", [b"x" * 100 + b"\0"], arena=arena)
    ctypes.memset(ctx.in_args[0].address, 0xFF, BUFFER_WINDOW)
    ctx2 = build_context("lookup", "pre", [b"y\0"], arena=arena)
    assert ctx2.address == ctx.address
    assert ctypes.string_at(ctx2.in_args[0].address, BUFFER_WINDOW) == b"y\0" + bytes(BUFFER_WINDOW - 2)
    addresses = []
    t = threading.Thread(target=lambda: addresses.append(build_context("lookup", "pre", [b"z\0"]).address))
    t.start()
    t.join()
    assert addresses[0] != build_context("lookup", "pre", [b"z\0"]).address


def test_bad_arguments():
    with pytest.raises(ValueError):
        build_context("lookup", "middle", [b"x\0"])
    with pytest.raises(ValueError):
        build_context("create", "post", [bytes(16), b"a\0", bytes(128), bytes(16), bytes(8)],
                      [bytes(128), bytes(16)])


def test_layout_cache_memory_is_bounded_whatever_the_request_shapes():
    """Issue 11 item 13: every distinct name length or write size was a new layout holding
    a zeroed copy of all its windows (8-16 KiB), up to 4096 per thread: a daemon's RSS
    grew by ~90 MB under load.  Layouts now hold their header only, at most MAX_LAYOUTS."""
    import tracemalloc

    arena = Arena()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(1, 2500):
            build_context("write", "post", [bytes(40), n], [bytes(8)], arena=arena)
            build_context("lookup", "pre", [b"n" * (n % 250 + 1) + b"\0"], arena=arena)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(arena.layouts) <= MAX_LAYOUTS
    assert held < MAX_LAYOUTS * 2048, f"{held} bytes held by {len(arena.layouts)} layouts"


def test_windows_are_zero_again_after_a_program_wrote_into_them():
    arena = Arena()
    ctx = build_context("lookup", "post", [b"a\0"], [bytes(128), bytes(32)], arena=arena)
    for buf in ctx.out_args:
        ctypes.memset(buf.address, 0xAB, buf.window)
    again = build_context("lookup", "post", [b"a\0"], [bytes(128), bytes(32)], arena=arena)
    other = build_context("lookup", "pre", [b"bb\0"], arena=arena)
    for c in (again, other):
        for buf in c.in_args + c.out_args:
            tail = ctypes.string_at(buf.address + buf.length, buf.window - buf.length)
            assert tail == bytes(len(tail))


def test_one_request_shape_builds_its_layout_once():
    """What keeps a build cheap (cost itself is measured in bench/engine_bench.py):
    repeated requests of one shape reuse one cached layout."""
    arena = thread_arena()
    build_context("lookup", "post", [b"name\0"], [bytes(128), bytes(32)])
    before = len(arena.layouts)
    for _ in range(200):
        build_context("lookup", "post", [b"name\0"], [bytes(128), bytes(32)], nodeid=5)
    assert len(arena.layouts) == before


# ---- simulate

def test_simulate_pre_request_and_result():
    p = prepare("mkdir", "pre", {"in.mode": 0o755, "name": "d", "uid": 5, "gid": 6, "nodeid": 3})
    assert p.caller.uid == 5 and p.caller.gid == 6 and p.context.nodeid == 3
    assert p.context.read_in(1) == b"d\0"
    assert p.before["in.mode"] == 0o755
    in0 = p.context.in_args[0].address
    ctypes.c_uint32.from_address(in0).value = 0o700            # program writes out_args[0]->mode
    r = p.result(abi.BACKING | abi.POST_FILTER)
    assert r.decision == "allow" and r.bits == ["BACKING", "POST_FILTER"]
    assert r.changed == {"in.mode": (0o755, 0o700)}
    assert r.describe() == "allow BACKING|POST_FILTER"
    deny = p.result(-1 & 0xFFFFFFFF)
    assert deny.denied and deny.errno == 1 and deny.errno_name == "EPERM"


def test_simulate_post_request():
    p = prepare("lookup", "post", {"name": "x", "error": "ENOENT", "out.attr.mode": 0o644})
    assert p.error_in == -2 and p.context.error_in == -2
    assert abi.FUSE_ENTRY_OUT.unpack(p.context.read_out(0))["attr.mode"] == 0o644
    ctypes.c_uint64.from_address(p.context.out_args[0].address).value = 42
    r = p.result(0)
    assert r.changed == {"out.nodeid": (0, 42)} and r.final_errno == 2


def test_simulate_presets():
    ins, outs = request_args("getattr", "post", {})
    assert abi.FUSE_GETATTR_IN.unpack(ins[0])["fh"] == 2**64 - 1 and len(outs[0]) == 104
    ins, outs = request_args("read", "post", {"in.size": 4096})
    assert abi.RW_RESULT.unpack(outs[0])["ret"] == 4096
    ins, outs = request_args("write", "pre", {"in.size": 10})
    assert ins[1] == 10
    ins, outs = request_args("readdir", "pre", {})
    assert abi.FUSE_READ_IN.unpack(ins[0])["size"] == 4096
    ins, outs = request_args("getxattr", "post", {"in.size": 0, "name": "user.a"})
    assert outs == [bytes(8)]


def test_simulate_errors():
    assert parse_errno("EEXIST") == -17 and parse_errno(17) == -17 and parse_errno(-17) == -17
    assert parse_errno("-ENOENT") == -2
    for op, phase, fields in (("lookup", "pre", {"out.nodeid": 1}), ("nope", "pre", {}),
                              ("lookup", "pre", {"bogus": 1}), ("lookup", "pre", {"name": "a\0b"}),
                              ("lookup", "pre", {"name": "x" * 300})):
        with pytest.raises(RequestError):
            request_args(op, phase, fields)
    with pytest.raises(RequestError):
        parse_errno("ENOTHING")
