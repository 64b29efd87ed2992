"""`fdsl load OBJ`: check an object against this kernel's own fuse-bpf verifier.

Creates the object's maps, loads every `fuse/*` section with the fuse-bpf
program type read from sysfs, reports each (accepted with its instruction
count, or rejected with the kernel verifier's log tail), and unloads
everything again.  Exit 0 when the kernel accepts every program, 1 when it
rejects one or has no fuse-bpf at all (mainline kernels never do).  RFC v1
objects (by their metadata) are refused before the kernel is asked: no
kernel has that ABI.
"""
from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "load", help="load an object into this kernel's fuse-bpf (check, report, unload)",
        description="Load the maps and fuse/* programs of a compiled object (.bpf.o, or a "
        ".fdsl compiled on the fly) into the running kernel with BPF_PROG_LOAD, report what the "
        "kernel's verifier says, and unload them. Needs a kernel with fuse-bpf (Android Common "
        "Kernel, CONFIG_FUSE_BPF) and CAP_BPF/root. Exit 0 if every program is accepted, 1 "
        "otherwise.")
    p.add_argument("object", metavar="OBJ", help="BPF ELF object file (or .fdsl policy)")
    p.add_argument("--log-lines", type=int, default=20, metavar="N",
                   help="lines of the verifier log shown for a rejection (default 20)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fdsl import abi
    from fdsl.errors import LoadError
    from fdsl.runtime.daemon import read_policy_object
    from fdsl.runtime.kernel import features, programs
    from fdsl.vm.loader import load_object

    data = read_policy_object(args.object)
    if data is None:
        raise LoadError(f"{args.object}: empty policy: nothing to load")
    obj = load_object(data)
    record = obj.abi()
    if record.id != abi.ACK.id:
        print(f"fdsl load: {args.object}: a {record.name} object: no fuse-bpf kernel takes it "
              "(the kernels with fuse-bpf are ACK's); fdsl mount runs it in emulation",
              file=sys.stderr)
        return 1
    support = features.detect()
    if not support.supported:
        print(f"fdsl load: {support.reason}", file=sys.stderr)
        return 1
    if not programs.program_sections(obj):
        print(f"fdsl load: {args.object}: no fuse/* program sections", file=sys.stderr)
        return 1
    print(f"fuse-bpf program type {support.prog_type}")
    with programs.load(obj, support.prog_type, keep_going=True) as kobj:
        for m in kobj.maps:
            print(f"map {m.spec.name}: created (type {m.spec.type}, {m.spec.max_entries} entries)")
        for section in programs.program_sections(obj):
            if section in kobj.programs:
                print(f"{section}: accepted ({kobj.programs[section].insn_count} insns)")
            else:
                print(programs.rejection_message(section, kobj.rejected[section], args.log_lines),
                      file=sys.stderr)
        failed = len(kobj.rejected)
    print("unloaded")
    return 1 if failed else 0
