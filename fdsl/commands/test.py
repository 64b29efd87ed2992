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

from fdsl.commands import add_policy_argument, add_target_abi_option, compile_args, source_name


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "test",
        help="run a policy's test blocks through the compiled object",
        description="Compile a policy and run each of its `test` blocks as a simulated request "
        "through the compiled BPF programs (and the userspace rules where the program asks "
        "for them), then check the expectations.",
        epilog="example: fdsl test examples/hide_secrets.fdsl --backend interp -v",
    )
    add_policy_argument(p)
    add_target_abi_option(p)
    p.add_argument("--backend", choices=("jit", "interp"), default="jit",
                   help="run the programs with the JIT (default) or the interpreter")
    p.add_argument("-k", dest="keyword", metavar="NAME",
                   help="only run tests whose name contains NAME")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show each request's result, rewritten fields, userspace verdict and logs")
    p.add_argument("--json", action="store_true",
                   help="print the results as one JSON document instead of lines")
    p.add_argument("--junit", metavar="FILE",
                   help="also write the results as JUnit XML to FILE (what CI systems read)")
    p.set_defaults(func=cmd_test)


def cmd_test(args: argparse.Namespace) -> int:
    import time

    from fdsl import testing
    from fdsl.errors import FdslError

    name = source_name(args)
    try:
        result = compile_args(args)
    except FdslError:
        raise   # policy diagnostics / usage errors: printed by the CLI, exit 1 (2 for usage)
    except Exception as err:  # a compiler bug: one clean line instead of a traceback
        print(f"fdsl test: internal error while compiling {name}: "
              f"{type(err).__name__}: {err}", file=sys.stderr)
        return 1
    if result.warnings:
        print(result.rendered_warnings(), file=sys.stderr)
    tests = testing.policy_tests(result.plan.policy)
    if not tests:
        print(f"{name}: no tests (add `test \"...\" {{ ... }}` blocks to the policy)")
        return 1
    if args.keyword:
        tests = [t for t in tests if args.keyword in t.name]
        if not tests:
            print(f"{name}: no tests match -k {args.keyword!r}")
            return 1
    try:
        runner = testing.Runner(result.obj, backend=args.backend)
    except FdslError:
        raise   # LoadError / VerifierError: the compiled object is refused, exit 1
    except Exception as err:
        print(f"fdsl test: internal error while loading the object: {type(err).__name__}: {err}",
              file=sys.stderr)
        return 1
    timed = []
    for test in tests:
        start = time.perf_counter()
        [r] = testing.run_tests([test], runner, result.sources)
        timed.append((r, time.perf_counter() - start))
    failed = sum(not r.passed for r, _ in timed)
    if args.junit:
        _write_junit(args.junit, name, args.backend, timed)
    if args.json:
        print(_json(name, args.backend, timed, args.verbose))
        return 1 if failed else 0
    for r, _ in timed:
        if r.passed:
            print(f"ok   {r.location}: {r.name}")
        else:
            print(f"FAIL {r.location}: {r.name}: {'; '.join(r.failures)}")
        if args.verbose and r.outcome is not None:
            for line in details(r.outcome):
                print(f"       {line}")
    print(f"{len(timed) - failed} passed, {failed} failed")
    return 1 if failed else 0


def _json(policy: str, backend: str, timed: list, verbose: bool) -> str:
    import json

    failed = sum(not r.passed for r, _ in timed)
    return json.dumps({
        "policy": policy, "backend": backend, "passed": len(timed) - failed, "failed": failed,
        "tests": [{"name": r.name, "location": r.location, "passed": r.passed,
                   "failures": list(r.failures), "seconds": round(seconds, 6),
                   **({"details": details(r.outcome)} if verbose and r.outcome is not None
                      else {})}
                  for r, seconds in timed],
    }, indent=2)


def _write_junit(path: str, policy: str, backend: str, timed: list) -> None:
    """JUnit XML as CI systems read it: one <testsuite> for the policy, one <testcase> per
    test block, a <failure> with every failed expectation."""
    import xml.etree.ElementTree as ET

    from fdsl.commands.compile import _write

    failed = sum(not r.passed for r, _ in timed)
    total = sum(seconds for _, seconds in timed)
    suites = ET.Element("testsuites", tests=str(len(timed)), failures=str(failed),
                        errors="0", time=f"{total:.6f}")
    suite = ET.SubElement(suites, "testsuite", name=policy, tests=str(len(timed)),
                          failures=str(failed), errors="0", skipped="0", time=f"{total:.6f}")
    ET.SubElement(ET.SubElement(suite, "properties"), "property", name="backend", value=backend)
    for r, seconds in timed:
        file, _, line = r.location.rpartition(":")
        case = ET.SubElement(suite, "testcase", classname=policy, name=r.name,
                             file=file or r.location, line=line, time=f"{seconds:.6f}")
        if not r.passed:
            failure = ET.SubElement(case, "failure", message="; ".join(r.failures),
                                    type="expectation")
            failure.text = "\n".join(r.failures)
    ET.indent(suites)
    _write(path, ET.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n")


def details(o: Any) -> list[str]:
    """The -v lines: where the request ran and what each half did."""
    from fdsl import abi
    from fdsl.testing import describe_ret, show, show_set

    lines = [f"program: {o.section or 'none (passthrough: BACKING)'}"]
    if o.bpf_ret is not None:
        lines.append(f"bpf: {o.bpf_ret} = {describe_ret(o.bpf_ret, o.phase, o.abi)}")
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
