"""The sequence of one operation, the same for the daemon, `fdsl run` and `fdsl test`.

    PRE program -> [userspace prefilter] -> [backing step]
    -> [POST program] -> [userspace postfilter]

on one argument frame (`fdsl.vm.frame`): PRE writes stay in the input memory
(the backing step reads the honoured ones, POST sees them); POST writes are
the outputs; a postfilter cannot turn a failure into success.

Which steps run is the only thing the ABIs disagree on here, and `Steps` says
it: ACK's PRE bitmask (spec §6: USER_FILTER, BACKING, POST_FILTER; POST's
USER_FILTER asks for the userspace postfilter) or RFC v1's enumerated codes
(§12.2: CONTINUE = backing; USER = a classic request; USER_PREFILTER = the
userspace prefilter, whose reply error is the next code, so success means the
backing step; POSTFILTER = backing then the program in POST; USER_POSTFILTER
= backing then the userspace postfilter without a BPF POST, and from POST the
userspace postfilter).  The frame carries its ABI (`frame.layout.abi`), so
callers do not name it.

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
from dataclasses import dataclass
from typing import Any, Callable

from fdsl import abi
from fdsl.vm.frame import Frame
from fdsl.vm.helpers import Caller

Program = Callable[[Any, Caller], int]
UserHalf = Callable[[str, Frame, int], None]


@dataclass(frozen=True)
class Steps:
    """What a non-negative PRE result asks for (`post` results only use `user_post`)."""

    user_pre: bool = False       # the userspace prefilter first
    backing: bool = False        # the backing step (else: a classic FUSE request)
    bpf_post: bool = False       # after the backing step, the program in POST
    user_post: bool = False      # after the backing step (and POST), the userspace postfilter

    @property
    def posts(self) -> bool:
        return self.bpf_post or self.user_post


# RFC v1 (§12.2), by the code names of `Abi.return_codes`
_ENUMERATED_PRE = {"CONTINUE": Steps(backing=True), "USER": Steps(),
                   "USER_PREFILTER": Steps(user_pre=True, backing=True),
                   "POSTFILTER": Steps(backing=True, bpf_post=True),
                   "USER_POSTFILTER": Steps(backing=True, user_post=True)}
_ENUMERATED_POST = {"CONTINUE": Steps(), "USER_POSTFILTER": Steps(user_post=True)}


class BadReturn(OSError):
    """A result the ABI has no meaning for (the verifier refuses such programs)."""


def steps(record: abi.Abi, phase: str, ret: int) -> Steps:
    """The steps a non-negative result of `phase` asks for under `record`'s return codes."""
    table = _TABLES.get((record.id, phase))
    if table is None:
        table = _TABLES[(record.id, phase)] = _table(record, phase)
    found = table.get(ret & _BITS if record.return_style == "bitmask" else ret)
    if found is None:
        raise BadReturn(errno.EIO, f"{ret} is not a {phase.upper()} return code of {record.name}")
    return found


_BITS = abi.USER_FILTER | abi.BACKING | abi.POST_FILTER
_TABLES: dict[tuple[str, str], dict[int, Steps]] = {}


def _table(record: abi.Abi, phase: str) -> dict[int, Steps]:
    """Result -> Steps for one ABI and phase, built once (the daemon decodes every result)."""
    if record.return_style == "bitmask":      # ACK §6; other bits are ignored
        if phase == "post":
            return {r: Steps(user_post=bool(r & abi.USER_FILTER)) for r in range(_BITS + 1)}
        return {r: Steps(user_pre=bool(r & abi.USER_FILTER), backing=bool(r & abi.BACKING),
                         bpf_post=bool(r & abi.BACKING) and bool(r & abi.POST_FILTER))
                for r in range(_BITS + 1)}
    named = _ENUMERATED_PRE if phase == "pre" else _ENUMERATED_POST
    return {code: named[name] for name, code in record.return_codes.items() if name in named}


def describe(record: abi.Abi, ret: int) -> str:
    """A result in the ABI's own terms: "-ENOENT", "BACKING|POST_FILTER", "POSTFILTER"."""
    if ret < 0:
        return f"-{abi.errno_name(-ret)}"
    if record.return_style == "bitmask":
        return "|".join(n for n, b in record.return_bits.items() if ret & b) or "0"
    return next((n for n, c in record.return_codes.items() if c == ret), str(ret))


def allows(record: abi.Abi, phase: str, ret: int) -> bool:
    """Does the result let the operation proceed (PRE: to the backing step)?"""
    if ret < 0:
        return False
    if phase == "post":
        return True
    try:
        return steps(record, phase, ret).backing
    except BadReturn:
        return False


class Denied(OSError):
    """A program denied the operation; `errno` is what the caller sees."""

    def __init__(self, caller_errno: int, program_errno: int, phase: str, op: str) -> None:
        super().__init__(caller_errno, f"{op} denied by policy ({phase})")
        self.program_errno = program_errno
        self.phase = phase


def pre(program: Program, frame: Frame, caller: Caller, op: str,
        user: UserHalf | None) -> int:
    """The PRE program, then the userspace prefilter if it asks; the PRE result."""
    return _pre(program, frame, caller, op, user)[0]


def _pre(program: Program, frame: Frame, caller: Caller, op: str,
         user: UserHalf | None) -> tuple[int, Steps]:
    ret = program(frame.pre, caller)
    if ret < 0:
        raise Denied(abi.requests.caller_errno(op, -ret), -ret, "pre", op)
    wanted = steps(frame.layout.abi, "pre", ret)
    if wanted.user_pre and user is not None:
        try:
            user("pre", frame, 0)
        except OSError as err:   # the userspace half's refusal goes through finalize too
            code = err.errno or errno.EIO
            raise Denied(abi.requests.caller_errno(op, code), code, "pre", op) from None
    return ret, wanted


def post(program: Program | None, frame: Frame, caller: Caller, op: str, error_in: int,
         user: UserHalf | None) -> int:
    """POST on a frame already switched to it: the program (None: RFC v1's
    USER_POSTFILTER from PRE, no BPF POST), then the userspace postfilter if asked."""
    if program is None:
        ret, ask_user = 0, True
    else:
        ret = program(frame.post, caller)
        if ret < 0:
            raise Denied(-ret, -ret, "post", op)
        ask_user = steps(frame.layout.abi, "post", ret).user_post
    if ask_user and user is not None:
        user("post", frame, error_in)
    return ret


def run(program: Program, frame: Frame, caller: Caller, op: str, *,
        backing: Callable[[Any, Frame | None], Any], subject: Any,
        fill_outputs: Callable[[Frame, Any], None], user: UserHalf | None = None,
        cleanup: Callable[[Any], None] | None = None) -> tuple[Any, bool]:
    """The whole sequence; returns (backing value, whether POST ran).

    `backing(subject, frame)` runs the backing step on the (possibly modified)
    inputs in the frame; `backing(subject, None)` is the classic FUSE request
    built from the original arguments (a PRE result without the backing step).
    `fill_outputs(frame, value)` writes its result into the output buffers for
    POST.  When the sequence fails after a successful backing step,
    `cleanup(value)` releases what it holds (fds).
    """
    _ret, wanted = _pre(program, frame, caller, op, user)
    if not wanted.backing:
        return backing(subject, None), False
    error_in = 0
    value = None
    try:
        value = backing(subject, frame)
    except OSError as err:
        error_in = -(err.errno or errno.EIO)
    if not wanted.posts:
        if error_in:
            raise OSError(-error_in, f"{op}: backing step failed")
        return value, False
    try:
        frame.to_post(error_in)
        if not error_in:
            fill_outputs(frame, value)
        post(program if wanted.bpf_post else None, frame, caller, op, error_in, user)
    except BaseException:
        if cleanup is not None and not error_in:
            cleanup(value)
        raise
    if error_in:   # a postfilter cannot turn a failure into success
        raise OSError(-error_in, f"{op}: backing step failed")
    return value, True
