"""Compile-time and code-size benchmark: every example plus a generated 200-rule policy.

Prints a markdown table (policy, rules, compile ms, BPF instructions, per
program section).  Not a test; target: the 200-rule policy compiles in <= 1 s.

    .venv/bin/python bench/compile_bench.py [--repeat N]
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fdsl import abi  # noqa: E402
from fdsl.compile.driver import compile_source  # noqa: E402
from fdsl.compile.objfile import instruction_count, program_sections  # noqa: E402

ERRNOS = ("EACCES", "EPERM", "ENOENT", "EROFS")


def generated_policy(rules: int = 200) -> str:
    """A policy with `rules` rules mixing name tests, integer tests and writes."""
    ops = [op for op in abi.OPS if op != "canonical_path"]
    lines = ["counter hits[u32] hash max 1024", "set blocked = {\"a.tmp\", \"b.tmp\", \"core\"}"]
    for i in range(rules):
        op = ops[i % len(ops)]
        errno = ERRNOS[i % len(ERRNOS)]
        names = [a.alias for a in abi.OPS[op].inputs if a.kind == "string"]
        kind = i % 5
        if names and kind == 0:
            body = f'if {names[0]} == "file{i}" {{ deny {errno} }}'
        elif names and kind == 1:
            body = f'if {names[0]} startswith "pre{i}" or {names[0]} in blocked {{ deny {errno} }}'
        elif names and kind == 2 and i % 50 == 2:
            body = f'if {names[0]} endswith ".x{i}" {{ deny {errno} }}'
        elif kind == 3:
            body = f"if uid == {1000 + i} and gid != 0 {{ deny {errno} }}"
        else:
            body = f"count hits[uid]\n  if nodeid == {i + 2} {{ deny {errno} }}"
        lines.append(f"on {op} pre {{\n  {body}\n}}")
    lines.append("on getattr post { out.attr.mode &= 0o7555 }")
    return "\n".join(lines) + "\n"


def measure(text: str, filename: str, repeat: int) -> tuple[float, bytes]:
    times = []
    obj = b""
    for _ in range(repeat):
        start = time.perf_counter()
        result = compile_source(text, filename, want_asm=False)
        times.append(time.perf_counter() - start)
        obj = result.obj
    return statistics.median(times), obj


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="compiles per policy (median)")
    args = parser.parse_args()
    cases = [(p.name, p.read_text(), str(p)) for p in sorted((ROOT / "examples").glob("*.fdsl"))]
    cases.append(("generated-200-rules", generated_policy(200), "generated.fdsl"))
    print("| policy | compile ms (median) | BPF insns | programs |")
    print("|---|---:|---:|---|")
    for name, text, filename in cases:
        seconds, obj = measure(text, filename, args.repeat)
        per = ", ".join(f"{s}: {len(d) // 8}" for s, d in program_sections(obj).items())
        print(f"| {name} | {seconds * 1000:.0f} | {instruction_count(obj)} | {per} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
