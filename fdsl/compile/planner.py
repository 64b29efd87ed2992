"""The planner: per scope x opcode x phase, which rules run where and what to return.

It turns the checked AST into a `Plan` that the code generator, the metadata
writer and `fdsl explain` all read, so the three can never disagree about the
BPF/userspace split or the return bits (see "Policy semantics" in
docs/architecture.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from fdsl import abi
from fdsl.lang import ast
from fdsl.lang.diagnostics import Diagnostic, Severity, Span
from fdsl.lang.passes.patterns import simple_glob
from fdsl.lang.passes.visitor import reachable_nodes as walk_exprs

PHASES = ("pre", "post")
IDENTITY_BUILTINS = frozenset({"uid", "gid", "pid", "tgid"})


@dataclass
class RulePlan:
    """One rule as it applies to one opcode/phase of one scope."""

    rule: ast.Rule
    number: int                # 1-based position among the scope's own rules
    scope: str                 # path of the scope that declared it
    userspace: bool
    reason: str | None = None  # why it runs in userspace

    @property
    def location(self) -> str:
        return f"{self.rule.span.file}:{self.rule.span.line}"


@dataclass
class OpPlan:
    """The decision table for one scope, opcode and phase."""

    op: str
    phase: str
    opcode: int                # full opcode: number | phase bit
    rules: list[RulePlan]      # every rule in order (BPF and userspace)
    allow_bits: int            # what `allow` returns here
    default: ast.Stmt          # decision when no BPF rule decides

    @property
    def bpf_rules(self) -> list[RulePlan]:
        return [r for r in self.rules if not r.userspace]

    @property
    def user_rules(self) -> list[RulePlan]:
        return [r for r in self.rules if r.userspace]


@dataclass
class ScopePlan:
    path: str                  # "" = mount root
    kind: str                  # "rules" | "passthrough" | "backing"
    section: str
    symbol: str
    backing: str | None
    parent: str | None
    default: ast.Stmt
    entries: list[OpPlan] = field(default_factory=list)

    def entry(self, op: str, phase: str) -> OpPlan | None:
        return next((e for e in self.entries if e.op == op and e.phase == phase), None)

    @property
    def label(self) -> str:
        return self.path or "/"


@dataclass
class Plan:
    policy: ast.Policy
    scopes: list[ScopePlan]
    maps: list[ast.MapDecl]
    default: ast.Stmt
    warnings: list[Diagnostic] = field(default_factory=list)
    # The ABI the code is generated for.  `allow_bits` stay in ACK's bitmask
    # terms (the language's meaning of `allow`); codegen maps them (`Abi.from_ack_return`).
    abi: abi.Abi = abi.ACK

    def identity_entries(self) -> list[str]:
        """'scope:op:phase' of every entry whose rules read the caller's ids."""
        found = []
        for scope in self.scopes:
            for entry in scope.entries:
                if any(reads_identity(r.rule) for r in entry.rules):
                    found.append(f"{scope.label}:{entry.op}:{entry.phase}")
        return found

    def op_traits(self) -> dict[str, dict[str, dict[str, bool]]]:
        """scope path -> opcode -> what its rules are like (for the daemon's caching).

        Only opcodes with rules appear.  Keys: `pre_bpf`, `pre_user`, `post_bpf`,
        `post_user` (where the rules run), `identity` (some rule reads
        uid/gid/pid/tgid), `side_effects` (some rule counts, logs or stores into
        a map), `reads_maps` (some rule reads a map: its result depends on what
        earlier requests stored, not on the backing state alone)."""
        out: dict[str, dict[str, dict[str, bool]]] = {}
        for scope in self.scopes:
            ops: dict[str, dict[str, bool]] = {}
            for entry in scope.entries:
                t = ops.setdefault(entry.op, {"pre_bpf": False, "pre_user": False,
                                              "post_bpf": False, "post_user": False,
                                              "identity": False, "side_effects": False,
                                              "reads_maps": False})
                t[f"{entry.phase}_bpf"] = t[f"{entry.phase}_bpf"] or bool(entry.bpf_rules)
                t[f"{entry.phase}_user"] = t[f"{entry.phase}_user"] or bool(entry.user_rules)
                t["identity"] = t["identity"] or any(reads_identity(r.rule) for r in entry.rules)
                t["side_effects"] = t["side_effects"] or any(has_side_effects(r.rule)
                                                             for r in entry.rules)
                t["reads_maps"] = t["reads_maps"] or any(reads_maps(r.rule) for r in entry.rules)
            if ops:
                out[scope.path] = ops
        return out


# ------------------------------------------------------------------ scopes

@dataclass
class _Scope:
    path: str
    kind: str
    backing: str | None
    parent: "_Scope | None"
    items: list[ast.Item]

    def rules(self) -> list[ast.Rule]:
        return [i for i in self.items if isinstance(i, ast.Rule)]

    def default(self) -> ast.Stmt | None:
        found = [i.decision for i in self.items if isinstance(i, ast.Default)]
        if found:
            return found[-1]
        return self.parent.default() if self.parent else None


def _join(parent: str, path: str) -> str:
    path = path.strip("/")
    if not parent or path == parent or path.startswith(parent + "/"):
        return path
    return f"{parent}/{path}"


def _collect_scopes(policy: ast.Policy) -> list[_Scope]:
    """Root first, then every `under` depth-first in source order."""
    root = _Scope("", "rules", None, None, [i for i in policy.items if not isinstance(i, ast.Under)])
    scopes = [root]

    def walk(items: list[ast.Item], parent: _Scope) -> None:
        for item in items:
            if isinstance(item, ast.Under):
                scope = _Scope(_join(parent.path, item.path), item.mode, item.backing, parent,
                               [i for i in item.items if not isinstance(i, ast.Under)])
                scopes.append(scope)
                walk(item.items, scope)

    walk(policy.items, root)
    return scopes


def _collect_maps(policy: ast.Policy) -> list[ast.MapDecl]:
    maps: list[ast.MapDecl] = []

    def walk(items: list[ast.Item]) -> None:
        for item in items:
            if isinstance(item, ast.MapDecl):
                maps.append(item)
            elif isinstance(item, ast.Under):
                walk(item.items)

    walk(policy.items)
    return maps


# ------------------------------------------------------------- rule analysis

def rule_ops(rule: ast.Rule, record: abi.Abi = abi.ACK) -> list[str]:
    """The opcodes a rule applies to under `record` (checker's `resolved_ops`, else
    expanded here); an opcode the ABI lacks (RFC v1 has no CANONICAL_PATH) is left out."""
    if rule.resolved_ops:
        return [op for op in rule.resolved_ops if op in record.ops]
    ops: list[str] = []
    for name in rule.ops:
        members = sorted(abi.GROUPS[name.name], key=lambda o: abi.OPS[o].number) \
            if name.name in abi.GROUPS else [name.name]
        ops.extend(op for op in members if op in record.ops and op not in ops)
    return ops


def reads_identity(rule: ast.Rule) -> bool:
    return any(isinstance(n, ast.Ident) and isinstance(n.ref, ast.BuiltinRef)
               and n.ref.name in IDENTITY_BUILTINS for n in walk_exprs(rule.body))


def has_side_effects(rule: ast.Rule) -> bool:
    """True if running the rule changes something observable (a counter, a map entry,
    a log line), so every request must reach it and its result must not be cached."""
    return any(isinstance(n, (ast.Count, ast.Log, ast.MapStore)) for n in walk_exprs(rule.body))


def reads_maps(rule: ast.Rule) -> bool:
    """True if the rule reads a map: its outcome can change between two identical
    requests (another request stored something), so it must not be cached."""
    return any(isinstance(n, (ast.MapRead, ast.MapHas)) for n in walk_exprs(rule.body))


def bpf_blocker(rule: ast.Rule) -> str | None:
    """Why a rule runs in userspace (the placement pass decided), or None for BPF."""
    return "; ".join(rule.userspace_reasons) if rule.userspace else None


def _decision_text(d: ast.Stmt) -> str:
    if isinstance(d, ast.Deny):
        return "deny"
    if isinstance(d, ast.Return):
        return "return"
    return "allow"


# ------------------------------------------------------------------ planning

def build_plan(policy: ast.Policy, record: abi.Abi = abi.ACK) -> Plan:
    """Compute the decision tables of every scope (of a checked policy) for the ABI `record`."""
    scopes = _collect_scopes(policy)
    policy_default = scopes[0].default() or ast.Allow(policy.span)
    warnings: list[Diagnostic] = []
    analysed: dict[int, RulePlan] = {}
    for scope in scopes:
        for number, rule in enumerate(scope.rules(), 1):
            reason = bpf_blocker(rule)
            analysed[id(rule)] = RulePlan(rule, number, scope.path, reason is not None, reason)
    plans: list[ScopePlan] = []
    for index, scope in enumerate(scopes):
        section = "fuse/root" if index == 0 else f"{abi.PROGRAM_SECTION_PREFIX}s{index}"
        symbol = "fdsl_root" if index == 0 else f"fdsl_s{index}"
        default = scope.default() or policy_default
        plan = ScopePlan(scope.path, scope.kind, section, symbol, scope.backing,
                         scope.parent.path if scope.parent else None, default)
        if scope.kind != "passthrough":
            # The daemon must see the lookups below a scope that has scopes below it (to
            # attach them) or userspace rules of its own (to know which nodes are in it).
            user_rules = scope.parent is not None and any(
                analysed[id(r)].userspace for r in _chain(scope))
            attaches = user_rules or any(_inside(s, scope) for s in scopes)
            plan.entries = _scope_entries(scope, analysed, default, attaches, record)
        plans.append(plan)
    _warn_split(plans, warnings)
    return Plan(policy, plans, _collect_maps(policy), policy_default, warnings, record)


def _chain(scope: _Scope) -> list[ast.Rule]:
    """The scope's own rules, then the enclosing scopes' rules."""
    rules: list[ast.Rule] = []
    current: _Scope | None = scope
    while current is not None and current.kind != "passthrough":
        rules.extend(current.rules())
        current = current.parent
    return rules


def _inside(scope: _Scope, ancestor: _Scope) -> bool:
    current = scope.parent
    while current is not None:
        if current is ancestor:
            return True
        current = current.parent
    return False


def _scope_entries(scope: _Scope, analysed: dict[int, RulePlan], default: ast.Stmt,
                   attaches: bool = False, record: abi.Abi = abi.ACK) -> list[OpPlan]:
    """`attaches`: the daemon must see this scope's lookups.  They then end with a
    userspace postfilter, so that in a fuse-bpf kernel the daemon can attach the scopes
    below with the lookup reply's fuse_entry_bpf_out (spec 3.2) and name the nodes (so a
    filter request's nodeid tells it the node's scope)."""
    chain = _chain(scope)
    entries: list[OpPlan] = []
    for op in sorted(record.ops, key=lambda o: record.ops[o].number):
        per_phase = {ph: [analysed[id(r)] for r in chain
                          if r.phase == ph and op in rule_ops(r, record)]
                     for ph in PHASES}
        attach = attaches and op == "lookup"
        if not per_phase["pre"] and not per_phase["post"] and not attach:
            continue
        number = record.ops[op].number
        pre_bits = abi.BACKING
        if per_phase["post"] or attach:
            pre_bits |= abi.POST_FILTER
        if any(r.userspace for r in per_phase["pre"]):
            pre_bits |= abi.USER_FILTER
        entries.append(OpPlan(op, "pre", number | abi.PREFILTER, per_phase["pre"], pre_bits, default))
        if per_phase["post"] or attach:
            post_bits = abi.USER_FILTER if attach or any(r.userspace for r in per_phase["post"]) \
                else 0
            # The op was admitted in PRE; an undecided POST keeps the result.
            entries.append(OpPlan(op, "post", number | abi.POSTFILTER, per_phase["post"],
                                  post_bits, ast.Allow(default.span)))
    return entries


def _warn_split(plans: list[ScopePlan], warnings: list[Diagnostic]) -> None:
    """Userspace `allow` cannot override a BPF deny or default: say so once per rule."""
    warned: set[int] = set()
    for scope in plans:
        for entry in scope.entries:
            if entry.phase != "pre" or isinstance(entry.default, ast.Allow):
                continue
            for r in entry.user_rules:
                allows = any(isinstance(n, ast.Allow) for n in walk_exprs(r.rule.body))
                if allows and id(r.rule) not in warned:
                    warned.add(id(r.rule))
                    warnings.append(Diagnostic(
                        Severity.WARNING,
                        f"this rule runs in userspace ({r.reason}); its 'allow' cannot override "
                        f"the default '{_decision_text(entry.default)}' applied in BPF",
                        r.rule.span))


def return_bits_text(value: int) -> str:
    """'BACKING|POST_FILTER' style rendering of a return bitmask."""
    if value < 0:
        return f"-{abi.errno_name(-value)}"
    names = [n for n, bit in abi.RETURN_BITS.items() if value & bit]
    return "|".join(names) if names else "0"


__all__ = ["Plan", "ScopePlan", "OpPlan", "RulePlan", "build_plan", "rule_ops", "bpf_blocker",
           "simple_glob", "return_bits_text", "walk_exprs", "reads_identity", "has_side_effects",
           "reads_maps",
           "Span"]
