"""Pass 8, post-filter warnings: a PRE `allow` that silently asks for the POST phase.

In a scope where some post rule covers an opcode, every PRE `allow` of that
opcode returns `BACKING | POST_FILTER` (docs/architecture.md, "Policy
semantics"), so a C-style catch-all such as `on all post { log ... }` changes
what every pre rule returns.  Each explicit `allow` this happens to is
reported once, with the opcodes and a post rule that causes it.
"""
from __future__ import annotations

from fdsl.lang import ast as A
from fdsl.lang.passes.common import op_list, ops_in_order
from fdsl.lang.passes.visitor import Unit


def run(unit: Unit) -> None:
    found: dict[int, tuple[A.Allow, set[str], A.Rule]] = {}
    for chain in scope_chains(unit.policy.items, []):
        post: dict[str, A.Rule] = {}
        for rule in chain:
            if rule.phase == "post":
                for op in rule.resolved_ops:
                    post.setdefault(op, rule)
        for rule in chain:
            ops = [op for op in rule.resolved_ops if op in post] if rule.phase == "pre" else []
            for allow in (plain_allows(rule.body) if ops else []):
                found.setdefault(id(allow), (allow, set(), post[ops[0]]))[1].update(ops)
    for allow, gaining, post_rule in found.values():
        unit.diags.warn(
            f"this 'allow' also asks for the post phase of {op_list(ops_in_order(gaining))} "
            "(BACKING | POST_FILTER): post rules exist for them", allow.span,
            "write 'return BACKING' to let the operation through without its post rules",
            notes=[("a post rule that causes it", post_rule.span)])


def scope_chains(items: list[A.Item], outer: list[A.Rule]) -> list[list[A.Rule]]:
    """Per program (root, then each non-passthrough `under`): its rules, then the enclosing ones."""
    chain = [i for i in items if isinstance(i, A.Rule)] + outer
    chains = [chain]
    for item in items:
        if isinstance(item, A.Under) and item.mode != "passthrough":
            chains += scope_chains(item.items, chain)
    return chains


def plain_allows(body: list[A.Stmt]) -> list[A.Allow]:
    found: list[A.Allow] = []
    for stmt in body:
        if isinstance(stmt, A.Allow):
            found.append(stmt)
        elif isinstance(stmt, A.If):
            found += plain_allows(stmt.then) + plain_allows(stmt.orelse)
    return found
