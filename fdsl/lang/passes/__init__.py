"""The checker, as small single-purpose passes over one AST (bpftrace's `src/ast/passes/`).

`check(policy, sources)` runs them in order; each reports into one
`Diagnostics` and annotates the tree in place:

1. structure  — where items may appear, `under` paths, duplicate `default`/tests
2. desugar    — `readonly`, `hide`, `perms`, `force_*` become rules; then rule opcodes
3. binder     — every name bound once (`Ident.ref`, `Call.ref`, map refs, bare fields)
4. fields     — per-opcode request fields and values, assignments (ABI tables)
5. types      — types, constant folding, operators, decisions, log formats, patterns
6. reachability — statements after a decision
7. placement  — BPF or userspace, per rule, decided once
8. postfilter — PRE `allow`s that gain POST_FILTER from post rules of their opcodes
9. testblocks — `test` requests and expectations
"""
from __future__ import annotations

from fdsl.lang import ast as A
from fdsl.lang.diagnostics import Diagnostic, Diagnostics, Severity, Sources
from fdsl.lang.passes import (binder, desugar, fields, placement, postfilter, reachability,
                              structure, testblocks, types)
from fdsl.lang.passes.visitor import Unit


def check(policy: A.Policy, sources: Sources) -> list[Diagnostic]:
    """Check and annotate `policy` in place; returns errors and warnings in file order."""
    unit = Unit(policy, sources, Diagnostics())
    try:
        structure.run(unit)
        desugar.run(unit)
        structure.resolve_all_ops(unit)
        symbols = binder.run(unit)
        fields.run(unit)
        types.run(unit)
        reachability.run(unit)
        placement.run(unit)
        postfilter.run(unit)
        testblocks.run(unit, symbols)
    except RecursionError:
        return [Diagnostic(Severity.ERROR, "policy is nested too deeply to check", policy.span)]
    return unit.diags.ordered(policy.files)
