"""Name resolution, types, per-opcode fields, desugaring and warnings.

`check(policy, sources)` annotates the parsed AST in place:

* every `Expr.ty` is set, `Expr.const_value` is set when the value is known at
  compile time, `Ident.ref` / `Call.ref` say what a name denotes (see ast.py);
  a bare `name` / `newname` / `target` becomes a `FieldRef`;
* `Rule.resolved_ops` lists the opcodes a rule covers (groups expanded);
* `readonly`, `hide`, `perms`, `force_user`, `force_group` are replaced by
  ordinary `Rule`s with `Rule.origin` set (in place, so rule order is kept);
* `Rule.userspace` is set when the rule contains something BPF cannot do (a
  regex, a glob with more than one `*` or a `[...]` class, `drop entries`):
  the whole rule then runs in the daemon (`Rule.userspace_reasons` says why).

Every field fact comes from `fdsl.abi`.  All problems of a file are collected
in one run; nothing here raises on bad input.

`python -m fdsl.lang.checker --fields-table` prints the per-opcode field table used
in docs/language.md.
"""
from __future__ import annotations

import copy
import difflib
import re
import sys
from dataclasses import dataclass, field
from typing import Iterable

from fdsl import abi, regex
from fdsl.lang import ast as A
from fdsl.lang.diagnostics import Diagnostic, Severity, Sources, Span

BUILTIN_TYPES: dict[str, A.Type] = {
    "uid": A.Type("int", 32), "gid": A.Type("int", 32), "pid": A.Type("int", 32),
    "tgid": A.Type("int", 32), "nodeid": A.Type("int", 64), "error": A.Type("int", 32),
    "op": A.Type("int", 32),
}
TEST_SETUP_BUILTINS = ("uid", "gid", "pid", "tgid", "nodeid", "error")
STRING_FIELDS = ("name", "newname", "target")
MASK64 = (1 << 64) - 1
MAX_MAP_ENTRIES = 1 << 20
LOG_MAX_ARGS = 3
_LOG_CONV = re.compile(r"%(%|[-+ 0#]*\d*(?:ll|l|h|hh|z)?([diuxXps]))")
_ORDER = {"<", "<=", ">", ">="}
_EQ = {"==", "!="}
_LOGIC = {"and", "or"}


def is_int(ty: A.Type | None) -> bool:
    return ty is not None and ty.kind in ("int", "errno")


def is_truthy(ty: A.Type | None) -> bool:
    return ty is not None and ty.kind in ("int", "errno", "bool")


def const_str(e: A.Expr) -> str | None:
    """The value of a string literal or of a const naming one, else None."""
    if isinstance(e, A.StrLit):
        return e.value
    if isinstance(e, A.Ident) and isinstance(e.ref, tuple) and e.ref[0] == "const" \
            and isinstance(e.ref[1], A.ConstDecl) and isinstance(e.ref[1].value, A.StrLit):
        return e.ref[1].value.value
    return None


def is_const_string(e: A.Expr) -> bool:
    return const_str(e) is not None


def describe(ty: A.Type | None) -> str:
    """A type as users think of it, for messages."""
    if ty is None:
        return "unknown"
    return {"int": "number", "errno": "errno", "bool": "condition", "string": "string",
            "intset": "set of numbers", "strset": "set of strings", "buffer": "data buffer"}.get(ty.kind, str(ty))


def field_type(loc: abi.FieldLoc) -> A.Type:
    if loc.ctype == "string":
        return A.STRING
    if loc.ctype == "buffer":
        return A.Type("buffer")
    return A.Type("int", int(loc.ctype[1:]), loc.ctype.startswith("s"))


def parse_width(name: str) -> A.Type | None:
    """u8/u16/u32/u64 as a Type (map keys and values), None for anything else."""
    match = re.fullmatch(r"u(8|16|32|64)", name)
    return A.Type("int", int(match.group(1))) if match else None


def natural_type(e: A.Expr) -> A.Type | None:
    """The declared width of a request value or map read, None for computed values
    (arithmetic is 64-bit, so its type says nothing about the real range)."""
    if isinstance(e, (A.FieldRef, A.MapRead)) or (
            isinstance(e, A.Ident) and isinstance(e.ref, tuple) and e.ref[0] == "builtin"):
        return e.ty if e.ty is not None and e.ty.kind == "int" else None
    return None


def ops_in_order(names: Iterable[str]) -> list[str]:
    return sorted(set(names), key=lambda n: abi.OPS[n].number)


def similar(word: str, candidates: Iterable[str]) -> str | None:
    """A 'did you mean' hint, or None."""
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"did you mean '{match[0]}'?" if match else None


def fold(op: str, a: int, b: int) -> int | None:
    """Constant-fold a binary operator on 64-bit values (None = not foldable)."""
    if op in ("/", "%") and b == 0:
        return None
    result = {
        "+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
        "/": lambda: int(a / b), "%": lambda: a - int(a / b) * b,
        "&": lambda: a & b, "|": lambda: a | b, "^": lambda: a ^ b,
        "<<": lambda: (a << b) & MASK64 if 0 <= b < 64 else None,
        ">>": lambda: (a & MASK64) >> b if 0 <= b < 64 else None,
        "==": lambda: int(a == b), "!=": lambda: int(a != b), "<": lambda: int(a < b),
        "<=": lambda: int(a <= b), ">": lambda: int(a > b), ">=": lambda: int(a >= b),
        "and": lambda: int(bool(a) and bool(b)), "or": lambda: int(bool(a) or bool(b)),
    }[op]()
    if result is None:
        return None
    if result > MASK64 or result < -(1 << 63):
        return result & MASK64
    return result


@dataclass
class Ctx:
    """Where an expression is checked: which opcodes/phase, which locals."""

    ops: list[str]
    phase: str | None                   # None: no request (const, set, test value)
    where: str                          # for messages: "lookup post", "a const"
    lets: list[dict[str, A.Let]] = field(default_factory=list)
    params: dict[str, A.Expr] | None = None
    entry: bool = False                 # inside `drop entries where`: name = entry name
    reasons: list[str] = field(default_factory=list)   # why this needs userspace
    preds: list[str] = field(default_factory=list)     # predicate call stack

    def sub(self, **changes) -> "Ctx":
        new = copy.copy(self)
        new.lets = list(self.lets)
        for key, value in changes.items():
            setattr(new, key, value)
        return new


class Checker:
    """One checking run over one policy (all its files)."""

    def __init__(self, policy: A.Policy, sources: Sources) -> None:
        self.policy = policy
        self.sources = sources
        self.diags: list[Diagnostic] = []
        self._seen: set[tuple] = set()
        self.decls: dict[str, A.Item] = {}
        self.checking_consts: set[str] = set()
        self.checked_consts: set[str] = set()
        self.maps: dict[str, A.MapDecl] = {}

    # ---------------------------------------------------------- diagnostics
    def report(self, severity: Severity, message: str, span: Span, hint: str | None = None,
               notes: list | None = None) -> None:
        key = (severity, message, span)
        if key in self._seen:
            return
        self._seen.add(key)
        self.diags.append(Diagnostic(severity, message, span, hint, notes or []))

    def error_count(self) -> int:
        return sum(1 for d in self.diags if d.severity is Severity.ERROR)

    def error(self, message: str, span: Span, hint: str | None = None, notes: list | None = None) -> None:
        self.report(Severity.ERROR, message, span, hint, notes)

    def warn(self, message: str, span: Span, hint: str | None = None) -> None:
        self.report(Severity.WARNING, message, span, hint)

    # --------------------------------------------------------------- driver
    def run(self) -> list[Diagnostic]:
        items = self.policy.items
        self.collect(items)
        for item in items:
            if isinstance(item, A.ConstDecl):
                self.check_const(item)
        for item in items:
            if isinstance(item, A.SetDecl):
                self.check_set(item)
            elif isinstance(item, A.MapDecl):
                self.check_map(item)
        self.check_default(items)
        self.policy.items = self.check_items(items, scope="", top=True)
        self.check_under_paths(self.policy.items, "")
        for item in self.policy.items:
            if isinstance(item, A.TestBlock):
                self.check_test(item)
        self.check_test_names(self.policy.items)
        order = {f: i for i, f in enumerate(self.policy.files)}
        self.diags.sort(key=lambda d: (order.get(d.span.file, len(order)), d.span.line, d.span.col))
        return self.diags

    # ---------------------------------------------------------- declarations
    def reserved(self, name: str) -> str | None:
        """Why a user name is not allowed (it would shadow something), or None."""
        if name in BUILTIN_TYPES:
            return "a builtin request value"
        if name in STRING_FIELDS:
            return "a request field"
        if name in abi.ERRNOS:
            return "an errno name"
        if name in abi.NAMED_CONSTANTS:
            return "a predefined constant"
        return None

    def collect(self, items: list[A.Item]) -> None:
        for item in items:
            name = getattr(item, "name", None)
            if not isinstance(item, (A.ConstDecl, A.SetDecl, A.PredDecl, A.MapDecl)):
                continue
            why = self.reserved(name)
            if why:
                self.error(f"'{name}' is {why} and cannot be redefined", item.span)
                continue
            previous = self.decls.get(name)
            if previous is not None:
                self.error(f"'{name}' is already defined", item.span,
                           notes=[("previous definition here", previous.span)])
                continue
            self.decls[name] = item
            if isinstance(item, A.MapDecl):
                self.maps[name] = item
            if isinstance(item, A.PredDecl):
                dupes = {p for p in item.params if item.params.count(p) > 1}
                for p in sorted(dupes):
                    self.error(f"parameter '{p}' appears twice in predicate '{name}'", item.span)

    def check_const(self, decl: A.ConstDecl) -> None:
        if decl.name in self.checked_consts or decl.name in self.checking_consts:
            return
        self.checking_consts.add(decl.name)
        errors_before = self.error_count()
        decl.value = self.expr(decl.value, Ctx([], None, "a const"))
        self.checking_consts.discard(decl.name)
        self.checked_consts.add(decl.name)
        ty = decl.value.ty
        if ty is None or self.error_count() > errors_before:
            return
        if ty.kind == "string" and isinstance(decl.value, A.StrLit):
            return
        if ty.kind in ("intset", "strset"):
            self.error("a const cannot hold a set", decl.value.span, f"write 'set {decl.name} = {{...}}'")
        elif decl.value.const_value is None and ty.kind != "string":
            self.error(f"the value of const '{decl.name}' is not a compile-time constant", decl.value.span)
        elif ty.kind == "string" and not isinstance(decl.value, A.StrLit):
            self.error(f"the value of const '{decl.name}' must be a number or a string literal",
                       decl.value.span)

    def check_set(self, decl: A.SetDecl) -> None:
        lit = A.SetLit(decl.span, decl.members)
        checked = self.set_lit(lit, Ctx([], None, "a set"))
        decl.members = checked.members
        decl.ty = checked.ty

    def set_type(self, decl: A.SetDecl) -> A.Type | None:
        if decl.ty is None:
            self.check_set(decl)
        return decl.ty

    def check_map(self, decl: A.MapDecl) -> None:
        if decl.key_type_name is not None and decl.key_type is None:
            self.error(f"unknown {decl.kind} key type '{decl.key_type_name}'", decl.span,
                       "key types are u8, u16, u32 and u64")
        if decl.value_type_name is not None and parse_width(decl.value_type_name) is None:
            self.error(f"unknown map value type '{decl.value_type_name}'", decl.span,
                       "value types are u8, u16, u32 and u64")
        if decl.max_expr is not None:
            decl.max_expr = self.expr(decl.max_expr, Ctx([], None, "a map size"))
            value = decl.max_expr.const_value
            if value is None or not is_int(decl.max_expr.ty):
                self.error("'max' must be a constant number", decl.max_expr.span)
            elif not 1 <= value <= MAX_MAP_ENTRIES:
                self.error(f"'max' must be between 1 and {MAX_MAP_ENTRIES}", decl.max_expr.span)
            else:
                decl.max_entries = value
        if decl.map_type == "array" and decl.key_type is not None and decl.key_type.bits != 32:
            self.error(f"array {decl.kind}s need a u32 key", decl.span,
                       "BPF array maps are indexed by u32; use 'hash' for other key types")

    def check_default(self, items: list[A.Item]) -> None:
        defaults = [i for i in items if isinstance(i, A.Default)]
        for extra in defaults[1:]:
            self.error("'default' is declared more than once", extra.span,
                       notes=[("first declared here", defaults[0].span)])
        for d in defaults:
            self.decision(d.decision, Ctx([], None, "the default"))

    # ----------------------------------------------------------------- items
    def check_items(self, items: list[A.Item], scope: str, top: bool) -> list[A.Item]:
        """Check rules and scopes; return the item list with sugar desugared."""
        out: list[A.Item] = []
        for item in items:
            if not top and isinstance(item, (A.ConstDecl, A.SetDecl, A.PredDecl, A.MapDecl,
                                              A.Default, A.TestBlock, A.Include)):
                kind = type(item).__name__.replace("Decl", "").lower()
                self.error(f"'{kind}' is only allowed at the top level, not inside 'under'", item.span)
                continue
            if isinstance(item, A.Include):
                continue
            if isinstance(item, (A.Readonly, A.Hide, A.Perms, A.ForceOwner)):
                for rule in self.desugar(item):
                    self.check_rule(rule)
                    out.append(rule)
                continue
            if isinstance(item, A.Rule):
                self.check_rule(item)
            elif isinstance(item, A.Under):
                self.check_under(item, scope)
            out.append(item)
        return out

    def check_under(self, under: A.Under, scope: str) -> None:
        self.check_rel_path(under.path, under.span, "an 'under' path")
        if under.mode == "backing" and not (under.backing or "").strip():
            self.error("'backing' needs a directory", under.span)
        if under.mode == "backing" and under.backing and "\0" in under.backing:
            self.error("the backing directory contains a NUL byte", under.span)
        full = f"{scope}/{under.path}" if scope else under.path
        under.items = self.check_items(under.items, full, top=False)

    def check_rel_path(self, path: str, span: Span, what: str) -> bool:
        problem = None
        if not path:
            problem = "is empty"
        elif path.startswith("/"):
            problem = "must be relative to the mount root (no leading '/')"
        elif "\0" in path:
            problem = "contains a NUL byte"
        else:
            parts = path.split("/")
            if any(p == "" for p in parts):
                problem = "has an empty component ('//' or a trailing '/')"
            elif any(p in (".", "..") for p in parts):
                problem = "must not contain '.' or '..' components"
        if problem:
            self.error(f"{what} {problem}: \"{path}\"", span, "write it like \"dir/sub\"")
        return problem is None

    def check_under_paths(self, items: list[A.Item], scope: str) -> None:
        seen: dict[str, A.Under] = {}
        for item in items:
            if not isinstance(item, A.Under):
                continue
            full = f"{scope}/{item.path}" if scope else item.path
            if full in seen:
                self.error(f"'under \"{item.path}\"' is declared twice", item.span,
                           notes=[("first declared here", seen[full].span)])
            seen[full] = item
            self.check_under_paths(item.items, full)

    # ----------------------------------------------------------------- rules
    def resolve_ops(self, rule: A.Rule) -> list[str]:
        names: list[str] = []
        for op in rule.ops:
            if op.name in abi.OPS:
                names.append(op.name)
            elif op.name in abi.GROUPS:
                names += ops_in_order(abi.GROUPS[op.name])
            elif op.name in abi.NON_BPF_OPCODES:
                self.error(f"'{op.name}' never reaches a fuse-bpf program", op.span,
                           "the kernel handles it without running the filter (ABI spec section 9)")
            else:
                self.error(f"unknown opcode or group '{op.name}'", op.span,
                           similar(op.name, list(abi.OPS) + list(abi.GROUPS))
                           or f"groups: {', '.join(sorted(abi.GROUPS))}")
        seen: list[str] = []
        for n in names:
            if n not in seen:
                seen.append(n)
        return seen

    def check_rule(self, rule: A.Rule) -> None:
        rule.resolved_ops = self.resolve_ops(rule)
        if not rule.resolved_ops:
            return
        where = f"{', '.join(o.name for o in rule.ops)} {rule.phase}"
        ctx = Ctx(rule.resolved_ops, rule.phase, where)
        self.block(rule.body, ctx)
        if ctx.reasons:
            rule.userspace = True
            rule.userspace_reasons = sorted(set(ctx.reasons))

    # ------------------------------------------------------------ statements
    def block(self, body: list[A.Stmt], ctx: Ctx) -> bool:
        """Check statements; returns True when the block always decides."""
        ctx = ctx.sub()
        ctx.lets.append({})
        decided = warned = False
        for stmt in body:
            if decided and not warned:
                self.warn("unreachable statement", stmt.span,
                          "an earlier allow/deny/return always decides first")
                warned = True
            decided = self.stmt(stmt, ctx) or decided
        return decided

    def stmt(self, s: A.Stmt, ctx: Ctx) -> bool:
        if isinstance(s, (A.Allow, A.Deny, A.Return)):
            self.decision(s, ctx)
            return True
        if isinstance(s, A.If):
            s.cond = self.cond(s.cond, ctx)
            then = self.block(s.then, ctx)
            other = self.block(s.orelse, ctx) if s.orelse else False
            return then and other
        if isinstance(s, A.Let):
            self.let(s, ctx)
        elif isinstance(s, A.Assign):
            self.assign(s, ctx)
        elif isinstance(s, A.Count):
            self.count(s, ctx)
        elif isinstance(s, A.MapStore):
            self.map_store(s, ctx)
        elif isinstance(s, A.Log):
            self.log(s, ctx)
        elif isinstance(s, A.DropEntries):
            self.drop(s, ctx)
        return False

    def decision(self, s: A.Stmt, ctx: Ctx) -> None:
        if isinstance(s, A.Deny):
            s.errno = self.expr(s.errno, ctx)
            if not is_int(s.errno.ty):
                if s.errno.ty is not None:
                    self.error(f"deny needs an errno, not a {describe(s.errno.ty)}", s.errno.span)
                return
            value = s.errno.const_value
            if value is not None and not 1 <= value <= 4095:
                hint = "deny takes a positive errno such as EPERM" if value <= 0 else None
                self.error(f"errno {value} is out of range (1..4095)", s.errno.span, hint)
        elif isinstance(s, A.Return):
            s.value = self.expr(s.value, ctx)
            if s.value.ty is not None and not is_int(s.value.ty):
                self.error(f"return needs a number, not a {describe(s.value.ty)}", s.value.span)
                return
            value = s.value.const_value
            if value is not None and not (-4095 <= value <= 7):
                self.error(f"return value {value} is neither a -errno nor a mask of "
                           "USER_FILTER | BACKING | POST_FILTER", s.value.span)

    def let(self, s: A.Let, ctx: Ctx) -> None:
        s.value = self.expr(s.value, ctx)
        why = self.reserved(s.name)
        if why:
            self.error(f"'{s.name}' is {why} and cannot be redefined", s.span)
        elif s.name in ctx.lets[-1]:
            self.error(f"'{s.name}' is already defined in this block", s.span,
                       notes=[("previous definition here", ctx.lets[-1][s.name].span)])
        elif s.value.ty is not None and s.value.ty.kind in ("intset", "strset"):
            self.error("'let' cannot hold a set; declare it with 'set' at the top level", s.span)
        ctx.lets[-1][s.name] = s

    def assign(self, s: A.Assign, ctx: Ctx) -> None:
        s.value = self.expr(s.value, ctx)
        target = s.target
        path = target.path
        dotted = ".".join(path)
        if len(path) == 1 and path[0] in BUILTIN_TYPES:
            self.error(f"cannot assign to '{dotted}': it is a property of the request", target.span)
            return
        locs = self.field_locs(target, ctx)
        if locs is None:
            return
        first = next(iter(locs.values()))
        target.ty = field_type(first)
        if any(loc.is_string or loc.ctype == "buffer" for loc in locs.values()):
            self.error(f"cannot assign to '{dotted}': strings and buffers are read-only", target.span)
            return
        readonly = [op for op, loc in locs.items() if not loc.writable]
        if readonly:
            hint = "POST rules may write out.* fields only" if ctx.phase == "post" else None
            self.error(f"'{dotted}' is read-only in {', '.join(readonly)} {ctx.phase}", target.span, hint)
            return
        ignored = [op for op, loc in locs.items() if not loc.effective]
        if ignored:
            column = "honoured" if ctx.phase == "pre" else "finalize"
            honoured = sorted({p for op in ignored for p in self.kernel_uses(op, ctx.phase)})
            hint = f"the kernel uses: {', '.join(honoured)}" if honoured else \
                "the kernel uses no modified fields of this operation"
            self.warn(f"the kernel ignores writes to '{dotted}' in {', '.join(ignored)} {ctx.phase} "
                      f"(ABI spec section 9, '{column}' column)", target.span, hint)
        if s.value.ty is not None and not is_int(s.value.ty):
            self.error(f"cannot assign a {describe(s.value.ty)} to '{dotted}'", s.value.span)

    @staticmethod
    def kernel_uses(op: str, phase: str) -> frozenset[str]:
        spec = abi.OPS[op]
        return spec.honoured if phase == "pre" else spec.finalized

    def count(self, s: A.Count, ctx: Ctx) -> None:
        decl = self.maps.get(s.map)
        if s.key is not None:
            s.key = self.int_expr(s.key, ctx, "a counter key")
        if s.by is not None:
            s.by = self.int_expr(s.by, ctx, "a counter increment")
        if decl is None:
            other = self.decls.get(s.map)
            message = f"'{s.map}' is not a counter" if other else f"unknown counter '{s.map}'"
            self.error(message, s.span, similar(s.map, self.maps) if not other else None)
            return
        if decl.kind == "map":
            self.error(f"'{s.map}' is a map, not a counter: 'count' cannot add to it", s.span,
                       f"store a value with '{s.map}[KEY] = VALUE', or declare "
                       f"'counter {s.map}[{decl.key_type_name}]' to count")
            return
        if decl.key_type is None and decl.key_type_name is None and s.key is not None:
            self.error(f"counter '{s.map}' has a single slot and takes no key", s.key.span,
                       f"declare it as 'counter {s.map}[u32]' to count per key")
        elif decl.key_type_name is not None and s.key is None:
            self.error(f"counter '{s.map}' needs a key: count {s.map}[KEY]", s.span)

    def map_decl(self, name: str, span: Span, what: str) -> A.MapDecl | None:
        """The declaration `NAME[...]` refers to, or None after reporting why not."""
        decl = self.maps.get(name)
        if decl is not None:
            return decl
        if self.decls.get(name) is not None:
            self.error(f"'{name}' is not a map and cannot be {what}", span)
        else:
            self.error(f"unknown map '{name}'", span, similar(name, self.maps))
        return None

    def map_store(self, s: A.MapStore, ctx: Ctx) -> None:
        """`NAME[key] = value`: value maps only, plain `=`, key and value fit their widths."""
        s.key = self.int_expr(s.key, ctx, "a map key")
        s.value = self.int_expr(s.value, ctx, "a map value")
        span = s.map_span or s.span
        decl = self.map_decl(s.map, span, "assigned to")
        if decl is None:
            return
        if decl.kind == "counter":
            self.error(f"cannot assign to counter '{s.map}'", span,
                       f"counters only change with 'count {s.map}[KEY]'; declare "
                       f"'map {s.map}[KEY] -> u64' to store values")
            return
        if s.op != "=":
            self.error(f"'{s.op}' cannot update map '{s.map}': only '=' stores into a map", s.span,
                       "to add to a value atomically, declare a counter and use 'count'")
            return
        self.check_width(s.key, decl.key_type, f"key of map '{s.map}'")
        self.check_width(s.value, decl.value_type, f"value of map '{s.map}'")

    def map_read(self, e: A.MapRead, ctx: Ctx) -> None:
        """`NAME[key]` as a value: the entry, or 0 when there is none."""
        e.key = self.int_expr(e.key, ctx, "a map key")
        e.ty = A.Type("int", 64)
        decl = self.map_decl(e.map, e.span, "read with [KEY]")
        if decl is None:
            return
        e.ref = decl
        if ctx.phase is None:
            self.error(f"map '{e.map}' cannot be read in {ctx.where}", e.span,
                       "map contents exist only while requests run")
            return
        if decl.key_type is None and decl.key_type_name is None:
            self.error(f"counter '{e.map}' has a single slot and cannot be read with a key",
                       e.key.span, f"declare it as 'counter {e.map}[u32]' to count per key")
            return
        e.ty = A.Type("int", decl.value_type.bits)
        self.check_width(e.key, decl.key_type, f"key of map '{e.map}'")

    def check_width(self, e: A.Expr, target: A.Type | None, what: str) -> None:
        """Warn when a value is cut to a narrower map key or value."""
        if target is None or target.bits >= 64 or not is_int(e.ty):
            return
        limit = 1 << target.bits
        value = e.const_value
        if value is not None:
            if not 0 <= value < limit:
                self.warn(f"{value} does not fit in the {target} {what}: it is stored as "
                          f"{value & (limit - 1)}", e.span)
            return
        source = natural_type(e)
        if source is not None and source.bits > target.bits:
            self.warn(f"the {source} value is truncated to the {target} {what}", e.span,
                      f"declare the map with a wider type, or mask the value (& {limit - 1:#x})")

    def log(self, s: A.Log, ctx: Ctx) -> None:
        s.args = [self.expr(a, ctx) for a in s.args]
        span = s.fmt_span or s.span
        convs = [m.group(2) for m in _LOG_CONV.finditer(s.fmt) if m.group(1) != "%"]
        stripped = _LOG_CONV.sub("", s.fmt)
        if "%" in stripped:
            self.error("unsupported conversion in log format", span,
                       "use %d %i %u %x %X %p or %s (with l/ll size prefixes), and %% for '%'")
        if len(s.args) > LOG_MAX_ARGS:
            self.error(f"log takes at most {LOG_MAX_ARGS} values (bpf_trace_printk), got {len(s.args)}",
                       s.args[LOG_MAX_ARGS].span)
            return
        if len(convs) != len(s.args):
            self.error(f"log format has {len(convs)} conversion(s) but {len(s.args)} value(s) follow",
                       span)
            return
        for conv, arg in zip(convs, s.args):
            if arg.ty is None:
                continue
            if conv == "s" and arg.ty.kind != "string":
                self.error(f"%s needs a string, got {describe(arg.ty)}", arg.span)
            elif conv != "s" and not is_truthy(arg.ty):
                self.error(f"%{conv} needs a number, got {describe(arg.ty)}", arg.span,
                           "use %s for strings" if arg.ty.kind == "string" else None)

    def drop(self, s: A.DropEntries, ctx: Ctx) -> None:
        if ctx.phase != "post" or any(op != "readdir" for op in ctx.ops):
            self.error("'drop entries' is only allowed in 'on readdir post' rules", s.span)
        s.pred = self.cond(s.pred, ctx.sub(entry=True))
        ctx.reasons.append("drop entries: BPF cannot walk the dirent buffer")

    # ------------------------------------------------------------- fields
    def field_locs(self, ref: A.FieldRef, ctx: Ctx) -> dict[str, abi.FieldLoc] | None:
        """Resolve a field for every opcode of the context; report missing ones."""
        dotted = ".".join(ref.path)
        if ctx.phase is None:
            self.error(f"request field '{dotted}' cannot be used in {ctx.where}", ref.span)
            return None
        locs: dict[str, abi.FieldLoc] = {}
        missing: list[str] = []
        for op in ctx.ops:
            loc = abi.resolve_field(op, ctx.phase, ref.path)
            if loc is None:
                missing.append(op)
            else:
                locs[op] = loc
        if missing:
            self.error(f"field '{dotted}' is not available for {self.op_list(missing)} {ctx.phase}",
                       ref.span, self.field_hint(dotted, missing[0], ctx.phase))
            return None
        return locs

    @staticmethod
    def op_list(ops: list[str]) -> str:
        if len(ops) > 6:
            return ", ".join(ops[:6]) + f" (and {len(ops) - 6} more)"
        return ", ".join(ops)

    @staticmethod
    def field_hint(dotted: str, op: str, phase: str) -> str:
        names = [loc.path for loc in abi.fields_of(op, phase)]
        guess = similar(dotted, names)
        if guess:
            return guess
        if dotted.startswith("out.") and phase == "pre":
            return "out.* fields exist in post rules only"
        if not names:
            return f"{op} {phase} has no fields"
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        return f"{op} {phase} has: {shown}"

    def field_expr(self, ref: A.FieldRef, ctx: Ctx) -> A.Expr:
        locs = self.field_locs(ref, ctx)
        if locs is None:
            return ref
        types = {field_type(loc) for loc in locs.values()}
        if any(t.kind == "buffer" for t in types):
            self.error(f"'{'.'.join(ref.path)}' is a data buffer and cannot be read by a filter",
                       ref.span)
            return ref
        kinds = {t.kind for t in types}
        if len(kinds) > 1:
            self.error(f"field '{'.'.join(ref.path)}' has different types across the rule's opcodes",
                       ref.span)
            return ref
        widest = max(types, key=lambda t: t.bits)
        ref.ty = widest
        return ref

    # ---------------------------------------------------------- expressions
    def cond(self, e: A.Expr, ctx: Ctx) -> A.Expr:
        e = self.expr(e, ctx)
        if e.ty is not None and not is_truthy(e.ty):
            self.error(f"a condition must be a comparison or a number, not a {describe(e.ty)}", e.span)
        return e

    def int_expr(self, e: A.Expr, ctx: Ctx, what: str) -> A.Expr:
        e = self.expr(e, ctx)
        if e.ty is not None and not is_int(e.ty):
            self.error(f"{what} must be a number, not a {describe(e.ty)}", e.span)
        return e

    def expr(self, e: A.Expr, ctx: Ctx) -> A.Expr:
        """Check one expression; returns it (or its replacement, for bare field names)."""
        if isinstance(e, A.IntLit):
            e.ty, e.const_value = A.INT, e.value
        elif isinstance(e, A.StrLit):
            e.ty = A.STRING
        elif isinstance(e, A.BoolLit):
            e.ty, e.const_value = A.BOOL, int(e.value)
        elif isinstance(e, A.Ident):
            return self.ident(e, ctx)
        elif isinstance(e, A.FieldRef):
            return self.field_expr(e, ctx)
        elif isinstance(e, A.Unary):
            self.unary(e, ctx)
        elif isinstance(e, A.Binary):
            self.binary(e, ctx)
        elif isinstance(e, A.InSet):
            self.in_set(e, ctx)
        elif isinstance(e, A.StrTest):
            self.str_test(e, ctx)
        elif isinstance(e, A.Call):
            self.call(e, ctx)
        elif isinstance(e, A.MapRead):
            self.map_read(e, ctx)
        elif isinstance(e, A.SetLit):
            return self.set_lit(e, ctx)
        return e

    def ident(self, e: A.Ident, ctx: Ctx) -> A.Expr:
        name = e.name
        for scope in reversed(ctx.lets):
            if name in scope:
                let = scope[name]
                e.ref, e.ty, e.const_value = ("let", let), let.value.ty, None
                return e
        if ctx.params is not None and name in ctx.params:
            arg = ctx.params[name]
            e.ref, e.ty, e.const_value = ("param", name), arg.ty, arg.const_value
            return e
        decl = self.decls.get(name)
        if isinstance(decl, A.ConstDecl):
            if name in self.checking_consts:
                self.error(f"const '{name}' is defined in terms of itself", e.span)
                return e
            self.check_const(decl)
            e.ref, e.ty, e.const_value = ("const", decl), decl.value.ty, decl.value.const_value
            return e
        if isinstance(decl, A.SetDecl):
            e.ref, e.ty = ("set", decl), self.set_type(decl)
            return e
        if isinstance(decl, A.PredDecl):
            e.ref = ("pred", decl)
            call = A.Call(e.span, name, [])
            self.call(call, ctx)
            e.ty, e.const_value = call.ty, call.const_value
            return e
        if isinstance(decl, A.MapDecl) and decl.kind == "map":
            self.error(f"map '{name}' needs a key to be read: {name}[KEY]", e.span)
            return e
        if isinstance(decl, A.MapDecl):
            self.error(f"counter '{name}' cannot be used as a value", e.span)
            return e
        if name in BUILTIN_TYPES:
            return self.builtin(e, ctx)
        if name in STRING_FIELDS:
            ref = A.FieldRef(e.span, (name,))
            if ctx.entry and name == "name":
                ref.ty = A.STRING
                return ref
            return self.field_expr(ref, ctx)
        if name in abi.ERRNOS:
            e.ref, e.ty, e.const_value = ("errno", abi.ERRNOS[name]), A.ERRNO, abi.ERRNOS[name]
            return e
        if name in abi.NAMED_CONSTANTS:
            e.ref, e.ty, e.const_value = ("abi", abi.NAMED_CONSTANTS[name]), A.INT, abi.NAMED_CONSTANTS[name]
            return e
        self.unknown_name(e, ctx)
        return e

    def builtin(self, e: A.Ident, ctx: Ctx) -> A.Expr:
        if ctx.phase is None:
            self.error(f"'{e.name}' describes a request and cannot be used in {ctx.where}", e.span)
            return e
        if e.name == "error" and ctx.phase == "pre":
            self.error("'error' is only defined in post rules", e.span,
                       "it is the positive errno of the backing operation (0 = success)")
            return e
        e.ref, e.ty = ("builtin", e.name), BUILTIN_TYPES[e.name]
        return e

    def unknown_name(self, e: A.Ident, ctx: Ctx) -> None:
        visible = list(self.decls) + list(BUILTIN_TYPES) + list(STRING_FIELDS)
        visible += [n for scope in ctx.lets for n in scope] + list(ctx.params or {})
        hint = similar(e.name, visible)
        if e.name.startswith("E") and e.name.isupper():
            hint = similar(e.name, abi.ERRNOS) or hint
            self.error(f"unknown errno '{e.name}'", e.span, hint)
            return
        if e.name.isupper():
            hint = hint or similar(e.name, abi.NAMED_CONSTANTS)
        if e.name in abi.OPS or e.name in abi.GROUPS:
            hint = f"compare opcodes as strings: op == \"{e.name}\""
        self.error(f"unknown name '{e.name}'", e.span, hint)

    def unary(self, e: A.Unary, ctx: Ctx) -> None:
        e.operand = self.expr(e.operand, ctx)
        ty, value = e.operand.ty, e.operand.const_value
        if e.op == "not":
            if ty is not None and not is_truthy(ty):
                self.error(f"'not' needs a condition, not a {describe(ty)}", e.operand.span)
            e.ty = A.BOOL
            e.const_value = None if value is None else int(not value)
            return
        if ty is not None and not is_int(ty):
            self.error(f"'{e.op}' needs a number, not a {describe(ty)}", e.operand.span)
        e.ty = A.Type("int", 64, signed=e.op == "-")
        if value is not None:
            e.const_value = -value if e.op == "-" else (~value) & MASK64

    def binary(self, e: A.Binary, ctx: Ctx) -> None:
        e.left = self.expr(e.left, ctx)
        e.right = self.expr(e.right, ctx)
        if e.op in _EQ:
            self.opcode_compare(e)
        lt, rt = e.left.ty, e.right.ty
        if lt is None or rt is None:
            e.ty = A.BOOL if e.op in _EQ | _ORDER | _LOGIC else A.INT
            return
        if e.op in _LOGIC:
            for side in (e.left, e.right):
                if not is_truthy(side.ty):
                    self.error(f"'{e.op}' needs conditions, not a {describe(side.ty)}", side.span)
            e.ty = A.BOOL
        elif e.op in _EQ and lt.kind == "string" and rt.kind == "string":
            e.ty = A.BOOL
            if const_str(e.left) is None and const_str(e.right) is None:
                self.error("comparing two request strings is not supported", e.span,
                           "compare a field with a string literal")
            return
        elif e.op in _EQ | _ORDER:
            if lt.kind == "string" or rt.kind == "string":
                other = rt if lt.kind == "string" else lt
                self.error(f"cannot compare a string with a {describe(other)}", e.span,
                           "strings compare only with == and != against strings")
            elif not (is_truthy(lt) and is_truthy(rt)):
                self.error(f"cannot compare a {describe(lt)} with a {describe(rt)}", e.span)
            e.ty = A.BOOL
        else:
            for side in (e.left, e.right):
                if not is_int(side.ty):
                    self.error(f"'{e.op}' needs numbers, not a {describe(side.ty)}", side.span)
            e.ty = A.Type("int", 64)
            rv = e.right.const_value
            if e.op in ("/", "%") and rv == 0:
                self.error("division by zero", e.right.span)
            if e.op in ("<<", ">>") and rv is not None and not 0 <= rv < 64:
                self.error(f"shift by {rv} is out of range (0..63)", e.right.span)
        lv, rv = e.left.const_value, e.right.const_value
        if lv is not None and rv is not None:
            e.const_value = fold(e.op, lv, rv)

    def opcode_compare(self, e: A.Binary) -> None:
        """`op == "mkdir"`: turn the opcode name into its number."""
        for side, other in (("left", e.right), ("right", e.left)):
            lit = getattr(e, side)
            if isinstance(other, A.Ident) and other.ref == ("builtin", "op") and isinstance(lit, A.StrLit):
                if lit.value in abi.OPS:
                    number = abi.OPS[lit.value].number
                    setattr(e, side, A.IntLit(lit.span, number, ty=A.INT, const_value=number))
                else:
                    self.error(f"unknown opcode '{lit.value}'", lit.span, similar(lit.value, abi.OPS))
                    lit.ty = A.INT

    def set_elements(self, members: A.Expr, ctx: Ctx) -> tuple[A.Expr, A.Type | None]:
        """Check the right side of `in` / a pattern set; returns (expr, element kind type)."""
        members = self.expr(members, ctx)
        ty = members.ty
        if ty is None:
            return members, None
        if ty.kind == "intset":
            return members, A.INT
        if ty.kind == "strset":
            return members, A.STRING
        return members, None

    def in_set(self, e: A.InSet, ctx: Ctx) -> None:
        e.subject = self.expr(e.subject, ctx)
        e.members, elem = self.set_elements(e.members, ctx)
        e.ty = A.BOOL
        if e.members.ty is not None and elem is None:
            self.error(f"the right side of 'in' must be a set, not a {describe(e.members.ty)}", e.members.span,
                       'write {"a", "b"} or the name of a set')
            return
        sub = e.subject.ty
        if sub is None or elem is None:
            return
        if isinstance(e.members, A.SetLit) and not e.members.members:
            return
        if (sub.kind == "string") != (elem.kind == "string") or not (is_int(sub) or sub.kind == "string"):
            self.error(f"cannot look for a {describe(sub)} in a {describe(e.members.ty)}",
                       e.span)

    def str_test(self, e: A.StrTest, ctx: Ctx) -> None:
        e.subject = self.expr(e.subject, ctx)
        keyword = {"glob": "like", "regex": "matches"}.get(e.kind, e.kind)
        e.ty = A.BOOL
        if e.subject.ty is not None and e.subject.ty.kind != "string":
            self.error(f"'{keyword}' needs a string on its left, not a {describe(e.subject.ty)}", e.subject.span)
        pattern = self.expr(e.pattern, ctx)
        e.pattern = pattern
        patterns = self.pattern_strings(pattern, keyword)
        for text, span in patterns:
            self.check_pattern(e.kind, text, span, ctx)

    def pattern_strings(self, pattern: A.Expr, keyword: str) -> list[tuple[str, Span]]:
        if pattern.ty is None:
            return []
        single = const_str(pattern)
        if single is not None:
            return [(single, pattern.span)]
        members: list[A.Expr] | None = None
        if isinstance(pattern, A.SetLit):
            members = pattern.members
        elif isinstance(pattern, A.Ident) and isinstance(pattern.ref, tuple) and pattern.ref[0] == "set":
            members = pattern.ref[1].members
        if members is not None and (pattern.ty.kind == "strset" or not members):
            own = isinstance(pattern, A.SetLit)
            return [(const_str(m), m.span if own else pattern.span)  # type: ignore[misc]
                    for m in members if const_str(m) is not None]
        self.error(f"the pattern of '{keyword}' must be a string literal or a set of strings",
                   pattern.span)
        return []

    def check_pattern(self, kind: str, text: str, span: Span, ctx: Ctx) -> None:
        if kind == "regex":
            try:
                regex.compile_pattern(text)
            except regex.RegexError as err:
                self.error(f"invalid regular expression: {err}", span, regex.hint_for(text))
            ctx.reasons.append("regex 'matches' runs in userspace")
            return
        if kind != "glob":
            return
        problem = glob_problem(text)
        if problem:
            self.error(f"invalid glob pattern: {problem}", span)
            return
        if text.count("*") > 1 or "[" in text:
            ctx.reasons.append("glob with more than one '*' or a [...] class runs in userspace")

    def call(self, e: A.Call, ctx: Ctx) -> None:
        decl = self.decls.get(e.func)
        e.args = [self.expr(a, ctx) for a in e.args]
        e.ty = A.BOOL
        if not isinstance(decl, A.PredDecl):
            if decl is None:
                self.error(f"unknown predicate '{e.func}'", e.span,
                           similar(e.func, [n for n, d in self.decls.items() if isinstance(d, A.PredDecl)]))
            else:
                self.error(f"'{e.func}' is not a predicate and cannot be called", e.span)
            return
        e.ref = ("pred", decl)
        if len(e.args) != len(decl.params):
            self.error(f"predicate '{e.func}' takes {len(decl.params)} argument(s), got {len(e.args)}",
                       e.span, notes=[("declared here", decl.span)])
            return
        if e.func in ctx.preds:
            chain = " -> ".join(ctx.preds[ctx.preds.index(e.func):] + [e.func])
            self.error(f"predicate '{e.func}' is recursive ({chain})", e.span,
                       "predicates are inlined and cannot call themselves")
            return
        for arg in e.args:
            if arg.ty is not None and arg.ty.kind in ("intset", "strset"):
                self.error("sets cannot be passed to predicates", arg.span)
                return
        inner = Ctx(ctx.ops, ctx.phase, ctx.where, params=dict(zip(decl.params, e.args)),
                    entry=ctx.entry, reasons=ctx.reasons, preds=ctx.preds + [e.func])
        decl.body = self.cond(decl.body, inner)
        e.ty = A.BOOL
        e.const_value = decl.body.const_value

    def set_lit(self, e: A.SetLit, ctx: Ctx) -> A.SetLit:
        e.members = [self.expr(m, ctx) for m in e.members]
        kinds = set()
        seen: set = set()
        for m in e.members:
            if m.ty is None:
                continue
            if m.ty.kind == "string":
                if not is_const_string(m):
                    self.error("set members must be constants", m.span)
                    continue
                kinds.add("string")
                value = const_str(m)
            elif is_int(m.ty) and m.const_value is not None:
                kinds.add("int")
                value = m.const_value
            else:
                self.error("set members must be constant numbers or strings", m.span)
                continue
            if value in seen:
                self.warn("duplicate set member", m.span)
            seen.add(value)
        if len(kinds) > 1:
            self.error("a set cannot mix strings and numbers", e.span)
        e.ty = A.STRSET if kinds == {"string"} else A.INTSET if kinds == {"int"} else A.STRSET
        if not kinds and e.members:
            e.ty = None
        return e

    # ------------------------------------------------------------ desugaring
    def desugar(self, item: A.Item) -> list[A.Rule]:
        if isinstance(item, A.Readonly):
            return desugar_readonly(item.span)
        if isinstance(item, A.Hide):
            return desugar_hide(item)
        if isinstance(item, A.Perms):
            problem = parse_perms(item)
            if problem:
                self.error(f"invalid perms spec: {problem}", item.span,
                           'e.g. "a-w,u+x", "0644", "og-rwx,aD+x"; '
                           "who = u g o a, D (dirs only) or F (files only); op = + - =; perms = r w x X s t")
                return []
            return desugar_perms(item)
        if isinstance(item, A.ForceOwner):
            return desugar_force(item)
        return []

    # ----------------------------------------------------------------- tests
    def check_test_names(self, items: list[A.Item]) -> None:
        seen: dict[str, A.TestBlock] = {}
        for item in items:
            if isinstance(item, A.TestBlock):
                if item.name in seen:
                    self.error(f"test \"{item.name}\" is declared twice", item.span,
                               notes=[("first declared here", seen[item.name].span)])
                seen[item.name] = item

    def check_test(self, t: A.TestBlock) -> None:
        op_span = t.op_span or t.span
        if t.op not in abi.OPS:
            self.error(f"unknown opcode '{t.op}' in test", op_span, similar(t.op, abi.OPS))
            return
        if t.path is not None:
            self.check_rel_path(t.path, t.span, "a test path")
        ctx = Ctx([t.op], t.phase, f"test \"{t.name}\"")
        value_ctx = Ctx([], None, "a test request value")
        names: set[str] = set()
        for a in t.setup:
            if isinstance(a, A.MapStore):
                self.test_map_entry(a, value_ctx)
                continue
            a.value = self.expr(a.value, value_ctx)
            dotted = ".".join(a.target.path)
            if dotted in names:
                self.warn(f"'{dotted}' is set twice", a.target.span)
            names.add(dotted)
            if dotted in TEST_SETUP_BUILTINS:
                if dotted == "error" and t.phase == "pre":
                    self.error("'error' can only be set for post requests", a.target.span)
                want = A.INT
                a.target.ty = BUILTIN_TYPES[dotted]
            elif dotted == "op":
                self.error("'op' is given by the request line, not set", a.target.span)
                continue
            else:
                locs = self.field_locs(a.target, ctx)
                if locs is None:
                    continue
                if dotted == "dirents":   # readdir post: the names the backing listing returned
                    self.test_dirents(a.value)
                    a.target.ty = A.STRSET
                    continue
                want = field_type(locs[t.op])
                a.target.ty = want
            got = a.value.ty
            if got is None:
                continue
            if want.kind == "string":
                if not is_const_string(a.value):
                    self.error(f"'{dotted}' needs a string", a.value.span)
            elif want.kind == "buffer":
                self.error(f"'{dotted}' is a data buffer and cannot be set", a.target.span)
            elif not is_int(got) or a.value.const_value is None:
                self.error(f"'{dotted}' needs a constant number", a.value.span)
        if not t.expects:
            self.warn(f"test \"{t.name}\" has no 'expect'", t.span)
        for x in t.expects:
            if x.decision is not None:
                self.decision(x.decision, value_ctx)
            if x.check is not None:
                x.check = self.test_check(x.check, t, ctx)

    def test_map_entry(self, s: A.MapStore, ctx: Ctx) -> None:
        """`NAME[KEY] = VALUE` in a test request: the map holds this entry before it runs."""
        s.key = self.int_expr(s.key, ctx, "a map key")
        s.value = self.int_expr(s.value, ctx, "a map value")
        span = s.map_span or s.span
        decl = self.map_decl(s.map, span, "given an entry")
        if decl is None:
            return
        for part, what in ((s.key, "key"), (s.value, "value")):
            if is_int(part.ty) and part.const_value is None:
                self.error(f"the {what} of a test map entry must be a constant number", part.span)
        if decl.key_type is None and decl.key_type_name is None:
            self.error(f"counter '{s.map}' has a single slot and takes no key", s.key.span)
            return
        self.check_width(s.key, decl.key_type, f"key of map '{s.map}'")
        self.check_width(s.value, decl.value_type, f"value of map '{s.map}'")

    def test_check(self, e: A.Expr, t: A.TestBlock, ctx: Ctx) -> A.Expr:
        """An `expect` condition; `dirents == {...}` (readdir post) names the entries left
        after the filters, which no rule can read, so it is only accepted here."""
        if (t.op, t.phase) == ("readdir", "post") and isinstance(e, A.Binary) and e.op in _EQ \
                and isinstance(e.left, A.Ident) and e.left.name == "dirents":
            e.left = A.FieldRef(e.left.span, ("dirents",), ty=A.STRSET)
            e.right = self.expr(e.right, ctx)
            self.test_dirents(e.right)
            e.ty = A.BOOL
            return e
        return self.cond(e, ctx)

    def test_dirents(self, value: A.Expr) -> None:
        if not isinstance(value, A.SetLit) or value.ty != A.STRSET:
            self.error("'dirents' needs a set of entry names", value.span,
                       'for example {"a", ".env"}')


# --------------------------------------------------------------- glob check

def glob_problem(text: str) -> str | None:
    """Why a `like` pattern is malformed (unclosed class, empty class), or None."""
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            j = i + 1
            if j < len(text) and text[j] in "!^":
                j += 1
            if j < len(text) and text[j] == "]":
                j += 1
            end = text.find("]", j)
            if end < 0:
                return "'[' is not closed"
            i = end + 1
            continue
        if c == "/":
            return "a name never contains '/'"
        i += 1
    return None


# ---------------------------------------------------------------- desugaring

def _id(name: str, span: Span) -> A.Ident:
    return A.Ident(span, name)


def _field(span: Span, *path: str) -> A.FieldRef:
    return A.FieldRef(span, tuple(path))


def _rule(span: Span, ops: list[str], phase: str, body: list[A.Stmt], origin: str) -> A.Rule:
    return A.Rule(span, [A.OpName(span, o) for o in ops], phase, body, origin=origin)


def _ops_with(phase: str, path: tuple[str, ...], *, effective: bool = False,
              among: Iterable[str] | None = None) -> list[str]:
    """Opcodes (in number order) where `path` exists (and is effective) in `phase`."""
    found = []
    for name in ops_in_order(among if among is not None else abi.OPS):
        loc = abi.resolve_field(name, phase, path)
        if loc is not None and (not effective or loc.effective):
            found.append(name)
    return found


def desugar_readonly(span: Span) -> list[A.Rule]:
    """Every mutating op fails with EROFS, and so does opening a file for writing."""
    rules = [_rule(span, ["mutating"], "pre", [A.Deny(span, _id("EROFS", span))], "readonly")]
    opens = _ops_with("pre", ("in", "flags"), among=[o for o in ("open",) if o in abi.OPS])
    if opens and "O_ACCMODE" in abi.NAMED_CONSTANTS and "O_TRUNC" in abi.NAMED_CONSTANTS:
        flags = _field(span, "in", "flags")
        writes = A.Binary(span, "!=", A.Binary(span, "&", flags, _id("O_ACCMODE", span)),
                          _id("O_RDONLY", span))
        trunc = A.Binary(span, "!=", A.Binary(span, "&", copy.deepcopy(flags), _id("O_TRUNC", span)),
                         A.IntLit(span, 0))
        cond = A.Binary(span, "or", writes, trunc)
        rules.append(_rule(span, opens, "pre", [A.If(span, cond, [A.Deny(span, _id("EROFS", span))])],
                           "readonly"))
    return rules


def rename_name(expr: A.Expr, new: str) -> A.Expr:
    """A copy of `expr` where the bare field `name` reads `new` instead."""
    clone = copy.deepcopy(expr)
    stack: list = [clone]
    while stack:
        node = stack.pop()
        if isinstance(node, A.Ident) and node.name == "name":
            node.name = new
        elif isinstance(node, A.FieldRef) and node.path == ("name",):
            node.path = (new,)
        for value in vars(node).values() if isinstance(node, A.Node) else ():
            if isinstance(value, A.Node):
                stack.append(value)
            elif isinstance(value, list):
                stack.extend(v for v in value if isinstance(v, A.Node))
    return clone


def desugar_hide(item: A.Hide) -> list[A.Rule]:
    """lookup -> ENOENT, readdir listings drop it, creating it -> EACCES."""
    span, pred = item.span, item.pred

    def deny_if(p: A.Expr, errno: str) -> list[A.Stmt]:
        return [A.If(span, copy.deepcopy(p), [A.Deny(span, _id(errno, span))])]

    rules = [_rule(span, ["lookup"], "pre", deny_if(pred, "ENOENT"), "hide"),
             _rule(span, ["readdir"], "post", [A.DropEntries(span, copy.deepcopy(pred))], "hide")]
    creating = abi.GROUPS.get("creating", frozenset())
    by_newname = _ops_with("pre", ("newname",), among=creating)
    by_name = [o for o in _ops_with("pre", ("name",), among=creating) if o not in by_newname]
    if by_name:
        rules.append(_rule(span, by_name, "pre", deny_if(pred, "EACCES"), "hide"))
    if by_newname:
        rules.append(_rule(span, by_newname, "pre", deny_if(rename_name(pred, "newname"), "EACCES"),
                           "hide"))
    return rules


_WHO_BITS = {"u": 0o4700, "g": 0o2070, "o": 0o1007}
_PERM_SHIFT = {"u": 6, "g": 3, "o": 0}
_PERMS_RE = re.compile(r"([ugoaDF]*)([-+=])([rwxXst]*)")


def parse_perms(item: A.Perms) -> str | None:
    """Fill the Perms masks from a bindfs-style spec; returns a problem or None.

    mode' = (mode & and_mask) | or_mask on the 12 permission bits, computed
    separately for files and directories (they differ with X, D and F).
    """
    masks = {"file": [0o7777, 0], "dir": [0o7777, 0]}
    clauses = [c for c in re.split(r"[,:]", item.spec)]
    if not item.spec.strip():
        return "the spec is empty"
    for clause in clauses:
        clause = clause.strip()
        if re.fullmatch(r"[0-7]{1,4}", clause):
            for m in masks.values():
                m[0], m[1] = 0, int(clause, 8)
            continue
        match = _PERMS_RE.fullmatch(clause)
        if not match:
            return f"cannot read clause '{clause}'"
        who_text, op, perms = match.groups()
        targets = ["file", "dir"]
        if "D" in who_text and "F" in who_text:
            return f"clause '{clause}' uses both D and F"
        if "D" in who_text:
            targets = ["dir"]
        elif "F" in who_text:
            targets = ["file"]
        who = [w for w in who_text if w in "ugo"] if who_text.strip("DF").replace("a", "") else ["u", "g", "o"]
        if "a" in who_text:
            who = ["u", "g", "o"]
        for target in targets:
            bits = 0
            for w in who:
                for p in perms:
                    if p in "rwx" or (p == "X" and target == "dir"):
                        bits |= {"r": 4, "w": 2, "x": 1, "X": 1}[p] << _PERM_SHIFT[w]
                    elif p == "s" and w in "ug":
                        bits |= 0o4000 if w == "u" else 0o2000
                    elif p == "t":
                        bits |= 0o1000
            span_bits = 0
            for w in who:
                span_bits |= _WHO_BITS[w]
            m = masks[target]
            if op == "+":
                m[1] |= bits
            elif op == "-":
                m[0] &= ~bits & 0o7777
                m[1] &= ~bits & 0o7777
            else:
                m[0] &= ~span_bits & 0o7777
                m[1] = (m[1] & ~span_bits & 0o7777) | bits
    item.and_mask, item.or_mask = masks["file"]
    item.dir_and_mask, item.dir_or_mask = masks["dir"]
    return None


def _mode_rewrite(span: Span, and_mask: int, or_mask: int) -> A.Assign:
    mode = _field(span, "out", "attr", "mode")
    keep = A.Binary(span, "&", copy.deepcopy(mode), A.IntLit(span, and_mask | 0o170000))
    value = A.Binary(span, "|", keep, A.IntLit(span, or_mask)) if or_mask else keep
    return A.Assign(span, mode, "=", value)


def desugar_perms(item: A.Perms) -> list[A.Rule]:
    """Rewrite out.attr.mode wherever the kernel finalizes it (getattr post)."""
    span = item.span
    ops = _ops_with("post", ("out", "attr", "mode"), effective=True)
    if not ops:
        return []
    files = _mode_rewrite(span, item.and_mask, item.or_mask)
    if (item.and_mask, item.or_mask) == (item.dir_and_mask, item.dir_or_mask):
        body: list[A.Stmt] = [files]
    else:
        is_dir = A.Binary(span, "==", A.Binary(span, "&", _field(span, "out", "attr", "mode"),
                                                _id("S_IFMT", span)), _id("S_IFDIR", span))
        body = [A.If(span, is_dir, [_mode_rewrite(span, item.dir_and_mask, item.dir_or_mask)], [files])]
    return [_rule(span, ops, "post", body, "perms")]


def desugar_force(item: A.ForceOwner) -> list[A.Rule]:
    """Attributes show a fixed owner (bindfs --force-user / --force-group)."""
    span = item.span
    rules = []
    for attr, value, origin in (("uid", item.uid, "force_user"), ("gid", item.gid, "force_group")):
        if value is None:
            continue
        ops = _ops_with("post", ("out", "attr", attr), effective=True)
        if ops:
            assign = A.Assign(span, _field(span, "out", "attr", attr), "=", value)
            rules.append(_rule(span, ops, "post", [assign], origin))
    return rules


# -------------------------------------------------------------- public API

def check(policy: A.Policy, sources: Sources) -> list[Diagnostic]:
    """Check and annotate `policy` in place; returns errors and warnings."""
    try:
        return Checker(policy, sources).run()
    except RecursionError:
        span = policy.span
        return [Diagnostic(Severity.ERROR, "policy is nested too deeply to check", span)]


def fields_table() -> str:
    """Markdown table: per opcode and phase, the fields a rule can read/write."""
    lines = ["| opcode | phase | readable fields | writable (kernel uses) | writable (ignored) |",
             "|---|---|---|---|---|"]
    for name in ops_in_order(abi.OPS):
        for phase in ("pre", "post"):
            locs = abi.fields_of(name, phase)
            read = [f"`{l.path}`" for l in locs if l.ctype != "buffer"]
            used = [f"`{l.path}`" for l in locs if l.writable and l.effective]
            ignored = [f"`{l.path}`" for l in locs if l.writable and not l.effective]
            lines.append(f"| {name} | {phase} | {' '.join(read) or '-'} | {' '.join(used) or '-'} "
                         f"| {' '.join(ignored) or '-'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--fields-table"]:
        print(fields_table())
        return 0
    print("usage: python -m fdsl.lang.checker --fields-table", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
