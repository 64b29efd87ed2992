"""The opcode-dispatch table: opcode number -> handler.

A handler takes a decoded `Request` and returns the reply payload: None (an
empty reply), a bytes-like object, or a list of them (sent as one writev
after the header, e.g. a LOOKUP reply followed by fuse-bpf's 32-byte
`fuse_entry_bpf_out`), or `NO_REPLY` for requests the kernel expects no
answer to (FORGET, BATCH_FORGET, INTERRUPT).  Errors are raised as OSError
with the reply's errno.

`may_block(req)` says whether a request may wait on the backing filesystem
for long: the engine table's rows say which operations may (`optable.MAY_BLOCK`:
data I/O, syncs); the session hands the reading of /dev/fuse to another
thread before running such a request, and runs the rest in the thread that
read them (`session`).  Others can refine it per opcode (`blocking[opcode] =
predicate`).

Anyone may register more handlers: the fuse-bpf kernel mode registers its
userspace filter requests under `OP | PREFILTER` and `OP | POSTFILTER`
(0x10000 / 0x20000, spec §7) with `Dispatcher.register`.  Opcodes nobody
registered are answered ENOSYS (the kernel then stops sending most of them).
"""
from __future__ import annotations

import errno
import logging
from typing import Any, Callable, Union

from ..optable import MAY_BLOCK
from .protocol import OPCODE_NAMES, OPCODES, Request

log = logging.getLogger("fdsl.runtime")

Payload = Union[None, bytes, bytearray, memoryview, list]
Handler = Callable[[Request], Any]

_PHASE_MASK = 0xFFFF        # a fuse-bpf filter request blocks as its operation does


class _NoReply:
    def __repr__(self) -> str:
        return "NO_REPLY"


NO_REPLY: Any = _NoReply()


class Dispatcher:
    def __init__(self) -> None:
        self.table: dict[int, Handler] = {}
        self._unknown_seen: set[int] = set()
        self.blocking: dict[int, bool | Callable[[Request], bool]] = {
            OPCODES[name]: True for name in MAY_BLOCK}

    def may_block(self, req: Request) -> bool:
        how = self.blocking.get(req.opcode & _PHASE_MASK, False)
        return how if isinstance(how, bool) else how(req)

    def register(self, opcode: int, handler: Handler) -> None:
        """Serve `opcode` (a plain FUSE opcode, or one with a fuse-bpf phase bit)."""
        self.table[opcode] = handler

    def handler(self, opcode: int) -> Handler:
        return self.table.get(opcode) or self._unknown

    def _unknown(self, req: Request) -> Payload:
        if req.opcode not in self._unknown_seen:
            self._unknown_seen.add(req.opcode)
            log.info("FUSE opcode %d (%s) not implemented: ENOSYS", req.opcode,
                     OPCODE_NAMES.get(req.opcode, "unknown"))
        raise OSError(errno.ENOSYS, "not implemented")
