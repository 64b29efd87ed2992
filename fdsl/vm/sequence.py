"""The spec §6 sequence of one operation, the same for the daemon, `fdsl run` and `fdsl test`.

    PRE program -> [USER_FILTER: userspace prefilter] -> [BACKING: backing step]
    -> [POST_FILTER: POST program -> [USER_FILTER: userspace postfilter]]

on one argument frame (`fdsl.vm.frame`): PRE writes through the aliased out
slots stay in the input memory (the backing step reads the honoured ones,
POST sees them); POST sees inputs + outputs and its writes are the outputs;
a postfilter cannot turn a failure into success.

The finalize errnos of a real ACK kernel apply (§6, observed on ACK 6.1): a
PRE deny of LOOKUP reaches the caller as ENOENT, of GETATTR as EIO
(`abi.requests.caller_errno`).  `Denied` keeps the program's own errno too,
for `fdsl test` and `fdsl run` to show.

A program is any callable `(ctx, caller) -> int` (r0 as signed 32-bit); a
fault must surface as OSError(EIO).  The userspace half is a callable
`(phase, frame, error_in) -> None` that reads and rewrites the frame and
raises OSError to fail the operation.
"""
from __future__ import annotations

import errno
from typing import Any, Callable

from fdsl import abi
from fdsl.vm.frame import Frame
from fdsl.vm.helpers import Caller

Program = Callable[[Any, Caller], int]
UserHalf = Callable[[str, Frame, int], None]


class Denied(OSError):
    """A program denied the operation; `errno` is what the caller sees."""

    def __init__(self, caller_errno: int, program_errno: int, phase: str, op: str) -> None:
        super().__init__(caller_errno, f"{op} denied by policy ({phase})")
        self.program_errno = program_errno
        self.phase = phase


def pre(program: Program, frame: Frame, caller: Caller, op: str,
        user: UserHalf | None) -> int:
    """Steps 2-5: the PRE program, then the userspace prefilter if it asks; the PRE bits."""
    ret = program(frame.pre, caller)
    if ret < 0:
        raise Denied(abi.requests.caller_errno(op, -ret), -ret, "pre", op)
    if ret & abi.USER_FILTER and user is not None:
        try:
            user("pre", frame, 0)
        except OSError as err:   # the userspace half's refusal goes through finalize too
            code = err.errno or errno.EIO
            raise Denied(abi.requests.caller_errno(op, code), code, "pre", op) from None
    return ret


def post(program: Program, frame: Frame, caller: Caller, op: str, error_in: int,
         user: UserHalf | None) -> int:
    """Steps 9-10 on a frame already switched to POST; the POST result."""
    ret = program(frame.post, caller)
    if ret < 0:
        raise Denied(-ret, -ret, "post", op)
    if ret & abi.USER_FILTER and user is not None:
        user("post", frame, error_in)
    return ret


def run(program: Program, frame: Frame, caller: Caller, op: str, *,
        backing: Callable[[Any, Frame | None], Any], subject: Any,
        fill_outputs: Callable[[Frame, Any], None], user: UserHalf | None = None,
        cleanup: Callable[[Any], None] | None = None) -> tuple[Any, bool]:
    """The whole sequence; returns (backing value, whether POST ran).

    `backing(subject, frame)` runs the backing step on the (possibly modified)
    inputs in the frame; `backing(subject, None)` is the classic FUSE request
    built from the original arguments (step 6, a PRE result without BACKING).
    `fill_outputs(frame, value)` writes its result into the output buffers for
    POST.  When the sequence fails after a successful backing step,
    `cleanup(value)` releases what it holds (fds).
    """
    ret = pre(program, frame, caller, op, user)
    if not ret & abi.BACKING:
        return backing(subject, None), False
    error_in = 0
    value = None
    try:
        value = backing(subject, frame)
    except OSError as err:
        error_in = -(err.errno or errno.EIO)
    if not ret & abi.POST_FILTER:
        if error_in:
            raise OSError(-error_in, f"{op}: backing step failed")
        return value, False
    try:
        frame.to_post(error_in)
        if not error_in:
            fill_outputs(frame, value)
        post(program, frame, caller, op, error_in, user)
    except BaseException:
        if cleanup is not None and not error_in:
            cleanup(value)
        raise
    if error_in:   # a postfilter cannot turn a failure into success
        raise OSError(-error_in, f"{op}: backing step failed")
    return value, True
