"""User-facing error types.

Anything raised as an `FdslError` is a user mistake or a bad input (policy,
object file, mount point) and is printed without a traceback; its
`exit_code` is what the `fdsl` command exits with.  Everything else is a bug.
"""
from __future__ import annotations


class FdslError(Exception):
    """A failure caused by the user's input; printed as one clean message."""

    exit_code = 1


class UsageError(FdslError):
    """Wrong command-line usage (bad flag combination, missing file)."""

    exit_code = 2


class PolicyError(FdslError):
    """A policy did not compile; `diagnostics` carries every error found."""

    def __init__(self, diagnostics: list, rendered: str) -> None:
        super().__init__(rendered)
        self.diagnostics = diagnostics


class LoadError(FdslError):
    """A BPF object file is malformed, truncated or not what we expect."""


class VerifierError(FdslError):
    """The verifier refused a program; `index` is the instruction slot."""

    def __init__(self, section: str, index: int, reason: str) -> None:
        super().__init__(f"{section}: insn {index}: {reason}")
        self.section = section
        self.index = index
        self.reason = reason


class VmFault(Exception):
    """A program faulted at run time (bad memory access, division trap, ...).

    Not an FdslError: the caller decides (the daemon turns it into EIO).
    """

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"insn {index}: {reason}")
        self.index = index
        self.reason = reason


class MountError(FdslError):
    """The mount could not be set up (busy mount point, missing backing dir)."""
