"""A loaded policy: programs attached to nodes, their runners and userspace half.

The engine's driver runs the spec §6 sequence (`fdsl.vm.sequence`) with what
this module provides: `program(section)`, the runner of one program section,
and `user_half(node, caller, op)`, the policy's userspace rules
(`fdsl.vm.userfilter.RuleFilter`) for the node's scope.  `runs_program` says
where a program runs at all (programs whose outcome is statically BACKING
are skipped).

The scope table of the metadata is applied at lookup time, as the daemon's
own LOOKUP postfilter would (spec 3.2): `under` = REPLACE the program,
`passthrough` = REMOVE it, `backing` = REPLACE the backing directory (and
the program with the scope's).

A VmFault or a verifier problem fails just that operation with EIO and is
logged; the daemon keeps serving.

Caching (`attr_timeout`, `entry_timeout`): what the kernel would compute for
a getattr or lookup is a function of the backing state and the caller.  When
the metadata says the node's rules for that opcode read no caller identity
and count/log nothing, the result may be cached like a passthrough's;
otherwise every request must reach the program (timeout 0).
"""
from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from fdsl import abi
from fdsl.vm import userspace
from fdsl.errors import MountError, VmFault

from fdsl.vm.userfilter import RuleFilter

from .engine import PassthroughPolicy
from .identity import Caller, with_tgid
from .nodes import Node

log = logging.getLogger("fdsl.runtime")


@dataclass
class ScopeNode:
    """One position in the scope trie (path components of the `under` scopes)."""

    path: str
    children: dict[bytes, "ScopeNode"] = field(default_factory=dict)
    kind: str | None = None          # "rules" | "passthrough" | "backing" at this exact path
    section: str | None = None
    backing: str | None = None


@dataclass(frozen=True)
class NodeScope:
    """What a node carries: where it sits in the trie and which scope's userspace rules apply."""

    trie: ScopeNode | None
    rules_scope: str                 # scope path whose userspace rules apply ("" = root)


class FilterPolicy:
    """Programs of one object + metadata: attachments, caching, program runners, userspace half."""

    def __init__(self, filters: Any, metadata: Any, backing_root: str, stats: Any = None,
                 root_section: str | None = None) -> None:
        self.filters = filters
        self.abi = filters.abi        # the object's ABI: how the engine lays out contexts
        self.meta = metadata
        self.stats = stats
        self.backing_root = backing_root
        self.identity_dependent = bool(metadata and metadata.caching.identity_dependent)
        self._scope_of_section = dict(metadata.programs) if metadata is not None else {}
        self._cacheable: dict[tuple[str, str], bool] = {}
        # Userspace rules count into and store into the very maps the BPF code uses.
        self.user_maps = userspace.TableMaps(filters.maps)
        self.faults = 0
        self._statically_backing = _statically_backing(filters, metadata)
        # bpf_get_current_pid_tgid (helper 14) needs the caller's tgid, which
        # costs a /proc read; only programs that call it pay for it.
        self._sections_reading_tgid = {
            name for name, lp in filters.programs.items()
            if abi.HELPER_IDS["get_current_pid_tgid"] in lp.verified.helpers_used}
        self.trie = ScopeNode("")
        chosen = root_section
        root_section = None
        if metadata is not None:
            for scope in metadata.scopes:
                node = self.trie
                if scope.path:
                    for comp in scope.path.strip("/").split("/"):
                        node = node.children.setdefault(
                            os.fsencode(comp), ScopeNode(f"{node.path}/{comp}".lstrip("/")))
                node.kind, node.section, node.backing = scope.kind, scope.section, scope.backing
                if not scope.path:
                    root_section = scope.section
        self.root_section = choose_root_section(filters.sections, root_section, chosen)
        self.user_rules: dict[tuple[str, str, str], list] = {}
        if metadata is not None:
            for rule in metadata.userspace:
                self.user_rules.setdefault((rule.scope, rule.op, rule.phase), []).append(rule)
        self.rule_filter = RuleFilter(self.user_rules, self.user_maps, filters.log_sink.emit)
        self._program_runners: dict[str, Callable[[Any, Caller], int]] = {}
        self._user_ops = {op for _scope, op, _phase in self.user_rules}

    # ------------------------------------------------------------ attachment

    def root_attachment(self) -> tuple[str | None, NodeScope]:
        return self.root_section, NodeScope(self.trie, "")

    def child_attachment(self, parent: Node, name: bytes
                         ) -> tuple[str, NodeScope, str | None, str | None] | None:
        """(action, scope, program, backing dir) when the scope table says something about
        parent/name; None = inherit (KEEP) with the parent's rules scope."""
        pscope = parent.scope if isinstance(parent.scope, NodeScope) else NodeScope(None, "")
        child = pscope.trie.children.get(name) if pscope.trie else None
        if child is None:
            return ("inherit", NodeScope(None, pscope.rules_scope), parent.program, None)
        if child.kind is None:  # an intermediate component of a deeper scope
            return ("inherit", NodeScope(child, pscope.rules_scope), parent.program, None)
        if child.kind == "rules":
            return ("rules", NodeScope(child, child.path), child.section, None)
        if child.kind == "passthrough":
            # REMOVE: the compiler's passthrough section only returns BACKING anyway.
            return ("passthrough", NodeScope(child, child.path), None, None)
        if child.kind == "backing":
            target = child.backing or ""
            if not os.path.isabs(target):
                target = os.path.join(self.backing_root, target)
            # REPLACE the backing; the program stays REMOVEd below a passthrough scope
            # (the scope's section carries its syntactic parents' rules, which a
            # `passthrough` above it in the tree has switched off)
            program = (child.section or parent.program) if parent.program is not None else None
            return ("backing", NodeScope(child, child.path), program, target)
        return None

    def has_program(self, node: Node) -> bool:
        return node.program is not None

    # --------------------------------------------------------------- caching

    def cacheable(self, section: str | None, op: str) -> bool:
        """May the kernel cache the result of `op` on a node carrying `section`?"""
        if section is None:
            return True
        key = (section, op)
        hit = self._cacheable.get(key)
        if hit is None:
            hit = self._compute_cacheable(section, op)
            self._cacheable[key] = hit
        return hit

    def runs_program(self, node: Node, op: str) -> bool:
        """Does `op` on this node run a program (rather than plain BACKING)?"""
        return node.program is not None and (node.program, op) not in self._statically_backing

    def has_rules(self, node: Node, op: str) -> bool:
        """Does the node's program have rules for `op` (True when unknown)?"""
        if node.program is None:
            return False
        traits = self._traits(node.program, op)
        return traits is None or traits.has_rules

    def _traits(self, section: str, op: str) -> Any:
        if self.meta is None:
            return None
        return self.meta.caching.traits(self._scope_of_section.get(section, ""), op)

    def _compute_cacheable(self, section: str, op: str) -> bool:
        if self.meta is None:
            return False  # a bare object: nothing known about its programs
        traits = self._traits(section, op)
        if traits is None:  # object from before per-op traits: the old, safe answer
            return op != "getattr" and not self.meta.caching.identity_dependent
        return not traits.has_rules or traits.cacheable

    def attr_timeout(self, node: Node, default: float) -> float:
        return default if self.cacheable(node.program, "getattr") else 0.0

    def entry_timeout(self, parent: Node, default: float) -> float:
        return default if self.cacheable(parent.program, "lookup") else 0.0

    # ------------------------------------------------------------ section 6

    def program(self, section: str | None) -> Callable[[Any, Caller], int]:
        """The runner of one section for `fdsl.vm.sequence` (built once per section).

        A VmFault (or a verifier rejection) fails just that operation with EIO
        and is logged; callers get their tgid from /proc only for programs that
        call bpf_get_current_pid_tgid."""
        if section is None:
            raise LookupError("this node carries no program")
        runner = self._program_runners.get(section)
        if runner is None:
            runner = self._program_runners[section] = self._runner(section)
        return runner

    def _runner(self, section: str) -> Callable[[Any, Caller], int]:
        run = self.filters.run
        reads_tgid = section in self._sections_reading_tgid
        if not reads_tgid and self.filters.backend == "jit" and section in self.filters.programs:
            vm_run = self.filters.programs[section].vm.run   # fixed: no tier switch to follow
            run = lambda _section, ctx, caller: vm_run(ctx, caller)  # noqa: E731

        def program(ctx: Any, caller: Caller) -> int:
            try:
                return run(section, ctx, with_tgid(caller) if reads_tgid else caller)
            except VmFault as fault:
                self.faults += 1
                log.error("filter fault in %s (%s %s): %s", section,
                          getattr(getattr(ctx, "op", None), "name", "?"),
                          getattr(ctx, "phase", "?"), fault)
                raise OSError(errno.EIO, "filter fault") from None
        return program

    def user_half(self, node: Node, caller: Caller, op: str) -> Any:
        """The userspace filter for `op` on this node, None when its scope has no rules."""
        if op not in self._user_ops:
            return None
        scope = node.scope.rules_scope if isinstance(node.scope, NodeScope) else ""
        if not self.rule_filter.has_rules(scope, op):
            return None
        return self.rule_filter.half(scope, caller, node.ctx_nodeid, with_tgid)

    # ------------------------------- the userspace half on decoded argument values

    def _user_pre(self, scope: str, spec: abi.OpSpec, ins: list, caller: Caller,
                  nodeid: int) -> list:
        """The userspace prefilter on decoded values (structs as dicts, names as bytes);
        the inputs as the rules left them.  For callers that decode filter requests
        themselves (`runtime/kernel/filters.py`); the engine works on frames."""
        return self._user_values(scope, spec, "pre", ins, [], caller, nodeid, 0)[0]

    def _user_post(self, scope: str, spec: abi.OpSpec, ins: list, outs: list, caller: Caller,
                   nodeid: int, error_in: int,
                   entries: list[bytes] | list[tuple[bytes, int, int]] | None = None,
                   dropped: set[int] | None = None) -> list:
        """The userspace postfilter on decoded values; the outputs as the rules left them.
        READDIR: `entries` are the listed names or (name, ino, d_type) triples, `dropped`
        gets the indices to leave out."""
        if entries is not None:
            triples = [e if isinstance(e, tuple) else (e, 0, abi.DT_UNKNOWN) for e in entries]
            records = [(name, ino, i + 1, dtype) for i, (name, ino, dtype) in enumerate(triples)]
            outs = [outs[0], abi.pack_dirents(records, 1 << 20)[0]]
        new_outs, half = self._user_values(scope, spec, "post", ins, outs, caller, nodeid,
                                           error_in)[1:]
        if entries is not None:
            outcome = half.outcome if half is not None else None
            if half is not None and (outcome is None or outcome.failure):
                raise OSError((outcome.failure if outcome else 0) or errno.EIO,
                              "readdir userspace filter failed")
            if dropped is not None and outcome is not None:
                dropped.update(outcome.dropped)
        return new_outs

    def _user_values(self, scope: str, spec: abi.OpSpec, phase: str, ins: list, outs: list,
                     caller: Caller, nodeid: int, error_in: int) -> tuple[list, list, Any]:
        from fdsl.vm import frame as frames

        size0 = spec.name in abi.requests.XATTR_SIZE_OPS and isinstance(ins[0], dict) \
            and ins[0].get("size") == 0
        frame = frames.acquire(spec, size0)
        try:
            frame.begin(nodeid)
            for i, (arg, value) in enumerate(zip(spec.inputs, ins)):
                _put(frame, "in", i, arg, value)
            for j, (arg, value) in enumerate(zip(frame.shape.outputs, outs)):
                _put(frame, "out", j, arg, value)
            if phase == "post":
                frame.to_post(error_in)
            half = None
            if self.rule_filter.has_rules(scope, spec.name):
                half = self.rule_filter.half(scope, caller, nodeid, with_tgid)
                half(phase, frame, error_in)
            new_ins = [_get(frame, "in", i, arg) for i, arg in enumerate(spec.inputs)]
            new_outs = [_get(frame, "out", j, arg) for j, arg in enumerate(frame.shape.outputs)]
            return new_ins, new_outs[:len(outs)], half
        finally:
            frames.release(frame)

    # ----------------------------------------------------- maps and logs

    def map_contents(self) -> list[dict[str, Any]]:
        """Map entries with keys decoded from the metadata's key meaning (for `fdsl stats`)."""
        return describe_maps(self.filters.maps, self.meta)

    def recent_logs(self) -> list[str]:
        return self.filters.log_sink.recent()

    # ----------------------------------------------------- tiered start-up

    def start_jit(self) -> None:
        """Begin the deferred background JIT (see `load_policy(defer_jit=True)`)."""
        self.filters.start_jit()

    def vm_backends(self) -> dict[str, str]:
        """Which VM serves each program now: "interp" until the tier-up reaches it."""
        return {name: self.filters.backend_of(name) for name in self.filters.programs}


def describe_maps(maps: Any, metadata: Any) -> list[dict[str, Any]]:
    """`fdsl stats` rows of maps (ours or the kernel's: anything with `items()` and
    `name`), keys decoded from the metadata's key meaning, empty array slots left out."""
    metas = {m.index: m for m in (metadata.maps if metadata else [])}
    out = []
    for index, m in enumerate(maps):
        meta = metas.get(index)
        entries = []
        for k, v in m.items():
            value = int.from_bytes(v, "little")
            if meta is not None and meta.map_type == "array" and value == 0 and meta.max_entries > 1:
                continue
            entries.append((_decode_key(k, meta), value))
        out.append({"name": meta.name if meta else m.name or f"map{index}",
                    "kind": meta.kind if meta else "map",
                    "key": meta.key if meta else "raw", "entries": entries})
    return out


def _decode_key(raw: bytes, meta: Any) -> str:
    meaning = meta.key if meta is not None else "raw"
    if meaning == "none":
        return "total"
    if meaning == "name":
        return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
    number = int.from_bytes(raw, "little")
    if meaning in ("op", "opcode"):
        return abi.opcode_name(number)
    if meaning == "uid":
        try:
            import pwd
            return f"{number} ({pwd.getpwuid(number).pw_name})"
        except (KeyError, ImportError):
            return str(number)
    if meaning == "errno" and number:
        return abi.errno_name(number)
    return str(number)


def _statically_backing(filters: Any, metadata: Any) -> frozenset[tuple[str, str]]:
    """(section, opcode) pairs whose program is known to return plain BACKING.

    An fdsl program for an opcode without any rule in its scope (own or
    inherited, BPF or userspace, PRE or POST) returns the policy default in PRE
    and has no side effects; with `default allow` that is BACKING alone, the
    same as running no program.  Skipping the run saves building a context on
    every such operation.  Objects without per-opcode traits (not from fdsl, or
    older) and programs the verifier rejected always run.
    """
    if metadata is None or metadata.caching.scopes is None or metadata.default != {"s": "allow"}:
        return frozenset()
    pairs = set()
    for section, scope in metadata.programs.items():
        if section in filters.rejected:
            continue
        for op in abi.OPS:
            traits = metadata.caching.traits(scope, op)
            if traits is not None and not (traits.pre_bpf or traits.pre_user
                                           or traits.post_bpf or traits.post_user):
                pairs.add((section, op))
    return frozenset(pairs)


def choose_root_section(sections: list[str], from_metadata: str | None,
                        chosen: str | None) -> str | None:
    """The program attached to the mount root.

    `-o root_section=` wins; then the object's metadata (fdsl objects), then
    `fuse/root`, then the only `fuse/*` section of a bare object (clang-built
    C, say `fuse/hidden`).  A bare object with several sections and none of
    them `fuse/root` is refused: mounting it with no program would silently
    drop the policy."""
    programs = [s for s in sections if s.startswith(abi.PROGRAM_SECTION_PREFIX)]
    if chosen:
        if chosen not in sections:
            raise MountError(f"no program section {chosen!r} in the object "
                             f"(sections: {', '.join(programs) or 'none'})")
        return chosen
    if from_metadata:
        return from_metadata
    if "fuse/root" in sections:
        return "fuse/root"
    if len(programs) == 1:
        return programs[0]
    if not programs:
        raise MountError("the object has no fuse/* program section: nothing to attach")
    raise MountError(f"the object has several program sections and none is fuse/root "
                     f"({', '.join(programs)}): choose the root's with -o root_section=SECTION")


def load_policy(obj: bytes | None, backend: str, backing_root: str, stats: Any = None,
                root_section: str | None = None, abi_name: str | None = None,
                defer_jit: bool = False) -> Any:
    """PassthroughPolicy for no object; otherwise load + verify the programs under the
    object's ABI (its metadata's, else `abi_name`, else ACK).  With `defer_jit` an
    "auto" backend serves on the interpreter until `start_jit()` (the daemon's
    start: the mount answers before LLVM is even imported).

    A malformed object (LoadError) fails the mount with a clear message.  A
    program the verifier rejects is loaded partially: the operations that
    would run it fail with EIO (logged), everything else is served.
    """
    if obj is None:
        return PassthroughPolicy()
    from fdsl.vm.filterset import FilterSet
    from fdsl.compile.metadata import Metadata

    filters = FilterSet.load(obj, backend=backend, partial=True, abi_name=abi_name,
                             defer_jit=defer_jit)
    for section, error in filters.rejected.items():
        log.error("verifier rejected %s: operations that run it fail with EIO: %s", section, error)
    raw = filters.metadata
    meta = None
    if raw:
        import json
        meta = Metadata.from_json(json.dumps(raw) if isinstance(raw, dict) else raw)
    return FilterPolicy(filters, meta, backing_root, stats, root_section)


def _put(frame: Any, direction: str, index: int, arg: abi.ArgSpec, value: Any) -> None:
    from fdsl.vm.frame import write_struct_fields

    if arg.kind == "struct":
        write_struct_fields(frame, direction, index, dict(value or {}))
        if direction == "out":
            frame.set_output_length(index, arg.layout.size)
    elif arg.null_value:
        frame.set_null_input(index, len(value) if isinstance(value, bytes) else int(value or 0))
    elif direction == "in":
        frame.set_input(index, bytes(value or b"") + (b"\0" if arg.kind == "string" else b""))
    else:
        frame.set_output(index, bytes(value or b""))


def _get(frame: Any, direction: str, index: int, arg: abi.ArgSpec) -> Any:
    from fdsl.vm.frame import read_struct

    if arg.kind == "struct":
        return read_struct(frame, direction, index)
    if direction == "in":
        if arg.null_value:
            return frame.in_size[index]
        return frame.input_string(index) if arg.kind == "string" else frame.input_bytes(index)
    return frame.output_bytes(index)
