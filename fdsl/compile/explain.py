"""`fdsl explain`: the decision table of every scope, opcode and phase.

Rendered from the same `Plan` the code generator uses, so what it prints is
what the object does: rules in order with what each can decide, where each
runs (BPF or userspace, and why), and the return bits of every outcome.
"""
from __future__ import annotations

from fdsl import abi
from fdsl.lang import ast
from fdsl.compile.planner import OpPlan, Plan, RulePlan, ScopePlan, return_bits_text

MAX_RULE_TEXT = 96
# What mainline FUSE_PASSTHROUGH takes over from the daemon (spec §13): file I/O.
KERNEL_PASSTHROUGH_OPS = ("read", "write")


def fmt_expr(e: ast.Expr) -> str:
    """Compact source-like rendering of an expression."""
    if isinstance(e, ast.IntLit):
        return str(e.value) if e.value < 256 else hex(e.value)
    if isinstance(e, ast.StrLit):
        return '"' + e.value.replace('"', '\\"') + '"'
    if isinstance(e, ast.BoolLit):
        return "true" if e.value else "false"
    if isinstance(e, ast.Ident):
        return e.name
    if isinstance(e, ast.FieldRef):
        return ".".join(e.path)
    if isinstance(e, ast.Unary):
        sep = " " if e.op == "not" else ""
        return f"{e.op}{sep}{fmt_expr(e.operand)}"
    if isinstance(e, ast.Binary):
        return f"{fmt_expr(e.left)} {e.op} {fmt_expr(e.right)}"
    if isinstance(e, ast.SetLit):
        return "{" + ", ".join(fmt_expr(m) for m in e.members) + "}"
    if isinstance(e, ast.InSet):
        return f"{fmt_expr(e.subject)} {'not in' if e.negated else 'in'} {fmt_expr(e.members)}"
    if isinstance(e, ast.StrTest):
        word = {"glob": "like", "regex": "matches"}.get(e.kind, e.kind)
        return f"{fmt_expr(e.subject)} {word} {fmt_expr(e.pattern)}"
    if isinstance(e, ast.Call):
        return f"{e.func}({', '.join(fmt_expr(a) for a in e.args)})"
    if isinstance(e, ast.MapRead):
        return f"{e.map}[{fmt_expr(e.key)}]"
    if isinstance(e, ast.MapHas):
        return f"{fmt_expr(e.key)} {'not in' if e.negated else 'in'} {e.map}"
    if isinstance(e, ast.ArgSize):
        return f"sizeof({fmt_expr(e.arg)})"
    return type(e).__name__


def fmt_decision(s: ast.Stmt) -> str:
    if isinstance(s, ast.Allow):
        return "allow"
    if isinstance(s, ast.Deny):
        return f"deny {fmt_expr(s.errno)}"
    if isinstance(s, ast.Return):
        return f"return {fmt_expr(s.value)}"
    return type(s).__name__.lower()


def fmt_stmts(body: list[ast.Stmt]) -> str:
    return "; ".join(fmt_stmt(s) for s in body)


def fmt_stmt(s: ast.Stmt) -> str:
    if isinstance(s, (ast.Allow, ast.Deny, ast.Return)):
        return fmt_decision(s)
    if isinstance(s, ast.If):
        text = f"if {fmt_expr(s.cond)} {{ {fmt_stmts(s.then)} }}"
        return text + (f" else {{ {fmt_stmts(s.orelse)} }}" if s.orelse else "")
    if isinstance(s, ast.Assign):
        return f"{'.'.join(s.target.path)} {s.op} {fmt_expr(s.value)}"
    if isinstance(s, ast.Let):
        return f"let {s.name} = {fmt_expr(s.value)}"
    if isinstance(s, ast.Count):
        key = f"[{fmt_expr(s.key)}]" if s.key else ""
        return f"count {s.map}{key}" + (f" by {fmt_expr(s.by)}" if s.by else "")
    if isinstance(s, ast.MapStore):
        return f"{s.map}[{fmt_expr(s.key)}] {s.op} {fmt_expr(s.value)}"
    if isinstance(s, ast.Log):
        return f'log "{s.fmt}"' + "".join(", " + fmt_expr(a) for a in s.args)
    if isinstance(s, ast.DropEntries):
        return f"drop entries where {fmt_expr(s.pred)}"
    return type(s).__name__.lower()


def outcomes(body: list[ast.Stmt]) -> tuple[list[ast.Stmt], bool]:
    """Decisions a body can reach, and whether it can finish without one."""
    found: list[ast.Stmt] = []
    for s in body:
        if isinstance(s, (ast.Allow, ast.Deny, ast.Return)):
            found.append(s)
            return found, False
        if isinstance(s, ast.If):
            then, then_falls = outcomes(s.then)
            other, else_falls = outcomes(s.orelse)
            found += then + other
            if not then_falls and not else_falls:
                return found, False
    return found, True


def decision_bits(d: ast.Stmt, allow_bits: int, op: str | None = None,
                  phase: str | None = None, record: abi.Abi = abi.ACK) -> str:
    """What the program returns for a decision, in `record`'s terms (and, where the
    kernel's finalize replaces a PRE deny's errno, what the caller sees)."""
    if isinstance(d, ast.Allow):
        return allow_text(allow_bits, phase or "pre", record)
    if isinstance(d, ast.Deny):
        value = d.errno.const_value
        if value is None and isinstance(d.errno, ast.Ident) and isinstance(
                d.errno.ref, (ast.ErrnoRef, ast.AbiConstRef)):
            value = d.errno.ref.value
        if not isinstance(value, int):
            return f"-({fmt_expr(d.errno)})"
        seen = abi.requests.caller_errno(op, value) if op and phase == "pre" else value
        if seen != value:
            return f"-{abi.errno_name(value)} (the caller sees {abi.errno_name(seen)})"
        return f"-{abi.errno_name(value)}"
    if isinstance(d, ast.Return):
        return f"raw {fmt_expr(d.value)}"
    return "?"


def allow_text(bits: int, phase: str, record: abi.Abi) -> str:
    """ACK's bits as ACK names them; an enumerated ABI's code name for them."""
    if record.return_style == "bitmask":
        return return_bits_text(bits)
    return record.return_text(bits, phase)


def _rule_line(r: RulePlan, entry: OpPlan, scope: ScopePlan, record: abi.Abi) -> str:
    where = "userspace" if r.userspace else "bpf"
    decisions, falls = outcomes(r.rule.body)
    results = [f"{fmt_decision(d)} -> "
               f"{decision_bits(d, entry.allow_bits, entry.op, entry.phase, record) if not r.userspace else 'daemon'}"
               for d in decisions]
    if falls:
        results.append("no decision -> next rule")
    text = fmt_stmts(r.rule.body)
    if len(text) > MAX_RULE_TEXT:
        text = text[:MAX_RULE_TEXT - 3] + "..."
    origin = f" [{r.rule.origin}]" if r.rule.origin else ""
    inherited = f" (from scope '{r.scope or '/'}')" if r.scope != scope.path else ""
    lines = [f"    #{r.number} {r.location}{origin} {where}{inherited}: {text}"]
    if r.userspace:
        lines.append(f"       runs in the daemon: {r.reason}")
    lines.append("       " + "; ".join(results))
    return "\n".join(lines)


def _entry(entry: OpPlan, scope: ScopePlan, record: abi.Abi) -> str:
    allow = allow_text(entry.allow_bits, entry.phase, record)
    head = f"  {entry.op} {entry.phase} (opcode {entry.opcode:#x}): allow = {allow}"
    lines = [head]
    for r in entry.rules:
        lines.append(_rule_line(r, entry, scope, record))
    default = entry.default
    what = "default" if entry.phase == "pre" else "post, no decision"
    lines.append(f"    otherwise ({what}): {fmt_decision(default)} -> "
                 f"{decision_bits(default, entry.allow_bits, entry.op, entry.phase, record)}")
    if entry.user_rules:
        lines.append(f"    userspace {entry.phase}filter: {len(entry.user_rules)} rule(s) run in the "
                     "daemon after BPF allowed (a deny on either side wins)")
    return "\n".join(lines)


def _kernel_line(scope: ScopePlan) -> str:
    """Which operations of the scope `fdsl mount` leaves to the kernel itself."""
    ruled = sorted({e.op for e in scope.entries if e.op in KERNEL_PASSTHROUGH_OPS})
    if scope.kind == "passthrough" or (not ruled and isinstance(scope.default, ast.Allow)):
        return ("  in the kernel: read, write of regular files (FUSE_PASSTHROUGH: no request "
                "reaches the daemon; fdsl mount as root, -o passthrough=0 turns it off)")
    why = f"rules on {', '.join(ruled)}" if ruled else f"default {fmt_decision(scope.default)}"
    return f"  in the kernel: nothing ({why}: read and write go through the daemon)"


def _scope(scope: ScopePlan, record: abi.Abi) -> str:
    where = f"under \"{scope.path}\"" if scope.path else "root"
    backing = f", backing {scope.backing}" if scope.backing else ""
    lines = [f"scope {where} -> program {scope.section} ({scope.kind}{backing})"]
    if scope.kind == "passthrough":
        lines.append(f"  passthrough: every op -> {allow_text(abi.BACKING, 'pre', record)}, no rules")
        lines.append(_kernel_line(scope))
        return "\n".join(lines)
    lines.append(f"  default: {fmt_decision(scope.default)}")
    for entry in scope.entries:
        lines.append(_entry(entry, scope, record))
    fallback = decision_bits(scope.default, abi.BACKING, record=record)
    post = allow_text(0, "post", record) if isinstance(scope.default, ast.Allow) else fallback
    lines.append(f"  every other op: pre -> {fallback}, post -> {post}")
    lines.append(_kernel_line(scope))
    return "\n".join(lines)


def explain(plan: Plan) -> str:
    """The full report."""
    parts = [_scope(s, plan.abi) for s in plan.scopes]
    if plan.abi is not abi.ACK:
        parts.insert(0, f"abi: {plan.abi.name} ({plan.abi.id})")
    if plan.maps:
        parts.append("maps: " + ", ".join(f"{m.name} ({m.map_type}, max {m.max_entries})"
                                           for m in plan.maps))
    identity = plan.identity_entries()
    parts.append("caching: " + ("results depend on the caller (uid/gid/pid) for "
                                + ", ".join(identity) + ": the daemon must not cache them"
                                if identity else "no rule depends on the caller"))
    return "\n\n".join(parts) + "\n"
