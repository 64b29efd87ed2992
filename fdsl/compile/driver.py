"""The compile driver: parse -> check -> plan -> codegen -> object.

`compile_file` / `compile_source` run the whole pipeline through the front
end; `compile_policy` starts from an already checked AST (tests build ASTs by
hand).  Every user mistake surfaces as a `PolicyError` with rendered
diagnostics; nothing else should escape.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Sequence

from fdsl import __version__, abi
from fdsl.lang import ast
from fdsl.compile import abi_check
from fdsl.compile.codegen import CodegenError, ModuleInfo, add_section, generate, map_sizes, module_text
from fdsl.lang.diagnostics import Diagnostic, Severity, Sources, Span, render_all
from fdsl.errors import PolicyError
from fdsl.compile.metadata import (CachingHints, LogFormat, MapMeta, Metadata, ScopeMeta, UserRule)
from fdsl.compile.objfile import MAX_PROGRAM_SLOTS, ProgramTooLarge, build
from fdsl.compile.planner import Plan, build_plan
from fdsl.compile.userspace import serialize_body
from fdsl.lang.passes.placement import name_test_cost
from fdsl.vm.maps import MapLimitError, check_budget


@dataclass
class CompileResult:
    obj: bytes
    ir: str                    # optimized LLVM IR
    asm: str                   # BPF assembly
    plan: Plan
    metadata: Metadata
    warnings: list[Diagnostic] = field(default_factory=list)
    sources: Sources | None = None

    def rendered_warnings(self) -> str:
        return render_all(self.warnings, self.sources or Sources())


def _decision_json(d: ast.Stmt) -> dict:
    if isinstance(d, ast.Deny):
        value = d.errno.const_value if d.errno.const_value is not None else _const(d.errno)
        return {"s": "deny", "errno": value}
    if isinstance(d, ast.Return):
        value = d.value.const_value if d.value.const_value is not None else _const(d.value)
        return {"s": "return", "value": value}
    return {"s": "allow"}


def _const(e: ast.Expr) -> int | None:
    if isinstance(e, ast.IntLit):
        return e.value
    if isinstance(e, ast.Ident) and isinstance(e.ref, (ast.ErrnoRef, ast.AbiConstRef)):
        return e.ref.value
    if isinstance(e, ast.Ident) and isinstance(e.ref, ast.ConstRef):
        return _const(e.ref.decl.value)
    if isinstance(e, ast.Unary) and e.op == "-":
        inner = _const(e.operand)
        return None if inner is None else -inner
    return None


def _userspace_map_keys(plan: Plan) -> dict[str, str]:
    """Key meanings of maps used by userspace rules (codegen only sees the BPF ones)."""
    from fdsl.compile.codegen import key_meaning
    from fdsl.compile.planner import walk_exprs

    found: dict[str, str] = {}
    for scope in plan.scopes:
        for entry in scope.entries:
            for r in entry.user_rules:
                for node in walk_exprs(r.rule.body):
                    if isinstance(node, (ast.Count, ast.MapStore, ast.MapRead)):
                        found.setdefault(node.map, key_meaning(node.key))
    return found


def build_metadata(plan: Plan, info: ModuleInfo, sources: Sources, files: list[str]) -> Metadata:
    """Everything the daemon needs besides the BPF code."""
    digest = hashlib.sha256()
    for name in files:
        digest.update(sources.texts.get(name, "").encode("utf-8"))
    scopes = [ScopeMeta(s.path, s.kind, s.section, s.backing, s.parent) for s in plan.scopes]
    maps = []
    keys = {**_userspace_map_keys(plan), **info.map_keys}
    for index, decl in enumerate(plan.maps):
        key_size, value_size, max_entries = map_sizes(decl)
        maps.append(MapMeta(decl.name, decl.kind, decl.map_type, key_size, value_size, max_entries,
                            index, keys.get(decl.name, "none")))
    users = []
    for scope in plan.scopes:
        for entry in scope.entries:
            for r in entry.user_rules:
                users.append(UserRule(scope.path, entry.op, entry.phase, r.rule.origin, r.location,
                                      r.reason or "", serialize_body(r.rule.body)))
    identity = plan.identity_entries()
    return Metadata(
        abi=plan.abi.id, fdsl_version=__version__, source_sha256=digest.hexdigest(),
        files=[os.path.basename(f) for f in files],
        programs={s.section: s.path for s in plan.scopes},
        scopes=scopes, maps=maps, userspace=users,
        caching=CachingHints(bool(identity), identity, plan.op_traits()),
        logs=[LogFormat(site.id, site.fmt, site.location) for site in info.logs],
        default=_decision_json(plan.default))


def _error(message: str, node: ast.Node | None, sources: Sources, fallback: str) -> PolicyError:
    span = node.span if node is not None else Span.unknown(fallback)
    diag = Diagnostic(Severity.ERROR, message, span)
    return PolicyError([diag], render_all([diag], sources))


@dataclass(frozen=True)
class _MapShape:
    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int


def _check_map_memory(plan: Plan, sources: Sources, fallback: str) -> None:
    """The daemon's map limits (fdsl.vm.maps.check_budget), reported at the declaration."""
    shapes = [_MapShape(d.name, abi.MAP_TYPES[d.map_type], *map_sizes(d)) for d in plan.maps]
    try:
        check_budget(shapes)
    except MapLimitError as err:
        biggest = max(plan.maps, key=lambda d: d.max_entries, default=None)
        decl = next((d for d in plan.maps if d.name == err.name), biggest)
        raise _error(str(err), decl, sources, fallback) from None


def _check_program_size(plan: Plan, sources: Sources, fallback: str) -> None:
    """Fail in milliseconds, not after minutes of LLVM, when a scope's name tests alone
    (sets, suffix chains: `placement.name_test_cost`) cannot fit one BPF program."""
    for scope in plan.scopes:
        costs = [(name_test_cost(r.rule), r.rule) for e in scope.entries for r in e.bpf_rules]
        total = sum(cost for cost, _ in costs)
        if total > MAX_PROGRAM_SLOTS:
            biggest = max(costs, key=lambda c: c[0])[1]
            raise _error(f"the program for {scope.section} would be more than {total} BPF "
                         f"instructions (its name sets and suffix tests alone); BPF branches span "
                         f"at most {MAX_PROGRAM_SLOTS}: merge the sets into one, or split the "
                         "policy into `under` scopes", biggest, sources, fallback)


def compile_policy(policy: ast.Policy, sources: Sources | None = None,
                   warnings: list[Diagnostic] | None = None, want_asm: bool = True,
                   abi_record: abi.Abi = abi.ACK) -> CompileResult:
    """Checked AST -> object for `abi_record` (ACK by default, recorded in the metadata).
    Raises PolicyError for constructs BPF (or that ABI) cannot express."""
    sources = sources or Sources()
    files = policy.files or list(sources.texts)
    plan = build_plan(policy, abi_record)
    problems = abi_check.check(plan)
    if problems:
        raise PolicyError(problems, render_all(problems, sources))
    _check_map_memory(plan, sources, policy.span.file)
    _check_program_size(plan, sources, policy.span.file)
    try:
        module, info = generate(plan)
    except CodegenError as err:
        raise _error(str(err), err.node, sources, policy.span.file) from None
    # The metadata records what codegen learnt (log sites, map key meanings).
    meta = build_metadata(plan, info, sources, files)
    add_section(module, abi.METADATA_SECTION, meta.to_bytes(), "_fdsl_meta")
    try:
        artifacts = build(module_text(module), want_asm=want_asm)
    except ProgramTooLarge as err:
        raise _error(str(err), None, sources, policy.span.file) from None
    return CompileResult(artifacts.obj, artifacts.ir, artifacts.asm, plan, meta,
                         list(warnings or []) + plan.warnings, sources)


def _front_end(text: str | bytes, filename: str,
               include_dirs: Sequence[str] = ()) -> tuple[ast.Policy, Sources, list[Diagnostic]]:
    """Parse and check (fdsl.lang.frontend); raises PolicyError with every error found."""
    from fdsl.lang.frontend import load_policy

    return load_policy(text=text, filename=filename, include_dirs=tuple(include_dirs))


def compile_source(text: str | bytes, filename: str = "<string>", want_asm: bool = True,
                   include_dirs: Sequence[str] = (), abi_record: abi.Abi = abi.ACK) -> CompileResult:
    policy, sources, warnings = _front_end(text, filename, include_dirs)
    return compile_policy(policy, sources, warnings, want_asm=want_asm, abi_record=abi_record)


def _read(path: str) -> bytes:
    """The policy's bytes: a regular file of bounded size (never a FIFO or a device)."""
    from fdsl.errors import UsageError
    from fdsl.files import MAX_POLICY_BYTES, InputFileError, read_regular_file

    try:
        return read_regular_file(path, MAX_POLICY_BYTES).data
    except InputFileError as err:
        raise UsageError(f"cannot read '{path}': {err.reason}") from None


def load_checked(path: str, include_dirs: Sequence[str] = ()) -> tuple[ast.Policy, Sources, list[Diagnostic]]:
    """Parse and check a policy file (for `explain`, which needs no object)."""
    return _front_end(_read(path), path, include_dirs)


def compile_file(path: str, want_asm: bool = True, include_dirs: Sequence[str] = (),
                 abi_record: abi.Abi = abi.ACK) -> CompileResult:
    return compile_source(_read(path), path, want_asm=want_asm, include_dirs=include_dirs,
                          abi_record=abi_record)


