"""What a policy needs that the target ABI cannot express, as diagnostics at the source.

The language's decisions are defined in ACK terms (`allow` = the return bits
the planner computes, `return EXPR` = a raw ACK result); an ABI with
enumerated return codes (RFC v1, spec §12.2) maps each of them with
`Abi.from_ack_return`.  Some have no image there: a userspace prefilter
followed by a BPF or daemon postfilter (RFC v1's USER_PREFILTER only
continues with the backing operation), a computed `return`, an opcode the
ABI lacks (RFC v1 has no CANONICAL_PATH).  Each is reported with the rule or
statement that needs it, before any code is generated.
"""
from __future__ import annotations

from fdsl import abi
from fdsl.compile.planner import OpPlan, Plan, return_bits_text, walk_exprs
from fdsl.lang import ast
from fdsl.lang.diagnostics import Diagnostic, Severity
from fdsl.lang.passes.common import all_rules


def check(plan: Plan) -> list[Diagnostic]:
    """Errors for everything in `plan` its ABI has no return code or opcode for."""
    record = plan.abi
    if record.return_style != "enumerated":
        return []
    found: list[Diagnostic] = []
    seen: set[int] = set()

    def error(message: str, node: ast.Node) -> None:
        if id(node) not in seen:
            seen.add(id(node))
            found.append(Diagnostic(Severity.ERROR, message, node.span))

    for rule in all_rules(plan.policy.items):
        for name in rule.ops:
            if name.name in abi.OPS and name.name not in record.ops:
                error(f"{record.name} has no opcode '{name.name}' (compile with --abi ack)", name)
    for scope in plan.scopes:
        for entry in scope.entries:
            if record.from_ack_return(entry.allow_bits, entry.phase) is None:
                error(_allow_message(record, entry), _culprit(entry))
            bodies = [r.rule.body for r in entry.bpf_rules] + [[entry.default]]
            for body in bodies:
                for node in walk_exprs(body):
                    if isinstance(node, ast.Return):
                        message = return_problem(record, node, entry.phase)
                        if message:
                            error(message, node)
        if isinstance(scope.default, ast.Return):     # the fallback of ops without rules
            message = return_problem(record, scope.default, "pre")
            if message:
                error(message, scope.default)
    return found


def return_problem(record: abi.Abi, node: ast.Return, phase: str) -> str | None:
    """Why `return EXPR` cannot be lowered for `record` in `phase` (None: it can)."""
    value = node.value.const_value
    if value is None:
        return (f"'return' with a computed value: {record.name} return codes are enumerated "
                f"(spec §12.2), so the result must be a constant ACK bitmask or errno")
    if record.from_ack_return(int(value), phase) is None:
        return (f"'return {value}' has no {record.name} return code in {phase} "
                f"(spec §12.2 maps BACKING, BACKING|POST_FILTER, USER_FILTER|BACKING and "
                f"0 in pre; 0 and USER_FILTER in post)")
    return None


def _allow_message(record: abi.Abi, entry: OpPlan) -> str:
    bits = return_bits_text(entry.allow_bits)
    return (f"{entry.op} {entry.phase}: 'allow' here means {bits} (a userspace prefilter, "
            f"then the backing operation, then a postfilter); {record.name} has no return code "
            f"for it: its USER_PREFILTER only continues with the backing operation (spec §12.2). "
            f"Move this rule's userspace part to a post rule, or compile with --abi ack")


def _culprit(entry: OpPlan) -> ast.Node:
    """The rule that made the entry's result inexpressible: its first userspace rule."""
    rules = entry.user_rules or entry.rules
    return rules[0].rule if rules else entry.default

