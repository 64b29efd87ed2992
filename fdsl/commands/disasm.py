"""`fdsl disasm OBJ [--section S]`: list every program section, one insn per line.

The text after `slot:` is what `llvm-objdump -d` prints for the section's
own bytes; map references are shown on a `; map N name` line below the
ld_imm64 they relocate.
"""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("disasm", help="disassemble the programs of a compiled object",
                              description="Print every program section of a BPF object, one instruction "
                              "per line with its slot number, in the syntax "
                              "llvm-objdump -d uses; map references are annotated.")
    p.add_argument("object", help="a .bpf.o file")
    p.add_argument("--section", "-s", action="append",
                   help="only this program section (repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fdsl.vm import disasm, isa
    from fdsl.errors import UsageError
    from fdsl.vm.loader import load_file

    obj = load_file(args.object)
    sections = args.section or list(obj.programs)
    missing = [s for s in sections if s not in obj.programs]
    if missing:
        raise UsageError(f"no program section {missing[0]!r} in {args.object} "
                         f"(sections: {', '.join(obj.programs)})")
    out = []
    for name in sections:
        prog = obj.programs[name]
        notes = {r.slot: f"map {r.map_index} {r.symbol}" for r in prog.relocations}
        title = f" <{prog.name}>" if prog.name else ""
        out.append(f"Disassembly of section {name}{title}:")
        out.append(disasm.render(isa.decode(prog.raw), notes))
    print("\n".join(out), end="")
    return 0
