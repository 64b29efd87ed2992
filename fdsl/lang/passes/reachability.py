"""Pass 6, reachability: statements after an unconditional decision never run (warning)."""
from __future__ import annotations

from fdsl.lang import ast as A
from fdsl.lang.diagnostics import Diagnostics
from fdsl.lang.passes.common import all_rules
from fdsl.lang.passes.visitor import Unit


def run(unit: Unit) -> None:
    for rule in all_rules(unit.policy.items):
        if rule.resolved_ops:
            always_decides(rule.body, unit.diags)


def always_decides(body: list[A.Stmt], diags: Diagnostics) -> bool:
    """True when the block decides on every path; warns once about what follows."""
    decided = warned = False
    for stmt in body:
        if decided and not warned:
            diags.warn("unreachable statement", stmt.span,
                       "an earlier allow/deny/return always decides first")
            warned = True
        decided = _decides(stmt, diags) or decided
    return decided


def _decides(stmt: A.Stmt, diags: Diagnostics) -> bool:
    if isinstance(stmt, (A.Allow, A.Deny, A.Return)):
        return True
    if isinstance(stmt, A.If):
        then = always_decides(stmt.then, diags)
        other = always_decides(stmt.orelse, diags) if stmt.orelse else False
        return then and other
    return False
