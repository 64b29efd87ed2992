"""Pass 2, desugaring: `readonly`, `hide`, `perms`, `force_user`, `force_group` become rules.

`userspace { ... }` is spliced too: its rules take its place, marked
`Rule.in_userspace_block` for the placement pass.

Each is replaced, in place (so it keeps its position in source order), by
ordinary `Rule`s with `Rule.origin` set; later passes check them like any rule
written by hand.  Desugared nodes are fresh and unbound: binding comes after.
"""
from __future__ import annotations

import copy
import re
from typing import Iterable

from fdsl import abi
from fdsl.lang import ast as A
from fdsl.lang.diagnostics import Diagnostics, Span
from fdsl.lang.passes.common import ops_in_order
from fdsl.lang.passes.visitor import Unit

PERMS_HINT = ('e.g. "a-w,u+x", "0644", "og-rwx,aD+x"; '
              "who = u g o a, D (dirs only) or F (files only); op = + - =; perms = r w x X s t")


def run(unit: Unit) -> None:
    unit.policy.items = _desugar_items(unit.policy.items, unit.diags)


def _desugar_items(items: list[A.Item], diags: Diagnostics) -> list[A.Item]:
    out: list[A.Item] = []
    for item in items:
        if isinstance(item, (A.Readonly, A.Hide, A.Perms, A.ForceOwner)):
            out += desugar(item, diags)
            continue
        if isinstance(item, A.UserspaceBlock):
            inner = _desugar_items(item.items, diags)
            for rule in inner:
                if isinstance(rule, A.Rule):
                    rule.in_userspace_block = True
            out += inner
            continue
        if isinstance(item, A.Under):
            item.items = _desugar_items(item.items, diags)
        out.append(item)
    return out


def desugar(item: A.Item, diags: Diagnostics) -> list[A.Rule]:
    if isinstance(item, A.Readonly):
        return desugar_readonly(item.span)
    if isinstance(item, A.Hide):
        return desugar_hide(item)
    if isinstance(item, A.Perms):
        problem = parse_perms(item)
        if problem:
            diags.error(f"invalid perms spec: {problem}", item.span, PERMS_HINT)
            return []
        return desugar_perms(item)
    if isinstance(item, A.ForceOwner):
        return desugar_force(item)
    return []


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
    """lookup -> ENOENT, readdir listings drop it, creating it -> ENOENT (what a
    fuse-bpf kernel answers anyway: the VFS looks the new name up first)."""
    span, pred = item.span, item.pred

    def deny_if(p: A.Expr, errno: str) -> list[A.Stmt]:
        return [A.If(span, copy.deepcopy(p), [A.Deny(span, _id(errno, span))])]

    rules = [_rule(span, ["lookup"], "pre", deny_if(pred, "ENOENT"), "hide"),
             _rule(span, ["readdir"], "post", [A.DropEntries(span, copy.deepcopy(pred))], "hide")]
    creating = abi.GROUPS.get("creating", frozenset())
    by_newname = _ops_with("pre", ("newname",), among=creating)
    by_name = [o for o in _ops_with("pre", ("name",), among=creating) if o not in by_newname]
    if by_name:
        rules.append(_rule(span, by_name, "pre", deny_if(pred, "ENOENT"), "hide"))
    if by_newname:
        rules.append(_rule(span, by_newname, "pre", deny_if(rename_name(pred, "newname"), "ENOENT"),
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
