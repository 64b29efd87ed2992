"""Which dispatch entries can run the same code: shapes of rule bodies per opcode.

An entry (one opcode and phase of a scope) runs a chain of pieces: its BPF
rules in order, then its default decision.  The code generator emits one
piece once for every entry whose piece has the same *shape*: the same syntax
tree once the things that differ between opcodes are abstracted away.  Those
are the argument slot a field lives in (`name` is in_args[0] for lookup and
in_args[1] for mkdir), the constant a decision returns (`allow` is BACKING
or BACKING|POST_FILTER, `hide` denies ENOENT or EACCES) and the opcode
itself (`op`).  Everything else, including a field's offset inside its
argument and its C type, is part of the shape, so equal shapes compile to
the same instructions around a few per-opcode values (see codegen's
`Member` parameters).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from fdsl import abi
from fdsl.lang import ast
from fdsl.compile.planner import OpPlan, RulePlan
from fdsl.compile.userspace import ident_meaning

NAME_FIELDS = ("name", "newname", "target")
_SKIPPED = ("span", "ref")


@dataclass
class Member:
    """One entry taking part in a piece of shared code.

    `nodes` maps the representative's AST nodes (by id) to this entry's
    corresponding nodes, for the nodes whose meaning depends on the entry."""

    entry: OpPlan
    step: int
    nodes: dict[int, ast.Node] = field(default_factory=dict)

    def piece(self) -> RulePlan | None:
        """The BPF rule at this step, or None for the final default decision."""
        rules = self.entry.bpf_rules
        return rules[self.step] if self.step < len(rules) else None

    def node(self, rep: ast.Node) -> ast.Node:
        return self.nodes.get(id(rep), rep)


def field_path(e: object) -> tuple[str, ...] | None:
    """The request field an expression names, or None."""
    if isinstance(e, ast.FieldRef):
        return tuple(e.path)
    if isinstance(e, ast.Ident):
        kind, payload = ident_meaning(e)
        if kind == "field":
            return tuple(payload.split(".")) if isinstance(payload, str) else tuple(
                getattr(payload, "path", payload))
        if kind == "var" and e.name in NAME_FIELDS:
            return (e.name,)
    return None


def const_decision(s: object) -> bool:
    """A `deny E` / `return V` whose value is a compile-time constant."""
    if isinstance(s, ast.Deny):
        return s.errno.const_value is not None
    if isinstance(s, ast.Return):
        return s.value.const_value is not None
    return False


class _Shaper:
    """Computes a piece's shape and the nodes whose meaning is per-entry, in walk order."""

    def __init__(self, op: str, phase: str, record: abi.Abi = abi.ACK) -> None:
        self.op, self.phase, self.abi = op, phase, record
        self.params: list[ast.Node] = []
        self.seen: dict[int, int] = {}

    def shape(self, n: Any) -> Any:
        if isinstance(n, list):
            return tuple(self.shape(x) for x in n)
        if isinstance(n, tuple):
            return tuple(self.shape(x) for x in n)
        if not is_dataclass(n) or isinstance(n, type):
            return n if isinstance(n, (int, str, bool, float, type(None))) else repr(n)
        path = field_path(n)
        if path is not None and isinstance(n, ast.Node):
            self.params.append(n)
            loc = self.abi.resolve_field(self.op, self.phase, path)
            if loc is None:
                return ("nofield", path)
            return ("field", loc.ctype, loc.size, loc.offset, loc.write_slot is None,
                    type(n).__name__)
        if isinstance(n, (ast.Allow, ast.Deny, ast.Return)):
            self.params.append(n)
            if isinstance(n, ast.Allow) or const_decision(n):
                return ("decision", type(n).__name__)
        if isinstance(n, ast.Ident) and ident_meaning(n) in (("builtin", "op"), ("builtin", "opcode")):
            return ("builtin", n.name)
        parts: list[Any] = [type(n).__name__]
        for f in fields(n):
            if f.name not in _SKIPPED:
                parts.append((f.name, self.shape(getattr(n, f.name))))
        ref = getattr(n, "ref", None)
        if ref is not None:
            parts.append(("ref", self.ref_shape(ref)))
        return tuple(parts)

    def ref_shape(self, ref: Any) -> Any:
        """Declarations are walked once per shape (their position stands for them after)."""
        payload = ref[1] if isinstance(ref, tuple) and len(ref) == 2 else ref
        kind = ref[0] if isinstance(ref, tuple) and len(ref) == 2 else type(ref).__name__
        if not is_dataclass(payload) or isinstance(payload, type):
            return (kind, self.shape(payload))
        if id(payload) in self.seen:
            return (kind, "seen", self.seen[id(payload)])
        self.seen[id(payload)] = len(self.seen)
        return (kind, self.shape(payload))


def shape_of(member: Member, record: abi.Abi = abi.ACK) -> tuple[Any, list[ast.Node]]:
    """(shape, per-entry nodes in walk order) of a member's current piece."""
    shaper = _Shaper(member.entry.op, member.entry.phase, record)
    rule = member.piece()
    if rule is None:
        body: Any = member.entry.default
        tag = "default"
    else:
        body = rule.rule.body
        tag = "rule"
    return (member.entry.phase, tag, shaper.shape(body)), shaper.params


def group(members: list[Member], record: abi.Abi = abi.ACK) -> list[list[Member]]:
    """Members with equal shapes, in order of first appearance; each member's
    `nodes` maps the group's first member's per-entry nodes to its own."""
    groups: dict[Any, tuple[list[ast.Node], list[Member]]] = {}
    for m in members:
        key, params = shape_of(m, record)
        found = groups.get(key)
        if found is None:
            groups[key] = (params, [Member(m.entry, m.step)])
            continue
        rep_params, group_members = found
        nodes = {id(r): own for r, own in zip(rep_params, params) if r is not own}
        group_members.append(Member(m.entry, m.step, nodes))
    return [g for _, g in groups.values()]


__all__ = ["Member", "group", "shape_of", "field_path", "const_decision"]
