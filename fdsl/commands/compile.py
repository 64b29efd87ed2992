"""`fdsl check`, `fdsl compile` and `fdsl explain`."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from fdsl.commands import (add_target_abi_option, add_policy_argument, compile_args, policy_source,
                           source_name, target_abi)

EMITS = ("obj", "ir", "asm")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "check", help="check a policy and print its diagnostics",
        description="Parse, check and plan a policy (and lower it to BPF) without writing "
        "anything.  Exit 0 if it compiles, 1 on policy errors.")
    add_policy_argument(p)
    add_target_abi_option(p)
    p.set_defaults(func=run_check)

    p = subparsers.add_parser(
        "compile", help="compile a policy to a fuse-bpf object (.bpf.o)",
        description="Compile a policy to one BPF ELF object holding every scope's program, "
        "the maps, the license and the metadata the daemon needs.  --abi picks the "
        "fuse-bpf ABI (ack by default, or rfc-v1); the object records it, so verify, run, "
        "mount and disasm read it from there.")
    add_policy_argument(p)
    add_target_abi_option(p)
    p.add_argument("-o", "--output", metavar="FILE",
                   help="output file (default: POLICY with .bpf.o for obj, stdout for ir/asm)")
    p.add_argument("--emit", choices=EMITS, default="obj",
                   help="what to write: the object (default), optimized LLVM IR, or BPF assembly")
    p.set_defaults(func=run_compile)

    p = subparsers.add_parser(
        "explain", help="show the decision table of every scope, opcode and phase",
        description="Print, per scope, opcode and phase, the rules in order with their "
        "decisions, which rules run in BPF and which in the daemon, and the return bits "
        "(or, with --abi rfc-v1, the RFC v1 return codes).")
    add_policy_argument(p)
    add_target_abi_option(p)
    p.set_defaults(func=run_explain)


def _print_warnings(result: Any) -> None:
    if result.warnings:
        print(result.rendered_warnings(), file=sys.stderr)


def run_check(args: argparse.Namespace) -> int:
    result = compile_args(args)
    _print_warnings(result)
    scopes = len(result.plan.scopes)
    print(f"{source_name(args)}: ok ({scopes} scope{'s' if scopes != 1 else ''}, "
          f"{len(result.warnings)} warning{'s' if len(result.warnings) != 1 else ''})")
    return 0


def _default_output(policy: str) -> str:
    stem = policy[:-5] if policy.endswith(".fdsl") else policy
    return stem + ".bpf.o"


def run_compile(args: argparse.Namespace) -> int:
    from fdsl.errors import UsageError

    result = compile_args(args, want_asm=args.emit == "asm")
    _print_warnings(result)
    if args.emit == "obj":
        from_file = args.policy_text is None and args.policy != "-"
        output = args.output or (_default_output(args.policy) if from_file else "-")
        if output == "-":
            if sys.stdout.isatty():
                raise UsageError("refusing to write a binary object to a terminal; use -o FILE")
            sys.stdout.buffer.write(result.obj)
            return 0
        _write(output, result.obj)
        return 0
    text = result.ir if args.emit == "ir" else result.asm
    if args.output and args.output != "-":
        _write(args.output, text.encode("utf-8"))
    else:
        sys.stdout.write(text)
    return 0


def _write(path: str, data: bytes) -> None:
    """Write `path` atomically: a full disk or a crash never leaves a truncated object
    behind (an empty .bpf.o would later mount as "no policy")."""
    import os
    import tempfile

    from fdsl.errors import FdslError

    directory = os.path.dirname(path) or "."
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".fdsl-", suffix=".tmp", dir=directory)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        raise FdslError(f"cannot write '{path}': {err.strerror or err}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def run_explain(args: argparse.Namespace) -> int:
    from fdsl.compile import abi_check
    from fdsl.compile.driver import load_checked
    from fdsl.errors import PolicyError
    from fdsl.lang.diagnostics import render_all
    from fdsl.lang.frontend import load_policy
    from fdsl.compile.explain import explain
    from fdsl.compile.planner import build_plan

    text, name = policy_source(args)
    if text is None:
        policy, sources, warnings = load_checked(name, args.include_dirs)
    else:
        policy, sources, warnings = load_policy(text=text, filename=name,
                                                include_dirs=tuple(args.include_dirs))
    plan = build_plan(policy, target_abi(args))
    problems = abi_check.check(plan)
    if problems:
        raise PolicyError(problems, render_all(problems, sources))
    sys.stdout.write(explain(plan))
    return 0
