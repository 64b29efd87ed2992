"""The fdsl abstract syntax tree, shared by every compiler pass.

The parser builds it, the passes of `fdsl/lang/passes/` annotate it (the
binder fills `ref`, the type pass `ty` / `const_value`, desugaring replaces
`readonly`, `hide`, `perms`, `force_*` by plain `Rule`s, placement sets
`Rule.userspace`), the planner and code generator read it.  Passes never build a
second tree: they annotate this one, like bpftrace's passes over one AST.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from fdsl.lang.diagnostics import Span


@dataclass(frozen=True)
class Type:
    """Value types: integers (width/sign from the ABI field), bool, string, sets, errno."""

    kind: str  # "int" | "bool" | "string" | "errno" | "intset" | "strset"
    bits: int = 64
    signed: bool = False

    def __str__(self) -> str:
        if self.kind == "int":
            return f"{'s' if self.signed else 'u'}{self.bits}"
        return self.kind


INT = Type("int")
BOOL = Type("bool")
STRING = Type("string")
ERRNO = Type("errno")
INTSET = Type("intset")
STRSET = Type("strset")


@dataclass
class Node:
    span: Span


# ----------------------------------------------------------------- expressions

@dataclass
class Expr(Node):
    ty: Type | None = field(default=None, kw_only=True)   # set by the checker
    # checker: the compile-time integer value when the expression is constant
    # (literals, consts, errno/O_*/S_* names, constant arithmetic); else None
    const_value: int | None = field(default=None, kw_only=True)


@dataclass
class IntLit(Expr):
    value: int


@dataclass
class StrLit(Expr):
    value: str


@dataclass
class BoolLit(Expr):
    value: bool


@dataclass
class Ident(Expr):
    """A bare name.  The binder sets `ref` to what it denotes (a `NameRef`).

    Bare request fields (`name`, `newname`, `target`) never stay Idents: the
    binder replaces them with a `FieldRef`.  `op == "mkdir"` has its string
    replaced by an `IntLit` of the opcode number."""

    name: str
    ref: "NameRef | None" = field(default=None, kw_only=True)


@dataclass
class FieldRef(Expr):
    """A request argument field: `name`, `newname`, `in.flags`, `out.attr.mode`."""

    path: tuple[str, ...]


@dataclass
class Unary(Expr):
    op: str            # "-" | "~" | "not"
    operand: Expr


@dataclass
class Binary(Expr):
    op: str            # + - * / % & | ^ << >> == != < <= > >= and or
    left: Expr
    right: Expr


@dataclass
class SetLit(Expr):
    members: list[Expr]


@dataclass
class InSet(Expr):
    """`subject in {..}` / `subject in NAMEDSET` / `not in`."""

    subject: Expr
    members: Expr      # SetLit or Ident naming a set
    negated: bool = False


@dataclass
class StrTest(Expr):
    """String tests on name arguments.

    kind: "startswith" | "endswith" | "glob" (`like`) | "regex" (`matches`).
    `==`/`!=` on strings stay `Binary`.  `pattern` is a StrLit, or a set of
    patterns (SetLit / Ident of a string set) meaning "any of".
    """

    kind: str
    subject: Expr
    pattern: Expr


@dataclass
class MapRead(Expr):
    """`NAME[key]` as a value: the map's value for `key`, 0 when the key has no entry.

    The binder sets `ref` to the `MapDecl`."""

    map: str
    key: Expr
    ref: "MapDecl | None" = field(default=None, kw_only=True)


@dataclass
class MapHas(Expr):
    """`key in NAME` / `key not in NAME`: does the map have an entry for `key`?

    Unlike `NAME[key]`, which reads 0 for a missing key, this tells "never
    stored" from "stored 0" (C's NULL check of bpf_map_lookup_elem).  The
    binder makes it from an `in` whose right side names a map."""

    map: str
    key: Expr
    negated: bool = False
    ref: "MapDecl | None" = field(default=None, kw_only=True)


@dataclass
class ArgSize(Expr):
    """`sizeof(value)`: the byte size of a whole request argument (`in_args[i].size`).

    For a name that is its length plus the terminating NUL, as the kernel
    passes it.  The binder makes it from a call of `sizeof`."""

    arg: FieldRef


@dataclass
class Call(Expr):
    """A call of a named predicate with arguments: `secret(name)`.

    The binder sets `ref` to the `PredDecl` (None when unknown, called with the
    wrong number of arguments, or recursive: such calls are never inlined)."""

    func: str
    args: list[Expr]
    ref: "PredDecl | None" = field(default=None, kw_only=True)


# ------------------------------------------------------------------ statements

@dataclass
class Stmt(Node):
    pass


@dataclass
class Allow(Stmt):
    pass


@dataclass
class Deny(Stmt):
    errno: Expr        # Ident naming an errno (ENOENT) or an int expression


@dataclass
class Return(Stmt):
    value: Expr        # raw ABI bitmask (>= 0) or negative errno


@dataclass
class Assign(Stmt):
    target: FieldRef
    op: str            # "=" | "|=" | "&=" | "+=" | "-=" | "^="
    value: Expr


@dataclass
class If(Stmt):
    cond: Expr
    then: list[Stmt]
    orelse: list[Stmt] = field(default_factory=list)


@dataclass
class Let(Stmt):
    name: str
    value: Expr


@dataclass
class Count(Stmt):
    """`count NAME` or `count NAME[key]`: add 1 (or `by EXPR`) to a counter."""

    map: str
    key: Expr | None = None
    by: Expr | None = None
    ref: "MapDecl | None" = field(default=None, kw_only=True)   # binder: the counter


@dataclass
class MapStore(Stmt):
    """`NAME[key] = value`: store into a value map (map_update_elem with BPF_ANY).

    `op` is kept as written so the checker can reject `+=` and friends."""

    map: str
    key: Expr
    value: Expr
    op: str = "="
    map_span: Span | None = field(default=None, kw_only=True)
    ref: "MapDecl | None" = field(default=None, kw_only=True)   # binder: the map


@dataclass
class Log(Stmt):
    fmt: str
    args: list[Expr]
    fmt_span: Span | None = field(default=None, kw_only=True)


@dataclass
class DropEntries(Stmt):
    """Userspace only: remove readdir entries whose name satisfies `pred`.

    Produced by desugaring `hide`, or written as `drop entries where PRED`."""

    pred: Expr


# ---------------------------------------------------------------- declarations

@dataclass
class Item(Node):
    pass


@dataclass
class Include(Item):
    path: str


@dataclass
class ConstDecl(Item):
    name: str
    value: Expr


@dataclass
class SetDecl(Item):
    name: str
    members: list[Expr]
    ty: Type | None = field(default=None, kw_only=True)   # checker: STRSET or INTSET


@dataclass
class PredDecl(Item):
    name: str
    params: list[str]
    body: Expr


@dataclass
class MapDecl(Item):
    """`counter NAME` (one slot), `counter NAME[KEYTYPE] max N`, `map NAME[KEY] -> VAL max N`."""

    name: str
    kind: str                  # "counter" | "map"
    map_type: str              # "array" | "hash"
    key_type: Type | None
    value_type: Type
    max_entries: int
    max_expr: Expr | None = field(default=None, kw_only=True)     # parser: the `max` expression
    key_type_name: str | None = field(default=None, kw_only=True)  # parser: key type as written
    value_type_name: str | None = field(default=None, kw_only=True)  # parser: `map` value type as written


@dataclass
class Default(Item):
    decision: Stmt             # Allow | Deny | Return


@dataclass
class OpName(Node):
    name: str                  # an opcode ("lookup") or a group ("mutating", "all")


@dataclass
class Rule(Item):
    ops: list[OpName]
    phase: str                 # "pre" | "post"
    body: list[Stmt]
    resolved_ops: list[str] = field(default_factory=list, kw_only=True)  # checker: expanded opcodes
    userspace: bool = field(default=False, kw_only=True)  # checker/planner: cannot run in BPF
    origin: str | None = field(default=None, kw_only=True)  # sugar it came from ("readonly", "hide", ...)
    userspace_reasons: list[str] = field(default_factory=list, kw_only=True)  # checker: why userspace
    in_userspace_block: bool = field(default=False, kw_only=True)  # written inside `userspace { }`


@dataclass
class Readonly(Item):
    pass


@dataclass
class Hide(Item):
    pred: Expr


@dataclass
class Perms(Item):
    """bindfs --perms style: `perms "a-w,u+x"` or `perms and 0o7555 or 0o0444` (desugared)."""

    spec: str
    and_mask: int = 0o7777
    or_mask: int = 0
    # checker: masks for directories (differ from files only with X / D / F clauses)
    dir_and_mask: int = field(default=0o7777, kw_only=True)
    dir_or_mask: int = field(default=0, kw_only=True)


@dataclass
class ForceOwner(Item):
    uid: Expr | None
    gid: Expr | None


@dataclass
class Under(Item):
    path: str                  # relative to the mount root, no leading '/', no '..'
    mode: str                  # "rules" | "passthrough" | "backing"
    items: list[Item] = field(default_factory=list)
    backing: str | None = None


@dataclass
class UserspaceBlock(Item):
    """`userspace { rules }`: the rules (and rule sugar) inside run in the daemon.

    Desugaring splices the rules in place, with `Rule.in_userspace_block` set."""

    items: list[Item] = field(default_factory=list)


@dataclass
class Expect(Node):
    """In a test block: `expect allow`, `expect deny ENOENT`, `expect FIELD == EXPR`,
    `expect log "line"` (a trace line the request printed), `expect error ENOENT`
    (the operation's final errno, such as a backing error a post rule kept)."""

    decision: Stmt | None = None
    check: Expr | None = None
    log: str | None = None
    error: Expr | None = None


@dataclass
class TestBlock(Item):
    name: str
    op: str
    phase: str
    path: str | None           # which scope the request is for ("private/x"); None = root
    setup: list[Assign | MapStore]  # field values of the request, uid/gid/pid, error; map entries
    expects: list[Expect]
    op_span: Span | None = field(default=None, kw_only=True)


@dataclass
class Policy(Node):
    items: list[Item]
    files: list[str] = field(default_factory=list)   # every file read, in include order


# ------------------------------------------------------------ name meanings
# What an `Ident` denotes, set once by the binder (fdsl/lang/passes/binder.py).
# Refs to declarations compare by identity (eq=False): two refs are equal only
# when they name the same declaration.

@dataclass(frozen=True, eq=False)
class ConstRef:
    decl: ConstDecl


@dataclass(frozen=True, eq=False)
class LetRef:
    decl: Let


@dataclass(frozen=True, eq=False)
class SetRef:
    decl: SetDecl


@dataclass(frozen=True, eq=False)
class PredRef:
    """A parameterless predicate used as a bare name (`if trusted`)."""

    decl: PredDecl


@dataclass(frozen=True)
class ParamRef:
    """A predicate parameter; it stands for the call's argument expression."""

    name: str


@dataclass(frozen=True)
class BuiltinRef:
    """A request value: uid gid pid tgid nodeid error op."""

    name: str


@dataclass(frozen=True)
class ErrnoRef:
    value: int


@dataclass(frozen=True)
class AbiConstRef:
    """O_*, S_*, BACKING, ... (abi.NAMED_CONSTANTS)."""

    value: int


NameRef = Union[ConstRef, LetRef, SetRef, PredRef, ParamRef, BuiltinRef, ErrnoRef, AbiConstRef]
