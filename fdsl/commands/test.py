"""`fdsl test POLICY.fdsl [--backend jit|interp] [-k NAME] [-v]`: run a policy's test blocks.

The policy is compiled and every `test` block runs through the compiled
object (`fdsl.testing`), so the tests check the bytes the kernel would load.
One line per test, then `N passed, M failed`; exit 0 only when at least one
test ran and all passed.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from fdsl.commands import add_include_option


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "test",
        help="run a policy's test blocks through the compiled object",
        description="Compile a policy and run each of its `test` blocks as a simulated request "
        "through the compiled BPF programs (and the userspace rules where the program asks "
        "for them), then check the expectations.",
        epilog="example: fdsl test examples/hide_secrets.fdsl --backend interp -v",
    )
    p.add_argument("policy", metavar="POLICY.fdsl", help="the policy with test blocks")
    add_include_option(p)
    p.add_argument("--backend", choices=("jit", "interp"), default="jit",
                   help="run the programs with the JIT (default) or the interpreter")
    p.add_argument("-k", dest="keyword", metavar="NAME",
                   help="only run tests whose name contains NAME")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show each request's result, rewritten fields, userspace verdict and logs")
    p.set_defaults(func=cmd_test)


def cmd_test(args: argparse.Namespace) -> int:
    from fdsl import testing
    from fdsl.compile.driver import compile_file
    from fdsl.errors import FdslError

    try:
        result = compile_file(args.policy, want_asm=False, include_dirs=args.include_dirs)
    except FdslError:
        raise   # policy diagnostics / usage errors: printed by the CLI, exit 1 (2 for usage)
    except Exception as err:  # a compiler bug: one clean line instead of a traceback
        print(f"fdsl test: internal error while compiling {args.policy}: "
              f"{type(err).__name__}: {err}", file=sys.stderr)
        return 1
    if result.warnings:
        print(result.rendered_warnings(), file=sys.stderr)
    tests = testing.policy_tests(result.plan.policy)
    if not tests:
        print(f"{args.policy}: no tests (add `test \"...\" {{ ... }}` blocks to the policy)")
        return 1
    if args.keyword:
        tests = [t for t in tests if args.keyword in t.name]
        if not tests:
            print(f"{args.policy}: no tests match -k {args.keyword!r}")
            return 1
    try:
        runner = testing.Runner(result.obj, backend=args.backend)
    except FdslError:
        raise   # LoadError / VerifierError: the compiled object is refused, exit 1
    except Exception as err:
        print(f"fdsl test: internal error while loading the object: {type(err).__name__}: {err}",
              file=sys.stderr)
        return 1
    results = testing.run_tests(tests, runner, result.sources)
    for r in results:
        if r.passed:
            print(f"ok   {r.location}: {r.name}")
        else:
            print(f"FAIL {r.location}: {r.name}: {'; '.join(r.failures)}")
        if args.verbose and r.outcome is not None:
            for line in details(r.outcome):
                print(f"       {line}")
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


def details(o: Any) -> list[str]:
    """The -v lines: where the request ran and what each half did."""
    from fdsl import abi
    from fdsl.testing import describe_ret, show, show_set

    lines = [f"program: {o.section or 'none (passthrough: BACKING)'}"]
    if o.bpf_ret is not None:
        lines.append(f"bpf: {o.bpf_ret} = {describe_ret(o.bpf_ret, o.phase)}")
    if o.user is not None:
        verdict = o.user.decision or "no decision (allow)"
        if o.user.decision == "deny":
            verdict += f" {abi.errno_name(o.user.value)}"
        lines.append(f"userspace ({o.user_rules} rules): {verdict}")
        lines += [f"userspace log: {line}" for line in o.user.logs]
    lines.append(f"result: {o.ret} = {o.describe()}")
    if o.phase == "post" and o.error:
        lines.append(f"the backing error {abi.errno_name(o.error)} stands unless a filter denies")
    for path, (before, after) in sorted(o.changed.items()):
        lines.append(f"rewrote {path}: {show(before, path)} -> {show(after, path)}")
    if o.entries is not None:
        lines.append(f"dirents left: {show_set(o.entries)}")
    lines += [f"log: {line}" for line in o.logs]
    return lines
