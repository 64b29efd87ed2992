"""Pass 9, test blocks: the request a `test` describes and what it expects.

A test's values are constants (no request exists while they are written); its
`expect` conditions read the request after the filter ran.  Expressions go
through the same binder, fields and type passes as rules, with the test's
opcode and phase.  `dirents` (readdir post) is the listing: set in the request,
compared in an `expect`, readable nowhere else.
"""
from __future__ import annotations

from fdsl import abi
from fdsl.lang import ast as A
from fdsl.lang.passes.binder import Binder, Symbols
from fdsl.lang.passes.common import (BUILTIN_TYPES, EQ_OPS, TEST_SETUP_BUILTINS, Request, const_str,
                                     field_type, is_int, no_request, similar)
from fdsl.lang.passes.fields import Fields
from fdsl.lang.passes.structure import check_rel_path
from fdsl.lang.passes.types import Types
from fdsl.lang.passes.visitor import Unit

VALUES = no_request("a test request value")


def run(unit: Unit, symbols: Symbols) -> None:
    checker = TestChecker(unit, symbols)
    for item in unit.policy.items:
        if isinstance(item, A.TestBlock):
            checker.check(item)


class TestChecker:
    def __init__(self, unit: Unit, symbols: Symbols) -> None:
        self.diags = unit.diags
        self.binder = Binder(unit.diags, symbols)
        self.fields = Fields(unit)
        self.types = Types(unit)

    def expr(self, e: A.Expr, request: Request) -> A.Expr:
        e = self.fields.check(self.binder.bind(e), request)
        return self.types.visit(e)

    def check(self, t: A.TestBlock) -> None:
        if t.op not in abi.OPS:
            self.diags.error(f"unknown opcode '{t.op}' in test", t.op_span or t.span, similar(t.op, abi.OPS))
            return
        if t.path is not None:
            check_rel_path(t.path, t.span, "a test path", self.diags)
        request = Request((t.op,), t.phase, f"test \"{t.name}\"")
        names: set[str] = set()
        for a in t.setup:
            if isinstance(a, A.MapStore):
                self.map_entry(a)
                continue
            dotted = ".".join(a.target.path)
            if dotted in names:
                self.diags.warn(f"'{dotted}' is set twice", a.target.span)
            names.add(dotted)
            self.setup(a, t, request)
        if not t.expects:
            self.diags.warn(f"test \"{t.name}\" has no 'expect'", t.span)
        for x in t.expects:
            if x.decision is not None:
                x.decision = self.types.visit(self.fields.check(self.binder.bind(x.decision), VALUES))
            if x.check is not None:
                x.check = self.expectation(x.check, t, request)
            if x.error is not None:
                x.error = self.expected_errno(x.error)

    def expected_errno(self, e: A.Expr) -> A.Expr:
        """`expect error E`: an errno name or number, 1..4095."""
        e = self.expr(e, VALUES)
        value = e.const_value
        if e.ty is not None and (not is_int(e.ty) or value is None):
            self.diags.error("'expect error' needs an errno such as ENOENT", e.span)
        elif value is not None and not 1 <= value <= 4095:
            self.diags.error(f"errno {value} is out of range (1..4095)", e.span)
        return e

    def setup(self, a: A.Assign, t: A.TestBlock, request: Request) -> None:
        a.value = self.expr(a.value, VALUES)
        dotted = ".".join(a.target.path)
        if dotted in TEST_SETUP_BUILTINS:
            if dotted == "error" and t.phase == "pre":
                self.diags.error("'error' can only be set for post requests", a.target.span)
            want = A.INT
            a.target.ty = BUILTIN_TYPES[dotted]
        elif dotted in ("op", "opcode"):
            self.diags.error(f"'{dotted}' is given by the request line, not set", a.target.span)
            return
        else:
            self.fields.request = request
            locs = self.fields.locations(a.target)
            if locs is None:
                return
            if dotted == "dirents":      # readdir post: the names the backing listing returned
                self.dirents(a.value)
                a.target.ty = A.STRSET
                return
            want = field_type(locs[t.op])
            a.target.ty = want
        if a.value.ty is None:
            return
        if want.kind == "string":
            if const_str(a.value) is None:
                self.diags.error(f"'{dotted}' needs a string", a.value.span)
        elif want.kind == "buffer":        # its bytes, written as a string
            if const_str(a.value) is None:
                self.diags.error(f"'{dotted}' is a data buffer: give its bytes as a string",
                                 a.value.span)
        elif not is_int(a.value.ty) or a.value.const_value is None:
            self.diags.error(f"'{dotted}' needs a constant number", a.value.span)

    def map_entry(self, s: A.MapStore) -> None:
        """`NAME[KEY] = VALUE` in a test request: the map holds this entry before it runs."""
        self.binder.bind_test_entry(s)
        s.key = self.fields.check(s.key, VALUES)
        s.value = self.fields.check(s.value, VALUES)
        s.key = self.types.int_expr(s.key, "a map key")
        s.value = self.types.int_expr(s.value, "a map value")
        for part, what in ((s.key, "key"), (s.value, "value")):
            if is_int(part.ty) and part.const_value is None:
                self.diags.error(f"the {what} of a test map entry must be a constant number", part.span)
        if s.ref is not None:
            self.types.check_width(s.key, s.ref.key_type, f"key of map '{s.map}'")
            self.types.check_width(s.value, s.ref.value_type, f"value of map '{s.map}'")

    def expectation(self, e: A.Expr, t: A.TestBlock, request: Request) -> A.Expr:
        """An `expect` condition; `dirents == {...}` (readdir post) names the entries left
        after the filters, which no rule can read, so it is only accepted here."""
        if (t.op, t.phase) == ("readdir", "post") and isinstance(e, A.Binary) and e.op in EQ_OPS \
                and isinstance(e.left, A.Ident) and e.left.name == "dirents":
            e.left = A.FieldRef(e.left.span, ("dirents",), ty=A.STRSET)
            e.right = self.expr(e.right, request)
            self.dirents(e.right)
            e.ty = A.BOOL
            return e
        return self.types.cond(self.fields.check(self.binder.bind(e), request))

    def dirents(self, value: A.Expr) -> None:
        if not isinstance(value, A.SetLit) or value.ty != A.STRSET:
            self.diags.error("'dirents' needs a set of entry names", value.span,
                             'for example {"a", ".env"}')
