"""`fdsl fmt [--check] FILES`: rewrite policies in the canonical layout (fdsl.fmt)."""
from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "fmt", help="format policies in place (--check: only report)",
        description="Rewrite each policy in the canonical layout: four-space indentation per "
        "bracket, canonical spacing, at most one blank line, comments and line breaks kept. "
        "Idempotent; never changes a policy's tokens.  '-' formats stdin to stdout.  Exit 0 "
        "when done (with --check: when every file is formatted already), 1 when --check finds "
        "files to reformat or a file has syntax errors.")
    p.add_argument("files", nargs="+", metavar="FILE", help="policy files (.fdsl), or -")
    p.add_argument("--check", action="store_true",
                   help="change nothing; list the files that are not formatted and exit 1")
    p.set_defaults(func=cmd_fmt)


def _formatted(text: str, name: str) -> str:
    from fdsl.errors import PolicyError
    from fdsl.fmt import format_source
    from fdsl.lang.diagnostics import render_all
    from fdsl.lang.frontend import has_errors
    from fdsl.lang.parser import parse_source

    _, sources, diags = parse_source(text, name)
    if has_errors(diags):      # only syntax: fmt needs no include or type to be right
        raise PolicyError(diags, render_all(diags, sources))
    return format_source(text)


def _read(path: str) -> str:
    from fdsl.errors import UsageError
    from fdsl.files import MAX_POLICY_BYTES, InputFileError, read_regular_file

    try:
        data = read_regular_file(path, MAX_POLICY_BYTES).data
    except InputFileError as err:
        raise UsageError(f"cannot read '{path}': {err.reason}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UsageError(f"'{path}' is not UTF-8 text (byte {err.start})") from None


def cmd_fmt(args: argparse.Namespace) -> int:
    from fdsl.commands.compile import _write

    if "-" in args.files:
        if len(args.files) > 1:
            from fdsl.errors import UsageError

            raise UsageError("'-' (stdin) cannot be mixed with files")
        text = sys.stdin.read()
        out = _formatted(text, "<stdin>")
        if args.check:
            return 0 if out == text else 1
        sys.stdout.write(out)
        return 0
    unformatted = 0
    for path in args.files:
        text = _read(path)
        out = _formatted(text, path)
        if out == text:
            continue
        unformatted += 1
        if args.check:
            print(f"would reformat {path}")
        else:
            _write(path, out.encode("utf-8"))
            print(f"reformatted {path}")
    if args.check:
        return 1 if unformatted else 0
    return 0
