"""JIT: verified BPF -> LLVM IR (llvmlite) -> native code (MCJIT), called through ctypes.

Only for programs the verifier accepted; the results (r0, memory effects,
faults) must be exactly the interpreter's (`fdsl.vm.interpreter` is the
reference, `tests/vm/test_differential.py` checks it).

Shape of the generated code (built by `fdsl.vm.jit_ir`):

* `i64 bpf_prog(ctx, env, uid, gid, pid, tgid)` returns r0; the caller's
  ids are arguments, so helpers 14/15 are inlined; `env` points to a small
  per-thread record (ENV_* words below) with the map-handle table, the
  region table, and the fault record the code fills before returning early.
  `bpf_run` (same arguments) is the hot path: it returns r0 as a sign-
  extended s32, or RUN_FAULTED, so Python does one ctypes call and one
  compare per run;
* BPF registers are allocas (mem2reg turns them into SSA values), the BPF
  stack is a 512-byte alloca, one basic block per jump target;
* a load/store whose base register is statically known to be the context or
  the frame pointer with a constant in-bounds offset is emitted directly;
  every other access (argument buffers, which may be NULL, map values,
  pointers reloaded from the stack) goes through a run-time check against
  the stack and the region table, exactly the interpreter's check;
* helpers 1, 2, 6 call back into Python through one ctypes callback whose
  address the code reads from env (ENV_HELPER); the callback reaches the current run
  through a thread-local, so concurrent runs on other threads are fine;
* an instruction counter, bumped once per basic block, enforces the same
  budget as the interpreter (and reports the same faulting slot; the
  instructions before it in that block do not run, unlike the interpreter,
  which only matters for code that is already faulting);
* compiled code does not depend on a map instance (map handles are read
  from the env table), so `compile_program` caches it per instruction bytes
  and a reloaded object reuses it.  Every MCJIT engine owns (and frees) its
  own target machine, so each compilation creates one.
"""
from __future__ import annotations

import ctypes
import logging
import threading
from dataclasses import dataclass
from typing import Sequence

import llvmlite.binding as llvm

from fdsl.vm import isa
from fdsl.errors import VmFault
from fdsl.vm.helpers import Caller
from fdsl.vm.interpreter import (DEFAULT_BUDGET, MASK64, REASON_BUDGET, REASON_FELL_OFF,
                              STACK_SIZE, Memory, Runtime, reason_access)
from fdsl.vm.isa import Insn
from fdsl.vm.jit_cache import ObjectCache
from fdsl.vm.maps import Region

log = logging.getLogger("fdsl.vm.jit")

from fdsl.vm.jit_ir import (ENV_FAULT, ENV_FAULT_ARG, ENV_FAULT_INDEX, ENV_FAULT_SIZE, ENV_HELPER, ENV_MAPS,
                           ENV_NREGIONS, ENV_REGIONS, ENV_STACK, ENV_WORDS, FAULT_BUDGET, FAULT_FELL_OFF,
                           FAULT_HELPER, FAULT_READ, FAULT_WRITE, RUN_FAULTED, _Codegen)

_HELPER_CB_TYPE = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64,
                                   ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64,
                                   ctypes.c_uint64)
# c_void_p arguments convert from int faster than c_uint64 ones (ctypes fast path)
_PROG_TYPE = ctypes.CFUNCTYPE(ctypes.c_uint64, *[ctypes.c_void_p] * 6)
_RUN_TYPE = ctypes.CFUNCTYPE(ctypes.c_int64, *[ctypes.c_void_p] * 6)


# ------------------------------------------------------------------ LLVM setup (once per process)

_LLVM_LOCK = threading.Lock()
_target: llvm.Target | None = None


def _target_machine(codegen_opt: int = 2) -> llvm.TargetMachine:
    """A fresh target machine: an MCJIT engine takes ownership of (and frees) its own."""
    global _target
    if _target is None:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        _target = llvm.Target.from_triple(llvm.get_process_triple())
    return _target.create_target_machine(opt=codegen_opt, jit=True)


# Programs above this many slots (thousands of blocks in one function: name tests
# unrolled per size) skip O2, whose cost grows much faster than the code: SROA turns
# the register allocas into SSA, instcombine and simplifycfg clean up, and the code
# generator runs at -O0 (fast instruction selection and register allocation).
# hide_secrets (~5k slots): ~0.7 s with O2, ~0.15 s this way.
BIG_PROGRAM = 2000


def _light_pipeline(mod: llvm.ModuleRef, tm: llvm.TargetMachine) -> None:
    pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=0))
    fpm = llvm.create_new_function_pass_manager()
    fpm.add_sroa_pass()
    fpm.add_instruction_combine_pass()
    fpm.add_simplify_cfg_pass()
    for fn in mod.functions:
        if not fn.is_declaration:
            fpm.run(fn, pb)


# ------------------------------------------------------------------ per-thread run state for callbacks

@dataclass
class _RunState:
    """What a helper callback needs to know about the run in progress on its thread."""

    runtime: Runtime
    regions: Sequence[Region]
    caller: Caller
    fault: VmFault | None = None

    def helper(self, env: int, helper_id: int, args: tuple[int, int, int, int, int], pc: int) -> int:
        stack_lo = ctypes.c_uint64.from_address(env + 8 * ENV_STACK).value
        memory = Memory([Region(stack_lo, STACK_SIZE, True, "stack"), *self.regions,
                         *self.runtime.regions])
        return self.runtime.helper_call(memory, self.caller)(helper_id, args, pc)


_tls = threading.local()


def _helper_trampoline(env: int, helper_id: int, pc: int, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    """The one ctypes callback the native code calls for helpers 1, 2 and 6."""
    state: _RunState = _tls.state
    try:
        return state.helper(env, helper_id, (r1, r2, r3, r4, r5), pc) & MASK64
    except VmFault as fault:
        state.fault = fault
    except Exception as err:  # a bug in a helper must not unwind through C frames
        state.fault = VmFault(pc, f"helper {helper_id} failed: {type(err).__name__}: {err}")
    ctypes.c_uint64.from_address(env + 8 * ENV_FAULT).value = FAULT_HELPER
    return 0


_HELPER_CB = _HELPER_CB_TYPE(_helper_trampoline)
_HELPER_CB_ADDR = ctypes.cast(_HELPER_CB, ctypes.c_void_p).value


# ------------------------------------------------------------------ compiled program

class CompiledProgram:
    """Native code for one program; independent of any map instance, so it is cached.

    With `disk_cache` (the default) the object code is also kept on disk
    (`ObjectCache`), keyed by everything that shapes it, so a later process
    loading the same program skips IR generation, optimisation and code
    generation.  Code loaded from the disk cache has no `optimized_ir`."""

    def __init__(self, insns: Sequence[Insn], nmaps: int, checks, budget: int, opt: int = 2,
                 disk_cache: bool = True) -> None:
        self._source = (list(insns), nmaps, checks, budget)
        self._ir_text: str | None = None
        self.optimized_ir: str | None = None
        self.from_disk = False
        cache = ObjectCache.default() if disk_cache else None
        key = cache.key(insns, nmaps, checks, budget, opt) if cache else ""
        entry = cache.get(key) if cache else None
        if entry is not None and self._load_object(key, *entry):
            self.from_disk = True
        else:
            self._compile(insns, nmaps, checks, budget, opt, cache, key)
        self.fn = _PROG_TYPE(self.address)
        self.run_fn = _RUN_TYPE(self.run_address)

    @property
    def ir_text(self) -> str:
        """The unoptimised IR (regenerated on demand for code that came from the disk cache)."""
        if self._ir_text is None:
            insns, nmaps, checks, budget = self._source
            self._ir_text = _Codegen(insns, nmaps, budget, checks).build()[0]
        return self._ir_text

    def _compile(self, insns, nmaps: int, checks, budget: int, opt: int,
                 cache: "ObjectCache | None", key: str) -> None:
        gen = _Codegen(insns, nmaps, budget, checks)
        self._ir_text, self.block_slots = gen.build()
        self.needs_regions = gen.needs_regions
        self.uses_callbacks = gen.uses_callbacks
        objects: list[bytes] = []
        light = opt > 0 and len(insns) > BIG_PROGRAM
        with _LLVM_LOCK:
            tm = _target_machine(codegen_opt=0 if light else 2)
            mod = llvm.parse_assembly(self._ir_text)
            mod.verify()
            if light:
                _light_pipeline(mod, tm)
            elif opt:
                pto = llvm.create_pipeline_tuning_options(speed_level=opt)
                pb = llvm.create_pass_builder(tm, pto)
                pb.getModulePassManager().run(mod, pb)
            self.optimized_ir = str(mod)
            self._engine = llvm.create_mcjit_compiler(mod, tm)
            if cache is not None:
                self._engine.set_object_cache(notify_func=lambda _mod, obj: objects.append(obj))
            self._engine.finalize_object()
            self.address = self._engine.get_function_address("bpf_prog")
            self.run_address = self._engine.get_function_address("bpf_run")
        if cache is not None and objects:
            cache.put(key, self._meta(), objects[0])

    def _meta(self) -> dict:
        return {"block_slots": [[start, slots] for start, slots in self.block_slots.items()],
                "needs_regions": self.needs_regions, "uses_callbacks": self.uses_callbacks}

    def _load_object(self, key: str, meta: dict, obj: bytes) -> bool:
        """Load cached object code through MCJIT's object cache; False if unusable."""
        try:
            block_slots = {int(start): [int(x) for x in slots] for start, slots in meta["block_slots"]}
            needs_regions, uses_callbacks = bool(meta["needs_regions"]), bool(meta["uses_callbacks"])
        except (KeyError, TypeError, ValueError):
            return False
        with _LLVM_LOCK:
            stub = llvm.parse_assembly("")
            stub.name = key
            engine = llvm.create_mcjit_compiler(stub, _target_machine())
            engine.set_object_cache(getbuffer_func=lambda _mod: obj)
            engine.finalize_object()
            address = engine.get_function_address("bpf_prog")
            run_address = engine.get_function_address("bpf_run")
        if not address or not run_address:
            return False
        self._engine, self.address, self.run_address = engine, address, run_address
        self.block_slots, self.needs_regions, self.uses_callbacks = block_slots, needs_regions, uses_callbacks
        return True




_CACHE: dict[tuple, CompiledProgram] = {}
_CACHE_MAX = 256


def compile_program(insns: Sequence[Insn], nmaps: int, checks=None, budget: int = DEFAULT_BUDGET,
                    opt: int = 2) -> CompiledProgram:
    """Compiled code for these instructions, from the per-process cache when possible."""
    kinds_key = tuple(sorted((pc, c.value) for pc, c in (checks or {}).items()))
    key = (isa.encode(list(insns)), nmaps, kinds_key, budget, opt)
    with _LLVM_LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    compiled = CompiledProgram(insns, nmaps, checks, budget, opt)
    with _LLVM_LOCK:
        while _CACHE and len(_CACHE) >= _CACHE_MAX:   # oldest first; live Jits keep their code
            _CACHE.pop(next(iter(_CACHE)))
        return _CACHE.setdefault(key, compiled)


class Jit:
    """A compiled program bound to one runtime (maps, log sink); `run` runs it once.

    Compilation (or the cache lookup) happens in the constructor; LLVM work
    is serialised by a process-wide lock, execution is reentrant.  Pass the
    `VerifiedProgram` so accesses the verifier proved safe skip the run-time
    region walk (argument buffers then only need a NULL check).
    """

    def __init__(self, insns: Sequence[Insn], runtime: Runtime | None = None, *,
                 verified=None, budget: int = DEFAULT_BUDGET, opt: int = 2) -> None:
        self.runtime = runtime if runtime is not None else Runtime()
        self.budget = budget
        self.code = compile_program(insns, len(self.runtime.maps), getattr(verified, "checks", None),
                                    budget, opt)
        self._fn = self.code.fn
        self._run = self.code.run_fn
        self._needs_regions = self.code.needs_regions
        self._uses_callbacks = self.code.uses_callbacks
        self._static_regions = _flatten(self.runtime.regions)
        handles = [self.runtime.map_handle(i) for i in range(len(self.runtime.maps))]
        self._handles = (ctypes.c_uint64 * max(1, len(handles)))(*handles)
        self._local = threading.local()
        self._needs_prepare = self._needs_regions or self._uses_callbacks

    def _env(self) -> "_ThreadEnv":
        """This thread's env record for this program (map table filled in once)."""
        try:
            return self._local.env
        except AttributeError:
            env = self._local.env = _ThreadEnv()
            env.words[ENV_MAPS] = ctypes.addressof(self._handles)
            return env

    def _prepare(self, env: "_ThreadEnv", regions: Sequence[Region], caller: Caller) -> _RunState | None:
        if self._needs_regions:
            env.set_regions(_flatten(regions) + self._static_regions)
        if self._uses_callbacks:
            state = _tls.state = _RunState(self.runtime, regions, caller)
            return state
        return None

    def run(self, ctx, caller: Caller) -> int:
        """Run on a `fdsl.vm.context.Context`; r0 as a signed 32-bit value (the hot path)."""
        env = self._env()
        state = self._prepare(env, ctx.regions, caller) if self._needs_prepare else None
        r0 = self._run(ctx.address, env.address, caller.uid, caller.gid, caller.pid, caller.tgid)
        if r0 == RUN_FAULTED:
            raise self._fault(env.words, state)
        return r0

    def execute(self, ctx_address: int, regions: Sequence[Region], caller: Caller) -> int:
        """Run from slot 0 with r1 = ctx_address; returns r0 (unsigned 64-bit)."""
        env = self._env()
        state = self._prepare(env, regions, caller)
        r0 = self._fn(ctx_address, env.address, caller.uid, caller.gid, caller.pid, caller.tgid)
        if env.words[ENV_FAULT]:
            raise self._fault(env.words, state)
        return r0

    def _fault(self, words, state: _RunState | None) -> VmFault:
        code = words[ENV_FAULT]
        index, arg, size = words[ENV_FAULT_INDEX], words[ENV_FAULT_ARG], words[ENV_FAULT_SIZE]
        if code == FAULT_READ:
            return VmFault(index, reason_access("read", size, arg))
        if code == FAULT_WRITE:
            return VmFault(index, reason_access("write", size, arg))
        if code == FAULT_BUDGET:
            return VmFault(self.code.block_slots[index][arg], REASON_BUDGET)
        if code == FAULT_FELL_OFF:
            return VmFault(index, REASON_FELL_OFF)
        if code == FAULT_HELPER and state is not None and state.fault is not None:
            return state.fault
        return VmFault(index, f"invalid instruction {arg:#04x}")


class _ThreadEnv:
    """One thread's env record and region table, reused by every run on that thread."""

    def __init__(self) -> None:
        self.words = (ctypes.c_uint64 * ENV_WORDS)()
        self.words[ENV_HELPER] = _HELPER_CB_ADDR or 0
        self.address = ctypes.addressof(self.words)
        self._table = (ctypes.c_uint64 * 48)()

    def set_regions(self, flat: list[int]) -> None:
        if len(flat) > len(self._table):
            self._table = (ctypes.c_uint64 * (2 * len(flat)))()
        self._table[:len(flat)] = flat  # type: ignore[assignment]  # ctypes arrays take ints
        self.words[ENV_REGIONS] = ctypes.addressof(self._table)
        self.words[ENV_NREGIONS] = len(flat) // 3


def _flatten(regions: Sequence[Region]) -> list[int]:
    """(start, end, writable) u64 triples, the layout the native check walks."""
    flat: list[int] = []
    for r in regions:
        if r.length > 0:
            flat += (r.address, r.address + r.length, 1 if r.writable else 0)
    return flat
