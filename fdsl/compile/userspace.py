"""Userspace rules: AST -> the JSON trees stored in `.fdsl.meta`.

The node shapes are documented in `fdsl/vm/userspace.py`, which evaluates
them in the daemon; this half needs the AST and runs only at compile time.
"""
from __future__ import annotations

from typing import Any

from fdsl import abi
from fdsl.lang import ast


BUILTINS = ("uid", "gid", "pid", "tgid", "nodeid", "error")
# Bare names of string/buffer arguments ("name", "newname", ...), from the ABI tables.
ARG_ALIASES: frozenset[str] = frozenset()


def _arg_aliases() -> frozenset[str]:
    return frozenset(a.alias for op in abi.OPS.values() for a in (*op.inputs, *op.outputs)
                     if a.kind != "struct")


# ---------------------------------------------------------------- serialization

class NotSerializable(Exception):
    """An AST construct with no userspace form (a checker bug if it reaches here)."""


def ident_meaning(ident: ast.Ident) -> tuple[str, Any]:
    """Normalize `Ident.ref` (set by the checker) with fallbacks for bare names."""
    ref = ident.ref
    if isinstance(ref, tuple) and len(ref) == 2:
        kind, payload = ref
        if isinstance(payload, bool):
            return ("int", int(payload))
        if isinstance(payload, int) and kind not in ("param",):
            return ("int", payload)
        return (kind, payload)
    if isinstance(ref, ast.ConstDecl):
        return ("const", ref)
    if isinstance(ref, ast.Let):
        return ("let", ref)
    if isinstance(ref, ast.SetDecl):
        return ("set", ref)
    if isinstance(ref, ast.PredDecl):
        return ("pred", ref)
    if isinstance(ref, int):
        return ("int", ref)
    name = ident.name
    global ARG_ALIASES
    if not ARG_ALIASES:
        ARG_ALIASES = _arg_aliases()
    if name in ARG_ALIASES:
        return ("field", name)
    if name in BUILTINS:
        return ("builtin", name)
    if name in abi.ERRNOS:
        return ("int", abi.ERRNOS[name])
    if name in abi.NAMED_CONSTANTS:
        return ("int", abi.NAMED_CONSTANTS[name])
    return ("var", name)


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
        if isinstance(e, ast.SetLit):
            raise NotSerializable("set literal outside 'in'")
        raise NotSerializable(type(e).__name__)

    def set_members(self, e: ast.Expr) -> list[dict]:
        if isinstance(e, ast.SetLit):
            return [self.expr(m) for m in e.members]
        if isinstance(e, ast.Ident):
            kind, payload = ident_meaning(e)
            if kind == "set":
                return [self.expr(m) for m in payload.members]
            if kind == "const":
                return self.set_members(payload.value)
        return [self.expr(e)]

    def ident(self, e: ast.Ident) -> dict:
        kind, payload = ident_meaning(e)
        if kind == "int":
            return {"e": "int", "v": payload}
        if kind == "const":
            return self.expr(payload.value)
        if kind == "builtin":
            return {"e": "builtin", "name": payload}
        if kind == "field":
            path = payload if isinstance(payload, str) else ".".join(getattr(payload, "path", payload))
            return {"e": "field", "path": path}
        if kind == "param" or (kind == "var" and self.params and e.name in self.params[-1]):
            return self.params[-1][e.name]
        if kind == "let":
            return {"e": "var", "name": e.name}
        if kind == "pred":
            self.params.append({})
            try:
                return self.expr(payload.body)
            finally:
                self.params.pop()
        if kind == "set":
            raise NotSerializable("set used as a value")
        return {"e": "var", "name": e.name}

    def call(self, e: ast.Call) -> dict:
        pred = e.ref[1] if isinstance(e.ref, tuple) else e.ref
        if not isinstance(pred, ast.PredDecl):
            raise NotSerializable(f"call of unknown predicate {e.func}")
        bound = {p: self.expr(a) for p, a in zip(pred.params, e.args)}
        self.params.append(bound)
        try:
            return self.expr(pred.body)
        finally:
            self.params.pop()


def serialize_body(body: list[ast.Stmt]) -> list[dict]:
    return Serializer().stmts(body)

