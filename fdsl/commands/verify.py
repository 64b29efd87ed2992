"""`fdsl verify OBJ`: run the static verifier over every program of an object.

Prints one line per program section (accepted, or the rejection with its
instruction index and reason) and exits 0 when all are accepted, 1 otherwise.
The rules are those of the object's ABI: the id in an fdsl object's metadata,
else `--abi` (objects built with clang), else ACK.
"""
from __future__ import annotations

import argparse
import sys

from fdsl.commands import abi_choice, add_abi_option


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "verify",
        help="statically verify the BPF programs of an object file",
        description="Load a fuse-bpf object (.bpf.o) and run the static verifier on each "
        "program section.  Exit 0 if every program is accepted, 1 otherwise.",
    )
    p.add_argument("object", metavar="OBJ", help="BPF ELF object file")
    p.add_argument("-s", "--section", action="append", metavar="NAME",
                   help="verify only this section (repeatable)")
    add_abi_option(p)
    p.add_argument("-v", "--verbose", action="store_true",
                   help="print statistics (insns processed, states stored, stack depth)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fdsl.errors import UsageError, VerifierError
    from fdsl.vm.loader import load_file
    from fdsl.vm.verifier import verify

    obj = load_file(args.object)
    with abi_choice(args.object):
        record = obj.abi(args.abi)
    sections = list(obj.programs)
    if args.section:
        missing = [s for s in args.section if s not in obj.programs]
        if missing:
            raise UsageError(f"no program section {', '.join(missing)} in {args.object} "
                             f"(sections: {', '.join(sections) or 'none'})")
        sections = [s for s in sections if s in args.section]
    if not sections:
        print(f"fdsl verify: {args.object}: no program sections", file=sys.stderr)
        return 1
    failed = 0
    for name in sections:
        try:
            result = verify(obj.programs[name], obj.maps, section=name, abi_record=record)
        except VerifierError as err:
            failed += 1
            print(f"{name}: rejected: insn {err.index}: {err.reason}", file=sys.stderr)
            continue
        line = f"{name}: ok ({len(result.insns)} insns)"
        if args.verbose:
            line += (f", {result.processed} processed, {result.states} states, "
                     f"stack {result.stack_depth} bytes, {record.name} rules")
        print(line)
    return 1 if failed else 0
