"""Userspace rules: AST -> the JSON trees stored in `.fdsl.meta`.

The node shapes are documented in `fdsl/vm/userspace.py`, which evaluates
them in the daemon; this half needs the AST and runs only at compile time.
"""
from __future__ import annotations

from typing import Any

from fdsl.lang import ast


# ---------------------------------------------------------------- serialization

class NotSerializable(Exception):
    """An AST construct with no userspace form (a checker bug if it reaches here)."""


def ident_meaning(ident: ast.Ident) -> tuple[str, Any]:
    """A (kind, payload) view of the name the binder bound: ("int", value) for
    errno and ABI constants, ("const"|"let"|"set"|"pred", decl), ("param"|"builtin",
    name), ("var", name) when unbound.  For the code generator, which still
    reads names this way; new code should match on the `ast.NameRef` classes."""
    ref = ident.ref
    if isinstance(ref, (ast.ErrnoRef, ast.AbiConstRef)):
        return ("int", ref.value)
    if isinstance(ref, ast.ConstRef):
        return ("const", ref.decl)
    if isinstance(ref, ast.LetRef):
        return ("let", ref.decl)
    if isinstance(ref, ast.SetRef):
        return ("set", ref.decl)
    if isinstance(ref, ast.PredRef):
        return ("pred", ref.decl)
    if isinstance(ref, ast.ParamRef):
        return ("param", ref.name)
    if isinstance(ref, ast.BuiltinRef):
        return ("builtin", ref.name)
    return ("var", ident.name)


class Serializer:
    """AST -> JSON trees, inlining constants, named sets and predicate calls."""

    def __init__(self) -> None:
        self.params: list[dict[str, dict]] = []

    def stmts(self, body: list[ast.Stmt]) -> list[dict]:
        return [self.stmt(s) for s in body]

    def stmt(self, s: ast.Stmt) -> dict:
        if isinstance(s, ast.Allow):
            return {"s": "allow"}
        if isinstance(s, ast.Deny):
            return {"s": "deny", "errno": self.expr(s.errno)}
        if isinstance(s, ast.Return):
            return {"s": "return", "v": self.expr(s.value)}
        if isinstance(s, ast.Assign):
            return {"s": "assign", "path": ".".join(s.target.path), "op": s.op, "v": self.expr(s.value)}
        if isinstance(s, ast.If):
            return {"s": "if", "c": self.expr(s.cond), "then": self.stmts(s.then),
                    "else": self.stmts(s.orelse)}
        if isinstance(s, ast.Let):
            return {"s": "let", "name": s.name, "v": self.expr(s.value)}
        if isinstance(s, ast.Count):
            return {"s": "count", "map": s.map, "key": self.expr(s.key) if s.key else None,
                    "by": self.expr(s.by) if s.by else None}
        if isinstance(s, ast.MapStore):
            return {"s": "store", "map": s.map, "key": self.expr(s.key), "v": self.expr(s.value)}
        if isinstance(s, ast.Log):
            return {"s": "log", "fmt": s.fmt, "args": [self.expr(a) for a in s.args]}
        if isinstance(s, ast.DropEntries):
            return {"s": "drop", "where": self.expr(s.pred)}
        raise NotSerializable(type(s).__name__)

    def expr(self, e: ast.Expr) -> dict:
        if isinstance(e, ast.BoolLit):
            return {"e": "bool", "v": e.value}
        if isinstance(e, ast.IntLit):
            return {"e": "int", "v": e.value}
        if isinstance(e, ast.StrLit):
            return {"e": "str", "v": e.value}
        if isinstance(e, ast.FieldRef):
            return {"e": "field", "path": ".".join(e.path)}
        if isinstance(e, ast.Ident):
            return self.ident(e)
        if isinstance(e, ast.Unary):
            return {"e": "un", "op": e.op, "x": self.expr(e.operand)}
        if isinstance(e, ast.Binary):
            return {"e": "bin", "op": e.op, "l": self.expr(e.left), "r": self.expr(e.right)}
        if isinstance(e, ast.InSet):
            return {"e": "in", "x": self.expr(e.subject), "set": self.set_members(e.members),
                    "neg": e.negated}
        if isinstance(e, ast.StrTest):
            pats = [m["v"] for m in self.set_members(e.pattern)]
            return {"e": "strtest", "kind": e.kind, "x": self.expr(e.subject), "pats": pats}
        if isinstance(e, ast.Call):
            return self.call(e)
        if isinstance(e, ast.MapRead):
            return {"e": "mapget", "map": e.map, "key": self.expr(e.key)}
        if isinstance(e, ast.MapHas):
            return {"e": "maphas", "map": e.map, "key": self.expr(e.key), "neg": e.negated}
        if isinstance(e, ast.ArgSize):
            return {"e": "argsize", "path": ".".join(e.arg.path)}
        if isinstance(e, ast.SetLit):
            raise NotSerializable("set literal outside 'in'")
        raise NotSerializable(type(e).__name__)

    def set_members(self, e: ast.Expr) -> list[dict]:
        if isinstance(e, ast.SetLit):
            return [self.expr(m) for m in e.members]
        if isinstance(e, ast.Ident) and isinstance(e.ref, ast.SetRef):
            return [self.expr(m) for m in e.ref.decl.members]
        if isinstance(e, ast.Ident) and isinstance(e.ref, ast.ConstRef):
            return self.set_members(e.ref.decl.value)
        return [self.expr(e)]

    def ident(self, e: ast.Ident) -> dict:
        ref = e.ref
        if isinstance(ref, (ast.ErrnoRef, ast.AbiConstRef)):
            return {"e": "int", "v": ref.value}
        if isinstance(ref, ast.ConstRef):
            return self.expr(ref.decl.value)
        if isinstance(ref, ast.BuiltinRef):
            return {"e": "builtin", "name": ref.name}
        if isinstance(ref, ast.ParamRef):
            return self.params[-1][ref.name]
        if isinstance(ref, ast.LetRef):
            return {"e": "var", "name": e.name}
        if isinstance(ref, ast.PredRef):
            self.params.append({})
            try:
                return self.expr(ref.decl.body)
            finally:
                self.params.pop()
        raise NotSerializable(f"name '{e.name}' ({type(ref).__name__})")

    def call(self, e: ast.Call) -> dict:
        pred = e.ref
        if pred is None:
            raise NotSerializable(f"call of unknown predicate {e.func}")
        bound = {p: self.expr(a) for p, a in zip(pred.params, e.args)}
        self.params.append(bound)
        try:
            return self.expr(pred.body)
        finally:
            self.params.pop()


def serialize_body(body: list[ast.Stmt]) -> list[dict]:
    return Serializer().stmts(body)

