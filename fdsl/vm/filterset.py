"""The execution facade: load an object, verify every program, prepare a VM per program.

`FilterSet.load(data, backend="jit"|"interp"|"auto", abi_name=None)` is what the
daemon, `fdsl run` and `fdsl test` use ("auto" = tiered start-up, see `FilterSet`).
The object's ABI (`FilterSet.abi`) is the id in its metadata, else `abi_name`
(`--abi`, for clang-built objects), else ACK (`BpfObject.abi`; a contradicting
`abi_name` raises `fdsl.abi.AbiChoiceError`); the programs are verified under
its rules and `fdsl.vm.sequence` runs them under its return codes.  Loading is
all-or-nothing: a `LoadError` or `VerifierError` propagates and nothing runs.
After loading, `run` is thread-safe: the VMs keep no per-run state outside the
calling thread (the interpreter's registers are locals, the JIT's stack is a
native alloca and its env record is per thread), and the maps lock their own
updates.

JIT code is cached per program (`fdsl.vm.jit.compile_program`, and on disk by
`fdsl.vm.jit.ObjectCache`), so loading the same object twice (a daemon reload,
tests, a restart) does not compile again; the code reads map handles from a
per-FilterSet table, so it is shared safely.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable

from fdsl import abi
from fdsl.vm import loader, verifier
from fdsl.errors import FdslError, VerifierError, VmFault
from fdsl.vm.helpers import Caller, LogSink
from fdsl.vm.interpreter import DEFAULT_BUDGET, Interpreter, Runtime
from fdsl.vm.maps import MapTable

BACKENDS = ("jit", "interp", "auto")
LOG_LINES = 1000
# Programs above this many slots are served by the interpreter whatever the backend:
# LLVM's time and memory grow faster than the code (20k slots took minutes and
# 320 MB here, 100k 326 s and 640 MB), and a program that big is rare (the compiler's
# hide_secrets example is ~5k).  `jit_skipped` records each one.
MAX_JIT_SLOTS = 8192



class ProgramRejected(VmFault):
    """A run of a program that the verifier refused at load time (partial loads)."""

    def __init__(self, error: VerifierError) -> None:
        super().__init__(error.index, f"program {error.section} was rejected by the verifier: "
                                      f"{error.reason}")
        self.error = error


@dataclass
class LoadedProgram:
    section: str
    verified: verifier.VerifiedProgram
    vm: Any            # Interpreter | Jit; exposes run(ctx, caller) -> int


class FilterSet:
    """One loaded object: its programs (each behind a VM), maps, metadata and log.

    Backends:

    * ``"jit"``: every program is compiled to native code before `load`
      returns (JIT only; what the tests use).
    * ``"interp"``: the reference interpreter only.
    * ``"auto"`` (tiered, meant for the daemon): `load` returns as soon as the
      programs are verified and serves every program with the interpreter;
      a background thread compiles them with the JIT and switches each
      program over when its code is ready.  Both VMs share the maps and the
      log, and give identical results, so the switch is invisible except for
      speed; a run that started on the interpreter finishes there.  If a
      compilation fails, that program stays on the interpreter
      (`jit_errors`).  `wait_jit()` blocks until the background work is done;
      `backend_of(section)` says which VM serves a program now.

    In every mode a program of more than `MAX_JIT_SLOTS` slots stays on the
    interpreter (`jit_skipped` says why), so no load waits minutes for LLVM.

    `load` only fails for load/verifier errors, in every mode.
    """

    def __init__(self, obj: loader.BpfObject, programs: dict[str, LoadedProgram], runtime: Runtime,
                 backend: str, record: abi.Abi = abi.ACK) -> None:
        self.object = obj
        self.abi = record
        self.programs = programs
        self.runtime = runtime
        self.backend = backend
        self._runners = {name: lp.vm.run for name, lp in programs.items()}
        self.jit_errors: dict[str, Exception] = {}
        self.jit_skipped: dict[str, str] = {}
        self.rejected: dict[str, VerifierError] = {}
        self._jit_done = threading.Event()
        self._jit_done.set()
        self._jit_budget: int | None = None     # set while an "auto" tier-up is pending

    @classmethod
    def load(cls, data: bytes, backend: str = "jit", *, log_callback: Callable[[str], None] | None = None,
             log_lines: int = LOG_LINES, budget: int = DEFAULT_BUDGET,
             partial: bool = False, abi_name: str | None = None,
             defer_jit: bool = False) -> "FilterSet":
        """Load + verify + prepare; raises LoadError, AbiChoiceError, and VerifierError
        unless `partial`.  `defer_jit` ("auto"): the tier-up waits for `start_jit()`."""
        if backend not in BACKENDS:
            raise FdslError(f"unknown backend {backend!r} (expected one of {', '.join(BACKENDS)})")
        obj = loader.load_object(data)
        record = obj.abi(abi_name)
        verified: dict[str, verifier.VerifiedProgram] = {}
        rejected: dict[str, VerifierError] = {}
        for name, prog in obj.programs.items():
            try:
                verified[name] = verifier.verify(prog, obj.maps, section=name,
                                                 abi_record=record)
            except VerifierError as err:
                if not partial:
                    raise
                rejected[name] = err
        runtime = Runtime(MapTable(obj.maps), LogSink(log_lines, log_callback))
        programs = {}
        for name, vp in verified.items():
            if backend == "jit" and not _too_big_to_jit(vp):
                vm = _jit_for(vp, runtime, budget)
            else:
                vm = Interpreter(vp.insns, runtime, budget=budget)
            programs[name] = LoadedProgram(name, vp, vm)
        filters = cls(obj, programs, runtime, backend, record)
        if backend != "interp":
            filters.jit_skipped = {name: reason for name, vp in verified.items()
                                   if (reason := _too_big_to_jit(vp))}
        for name, why in rejected.items():
            filters.rejected[name] = why
            filters._runners[name] = _rejected_runner(why)
        if backend == "auto" and programs:
            filters._jit_budget = budget
            filters._jit_done.clear()
            if not defer_jit:
                filters.start_jit()
        return filters

    # -- tiered start-up
    def start_jit(self) -> None:
        """Start the background tier-up ("auto"; at most once).  The daemon calls it
        after the mount answers: LLVM must not compete for the GIL before that."""
        budget, self._jit_budget = self._jit_budget, None
        if budget is None:
            return
        thread = threading.Thread(target=self._compile_all, args=(budget,), name="fdsl-jit", daemon=True)
        thread.start()

    def _compile_all(self, budget: int) -> None:
        """Background: compile each program, then publish its JIT runner (one dict store,
        atomic for the readers in `run`)."""
        try:
            for name, lp in list(self.programs.items()):
                if name in self.jit_skipped:
                    continue
                try:
                    vm = _jit_for(lp.verified, self.runtime, budget)
                except Exception as err:   # keep serving with the interpreter
                    self.jit_errors[name] = err
                    continue
                self.programs[name] = LoadedProgram(name, lp.verified, vm)
                self._runners[name] = vm.run
        finally:
            self._jit_done.set()

    def wait_jit(self, timeout: float | None = None) -> bool:
        """Wait for the background JIT ("auto"); True when it has finished (or never ran)."""
        return self._jit_done.wait(timeout)

    def backend_of(self, section: str) -> str:
        """"jit" or "interp": the VM serving `section` right now."""
        return "interp" if isinstance(self.vm(section), Interpreter) else "jit"

    # -- what the daemon reads
    @property
    def maps(self) -> MapTable:
        return self.runtime.maps

    @property
    def metadata(self) -> dict | None:
        return self.object.metadata

    @property
    def log_sink(self) -> LogSink:
        return self.runtime.sink

    @property
    def sections(self) -> list[str]:
        """Every program section of the object, including rejected ones (partial loads)."""
        return [*self.programs, *self.rejected]

    def vm(self, section: str):
        try:
            return self.programs[section].vm
        except KeyError:
            known = ", ".join(self.programs) or "none"
            raise FdslError(f"no program in section {section!r} (sections: {known})") from None

    def run(self, section: str, ctx, caller: Caller = Caller()) -> int:
        """Run the program of `section` on a built context; r0 as signed 32-bit.

        A run-time fault raises `fdsl.errors.VmFault` (the daemon answers EIO).
        """
        try:
            runner = self._runners[section]
        except KeyError:
            runner = self.vm(section).run   # raises the "no program in section" error
        return runner(ctx, caller)


def _rejected_runner(error: VerifierError) -> Callable[..., int]:
    def run(ctx, caller) -> int:
        raise ProgramRejected(error)
    return run


def _too_big_to_jit(vp: verifier.VerifiedProgram) -> str:
    """Why the interpreter serves this program even under the JIT backends ("" if not)."""
    if len(vp.insns) > MAX_JIT_SLOTS:
        return (f"{len(vp.insns)} slots, more than MAX_JIT_SLOTS ({MAX_JIT_SLOTS}): "
                "served by the interpreter")
    return ""


def _jit_for(vp: verifier.VerifiedProgram, runtime: Runtime, budget: int):
    from fdsl.vm.jit import Jit  # llvmlite is only imported when the JIT is used

    return Jit(vp.insns, runtime, verified=vp, budget=budget)
