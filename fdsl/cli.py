"""The `fdsl` command: argument parsing and dispatch to the subcommand modules.

Each module in `COMMAND_MODULES` exposes `register(subparsers)`, which adds its
subcommands with `set_defaults(func=...)`; `func(args)` returns the exit code.
Modules import their heavy dependencies inside the command functions so that
`fdsl --help` stays fast, and a command line naming a command (or the mount
helper form) registers only that command's module (`COMMANDS`): `fdsl mount`
does not pay for building the parsers of the other eleven commands.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

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

# command -> the module that registers it (a test checks this against the modules)
COMMANDS = {
    "check": "fdsl.commands.compile", "compile": "fdsl.commands.compile",
    "explain": "fdsl.commands.compile", "disasm": "fdsl.commands.disasm",
    "verify": "fdsl.commands.verify", "run": "fdsl.commands.run", "test": "fdsl.commands.test",
    "mount": "fdsl.commands.mount", "umount": "fdsl.commands.mount",
    "stats": "fdsl.commands.mount", "fmt": "fdsl.commands.fmt", "load": "fdsl.commands.load",
}

EPILOG = """exit codes: 0 success, 1 policy/object/verification error or failed test,
2 usage error.  Run 'fdsl COMMAND --help' for the options of one command."""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or with `only` just that command module's commands."""
    parser = argparse.ArgumentParser(
        prog="fdsl",
        description="Compile .fdsl filter policies to fuse-bpf eBPF and mount "
        "filtered passthrough views of directories.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fdsl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in (only,) if only else COMMAND_MODULES:
        importlib.import_module(name).register(sub)   # a broken subcommand must fail loudly
    return parser


def helper_form(argv: list[str]) -> list[str]:
    """mount.fuse3 (`mount -t fuse.fdsl`, fstab) runs `fdsl BACKING MOUNTPOINT -o OPTS`:
    a first argument that is a directory rather than a command means `fdsl mount`."""
    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-") \
            and os.path.isdir(argv[0]):
        return ["mount", *argv]
    return argv


def main(argv: list[str] | None = None) -> int:
    """The command; `argv` None means this process is the command (it may then exit
    directly, as `fdsl mount` does once its daemon serves)."""
    whole_process = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv == ["--version"]:   # answered before any subcommand module is imported
        print(f"fdsl {__version__}")
        return 0
    argv = helper_form(argv)
    parser = build_parser(COMMANDS.get(argv[0]) if argv else None)
    args = parser.parse_args(argv)
    args.whole_process = whole_process
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
