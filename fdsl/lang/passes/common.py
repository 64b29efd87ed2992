"""Facts and small helpers shared by the checker passes (types, names, folding).

Nothing here reports a diagnostic: passes decide what is wrong, these only
answer questions about names, types and constant values.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Iterable, Iterator

from fdsl import abi
from fdsl.lang import ast as A

BUILTIN_TYPES: dict[str, A.Type] = {
    "uid": A.Type("int", 32), "gid": A.Type("int", 32), "pid": A.Type("int", 32),
    "tgid": A.Type("int", 32), "nodeid": A.Type("int", 64), "error": A.Type("int", 32),
    "op": A.Type("int", 32), "opcode": A.Type("int", 32),
}
TEST_SETUP_BUILTINS = ("uid", "gid", "pid", "tgid", "nodeid", "error")
STRING_FIELDS = ("name", "newname", "target")
# Every argument a bare name can denote: the strings above and the data buffers
# (`value`, `data`, ...), which exist for their size (reading the bytes is refused).
ARGUMENT_NAMES = frozenset(a.alias for op in abi.OPS.values() for a in (*op.inputs, *op.outputs)
                           if a.kind != "struct")
# Inside `drop entries where`: the entry's attributes besides `name` (struct fuse_dirent).
ENTRY_FIELDS: dict[str, A.Type] = {"ino": A.Type("int", 64), "type": A.Type("int", 32)}
MASK64 = (1 << 64) - 1
ORDER_OPS = {"<", "<=", ">", ">="}
EQ_OPS = {"==", "!="}
LOGIC_OPS = {"and", "or"}


@dataclass(frozen=True)
class Request:
    """Where an expression is checked: the opcodes and phase of the request it reads.

    `phase` None means no request at all (a const, a set, a test value);
    `where` names the place in messages ("lookup post", "a const"); inside
    `drop entries where`, `entry` is set and `name` is the entry's name."""

    ops: tuple[str, ...]
    phase: str | None
    where: str
    entry: bool = False


def no_request(where: str) -> Request:
    return Request((), None, where)


def rule_request(rule: A.Rule) -> Request:
    where = f"{', '.join(o.name for o in rule.ops)} {rule.phase}"
    return Request(tuple(rule.resolved_ops), rule.phase, where)


def all_rules(items: list[A.Item]) -> Iterator[A.Rule]:
    """Every rule, top level and inside `under` scopes, in source order."""
    for item in items:
        if isinstance(item, A.Rule):
            yield item
        elif isinstance(item, A.Under):
            yield from all_rules(item.items)


def is_int(ty: A.Type | None) -> bool:
    return ty is not None and ty.kind in ("int", "errno")


def is_truthy(ty: A.Type | None) -> bool:
    return ty is not None and ty.kind in ("int", "errno", "bool")


def const_str(e: A.Expr) -> str | None:
    """The value of a string literal or of a const naming one, else None."""
    if isinstance(e, A.StrLit):
        return e.value
    if isinstance(e, A.Ident) and isinstance(e.ref, A.ConstRef) and isinstance(e.ref.decl.value, A.StrLit):
        return e.ref.decl.value.value
    return None


def describe(ty: A.Type | None) -> str:
    """A type as users think of it, for messages."""
    if ty is None:
        return "unknown"
    return {"int": "number", "errno": "errno", "bool": "condition", "string": "string",
            "intset": "set of numbers", "strset": "set of strings",
            "buffer": "data buffer"}.get(ty.kind, str(ty))


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
            isinstance(e, A.Ident) and isinstance(e.ref, A.BuiltinRef)):
        return e.ty if e.ty is not None and e.ty.kind == "int" else None
    return None


def ops_in_order(names: Iterable[str]) -> list[str]:
    return sorted(set(names), key=lambda n: abi.OPS[n].number)


def op_list(ops: Iterable[str]) -> str:
    """Opcodes for a message, at most six named."""
    ops = list(ops)
    if len(ops) > 6:
        return ", ".join(ops[:6]) + f" (and {len(ops) - 6} more)"
    return ", ".join(ops)


def similar(word: str, candidates: Iterable[str]) -> str | None:
    """A 'did you mean' hint, or None."""
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"did you mean '{match[0]}'?" if match else None


def reserved(name: str) -> str | None:
    """Why a user name is not allowed (it would shadow something), or None."""
    if name in BUILTIN_TYPES:
        return "a builtin request value"
    if name in STRING_FIELDS:
        return "a request field"
    if name == "sizeof":
        return "a builtin function"
    if name in abi.ERRNOS:
        return "an errno name"
    if name in abi.NAMED_CONSTANTS:
        return "a predefined constant"
    return None


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
