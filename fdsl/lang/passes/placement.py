"""Pass 7, placement: does a rule run in BPF or in the daemon?  Decided here, once.

A whole rule moves to userspace (`Rule.userspace`, with `Rule.userspace_reasons`)
when it contains something fuse-bpf programs cannot do (ABI spec section 4.1:
constant offsets only, so no variable-length walks and no backtracking):
`drop entries`, a regex, a glob with more than one `*` or a class, a pattern
that is not a constant or is longer than a name, name-suffix tests that
would unroll to more code than a BPF branch can span, or a name set too big to
compare member by member (`SET_CODE_BUDGET`: the daemon does one hash lookup); or when the policy puts
it in a `userspace { }` block.  The planner, `explain`
and the metadata read the result; nobody decides it again.
"""
from __future__ import annotations

from fdsl import abi
from fdsl.lang import ast as A
from fdsl.lang.passes.common import all_rules
from fdsl.lang.passes.patterns import simple_glob
from fdsl.lang.passes.visitor import Unit, reachable_nodes

# Bound on the BPF code one rule's suffix tests may unroll to.  The verifier
# allows constant buffer offsets only, so `endswith`/`*suffix` tests become a
# compare per possible name size; long suffixes times many patterns would give
# programs LLVM cannot encode (16-bit branch offsets) and that are slow to JIT.
# Beyond this bound the rule is matched in the daemon, like a regex.
SUFFIX_CODE_BUDGET = 24576   # three quarters of the 32767-slot branch range

# Bound on one rule's name-set membership code: `name in {...}` compares the name
# with every member, once per opcode the rule runs for.  A bigger set is matched in
# the daemon with one hash lookup (compiling it took minutes and gigabytes of LLVM
# and still overflowed the branch range: issue 11).
SET_CODE_BUDGET = 4096

DROP_REASON = "drop entries: BPF cannot walk the dirent buffer"
REGEX_REASON = "regex 'matches' runs in userspace"
GLOB_REASON = "glob with more than one '*' or a [...] class runs in userspace"
POLICY_REASON = "placed in userspace by the policy ('userspace { }')"


def run(unit: Unit) -> None:
    for rule in all_rules(unit.policy.items):
        place(rule)


def place(rule: A.Rule) -> None:
    reasons = sorted(set(_language_reasons(rule) + ([POLICY_REASON] if rule.in_userspace_block else [])))
    if not reasons:
        limit = _limit_reason(rule)
        reasons = [limit] if limit else []
    rule.userspace = bool(reasons)
    rule.userspace_reasons = reasons


def _language_reasons(rule: A.Rule) -> list[str]:
    """Constructs BPF cannot express at all."""
    found = []
    for n in reachable_nodes(rule.body):
        if isinstance(n, A.DropEntries):
            found.append(DROP_REASON)
        elif isinstance(n, A.StrTest) and n.kind == "regex":
            found.append(REGEX_REASON)
        elif isinstance(n, A.StrTest) and n.kind == "glob":
            if any(p.count("*") > 1 or "[" in p for p in constant_patterns(n.pattern) or []):
                found.append(GLOB_REASON)
    return found


def _limit_reason(rule: A.Rule) -> str | None:
    """Patterns BPF could express in principle but not within its limits."""
    suffix_cost = 0
    for n in reachable_nodes(rule.body):
        if isinstance(n, A.InSet):
            names = constant_patterns(n.members) or []
            cost = set_code_cost(names, len(rule.resolved_ops or ()) or 1)
            if cost > SET_CODE_BUDGET:
                return (f"a set of {len(names)} names would compile to about {cost} BPF "
                        f"instructions (bound {SET_CODE_BUDGET}); the daemon matches it with one "
                        "hash lookup")
        if not isinstance(n, A.StrTest):
            continue
        pats = constant_patterns(n.pattern)
        if pats is None:
            return "string pattern is not a constant"
        if n.kind == "glob" and not all(simple_glob(p) for p in pats):
            return "glob with more than one '*' or a character class"
        if any(len(p.encode()) > abi.NAME_MAX for p in pats):
            return "string constant longer than a name"
        suffix_cost += suffix_code_cost(n.kind, pats)
        if suffix_cost > SUFFIX_CODE_BUDGET:
            return (f"name suffix tests would unroll to about {suffix_cost} BPF instructions "
                    f"(bound {SUFFIX_CODE_BUDGET})")
    return None


def constant_patterns(e: A.Expr) -> list[str] | None:
    """The texts of a constant pattern or set of patterns, None if not constant."""
    if isinstance(e, A.StrLit):
        return [e.value]
    if isinstance(e, A.SetLit):
        found = [constant_patterns(m) for m in e.members]
        return None if any(f is None for f in found) else [p for f in found for p in f or []]
    if isinstance(e, A.Ident) and isinstance(e.ref, A.SetRef):
        return constant_patterns(A.SetLit(e.ref.decl.span, e.ref.decl.members))
    if isinstance(e, A.Ident) and isinstance(e.ref, A.ConstRef):
        return constant_patterns(e.ref.decl.value)
    return None


def suffix_code_cost(kind: str, patterns: list[str]) -> int:
    """Rough BPF instructions for the per-size compare chains of suffix tests."""
    cost = 0
    for pattern in patterns:
        if kind == "endswith":
            suffix = pattern
        elif kind == "glob" and "*" in pattern:
            suffix = pattern.rsplit("*", 1)[1]
        else:
            continue
        width = len(suffix.encode())
        sizes = abi.NAME_MAX + 1 - width
        cost += sizes * (2 * -(-width // 4) + 2)    # loads + compares per size, + size test
    return cost


def set_code_cost(members: list[str], ops: int) -> int:
    """Rough BPF instructions for comparing a name with every member, over `ops` opcodes."""
    return ops * sum(2 + 3 * -(-len(m.encode()) // 4) for m in members)


def name_test_cost(rule: A.Rule) -> int:
    """Rough BPF instructions of one rule's name sets and suffix tests for one opcode
    (a lower bound of its code: the driver fails fast when a scope's sum cannot fit)."""
    cost = 0
    for n in reachable_nodes(rule.body):
        if isinstance(n, A.InSet):
            cost += set_code_cost(constant_patterns(n.members) or [], 1)
        elif isinstance(n, A.StrTest) and n.kind != "regex":
            cost += suffix_code_cost(n.kind, constant_patterns(n.pattern) or [])
    return cost
