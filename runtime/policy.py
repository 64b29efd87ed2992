"""A loaded policy: programs attached to nodes and the spec section 6 sequence.

`FilterPolicy.run` is the heart of the emulation of a fuse-bpf kernel: for
one operation on a node carrying a program it runs

    PRE program -> [USER_FILTER: userspace prefilter] -> [BACKING: backing step]
    -> [POST_FILTER: POST program -> [USER_FILTER: userspace postfilter]]

exactly as spec section 6 describes (PRE writes through the aliased out
slots become the backing step's inputs; POST sees inputs + outputs and its
writes become the outputs; a postfilter cannot turn a failure into success).
Userspace filters are the policy's userspace rules (`fdsl.vm.userspace`).

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
import struct
from dataclasses import dataclass, field
from typing import Any, Callable

from fdsl import abi
from fdsl.vm import userspace
from fdsl.errors import VmFault

from .engine import PassthroughPolicy
from .identity import Caller
from .nodes import Node

log = logging.getLogger("fdsl.runtime")

_DIRENT_HEAD = struct.Struct("<QQII")


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


def _encode_arg(arg: abi.ArgSpec, value: Any) -> Any:
    if arg.null_value:
        return len(value) if isinstance(value, (bytes, bytearray)) else int(value or 0)
    if arg.kind == "struct":
        return bytes(arg.struct.pack(value or {}))
    if arg.kind == "string":
        return bytes(value) + b"\0"
    return bytes(value or b"")


def _decode_arg(arg: abi.ArgSpec, raw: bytes | None, original: Any) -> Any:
    if raw is None:
        return original
    if arg.kind == "struct":
        return arg.struct.unpack(raw)
    if arg.kind == "string":
        return raw.split(b"\0", 1)[0]
    return raw


def entry_of(entry: bytes | tuple[bytes, int, int]) -> userspace.Dirent:
    """A listing entry as userspace rules see it: name, ino and d_type when known."""
    if isinstance(entry, tuple):
        name, ino, dtype = entry
        return userspace.Dirent(os.fsdecode(name), ino or 0, dtype or 0)
    return userspace.Dirent(os.fsdecode(entry))


def pack_dirents(names: list[bytes], first_offset: int, capacity: int = abi.DIRENT_BUFFER
                 ) -> tuple[bytes, int]:
    """fuse_dirent records for as many names as fit; returns (bytes, count)."""
    out = bytearray()
    count = 0
    for i, name in enumerate(names):
        reclen = (24 + len(name) + 7) & ~7
        if len(out) + reclen > capacity:
            break
        rec = bytearray(reclen)
        _DIRENT_HEAD.pack_into(rec, 0, 0, first_offset + i + 1, len(name), 0)
        rec[24:24 + len(name)] = name
        out += rec
        count += 1
    return bytes(out), count


class FilterPolicy:
    """Programs of one object + metadata, serving `Engine` through `run`."""

    def __init__(self, filters: Any, metadata: Any, backing_root: str, stats: Any = None) -> None:
        self.filters = filters
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
        root_section = "fuse/root" if "fuse/root" in filters.sections else None
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
        self.root_section = root_section
        self.user_rules: dict[tuple[str, str, str], list] = {}
        if metadata is not None:
            for rule in metadata.userspace:
                self.user_rules.setdefault((rule.scope, rule.op, rule.phase), []).append(rule)
        self.readdir_filtered = any(k[1] == "readdir" for k in self.user_rules)
        # The caller's tgid costs a /proc read: only rules that read it pay for it.
        self._user_rules_reading_tgid = {
            key for key, rules in self.user_rules.items()
            if any(userspace.reads_builtin(r.body, "tgid") for r in rules)}

    # ------------------------------------------------------------ attachment

    def root_attachment(self) -> tuple[str | None, NodeScope]:
        return self.root_section, NodeScope(self.trie, "")

    def child_attachment(self, parent: Node, name: bytes
                         ) -> tuple[str, NodeScope, str | None, str | None] | None:
        """(action, scope, program, backing dir) when the scope table says something about
        parent/name; None = inherit (KEEP) with the parent's rules scope."""
        pscope: NodeScope = parent.scope or NodeScope(None, "")
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
            return ("backing", NodeScope(child, child.path), child.section or parent.program, target)
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

    def _exec(self, section: str, ctx: Any, caller: Caller, op: str, phase: str) -> int:
        from fdsl.vm.helpers import Caller as VmCaller

        tgid = caller.tgid() if section in self._sections_reading_tgid else caller.pid
        try:
            return self.filters.run(section, ctx, VmCaller(caller.uid, caller.gid, caller.pid, tgid))
        except VmFault as fault:
            self.faults += 1
            log.error("filter fault in %s (%s %s): %s", section, op, phase, fault)
            raise OSError(errno.EIO, "filter fault") from None

    def run(self, node: Node, op: str, ins: list, outs: list,
            backing: Callable[[list], list], caller: Caller,
            ctx_nodeid: int | None = None, entries: list[tuple[bytes, int, int]] | None = None,
            dropped: set[int] | None = None) -> list:
        """Run one operation through the section 6 sequence; returns the final outputs.

        `entries`/`dropped`: for READDIR, the names in the dirent page and the
        indices the userspace postfilter drops.
        """
        if not self.runs_program(node, op):
            return backing(ins)
        section = node.program
        from fdsl.vm.context import build_context

        spec = abi.OPS[op]
        nodeid = node.ctx_nodeid if ctx_nodeid is None else ctx_nodeid
        scope = node.scope.rules_scope if isinstance(node.scope, NodeScope) else ""

        # 2-4: PRE program; its writes through out_args alias the inputs.
        ctx = build_context(spec, "pre", [_encode_arg(a, v) for a, v in zip(spec.inputs, ins)],
                            nodeid=nodeid)
        ret = self._exec(section, ctx, caller, op, "pre")
        if ret < 0:
            raise OSError(-ret, f"{op} denied by policy")
        modified = [_decode_arg(a, raw, v) for a, raw, v in zip(spec.inputs, ctx.inputs(), ins)]
        # 5: userspace prefilter.
        if ret & abi.USER_FILTER:
            modified = self._user_pre(scope, spec, modified, caller, nodeid)
        # 6: without BACKING the request goes to the daemon as a classic FUSE
        # request built from the original arguments: we are that daemon, and we
        # serve classic requests by passthrough, without a postfilter.
        if not ret & abi.BACKING:
            return backing(ins)
        # 7: the backing step, with the honoured modifications.
        effective = self._honoured(spec, ins, modified)
        error_in = 0
        try:
            results = backing(effective)
        except OSError as err:
            error_in = -(err.errno or errno.EIO)
            results = outs
        if not ret & abi.POST_FILTER:
            if error_in:
                raise OSError(-error_in, os.strerror(-error_in))
            return results
        # 9: POST program on inputs + outputs.
        if not spec.outputs:
            results = []
        enc_out = [_encode_arg(a, v) for a, v in zip(spec.outputs, results)]
        ctx = build_context(spec, "post", [_encode_arg(a, v) for a, v in zip(spec.inputs, effective)],
                            enc_out, nodeid=nodeid, error_in=error_in)
        ret2 = self._exec(section, ctx, caller, op, "post")
        if ret2 < 0:
            raise OSError(-ret2, f"{op} denied by policy (post)")
        results = [_decode_arg(a, raw, v) for a, raw, v in zip(spec.outputs, ctx.outputs(), results)]
        # 10: userspace postfilter.
        if ret2 & abi.USER_FILTER:
            results = self._user_post(scope, spec, effective, results, caller, nodeid, error_in,
                                      entries, dropped)
        if error_in:
            raise OSError(-error_in, os.strerror(-error_in))
        return results

    @staticmethod
    def _honoured(spec: abi.OpSpec, original: list, modified: list) -> list:
        """Inputs as the backing step sees them: only honoured fields keep PRE changes."""
        out = []
        for arg, orig, mod in zip(spec.inputs, original, modified):
            if arg.kind == "struct":
                merged = dict(orig or {})
                for key, value in (mod or {}).items():
                    if any(f"{arg.alias}.{key}" == h or f"{arg.alias}.{key}".startswith(h + ".")
                           for h in spec.honoured):
                        merged[key] = value
                out.append(merged)
            else:
                out.append(mod if arg.alias in spec.honoured else orig)
        return out

    # ---------------------------------------------------- userspace filters

    def _fields(self, spec: abi.OpSpec, ins: list, outs: list | None) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        pairs = list(zip(spec.inputs, ins)) + (list(zip(spec.outputs, outs)) if outs else [])
        for arg, value in pairs:
            if arg.kind == "struct":
                for k, v in (value or {}).items():
                    fields.setdefault(f"{arg.alias}.{k}", v)
            elif arg.kind == "string":
                fields[arg.alias] = os.fsdecode(value or b"")
            else:
                fields[arg.alias] = value
        return fields

    def _evaluate(self, scope: str, spec: abi.OpSpec, phase: str, fields: dict[str, Any],
                  caller: Caller, nodeid: int, error_in: int = 0,
                  entries: list[str] | None = None) -> Any:

        rules = self.user_rules.get((scope, spec.name, phase), [])
        reads_tgid = (scope, spec.name, phase) in self._user_rules_reading_tgid
        request = userspace.Request(spec.name, phase, fields, caller.uid, caller.gid, caller.pid,
                                    caller.tgid() if reads_tgid else caller.pid, nodeid,
                                    -error_in, entries)
        outcome = userspace.evaluate(rules, request, maps=self.user_maps)
        sink = self.filters.log_sink
        for line in outcome.logs:
            sink.emit(line)
        if outcome.failure:
            raise OSError(outcome.failure, f"{spec.name} denied by userspace rule")
        return outcome

    def _apply_writes(self, args: tuple[abi.ArgSpec, ...], values: list,
                      writes: dict[str, int]) -> list:
        values = [dict(v) if isinstance(v, dict) else v for v in values]
        for path, value in writes.items():
            for i, arg in enumerate(args):
                if arg.kind == "struct" and path.startswith(arg.alias + "."):
                    key = path[len(arg.alias) + 1:]
                    if arg.struct.field(key) is not None:
                        values[i][key] = value
                        break
        return values

    def _user_pre(self, scope: str, spec: abi.OpSpec, ins: list, caller: Caller,
                  nodeid: int) -> list:
        outcome = self._evaluate(scope, spec, "pre", self._fields(spec, ins, None), caller, nodeid)
        return self._apply_writes(spec.inputs, ins, outcome.writes)

    def _user_post(self, scope: str, spec: abi.OpSpec, ins: list, outs: list, caller: Caller,
                   nodeid: int, error_in: int, entries: list[tuple[bytes, int, int]] | None = None,
                   dropped: set[int] | None = None) -> list:
        names = [entry_of(n) for n in entries] if entries is not None else None
        fields = self._fields(spec, ins, outs if names is None else outs[:1])
        outcome = self._evaluate(scope, spec, "post", fields, caller, nodeid, error_in, names)
        if dropped is not None:
            dropped.update(outcome.dropped)
        return self._apply_writes(spec.outputs, outs, outcome.writes)

    def filter_dirents(self, node: Node, listing: list[bytes] | list[tuple[bytes, int, int]],
                       offset: int, caller: Caller) -> list[bytes]:
        """READDIR through the section 6 sequence, one dirent page at a time; the
        userspace postfilter's `drop` decides which names stay.  `listing` holds
        names, or (name, ino, d_type) triples that `drop entries where` can read."""
        entries = [e if isinstance(e, tuple) else (e, 0, 0) for e in listing]
        names = [name for name, _, _ in entries]
        if node.program is None:
            return names
        visible: list[bytes] = []
        start = 0
        while start < len(names):
            page, count = pack_dirents(names[start:], offset + start)
            count = max(count, 1)
            chunk = names[start:start + count]
            described = entries[start:start + count]
            dropped: set[int] = set()

            def backing(ins: list, page: bytes = page, chunk: list = chunk) -> list:
                return [{"offset": offset + start + len(chunk), "again": 0}, page]

            self.run(node, "readdir", [{"fh": 0, "offset": offset + start, "size": 4096}],
                     [{}, b""], backing, caller, entries=described, dropped=dropped)
            visible.extend(n for i, n in enumerate(chunk) if i not in dropped)
            start += count
        return visible

    # ----------------------------------------------------- maps and logs

    def map_contents(self) -> list[dict[str, Any]]:
        """Map entries with keys decoded from the metadata's key meaning (for `fdsl stats`)."""
        return describe_maps(self.filters.maps, self.meta)

    def recent_logs(self) -> list[str]:
        return self.filters.log_sink.recent()


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


def load_policy(obj: bytes | None, backend: str, backing_root: str, stats: Any = None) -> Any:
    """PassthroughPolicy for no object; otherwise load + verify the programs.

    A malformed object (LoadError) fails the mount with a clear message.  A
    program the verifier rejects is loaded partially: the operations that
    would run it fail with EIO (logged), everything else is served.
    """
    if obj is None:
        return PassthroughPolicy()
    from fdsl.vm.filterset import FilterSet
    from fdsl.compile.metadata import Metadata

    filters = FilterSet.load(obj, backend=backend, partial=True)
    for section, error in filters.rejected.items():
        log.error("verifier rejected %s: operations that run it fail with EIO: %s", section, error)
    raw = filters.metadata
    meta = None
    if raw:
        import json
        meta = Metadata.from_json(json.dumps(raw) if isinstance(raw, dict) else raw)
    return FilterPolicy(filters, meta, backing_root, stats)
