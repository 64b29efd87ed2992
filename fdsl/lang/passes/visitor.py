"""The one AST visitor every checker pass derives from (bpftrace's `Visitor`).

`visit(node)` calls `visit_<ClassName>` when the pass defines it, else
`generic_visit`, which visits every child node and stores back what the visit
returned: a pass replaces a node by returning another one (the binder turns a
bare `name` into a `FieldRef`).  Annotations (`span`, `ty`, `ref`, ...) are not
children.  `InliningVisitor` also enters a predicate's body at each call, the
way predicates behave (they are inlined), with the call's arguments in scope.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

from fdsl.lang import ast as A
from fdsl.lang.diagnostics import Diagnostics, Sources

# Dataclass fields that annotate a node rather than hold child nodes.
NOT_CHILDREN = frozenset({"span", "ty", "ref", "const_value", "map_span", "fmt_span", "op_span"})


class Visitor:
    """Generic traversal with replacement; subclasses add `visit_<Node>` methods."""

    def __init__(self, diags: Diagnostics) -> None:
        self.diags = diags
        self._dispatch: dict[type, Callable[[Any], Any]] = {}

    def visit(self, node: Any) -> Any:
        kind = type(node)
        method = self._dispatch.get(kind)
        if method is None:
            method = getattr(self, f"visit_{kind.__name__}", None) or self.generic_visit
            self._dispatch[kind] = method
        return method(node)

    def visit_all(self, nodes: list) -> list:
        return [self.visit(n) for n in nodes]

    def generic_visit(self, node: Any) -> Any:
        for f in dataclasses.fields(node):
            if f.name in NOT_CHILDREN:
                continue
            value = getattr(node, f.name)
            if isinstance(value, A.Node):
                setattr(node, f.name, self.visit(value))
            elif isinstance(value, list) and value and isinstance(value[0], A.Node):
                setattr(node, f.name, [self.visit(v) if isinstance(v, A.Node) else v for v in value])
        return node


class InliningVisitor(Visitor):
    """A visitor that checks predicate bodies at every call, with arguments bound.

    `args` (innermost call last) maps each parameter to its argument expression,
    for passes whose answer depends on the argument (its type, its value)."""

    def __init__(self, diags: Diagnostics) -> None:
        super().__init__(diags)
        self.args: list[dict[str, A.Expr]] = []

    def visit_Call(self, e: A.Call) -> A.Expr:
        e.args = self.visit_all(e.args)
        if e.ref is not None:
            self.inline(e.ref, e.args)
        return e

    def visit_Ident(self, e: A.Ident) -> A.Expr:
        if isinstance(e.ref, A.PredRef):
            self.inline(e.ref.decl, [])
        return e

    def inline(self, decl: A.PredDecl, args: list[A.Expr]) -> None:
        self.args.append(dict(zip(decl.params, args)))
        try:
            decl.body = self.visit_body(decl.body)
        finally:
            self.args.pop()

    def visit_body(self, body: A.Expr) -> A.Expr:
        """How a predicate body is visited (the type pass checks it as a condition)."""
        return self.visit(body)

    def argument(self, name: str) -> A.Expr | None:
        """The expression a parameter stands for at the current call."""
        return self.args[-1].get(name) if self.args else None


@dataclasses.dataclass
class Unit:
    """What the pipeline passes from pass to pass: the policy and the one collector."""

    policy: A.Policy
    sources: Sources
    diags: Diagnostics


def reachable_nodes(node: object) -> Iterator[A.Node]:
    """Every statement and expression below `node`, and below the declarations its
    names refer to (predicate bodies, const values, set members, let values), each
    declaration once: what running `node` can evaluate."""
    seen: set[int] = set()
    stack: list[object] = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, list):
            stack.extend(reversed(n))
            continue
        if not isinstance(n, A.Node):
            continue
        yield n
        children = [getattr(n, f.name) for f in dataclasses.fields(n) if f.name not in NOT_CHILDREN]
        target: A.Node | None = None
        if isinstance(n, A.Call):
            target = n.ref
        elif isinstance(n, A.Ident) and isinstance(n.ref, (A.ConstRef, A.SetRef, A.LetRef, A.PredRef)):
            target = n.ref.decl
        if target is not None and id(target) not in seen:
            seen.add(id(target))
            children.append(_declared_value(target))
        stack.extend(reversed(children))


def _declared_value(decl: A.Node) -> object:
    if isinstance(decl, A.PredDecl):
        return decl.body
    if isinstance(decl, A.SetDecl):
        # literal members evaluate nothing; skipping them keeps a 20,000-name deny
        # list from being walked once per rule and per question asked of it
        return [m for m in decl.members if not isinstance(m, (A.StrLit, A.IntLit, A.BoolLit))]
    return getattr(decl, "value", None)
