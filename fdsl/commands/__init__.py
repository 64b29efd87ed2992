"""Subcommand implementations of the fdsl CLI, one module per area."""

import sys
from contextlib import contextmanager
from typing import Any, Iterator


def add_include_option(parser: Any) -> None:
    """`-I DIR`: another directory policies may include from (see fdsl.lang.includes)."""
    parser.add_argument("-I", dest="include_dirs", action="append", default=[], metavar="DIR",
                        help="also look for included files in DIR and allow includes from it "
                        "(by default includes stay under the policy's directory); repeatable")


STDIN_NAME = "<stdin>"
TEXT_NAME = "<-e>"


def add_policy_argument(parser: Any) -> None:
    """POLICY (a file, or - for stdin) or `-e 'policy text'`, plus -I."""
    parser.add_argument("policy", nargs="?", metavar="POLICY",
                        help="policy file (.fdsl), or - to read it from stdin")
    parser.add_argument("-e", dest="policy_text", metavar="TEXT",
                        help="the policy text itself, for one-liners: -e 'hide name == \".env\"'")
    add_include_option(parser)


def policy_source(args: Any) -> tuple[bytes | None, str]:
    """(text, name): text is None for a file named `name` (read by the driver)."""
    from fdsl.errors import UsageError

    if args.policy_text is not None:
        if args.policy is not None:
            raise UsageError("give a policy file or -e TEXT, not both")
        return args.policy_text.encode("utf-8", "surrogateescape"), TEXT_NAME
    if args.policy is None:
        raise UsageError("no policy: give a file, - for stdin, or -e TEXT")
    if args.policy == "-":
        from fdsl.files import MAX_POLICY_BYTES

        data = sys.stdin.buffer.read(MAX_POLICY_BYTES + 1)
        if len(data) > MAX_POLICY_BYTES:
            raise UsageError(f"the policy on stdin is larger than {MAX_POLICY_BYTES} bytes")
        return data, STDIN_NAME
    return None, args.policy


def add_target_abi_option(parser: Any) -> None:
    """`--abi NAME` of compile/check/explain: the fuse-bpf ABI to generate code for
    (recorded in the object; `add_abi_option` is the object commands' flag)."""
    parser.add_argument("--abi", metavar="NAME", default=None,
                        help="fuse-bpf ABI to compile for: ack (Android Common Kernel, the "
                        "default) or rfc-v1 (the September 2022 RFC); recorded in the object's "
                        "metadata, so later commands need no flag")


def target_abi_named(name: str | None) -> Any:
    """The `Abi` record a target `--abi NAME` names (ACK for None); a usage error if unknown."""
    from fdsl import abi
    from fdsl.errors import UsageError

    if name is None:
        return abi.DEFAULT
    try:
        return abi.named(name)
    except abi.AbiChoiceError as err:
        raise UsageError(str(err)) from None


def target_abi(args: Any) -> Any:
    """The `Abi` record `--abi` names (ACK without the flag); a usage error if unknown."""
    return target_abi_named(getattr(args, "abi", None))


def compile_args(args: Any, want_asm: bool = False) -> Any:
    """Compile the policy the command line names (file, stdin or -e) for `--abi`."""
    from fdsl.compile.driver import compile_file, compile_source

    text, name = policy_source(args)
    record = target_abi(args)
    if text is None:
        return compile_file(name, want_asm=want_asm, include_dirs=args.include_dirs,
                            abi_record=record)
    return compile_source(text, name, want_asm=want_asm, include_dirs=args.include_dirs,
                          abi_record=record)


def source_name(args: Any) -> str:
    """How diagnostics and reports name the policy (no reading)."""
    if args.policy_text is not None:
        return TEXT_NAME
    return STDIN_NAME if args.policy == "-" else str(args.policy)


ABI_HELP = ("ABI of an object without fdsl metadata, e.g. one built with clang (ack, rfc-v1; "
            "default ack); an fdsl object's ABI is read from its metadata and a contradicting "
            "--abi is refused; a .fdsl policy is compiled for this ABI")


def add_abi_option(parser: Any) -> None:
    """`--abi NAME`: the ABI of a clang-built object (fdsl objects record theirs)."""
    parser.add_argument("--abi", metavar="NAME", help=ABI_HELP)


@contextmanager
def abi_choice(path: str) -> Iterator[None]:
    """Turn an unknown `--abi` or one contradicting the object's metadata into a usage error
    (exit 2) naming the object."""
    from fdsl import abi
    from fdsl.errors import UsageError

    try:
        yield
    except abi.AbiChoiceError as err:
        raise UsageError(f"{path}: {err}") from None
