"""Schema of the `.fdsl.meta` section: what the daemon needs beyond the BPF code.

A compiled policy is one `.bpf.o`; everything the userspace half needs (scope
table, userspace rules, map meanings, caching hints, log formats) travels in
this UTF-8 JSON section so the object stays self-contained.  The classes are
plain dataclasses with `to_json`/`from_json` so the daemon, `fdsl explain` and
the tests share one definition.

Userspace rule bodies are serialized statement/expression trees (see
`fdsl/vm/userspace.py` for the evaluator and the node shapes).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any

SCHEMA_VERSION = 1
SECTION = ".fdsl.meta"


@dataclass
class ScopeMeta:
    """One `under` scope (or the root, path "")."""

    path: str                  # relative to the mount root; "" = the root
    kind: str                  # "rules" | "passthrough" | "backing"
    section: str | None        # program section ("fuse/root", "fuse/s1"), None = no program
    backing: str | None = None  # backing directory for kind "backing"
    parent: str | None = None  # enclosing scope path (None for the root)


@dataclass
class MapMeta:
    """One `counter`/`map` declaration; `index` is its position in the `maps` section."""

    name: str
    kind: str                  # "counter" | "map"
    map_type: str              # "array" | "hash"
    key_size: int
    value_size: int
    max_entries: int
    index: int
    key: str = "none"          # what the key means ("uid", "name", "opcode", ...)


@dataclass
class UserRule:
    """A rule (or its userspace part) evaluated by the daemon for scope/op/phase."""

    scope: str                 # scope path
    op: str                    # opcode name ("lookup")
    phase: str                 # "pre" | "post"
    origin: str | None         # sugar it came from ("hide", ...) or None
    location: str              # "file:line" of the rule
    reason: str                # why it is not BPF
    body: list[dict[str, Any]]  # serialized statements


@dataclass
class LogFormat:
    id: int
    fmt: str
    location: str


@dataclass
class OpTraits:
    """What the rules of one scope say about one opcode (absent = no rules at all)."""

    pre_bpf: bool = False        # PRE rules compiled to BPF
    pre_user: bool = False       # PRE rules evaluated by the daemon
    post_bpf: bool = False
    post_user: bool = False
    identity: bool = False       # some rule reads uid/gid/pid/tgid
    side_effects: bool = False   # some rule counts, logs or stores into a map
    # Some rule reads a map (added in schema 1 without a version bump: older
    # objects lack the key and read as False, which is right for them).
    reads_maps: bool = False

    @property
    def has_rules(self) -> bool:
        return self.pre_bpf or self.pre_user or self.post_bpf or self.post_user

    @property
    def cacheable(self) -> bool:
        """The result is a function of the backing state alone: the kernel may cache it."""
        return not (self.identity or self.side_effects or self.reads_maps)


@dataclass
class CachingHints:
    """Whether results depend on who asks; if so the daemon must not cache them.

    `scopes` (added in schema 1 without a version bump: objects without it read
    as "unknown", and the daemon then assumes every rule is identity dependent)
    maps scope path -> opcode -> `OpTraits` fields."""

    identity_dependent: bool = False
    ops: list[str] = field(default_factory=list)  # "scope:op:phase" entries that read uid/gid/pid
    scopes: dict[str, dict[str, dict[str, bool]]] | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "CachingHints":
        known = {k: raw[k] for k in ("identity_dependent", "ops", "scopes") if k in raw}
        return cls(**known)

    def traits(self, scope: str, op: str) -> OpTraits | None:
        """Traits of `op` in `scope`; None if this object predates per-op traits.
        An op without rules gives all-False traits."""
        if self.scopes is None:
            return None
        raw = self.scopes.get(scope, {}).get(op, {})
        return OpTraits(**{k: bool(v) for k, v in raw.items()
                           if k in OpTraits.__dataclass_fields__})


@dataclass
class Metadata:
    abi: str
    fdsl_version: str
    source_sha256: str
    files: list[str]
    programs: dict[str, str]             # section -> scope path
    scopes: list[ScopeMeta]
    maps: list[MapMeta]
    userspace: list[UserRule]
    caching: CachingHints
    logs: list[LogFormat]
    default: dict[str, Any] = field(default_factory=lambda: {"s": "allow"})
    schema: int = SCHEMA_VERSION

    def to_json(self) -> str:
        # Shallow per dataclass (rule bodies are already JSON-shaped; asdict would deep-copy
        # them, seconds for a policy with a big set)
        return json.dumps(self, default=_fields_of, sort_keys=True, separators=(",", ":"))

    def to_bytes(self) -> bytes:
        return self.to_json().encode("utf-8")

    @classmethod
    def from_json(cls, text: str | bytes) -> "Metadata":
        if isinstance(text, bytes):
            text = text.rstrip(b"\0").decode("utf-8")
        raw = json.loads(text)
        return cls(
            abi=raw["abi"],
            fdsl_version=raw["fdsl_version"],
            source_sha256=raw["source_sha256"],
            files=list(raw["files"]),
            programs=dict(raw["programs"]),
            scopes=[ScopeMeta(**s) for s in raw["scopes"]],
            maps=[MapMeta(**m) for m in raw["maps"]],
            userspace=[UserRule(**u) for u in raw["userspace"]],
            caching=CachingHints.from_dict(raw["caching"]),
            logs=[LogFormat(**entry) for entry in raw["logs"]],
            default=raw.get("default", {"s": "allow"}),
            schema=raw.get("schema", SCHEMA_VERSION),
        )

    def rules_for(self, scope: str, op: str, phase: str) -> list[UserRule]:
        """The userspace rules the daemon runs for one filter request, in order."""
        return [r for r in self.userspace if r.scope == scope and r.op == op and r.phase == phase]

    def scope_by_section(self, section: str) -> ScopeMeta | None:
        return next((s for s in self.scopes if s.section == section), None)


def _fields_of(value: Any) -> dict[str, Any]:
    """json.dumps hook: a metadata dataclass as a dict of its fields (nested ones too)."""
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: getattr(value, f.name) for f in fields(value)}
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
