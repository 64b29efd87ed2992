"""The `fdsl` command: argument parsing and dispatch to the subcommand modules.

Each module in `COMMAND_MODULES` exposes `register(subparsers)`, which adds its
subcommands with `set_defaults(func=...)`; `func(args)` returns the exit code.
Modules import their heavy dependencies inside the command functions so that
`fdsl --help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any

from fdsl import __version__
from fdsl.errors import FdslError, PolicyError

COMMAND_MODULES = (
    "fdsl.commands.compile",   # check, compile, explain
    "fdsl.commands.disasm",    # disasm
    "fdsl.commands.verify",    # verify
    "fdsl.commands.run",       # run (one simulated request)
    "fdsl.commands.test",      # test (a policy's own test blocks)
    "fdsl.commands.mount",     # mount, umount, stats
    "fdsl.commands.fmt",       # fmt
    "fdsl.commands.load",      # load (check an object against the kernel's fuse-bpf)
)

EPILOG = """exit codes: 0 success, 1 policy/object/verification error or failed test,
2 usage error.  Run 'fdsl COMMAND --help' for the options of one command."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fdsl",
        description="Compile .fdsl filter policies to fuse-bpf eBPF and mount "
        "filtered passthrough views of directories.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fdsl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)   # a broken subcommand must fail loudly
    return parser


def helper_form(argv: list[str], commands: Any) -> list[str]:
    """mount.fuse3 (`mount -t fuse.fdsl`, fstab) runs `fdsl BACKING MOUNTPOINT -o OPTS`:
    a first argument that is a directory rather than a command means `fdsl mount`."""
    if argv and argv[0] not in commands and not argv[0].startswith("-") \
            and os.path.isdir(argv[0]):
        return ["mount", *argv]
    return argv


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv == ["--version"]:   # answered before any subcommand module is imported
        print(f"fdsl {__version__}")
        return 0
    parser = build_parser()
    commands = next(a.choices for a in parser._actions
                    if isinstance(a, argparse._SubParsersAction))
    args = parser.parse_args(helper_form(argv, commands))
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except FdslError as err:
        message = str(err)
        if not isinstance(err, PolicyError):
            message = f"fdsl: {message}"
        print(message, file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
