"""The checker: `check(policy, sources)` runs the passes of `fdsl/lang/passes/`.

It annotates the parsed AST in place (types, constants, name bindings,
desugared sugar, resolved opcodes, BPF/userspace placement) and returns every
error and warning of the policy in file order; nothing raises on bad input.
See `fdsl/lang/passes/__init__.py` for the passes and their order.

`python -m fdsl.lang.checker --fields-table` prints the per-opcode field table used
in docs/language.md.
"""
from __future__ import annotations

import sys

from fdsl import abi
from fdsl.lang.passes import check
from fdsl.lang.passes.common import ops_in_order

__all__ = ["check", "fields_table"]


def fields_table() -> str:
    """Markdown table: per opcode and phase, the fields a rule can read/write."""
    lines = ["| opcode | phase | readable fields | writable (kernel uses) | writable (ignored) |",
             "|---|---|---|---|---|"]
    for name in ops_in_order(abi.OPS):
        for phase in ("pre", "post"):
            locs = abi.fields_of(name, phase)
            read = [f"`{loc.path}`" for loc in locs if loc.ctype != "buffer"]
            used = [f"`{loc.path}`" for loc in locs if loc.writable and loc.effective]
            ignored = [f"`{loc.path}`" for loc in locs if loc.writable and not loc.effective]
            lines.append(f"| {name} | {phase} | {' '.join(read) or '-'} | {' '.join(used) or '-'} "
                         f"| {' '.join(ignored) or '-'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--fields-table"]:
        print(fields_table())
        return 0
    print("usage: python -m fdsl.lang.checker --fields-table", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
