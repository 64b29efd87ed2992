"""Pass 3, name binding: every name is resolved here, once.

Top-level declarations go into one table (reserved and duplicate names are
reported), then every use is bound: `Ident.ref` gets a `NameRef`
(fdsl/lang/ast.py), `Call.ref` / `MapRead.ref` / `Count.ref` / `MapStore.ref`
their declaration, and a bare `name` / `newname` / `target` becomes a
`FieldRef`.  `op == "mkdir"` gets the opcode number.  Predicate bodies are
bound once, with their parameters in scope; recursive calls and calls with the
wrong number of arguments are reported and left unbound (`ref` None), so no
later pass inlines them.  What a name's value is (types, constants) and whether
the request has it (fields) are decided by later passes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from fdsl import abi
from fdsl.lang import ast as A
from fdsl.lang.diagnostics import Diagnostics, Span
from fdsl.lang.passes.common import (ARGUMENT_NAMES, BUILTIN_TYPES, ENTRY_FIELDS, EQ_OPS, STRING_FIELDS, all_rules,
                                     reserved, similar)
from fdsl.lang.passes.visitor import Unit, Visitor

Decl = A.ConstDecl | A.SetDecl | A.PredDecl | A.MapDecl


@dataclass
class Symbols:
    """The top-level names of a policy."""

    decls: dict[str, Decl] = field(default_factory=dict)

    @property
    def maps(self) -> dict[str, A.MapDecl]:
        return {n: d for n, d in self.decls.items() if isinstance(d, A.MapDecl)}

    @property
    def predicates(self) -> list[str]:
        return [n for n, d in self.decls.items() if isinstance(d, A.PredDecl)]


def run(unit: Unit) -> Symbols:
    binder = Binder(unit.diags, collect(unit.policy.items, unit.diags))
    binder.bind_policy(unit.policy)
    return binder.symbols


def collect(items: list[A.Item], diags: Diagnostics) -> Symbols:
    symbols = Symbols()
    for item in items:
        if not isinstance(item, (A.ConstDecl, A.SetDecl, A.PredDecl, A.MapDecl)):
            continue
        name = item.name
        why = reserved(name)
        if why:
            diags.error(f"'{name}' is {why} and cannot be redefined", item.span)
            continue
        previous = symbols.decls.get(name)
        if previous is not None:
            diags.error(f"'{name}' is already defined", item.span,
                        notes=[("previous definition here", previous.span)])
            continue
        symbols.decls[name] = item
        if isinstance(item, A.PredDecl):
            for p in sorted({p for p in item.params if item.params.count(p) > 1}):
                diags.error(f"parameter '{p}' appears twice in predicate '{name}'", item.span)
    return symbols


class Binder(Visitor):
    """Binds names in declarations, rules and (through `bind`) test blocks."""

    def __init__(self, diags: Diagnostics, symbols: Symbols) -> None:
        super().__init__(diags)
        self.symbols = symbols
        self.lets: list[dict[str, A.Let]] = []          # block scopes, innermost last
        self.params: list[str] | None = None            # inside a predicate body
        self.calls: dict[int, list[tuple[A.Ident | A.Call, A.PredDecl]]] = {}
        self.current_pred: A.PredDecl | None = None
        self.in_entry = False                           # inside `drop entries where`

    # ------------------------------------------------------------ driver
    def bind_policy(self, policy: A.Policy) -> None:
        for item in policy.items:
            if isinstance(item, A.PredDecl):
                self.params, self.current_pred = list(item.params), item
                self.calls[id(item)] = []
                item.body = self.visit(item.body)
                self.params, self.current_pred = None, None
            elif isinstance(item, A.ConstDecl):
                item.value = self.visit(item.value)
            elif isinstance(item, A.SetDecl):
                item.members = self.visit_all(item.members)
            elif isinstance(item, A.MapDecl) and item.max_expr is not None:
                item.max_expr = self.visit(item.max_expr)
            elif isinstance(item, A.Default):
                item.decision = self.visit(item.decision)
        for rule in all_rules(policy.items):
            rule.body = self.block(rule.body)
        self.cut_recursion(policy)

    def bind(self, node: A.Node) -> A.Node:
        """Bind names outside any rule (test request values, decisions, expectations)."""
        return self.visit(node)

    # ------------------------------------------------------------ statements
    def block(self, body: list[A.Stmt]) -> list[A.Stmt]:
        self.lets.append({})
        try:
            return self.visit_all(body)
        finally:
            self.lets.pop()

    def visit_If(self, s: A.If) -> A.If:
        s.cond = self.visit(s.cond)
        s.then = self.block(s.then)
        s.orelse = self.block(s.orelse) if s.orelse else []
        return s

    def visit_Let(self, s: A.Let) -> A.Let:
        s.value = self.visit(s.value)
        scope = self.lets[-1]
        why = reserved(s.name)
        if why:
            self.diags.error(f"'{s.name}' is {why} and cannot be redefined", s.span)
        elif s.name in scope:
            self.diags.error(f"'{s.name}' is already defined in this block", s.span,
                             notes=[("previous definition here", scope[s.name].span)])
        scope[s.name] = s
        return s

    def visit_DropEntries(self, s: A.DropEntries) -> A.DropEntries:
        self.in_entry = True
        try:
            s.pred = self.visit(s.pred)
        finally:
            self.in_entry = False
        return s

    def visit_Assign(self, s: A.Assign) -> A.Assign:
        s.value = self.visit(s.value)          # the target is a field path, checked by the fields pass
        return s

    def visit_Count(self, s: A.Count) -> A.Count:
        s.key = self.visit(s.key) if s.key is not None else None
        s.by = self.visit(s.by) if s.by is not None else None
        decl = self.symbols.decls.get(s.map)
        if not isinstance(decl, A.MapDecl):
            message = f"'{s.map}' is not a counter" if decl else f"unknown counter '{s.map}'"
            self.diags.error(message, s.span, similar(s.map, self.symbols.maps) if not decl else None)
        elif decl.kind == "map":
            self.diags.error(f"'{s.map}' is a map, not a counter: 'count' cannot add to it", s.span,
                             f"store a value with '{s.map}[KEY] = VALUE', or declare "
                             f"'counter {s.map}[{decl.key_type_name}]' to count")
        elif decl.key_type is None and decl.key_type_name is None and s.key is not None:
            self.diags.error(f"counter '{s.map}' has a single slot and takes no key", s.key.span,
                             f"declare it as 'counter {s.map}[u32]' to count per key")
        elif decl.key_type_name is not None and s.key is None:
            self.diags.error(f"counter '{s.map}' needs a key: count {s.map}[KEY]", s.span)
        else:
            s.ref = decl
        return s

    def visit_MapStore(self, s: A.MapStore) -> A.MapStore:
        s.key, s.value = self.visit(s.key), self.visit(s.value)
        span = s.map_span or s.span
        decl = self.map_decl(s.map, span, "assigned to")
        if decl is None:
            return s
        if decl.kind == "counter":
            self.diags.error(f"cannot assign to counter '{s.map}'", span,
                             f"counters only change with 'count {s.map}[KEY]'; declare "
                             f"'map {s.map}[KEY] -> u64' to store values")
        elif s.op != "=":
            self.diags.error(f"'{s.op}' cannot update map '{s.map}': only '=' stores into a map",
                             s.span, "to add to a value atomically, declare a counter and use 'count'")
        else:
            s.ref = decl
        return s

    def bind_test_entry(self, s: A.MapStore) -> None:
        """`NAME[KEY] = VALUE` in a test request: an entry of a map or keyed counter."""
        s.key, s.value = self.visit(s.key), self.visit(s.value)
        decl = self.map_decl(s.map, s.map_span or s.span, "given an entry")
        if decl is not None and decl.key_type is None and decl.key_type_name is None:
            self.diags.error(f"counter '{s.map}' has a single slot and takes no key", s.key.span)
        elif decl is not None:
            s.ref = decl

    def map_decl(self, name: str, span: Span, what: str) -> A.MapDecl | None:
        """The declaration `NAME[...]` refers to, or None after reporting why not."""
        decl = self.symbols.decls.get(name)
        if isinstance(decl, A.MapDecl):
            return decl
        if decl is not None:
            self.diags.error(f"'{name}' is not a map and cannot be {what}", span)
        else:
            self.diags.error(f"unknown map '{name}'", span, similar(name, self.symbols.maps))
        return None

    # ----------------------------------------------------------- expressions
    def visit_MapRead(self, e: A.MapRead) -> A.MapRead:
        e.key = self.visit(e.key)
        decl = self.map_decl(e.map, e.span, "read with [KEY]")
        if decl is not None and decl.key_type is None and decl.key_type_name is None:
            self.diags.error(f"counter '{e.map}' has a single slot and cannot be read with a key",
                             e.key.span, f"declare it as 'counter {e.map}[u32]' to count per key")
        elif decl is not None:
            e.ref = decl
        return e

    def visit_Binary(self, e: A.Binary) -> A.Binary:
        e.left, e.right = self.visit(e.left), self.visit(e.right)
        if e.op in EQ_OPS:
            e.left, e.right = self.opcode_name(e.left, e.right), self.opcode_name(e.right, e.left)
        return e

    def opcode_name(self, side: A.Expr, other: A.Expr) -> A.Expr:
        """`op == "mkdir"`: the opcode name becomes its number."""
        if not (isinstance(side, A.StrLit) and isinstance(other, A.Ident)
                and other.ref == A.BuiltinRef("op")):
            return side
        if side.value in abi.OPS:
            return A.IntLit(side.span, abi.OPS[side.value].number)
        self.diags.error(f"unknown opcode '{side.value}'", side.span, similar(side.value, abi.OPS))
        return A.IntLit(side.span, 0)

    def visit_InSet(self, e: A.InSet) -> A.Expr:
        e.subject = self.visit(e.subject)
        members = e.members
        decl = self.symbols.decls.get(members.name) if isinstance(members, A.Ident) else None
        if isinstance(members, A.Ident) and isinstance(decl, A.MapDecl) and not self.shadowed(members.name):
            has = A.MapHas(e.span, decl.name, e.subject, e.negated)
            if decl.key_type is None and decl.key_type_name is None:
                self.diags.error(f"counter '{decl.name}' has a single slot and has no keys to look for",
                                 members.span, f"declare it as 'counter {decl.name}[u32]' to count per key")
            else:
                has.ref = decl
            return has
        e.members = self.visit(members)
        return e

    def shadowed(self, name: str) -> bool:
        """Whether a let or a parameter hides the top-level declaration `name`."""
        return any(name in scope for scope in self.lets) or name in (self.params or [])

    def visit_Call(self, e: A.Call) -> A.Expr:
        e.args = self.visit_all(e.args)
        if e.func == "sizeof":
            return self.sizeof(e)
        decl = self.symbols.decls.get(e.func)
        if not isinstance(decl, A.PredDecl):
            if decl is None:
                self.diags.error(f"unknown predicate '{e.func}'", e.span,
                                 similar(e.func, self.symbols.predicates))
            else:
                self.diags.error(f"'{e.func}' is not a predicate and cannot be called", e.span)
        elif self.arity_ok(decl, len(e.args), e.span):
            e.ref = decl
            self.note_call(e, decl)
        return e

    def sizeof(self, e: A.Call) -> A.Expr:
        """`sizeof(ARG)`: the size of a whole argument (a name or a data buffer)."""
        if len(e.args) == 1 and isinstance(e.args[0], A.FieldRef) and len(e.args[0].path) == 1:
            return A.ArgSize(e.span, e.args[0])
        self.diags.error("sizeof takes one argument name, such as sizeof(value) or sizeof(name)",
                         e.span, "struct fields have fixed sizes; the sizes of data arguments vary")
        return A.IntLit(e.span, 0)

    def arity_ok(self, decl: A.PredDecl, count: int, span: Span) -> bool:
        if count == len(decl.params):
            return True
        self.diags.error(f"predicate '{decl.name}' takes {len(decl.params)} argument(s), got {count}",
                         span, notes=[("declared here", decl.span)])
        return False

    def note_call(self, node: A.Ident | A.Call, callee: A.PredDecl) -> None:
        if self.current_pred is not None:
            self.calls[id(self.current_pred)].append((node, callee))

    def visit_Ident(self, e: A.Ident) -> A.Expr:
        name = e.name
        for scope in reversed(self.lets):
            if name in scope:
                e.ref = A.LetRef(scope[name])
                return e
        if self.params is not None and name in self.params:
            e.ref = A.ParamRef(name)
            return e
        decl = self.symbols.decls.get(name)
        if isinstance(decl, A.ConstDecl):
            e.ref = A.ConstRef(decl)
        elif isinstance(decl, A.SetDecl):
            e.ref = A.SetRef(decl)
        elif isinstance(decl, A.PredDecl):
            if self.arity_ok(decl, 0, e.span):
                e.ref = A.PredRef(decl)
                self.note_call(e, decl)
        elif isinstance(decl, A.MapDecl) and decl.kind == "map":
            self.diags.error(f"map '{name}' needs a key to be read: {name}[KEY]", e.span)
        elif isinstance(decl, A.MapDecl):
            self.diags.error(f"counter '{name}' cannot be used as a value", e.span)
        elif name in BUILTIN_TYPES:
            e.ref = A.BuiltinRef(name)
        elif name in ARGUMENT_NAMES or (self.in_entry and name in ENTRY_FIELDS):
            return A.FieldRef(e.span, (name,))
        elif name in abi.ERRNOS:
            e.ref = A.ErrnoRef(abi.ERRNOS[name])
        elif name in abi.NAMED_CONSTANTS:
            e.ref = A.AbiConstRef(abi.NAMED_CONSTANTS[name])
        else:
            self.unknown_name(e)
        return e

    def unknown_name(self, e: A.Ident) -> None:
        visible = list(self.symbols.decls) + list(BUILTIN_TYPES) + list(STRING_FIELDS)
        visible += [n for scope in self.lets for n in scope] + list(self.params or [])
        hint = similar(e.name, visible)
        if e.name.startswith("E") and e.name.isupper():
            self.diags.error(f"unknown errno '{e.name}'", e.span, similar(e.name, abi.ERRNOS) or hint)
            return
        if e.name.isupper():
            hint = hint or similar(e.name, abi.NAMED_CONSTANTS)
        if e.name in abi.OPS or e.name in abi.GROUPS:
            hint = f"compare opcodes as strings: op == \"{e.name}\""
        self.diags.error(f"unknown name '{e.name}'", e.span, hint)

    # ------------------------------------------------------------ recursion
    def cut_recursion(self, policy: A.Policy) -> None:
        """Report each predicate cycle once, at the call that closes it, and unbind that call."""
        done: set[int] = set()
        stack: list[A.PredDecl] = []

        def visit(decl: A.PredDecl) -> None:
            stack.append(decl)
            for node, callee in self.calls.get(id(decl), []):
                at = next((i for i, d in enumerate(stack) if d is callee), None)
                if at is not None:
                    names = [d.name for d in stack[at:]] + [callee.name]
                    self.diags.error(f"predicate '{callee.name}' is recursive ({' -> '.join(names)})",
                                     node.span, "predicates are inlined and cannot call themselves")
                    node.ref = None
                elif id(callee) not in done:
                    visit(callee)
            stack.pop()
            done.add(id(decl))

        for item in policy.items:
            if isinstance(item, A.PredDecl) and id(item) not in done:
                visit(item)
