"""The JIT: same semantics as the interpreter, native code, faults instead of crashes."""
from __future__ import annotations

import threading

import pytest

from fdsl import abi
from fdsl.vm import isa, simulate
from fdsl.vm.context import build_context
from fdsl.vm.filterset import FilterSet
from fdsl.errors import VmFault
from fdsl.vm.helpers import Caller
from fdsl.vm.interpreter import Interpreter
from fdsl.vm.jit import Jit, compile_program
from fdsl.vm.verifier import AccessCheck, PtrKind, verify

from vm_util import (DW, EXIT, B, W, alu, alur, atomic, call,
                     execute, ja, jmp, ld_map, ldx, mov, movr, prog, ret, runtime_with, sample_context, st)


def test_budget_fault_names_the_same_slot_as_the_interpreter():
    loop = prog(mov(0, 0), alu(isa.BPF_ADD, 0, 1), mov(1, 2), ja(-3), EXIT)
    faults = []
    for kind in ("interp", "jit"):
        with pytest.raises(VmFault) as info:
            execute(kind, loop, budget=1001)
        faults.append((info.value.index, info.value.reason))
    assert faults[0] == faults[1]
    assert "budget" in faults[0][1]


def write_data_program():
    """WRITE|PRE: read the first byte of the data argument (a NULL pointer)."""
    return ret(mov(0, abi.BACKING), ldx(W, 2, 1, 8),
               jmp(isa.BPF_JNE, 2, abi.OPS["write"].number | abi.PREFILTER, 2),
               ldx(DW, 3, 1, 64), ldx(B, 0, 3, 0))


def test_null_buffer_is_a_fault_not_a_crash():
    program = write_data_program()
    vp = verify(program, [], section="t")           # the verifier cannot know it is NULL
    assert vp.mem_kinds[4] <= {PtrKind.BUF_RO, PtrKind.BUF_RW}
    assert vp.checks[4] is AccessCheck.NULL
    prepared = simulate.prepare("write", "pre", {"in.size": 3, "in.fh": 1})
    assert prepared.context.in_args[1].address == 0
    for vm in (Jit(program, verified=vp), Jit(program), Interpreter(program)):
        with pytest.raises(VmFault) as info:
            vm.run(prepared.context, Caller())
        assert info.value.index == 4
        assert info.value.reason == "invalid read of 1 bytes at 0x0"


def test_verified_code_skips_region_checks():
    program = ret(ldx(DW, 2, 1, 40), ldx(B, 0, 2, 0), st(DW, 10, -8, 1), ldx(DW, 3, 10, -8),
                  alur(isa.BPF_ADD, 0, 3))
    vp = verify(program, [], section="t")
    assert not Jit(program, verified=vp).code.needs_regions
    ctx = build_context("lookup", "pre", [b"abc\0"])
    assert Jit(program, verified=vp).run(ctx, Caller()) == ord("a") + 1


def test_compiled_code_is_cached_and_shared_between_map_instances():
    program = ret(st(W, 10, -4, 0), ld_map(1, 0), movr(2, 10), alu(isa.BPF_ADD, 2, -4), call(1),
                  jmp(isa.BPF_JEQ, 0, 0, 2), mov(1, 1), atomic(DW, 0, 1, 0, isa.BPF_ADD), mov(0, 0))
    first = compile_program(program, 1)
    assert compile_program(program, 1) is first
    rt1 = runtime_with((abi.BPF_MAP_TYPE_ARRAY, 4, 8, 1, "a"))
    rt2 = runtime_with((abi.BPF_MAP_TYPE_ARRAY, 4, 8, 1, "a"))
    jit1, jit2 = Jit(program, rt1), Jit(program, rt2)
    assert jit1.code is jit2.code
    ctx = sample_context()
    for _ in range(3):
        jit1.run(ctx, Caller())
    jit2.run(ctx, Caller())
    assert rt1.maps[0].int_items() == [(0, 3)]
    assert rt2.maps[0].int_items() == [(0, 1)]


def test_helper_fault_propagates_through_the_callback():
    rt = runtime_with((abi.BPF_MAP_TYPE_HASH, 4, 8, 4, "h"))
    program = ret(ld_map(1, 0), mov(2, 64), call(1))
    for kind in ("interp", "jit"):
        with pytest.raises(VmFault) as info:
            execute(kind, program, runtime=rt)
        assert info.value.index == 3
        assert "helper 1" in info.value.reason


def test_trace_printk_from_native_code():
    rt = runtime_with()
    fmt = int.from_bytes(b"hi %u\0\0\0", "little")
    program = ret(*isa.ld_imm64(1, fmt), ldx(DW, 0, 1, 0), st(DW, 10, -8, 0))
    # build the format on the stack: st can only store 32-bit imms, so use two stores
    program = ret(st(W, 10, -8, fmt & 0xFFFFFFFF), st(W, 10, -4, fmt >> 32), movr(1, 10),
                  alu(isa.BPF_ADD, 1, -8), mov(2, 8), mov(3, 77), call(6))
    assert execute("jit", program, runtime=rt) == 5
    assert rt.sink.recent() == ["hi 77"]


def test_concurrent_runs_on_threads_agree(bpf_c_object):
    fs = FilterSet.load(bpf_c_object("hide_name"), backend="jit")
    errors = []

    def worker(name: str, expected: int) -> None:
        for _ in range(300):
            prepared = simulate.prepare("lookup", "pre", {"name": name})
            got = fs.run("fuse/hide", prepared.context, prepared.caller)
            if got != expected:
                errors.append((name, got))

    threads = [threading.Thread(target=worker, args=args)
               for args in (("secret", -2), ("public", 2), ("secret", -2), ("secrets", 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_ir_has_one_block_per_jump_target():
    program = ret(mov(0, 1), jmp(isa.BPF_JEQ, 1, 0, 1), mov(0, 2), mov(0, 3))
    code = compile_program(program, 0, opt=0)
    # leaders: 0, 2 (fall-through), 3 (target)
    assert sorted(code.block_slots) == [0, 2, 3]
    assert "define i64 @\"bpf_prog\"" in code.ir_text or "define i64 @bpf_prog" in code.ir_text


def test_cache_eviction_frees_code_safely(monkeypatch):
    """Each engine owns its target machine: evicting old code must not break new compiles."""
    from fdsl.vm import jit as jit_mod

    monkeypatch.setattr(jit_mod, "_CACHE_MAX", 2)
    for value in range(8):
        program = ret(mov(0, 1000 + value), alu(isa.BPF_ADD, 0, 1))
        assert execute("jit", program) == 1001 + value
    assert len(jit_mod._CACHE) <= 2


def test_run_reports_faults_and_signed_results():
    ctx = sample_context()
    assert Jit(ret(mov(0, -22))).run(ctx, Caller()) == -22
    assert Jit(ret(mov(0, 0x7FFFFFFF))).run(ctx, Caller()) == 0x7FFFFFFF
    with pytest.raises(VmFault, match="invalid read"):
        Jit(ret(mov(1, 0), ldx(DW, 0, 1, 8))).run(ctx, Caller())
    # a run after a fault starts clean
    assert Jit(ret(mov(0, 3))).run(ctx, Caller()) == 3


# ---- on-disk object cache

def _fresh_compile(program, monkeypatch):
    """Compile bypassing the per-process cache (so the disk cache is consulted)."""
    from fdsl.vm import jit as jit_mod

    monkeypatch.setattr(jit_mod, "_CACHE", {})
    return Jit(program)


def test_disk_cache_reuses_code_and_ignores_corrupted_entries(jit_cache_dir, monkeypatch):
    ctx = sample_context()
    program = ret(mov(0, 7), alu(isa.BPF_ADD, 0, 5), jmp(isa.BPF_JEQ, 0, 12, 1), mov(0, 0))
    first = _fresh_compile(program, monkeypatch)
    assert not first.code.from_disk and first.run(ctx, Caller()) == 12
    [entry] = list(jit_cache_dir.glob("*.jit"))
    good = entry.read_bytes()

    again = _fresh_compile(program, monkeypatch)
    assert again.code.from_disk and again.run(ctx, Caller()) == 12
    assert sorted(again.code.block_slots) == sorted(first.code.block_slots)

    damaged = [good[:len(good) // 2],                                       # truncated
               good[:-40] + bytes(b ^ 0xFF for b in good[-40:]),           # object bytes flipped
               b"garbage", b""]
    for bad in damaged:
        entry.write_bytes(bad)
        rebuilt = _fresh_compile(program, monkeypatch)
        assert not rebuilt.code.from_disk and rebuilt.run(ctx, Caller()) == 12
        assert entry.read_bytes() == good            # the entry was rewritten
    assert _fresh_compile(program, monkeypatch).code.from_disk


def test_disk_cached_code_calls_helpers(jit_cache_dir, monkeypatch):
    """The helper callback's address is read from env, so cached code works in any process."""
    fmt = int.from_bytes(b"hi %u\0\0\0", "little")
    program = ret(st(W, 10, -8, fmt & 0xFFFFFFFF), st(W, 10, -4, fmt >> 32), movr(1, 10),
                  alu(isa.BPF_ADD, 1, -8), mov(2, 8), mov(3, 77), call(6))
    for expect_disk in (False, True):
        from fdsl.vm import jit as jit_mod

        monkeypatch.setattr(jit_mod, "_CACHE", {})
        rt = runtime_with()
        vm = Jit(program, rt)
        assert vm.code.from_disk == expect_disk
        assert vm.run(sample_context(), Caller()) == 5 and rt.sink.recent() == ["hi 77"]


def test_disk_cache_can_be_disabled(tmp_path, monkeypatch):
    monkeypatch.setenv("FDSL_JIT_CACHE", "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    vm = _fresh_compile(ret(mov(0, 3)), monkeypatch)
    assert vm.run(sample_context(), Caller()) == 3 and not any(tmp_path.rglob("*.jit"))


# ---- tiered start-up (backend="auto")

TIERED_POLICY = """
counter hits
on lookup pre {
    count hits
    if name endswith ".key" or name in {".env", "id_rsa"} { deny ENOENT }
}
"""
TIERED_NAMES = ["server.key", ".env", "id_rsa", "README.md", "a.keys", "x" * 200 + ".key", "k"]


def _lookup(fs: FilterSet, name: str) -> int:
    ctx = build_context("lookup", "pre", [name.encode() + b"\0"], nodeid=1)
    return fs.run("fuse/root", ctx, Caller(1000, 100, 1, 1))


def _hits(fs: FilterSet) -> int:
    [(_, value)] = fs.maps[0].int_items()
    return value


def test_tiered_engine_serves_interpreter_then_switches_to_jit(monkeypatch):
    from fdsl.vm import filterset as engine
    from fdsl.compile.driver import compile_source

    obj = compile_source(TIERED_POLICY, "tiered.fdsl").obj
    release = threading.Event()
    real_jit_for = engine._jit_for

    def slow_jit_for(*args):
        assert release.wait(60)
        return real_jit_for(*args)

    monkeypatch.setattr(engine, "_jit_for", slow_jit_for)
    reference = FilterSet.load(obj, backend="interp")
    expected = [_lookup(reference, n) for n in TIERED_NAMES]

    fs = FilterSet.load(obj, backend="auto")
    assert fs.backend == "auto" and fs.backend_of("fuse/root") == "interp"
    assert not fs.wait_jit(0)
    assert [_lookup(fs, n) for n in TIERED_NAMES] == expected

    # requests keep flowing on another thread while the switch happens
    seen, stop = [], threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            seen.append([_lookup(fs, n) for n in TIERED_NAMES])

    worker = threading.Thread(target=traffic)
    worker.start()
    release.set()
    assert fs.wait_jit(60)
    stop.set()
    worker.join()
    assert fs.backend_of("fuse/root") == "jit" and not fs.jit_errors
    assert isinstance(fs.vm("fuse/root"), Jit)
    assert [_lookup(fs, n) for n in TIERED_NAMES] == expected
    assert all(results == expected for results in seen)
    # both tiers counted into the same map
    assert _hits(fs) == len(TIERED_NAMES) * (2 + len(seen))


def test_tiered_engine_keeps_interpreter_when_jit_fails(monkeypatch):
    from fdsl.vm import filterset as engine
    from fdsl.compile.driver import compile_source

    def broken(*args):
        raise RuntimeError("no JIT today")

    monkeypatch.setattr(engine, "_jit_for", broken)
    fs = FilterSet.load(compile_source(TIERED_POLICY, "tiered.fdsl").obj, backend="auto")
    assert fs.wait_jit(60)
    assert fs.backend_of("fuse/root") == "interp" and "fuse/root" in fs.jit_errors
    assert _lookup(fs, "server.key") == -2 and _lookup(fs, "notes.txt") == abi.BACKING


def test_jit_backend_is_jit_only():
    from fdsl.compile.driver import compile_source

    fs = FilterSet.load(compile_source(TIERED_POLICY, "tiered.fdsl").obj, backend="jit")
    assert fs.backend_of("fuse/root") == "jit" and fs.wait_jit(0)


def test_disk_cache_ignores_entries_others_may_write(jit_cache_dir, monkeypatch):
    """Cached native code is only trusted in a directory nobody else can write to."""
    import os

    program = ret(mov(0, 9))
    assert not _fresh_compile(program, monkeypatch).code.from_disk
    [entry] = list(jit_cache_dir.glob("*.jit"))
    os.chmod(entry, 0o666)
    assert not _fresh_compile(program, monkeypatch).code.from_disk
    os.chmod(entry, 0o600)
    os.chmod(jit_cache_dir, 0o777)
    vm = _fresh_compile(program, monkeypatch)
    assert not vm.code.from_disk and vm.run(sample_context(), Caller()) == 9
    os.chmod(jit_cache_dir, 0o700)
    assert _fresh_compile(program, monkeypatch).code.from_disk
