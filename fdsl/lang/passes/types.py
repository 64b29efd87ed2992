"""Pass 5, types and constants: every `Expr.ty`, every compile-time `const_value`.

Operators, conditions, decisions, `let`, map keys and values (with a warning
when a value is cut to a narrower map type), `log` formats, sets and string
patterns.  Request values already carry the type the fields pass gave them
(None where the request lacks them: nothing more is reported about those).
Consts are checked on first use, so a const defined in terms of itself is
found; predicate bodies are typed at each call with the arguments' types.
"""
from __future__ import annotations

import re

from fdsl.lang import ast as A
from fdsl.lang.passes.common import (EQ_OPS, LOGIC_OPS, MASK64, ORDER_OPS, all_rules, const_str,
                                     describe, fold, is_int, is_truthy, natural_type, parse_width)
from fdsl.lang.passes.patterns import check_pattern, pattern_strings
from fdsl.lang.passes.visitor import InliningVisitor, Unit

MAX_MAP_ENTRIES = 1 << 20
LOG_MAX_ARGS = 3
LOG_CONVERSION = re.compile(r"%(%|[-+ 0#]*\d*(?:ll|l|h|hh|z)?([diuxXps]))")


def run(unit: Unit) -> None:
    types = Types(unit)
    items = unit.policy.items
    for item in items:
        if isinstance(item, A.ConstDecl):
            types.check_const(item)
    for item in items:
        if isinstance(item, A.SetDecl):
            types.check_set(item)
        elif isinstance(item, A.MapDecl):
            types.check_map(item)
        elif isinstance(item, A.Default):
            types.visit(item.decision)
    for rule in all_rules(items):
        if rule.resolved_ops:
            rule.body = types.visit_all(rule.body)


class Types(InliningVisitor):
    def __init__(self, unit: Unit) -> None:
        super().__init__(unit.diags)
        self.checking_consts: set[int] = set()
        self.checked: set[int] = set()

    # ------------------------------------------------------------ declarations
    def check_const(self, decl: A.ConstDecl) -> None:
        if id(decl) in self.checked or id(decl) in self.checking_consts:
            return
        self.checking_consts.add(id(decl))
        errors_before = self.diags.error_count()
        decl.value = self.visit(decl.value)
        self.checking_consts.discard(id(decl))
        self.checked.add(id(decl))
        ty = decl.value.ty
        if ty is None or self.diags.error_count() > errors_before \
                or self.diags.has_error_within(decl.value.span):
            return
        if ty.kind == "string" and isinstance(decl.value, A.StrLit):
            return
        if ty.kind in ("intset", "strset"):
            self.diags.error("a const cannot hold a set", decl.value.span,
                             f"write 'set {decl.name} = {{...}}'")
        elif decl.value.const_value is None and ty.kind != "string":
            self.diags.error(f"the value of const '{decl.name}' is not a compile-time constant",
                             decl.value.span)
        elif ty.kind == "string" and not isinstance(decl.value, A.StrLit):
            self.diags.error(f"the value of const '{decl.name}' must be a number or a string literal",
                             decl.value.span)

    def check_set(self, decl: A.SetDecl) -> A.Type | None:
        if id(decl) not in self.checked:
            self.checked.add(id(decl))
            lit = self.visit_SetLit(A.SetLit(decl.span, decl.members))
            decl.members, decl.ty = lit.members, lit.ty
        return decl.ty

    def check_map(self, decl: A.MapDecl) -> None:
        if decl.key_type_name is not None and decl.key_type is None:
            self.diags.error(f"unknown {decl.kind} key type '{decl.key_type_name}'", decl.span,
                             "key types are u8, u16, u32 and u64")
        if decl.value_type_name is not None and parse_width(decl.value_type_name) is None:
            self.diags.error(f"unknown map value type '{decl.value_type_name}'", decl.span,
                             "value types are u8, u16, u32 and u64")
        if decl.max_expr is not None:
            decl.max_expr = self.visit(decl.max_expr)
            value = decl.max_expr.const_value
            if value is None or not is_int(decl.max_expr.ty):
                self.diags.error("'max' must be a constant number", decl.max_expr.span)
            elif not 1 <= value <= MAX_MAP_ENTRIES:
                self.diags.error(f"'max' must be between 1 and {MAX_MAP_ENTRIES}", decl.max_expr.span)
            else:
                decl.max_entries = value
        if decl.map_type == "array" and decl.key_type is not None and decl.key_type.bits != 32:
            self.diags.error(f"array {decl.kind}s need a u32 key", decl.span,
                             "BPF array maps are indexed by u32; use 'hash' for other key types")

    # -------------------------------------------------------------- statements
    def visit_Deny(self, s: A.Deny) -> A.Deny:
        s.errno = self.visit(s.errno)
        if not is_int(s.errno.ty):
            if s.errno.ty is not None:
                self.diags.error(f"deny needs an errno, not a {describe(s.errno.ty)}", s.errno.span)
            return s
        value = s.errno.const_value
        if value is not None and not 1 <= value <= 4095:
            hint = "deny takes a positive errno such as EPERM" if value <= 0 else None
            self.diags.error(f"errno {value} is out of range (1..4095)", s.errno.span, hint)
        return s

    def visit_Return(self, s: A.Return) -> A.Return:
        s.value = self.visit(s.value)
        if s.value.ty is not None and not is_int(s.value.ty):
            self.diags.error(f"return needs a number, not a {describe(s.value.ty)}", s.value.span)
            return s
        value = s.value.const_value
        if value is not None and not (-4095 <= value <= 7):
            self.diags.error(f"return value {value} is neither a -errno nor a mask of "
                             "USER_FILTER | BACKING | POST_FILTER", s.value.span)
        return s

    def visit_If(self, s: A.If) -> A.If:
        s.cond = self.cond(s.cond)
        s.then, s.orelse = self.visit_all(s.then), self.visit_all(s.orelse)
        return s

    def visit_Let(self, s: A.Let) -> A.Let:
        s.value = self.visit(s.value)
        if s.value.ty is not None and s.value.ty.kind in ("intset", "strset"):
            self.diags.error("'let' cannot hold a set; declare it with 'set' at the top level", s.span)
        return s

    def visit_Assign(self, s: A.Assign) -> A.Assign:
        s.value = self.visit(s.value)
        if s.target.ty is not None and s.value.ty is not None and not is_int(s.value.ty):
            self.diags.error(f"cannot assign a {describe(s.value.ty)} to '{'.'.join(s.target.path)}'",
                             s.value.span)
        return s

    def visit_Count(self, s: A.Count) -> A.Count:
        if s.key is not None:
            s.key = self.int_expr(s.key, "a counter key")
        if s.by is not None:
            s.by = self.int_expr(s.by, "a counter increment")
        return s

    def visit_MapStore(self, s: A.MapStore) -> A.MapStore:
        s.key = self.int_expr(s.key, "a map key")
        s.value = self.int_expr(s.value, "a map value")
        if s.ref is not None:
            self.check_width(s.key, s.ref.key_type, f"key of map '{s.map}'")
            self.check_width(s.value, s.ref.value_type, f"value of map '{s.map}'")
        return s

    def check_width(self, e: A.Expr, target: A.Type | None, what: str) -> None:
        """Warn when a value is cut to a narrower map key or value."""
        if target is None or target.bits >= 64 or not is_int(e.ty):
            return
        limit = 1 << target.bits
        value = e.const_value
        if value is not None:
            if not 0 <= value < limit:
                self.diags.warn(f"{value} does not fit in the {target} {what}: it is stored as "
                                f"{value & (limit - 1)}", e.span)
            return
        source = natural_type(e)
        if source is not None and source.bits > target.bits:
            self.diags.warn(f"the {source} value is truncated to the {target} {what}", e.span,
                            f"declare the map with a wider type, or mask the value (& {limit - 1:#x})")

    def visit_Log(self, s: A.Log) -> A.Log:
        s.args = self.visit_all(s.args)
        span = s.fmt_span or s.span
        convs = [m.group(2) for m in LOG_CONVERSION.finditer(s.fmt) if m.group(1) != "%"]
        if "%" in LOG_CONVERSION.sub("", s.fmt):
            self.diags.error("unsupported conversion in log format", span,
                             "use %d %i %u %x %X %p or %s (with l/ll size prefixes), and %% for '%'")
        if len(s.args) > LOG_MAX_ARGS:
            self.diags.error(f"log takes at most {LOG_MAX_ARGS} values (bpf_trace_printk), "
                             f"got {len(s.args)}", s.args[LOG_MAX_ARGS].span)
            return s
        if len(convs) != len(s.args):
            self.diags.error(f"log format has {len(convs)} conversion(s) but {len(s.args)} value(s) "
                             "follow", span)
            return s
        for conv, arg in zip(convs, s.args):
            if arg.ty is None:
                continue
            if conv == "s" and arg.ty.kind != "string":
                self.diags.error(f"%s needs a string, got {describe(arg.ty)}", arg.span)
            elif conv != "s" and not is_truthy(arg.ty):
                self.diags.error(f"%{conv} needs a number, got {describe(arg.ty)}", arg.span,
                                 "use %s for strings" if arg.ty.kind == "string" else None)
        return s

    def visit_DropEntries(self, s: A.DropEntries) -> A.DropEntries:
        s.pred = self.cond(s.pred)
        return s

    # ------------------------------------------------------------- expressions
    def cond(self, e: A.Expr) -> A.Expr:
        e = self.visit(e)
        if e.ty is not None and not is_truthy(e.ty):
            self.diags.error(f"a condition must be a comparison or a number, not a {describe(e.ty)}",
                             e.span)
        return e

    def int_expr(self, e: A.Expr, what: str) -> A.Expr:
        e = self.visit(e)
        if e.ty is not None and not is_int(e.ty):
            self.diags.error(f"{what} must be a number, not a {describe(e.ty)}", e.span)
        return e

    def visit_IntLit(self, e: A.IntLit) -> A.Expr:
        e.ty, e.const_value = A.INT, e.value
        return e

    def visit_StrLit(self, e: A.StrLit) -> A.Expr:
        e.ty = A.STRING
        return e

    def visit_BoolLit(self, e: A.BoolLit) -> A.Expr:
        e.ty, e.const_value = A.BOOL, int(e.value)
        return e

    def visit_FieldRef(self, e: A.FieldRef) -> A.Expr:
        return e                                    # typed by the fields pass

    def visit_Ident(self, e: A.Ident) -> A.Expr:
        ref = e.ref
        if isinstance(ref, A.LetRef):
            e.ty, e.const_value = ref.decl.value.ty, None
        elif isinstance(ref, A.ParamRef):
            arg = self.argument(ref.name)
            if arg is not None:
                e.ty, e.const_value = arg.ty, arg.const_value
        elif isinstance(ref, A.ConstRef):
            if id(ref.decl) in self.checking_consts:
                self.diags.error(f"const '{e.name}' is defined in terms of itself", e.span)
                return e
            self.check_const(ref.decl)
            e.ty, e.const_value = ref.decl.value.ty, ref.decl.value.const_value
        elif isinstance(ref, A.SetRef):
            e.ty = self.check_set(ref.decl)
        elif isinstance(ref, A.PredRef):
            self.inline(ref.decl, [])
            e.ty, e.const_value = A.BOOL, ref.decl.body.const_value
        elif isinstance(ref, A.ErrnoRef):
            e.ty, e.const_value = A.ERRNO, ref.value
        elif isinstance(ref, A.AbiConstRef):
            e.ty, e.const_value = A.INT, ref.value
        return e                                    # BuiltinRef: typed by the fields pass

    def visit_Call(self, e: A.Call) -> A.Expr:
        e.args = self.visit_all(e.args)
        e.ty = A.BOOL
        if e.ref is None:
            return e
        for arg in e.args:
            if arg.ty is not None and arg.ty.kind in ("intset", "strset"):
                self.diags.error("sets cannot be passed to predicates", arg.span)
                return e
        self.inline(e.ref, e.args)
        e.const_value = e.ref.body.const_value
        return e

    def visit_body(self, body: A.Expr) -> A.Expr:
        return self.cond(body)

    def visit_MapRead(self, e: A.MapRead) -> A.Expr:
        e.key = self.int_expr(e.key, "a map key")
        e.ty = A.Type("int", 64)
        if e.ref is not None:
            e.ty = A.Type("int", e.ref.value_type.bits)
            self.check_width(e.key, e.ref.key_type, f"key of map '{e.map}'")
        return e

    def visit_MapHas(self, e: A.MapHas) -> A.Expr:
        e.key = self.int_expr(e.key, "a map key")
        e.ty = A.BOOL
        if e.ref is not None:
            self.check_width(e.key, e.ref.key_type, f"key of map '{e.map}'")
        return e

    def visit_ArgSize(self, e: A.ArgSize) -> A.Expr:
        return e                                    # typed by the fields pass

    def visit_Unary(self, e: A.Unary) -> A.Expr:
        e.operand = self.visit(e.operand)
        ty, value = e.operand.ty, e.operand.const_value
        if e.op == "not":
            if ty is not None and not is_truthy(ty):
                self.diags.error(f"'not' needs a condition, not a {describe(ty)}", e.operand.span)
            e.ty = A.BOOL
            e.const_value = None if value is None else int(not value)
            return e
        if ty is not None and not is_int(ty):
            self.diags.error(f"'{e.op}' needs a number, not a {describe(ty)}", e.operand.span)
        e.ty = A.Type("int", 64, signed=e.op == "-")
        if value is not None:
            e.const_value = -value if e.op == "-" else (~value) & MASK64
        return e

    def visit_Binary(self, e: A.Binary) -> A.Expr:
        e.left, e.right = self.visit(e.left), self.visit(e.right)
        lt, rt = e.left.ty, e.right.ty
        if lt is None or rt is None:
            e.ty = A.BOOL if e.op in EQ_OPS | ORDER_OPS | LOGIC_OPS else A.INT
            return e
        if e.op in LOGIC_OPS:
            for side in (e.left, e.right):
                if not is_truthy(side.ty):
                    self.diags.error(f"'{e.op}' needs conditions, not a {describe(side.ty)}", side.span)
            e.ty = A.BOOL
        elif e.op in EQ_OPS and lt.kind == "string" and rt.kind == "string":
            e.ty = A.BOOL
            if const_str(e.left) is None and const_str(e.right) is None:
                self.diags.error("comparing two request strings is not supported", e.span,
                                 "compare a field with a string literal")
            return e
        elif e.op in EQ_OPS | ORDER_OPS:
            if lt.kind == "string" or rt.kind == "string":
                other = rt if lt.kind == "string" else lt
                self.diags.error(f"cannot compare a string with a {describe(other)}", e.span,
                                 "strings compare only with == and != against strings")
            elif not (is_truthy(lt) and is_truthy(rt)):
                self.diags.error(f"cannot compare a {describe(lt)} with a {describe(rt)}", e.span)
            e.ty = A.BOOL
        else:
            for side in (e.left, e.right):
                if not is_int(side.ty):
                    self.diags.error(f"'{e.op}' needs numbers, not a {describe(side.ty)}", side.span)
            e.ty = A.Type("int", 64)
            rv = e.right.const_value
            if e.op in ("/", "%") and rv == 0:
                self.diags.error("division by zero", e.right.span)
            if e.op in ("<<", ">>") and rv is not None and not 0 <= rv < 64:
                self.diags.error(f"shift by {rv} is out of range (0..63)", e.right.span)
        lv, rv = e.left.const_value, e.right.const_value
        if lv is not None and rv is not None:
            e.const_value = fold(e.op, lv, rv)
        return e

    def visit_InSet(self, e: A.InSet) -> A.Expr:
        e.subject, e.members = self.visit(e.subject), self.visit(e.members)
        e.ty = A.BOOL
        kind = e.members.ty.kind if e.members.ty is not None else None
        elem = A.INT if kind == "intset" else A.STRING if kind == "strset" else None
        if e.members.ty is not None and elem is None:
            self.diags.error(f"the right side of 'in' must be a set, not a {describe(e.members.ty)}",
                             e.members.span, 'write {"a", "b"} or the name of a set')
            return e
        sub = e.subject.ty
        if sub is None or elem is None or (isinstance(e.members, A.SetLit) and not e.members.members):
            return e
        if (sub.kind == "string") != (elem.kind == "string") or not (is_int(sub) or sub.kind == "string"):
            self.diags.error(f"cannot look for a {describe(sub)} in a {describe(e.members.ty)}", e.span)
        return e

    def visit_StrTest(self, e: A.StrTest) -> A.Expr:
        e.subject = self.visit(e.subject)
        keyword = {"glob": "like", "regex": "matches"}.get(e.kind, e.kind)
        e.ty = A.BOOL
        if e.subject.ty is not None and e.subject.ty.kind != "string":
            self.diags.error(f"'{keyword}' needs a string on its left, not a {describe(e.subject.ty)}",
                             e.subject.span)
        e.pattern = self.visit(e.pattern)
        for text, span in pattern_strings(e.pattern, keyword, self.diags):
            check_pattern(e.kind, text, span, self.diags)
        return e

    def visit_SetLit(self, e: A.SetLit) -> A.SetLit:
        e.members = self.visit_all(e.members)
        kinds: set[str] = set()
        seen: set[object] = set()
        for m in e.members:
            if m.ty is None:
                continue
            value: object
            if m.ty.kind == "string":
                if const_str(m) is None:
                    self.diags.error("set members must be constants", m.span)
                    continue
                kinds.add("string")
                value = const_str(m)
            elif is_int(m.ty) and m.const_value is not None:
                kinds.add("int")
                value = m.const_value
            else:
                self.diags.error("set members must be constant numbers or strings", m.span)
                continue
            if value in seen:
                self.diags.warn("duplicate set member", m.span)
            seen.add(value)
        if len(kinds) > 1:
            self.diags.error("a set cannot mix strings and numbers", e.span)
        e.ty = A.INTSET if kinds == {"int"} else A.STRSET
        if not kinds and e.members:
            e.ty = None
        return e
