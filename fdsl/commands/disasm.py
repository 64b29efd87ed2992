"""`fdsl disasm OBJ [--section S]`: list every program section, one insn per line.

The text after `slot:` is what `llvm-objdump -d` prints for the section's
own bytes; map references are shown on a `; map N name` line below the
ld_imm64 they relocate, and context loads on a `; ctx FIELD` line naming the
field in the object's ABI (its metadata's, else `--abi`, else ACK).
"""
from __future__ import annotations

import argparse

from fdsl.commands import abi_choice, add_abi_option


def register(subparsers) -> None:
    p = subparsers.add_parser("disasm", help="disassemble the programs of a compiled object",
                              description="Print every program section of a BPF object, one instruction "
                              "per line with its slot number, in the syntax "
                              "llvm-objdump -d uses; map references and the context "
                              "fields loads read (in the object's ABI) are annotated.")
    p.add_argument("object", help="a .bpf.o file")
    p.add_argument("--section", "-s", action="append",
                   help="only this program section (repeatable)")
    add_abi_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fdsl.vm import disasm, isa
    from fdsl.errors import UsageError
    from fdsl.vm.loader import load_file

    obj = load_file(args.object)
    with abi_choice(args.object):
        record = obj.abi(args.abi)
    sections = args.section or list(obj.programs)
    missing = [s for s in sections if s not in obj.programs]
    if missing:
        raise UsageError(f"no program section {missing[0]!r} in {args.object} "
                         f"(sections: {', '.join(obj.programs)})")
    out = []
    for name in sections:
        prog = obj.programs[name]
        notes = disasm.ctx_notes(prog.insns, record)
        for r in prog.relocations:
            notes[r.slot] = f"map {r.map_index} {r.symbol}"
        title = f" <{prog.name}>" if prog.name else ""
        out.append(f"Disassembly of section {name}{title}:")
        out.append(disasm.render(isa.decode(prog.raw), notes))
    print("\n".join(out), end="")
    return 0
