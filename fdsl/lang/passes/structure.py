"""Pass 1, structure: where items may appear, `under` paths, `default`, rule opcodes.

Drops what cannot take part in checking (includes already spliced by the
parser, declarations misplaced inside `under`), so later passes see a
well-formed tree, and fills `Rule.resolved_ops` (groups expanded, opcode order).
"""
from __future__ import annotations

from fdsl import abi
from fdsl.lang import ast as A
from fdsl.lang.diagnostics import Diagnostics, Span
from fdsl.lang.passes.common import all_rules, ops_in_order, similar
from fdsl.lang.passes.visitor import Unit

TOP_LEVEL_ONLY = (A.ConstDecl, A.SetDecl, A.PredDecl, A.MapDecl, A.Default, A.TestBlock, A.Include)


def run(unit: Unit) -> None:
    policy, diags = unit.policy, unit.diags
    policy.items = _placed(policy.items, diags, top=True)
    _under_paths(policy.items, "", diags)
    _defaults(policy.items, diags)
    _test_names(policy.items, diags)


def resolve_all_ops(unit: Unit) -> None:
    """After desugaring: every rule's opcodes (groups expanded), unknown ones reported."""
    for rule in all_rules(unit.policy.items):
        rule.resolved_ops = resolve_ops(rule, unit.diags)


def _placed(items: list[A.Item], diags: Diagnostics, top: bool) -> list[A.Item]:
    out: list[A.Item] = []
    for item in items:
        if not top and isinstance(item, TOP_LEVEL_ONLY):
            kind = type(item).__name__.replace("Decl", "").lower()
            diags.error(f"'{kind}' is only allowed at the top level, not inside 'under'", item.span)
            continue
        if isinstance(item, A.Include):
            continue
        if isinstance(item, A.Under):
            _under(item, diags)
        elif isinstance(item, A.UserspaceBlock):
            item.items = _rules_only(item.items, diags)
        out.append(item)
    return out


RULE_ITEMS = (A.Rule, A.Readonly, A.Hide, A.Perms, A.ForceOwner, A.UserspaceBlock)


def _rules_only(items: list[A.Item], diags: Diagnostics) -> list[A.Item]:
    """The contents of `userspace { }`: rules and rule sugar."""
    kept: list[A.Item] = []
    for item in items:
        if isinstance(item, RULE_ITEMS):
            if isinstance(item, A.UserspaceBlock):
                item.items = _rules_only(item.items, diags)
            kept.append(item)
        else:
            kind = type(item).__name__.replace("Decl", "").lower()
            diags.error(f"'{kind}' cannot be placed in 'userspace {{ }}': only rules can", item.span,
                        "declare it outside the block")
    return kept


def _under(under: A.Under, diags: Diagnostics) -> None:
    check_rel_path(under.path, under.span, "an 'under' path", diags)
    if under.mode == "backing" and not (under.backing or "").strip():
        diags.error("'backing' needs a directory", under.span)
    if under.mode == "backing" and under.backing and "\0" in under.backing:
        diags.error("the backing directory contains a NUL byte", under.span)
    under.items = _placed(under.items, diags, top=False)


def check_rel_path(path: str, span: Span, what: str, diags: Diagnostics) -> bool:
    """Paths relative to the mount root: no leading '/', no empty, '.' or '..' parts."""
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
        diags.error(f"{what} {problem}: \"{path}\"", span, "write it like \"dir/sub\"")
    return problem is None


def _under_paths(items: list[A.Item], scope: str, diags: Diagnostics) -> None:
    seen: dict[str, A.Under] = {}
    for item in items:
        if not isinstance(item, A.Under):
            continue
        full = f"{scope}/{item.path}" if scope else item.path
        if full in seen:
            diags.error(f"'under \"{item.path}\"' is declared twice", item.span,
                        notes=[("first declared here", seen[full].span)])
        seen[full] = item
        _under_paths(item.items, full, diags)


def _defaults(items: list[A.Item], diags: Diagnostics) -> None:
    defaults = [i for i in items if isinstance(i, A.Default)]
    for extra in defaults[1:]:
        diags.error("'default' is declared more than once", extra.span,
                    notes=[("first declared here", defaults[0].span)])


def _test_names(items: list[A.Item], diags: Diagnostics) -> None:
    seen: dict[str, A.TestBlock] = {}
    for item in items:
        if isinstance(item, A.TestBlock):
            if item.name in seen:
                diags.error(f"test \"{item.name}\" is declared twice", item.span,
                            notes=[("first declared here", seen[item.name].span)])
            seen[item.name] = item


def resolve_ops(rule: A.Rule, diags: Diagnostics) -> list[str]:
    names: list[str] = []
    for op in rule.ops:
        if op.name in abi.OPS:
            names.append(op.name)
        elif op.name in abi.GROUPS:
            names += ops_in_order(abi.GROUPS[op.name])
        elif op.name in abi.NON_BPF_OPCODES:
            diags.error(f"'{op.name}' never reaches a fuse-bpf program", op.span,
                        "the kernel handles it without running the filter (ABI spec section 9)")
        else:
            diags.error(f"unknown opcode or group '{op.name}'", op.span,
                        similar(op.name, list(abi.OPS) + list(abi.GROUPS))
                        or f"groups: {', '.join(sorted(abi.GROUPS))}")
    return list(dict.fromkeys(names))
