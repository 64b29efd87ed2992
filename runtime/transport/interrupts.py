"""FUSE_INTERRUPT as the protocol expects a server to answer it.

When the caller of a request the daemon has already read gets a signal, the
kernel sends INTERRUPT (header unique = the request's | 1, fuse_interrupt_in
.unique = the request's).  A server may let the request finish or answer it
with EINTR; one that cannot find the request answers the INTERRUPT with
EAGAIN, and the kernel queues it again while the request is still pending (a
reply about a request that has finished is dropped: fs/fuse/dev.c,
fuse_dev_do_write).  ENOSYS would switch interrupts off for the connection.

Here a request runs on the worker that read it, straight through: a backing
syscall is never abandoned half way, so

* a request that is running gets no answer to its INTERRUPT: its own reply
  ends it;
* a request read by one worker but not started yet when another worker got
  its INTERRUPT is answered EINTR without running (the INTERRUPT was answered
  EAGAIN and remembered);
* an unknown request (finished, or not started yet) gets EAGAIN.
"""
from __future__ import annotations

import errno
import threading
from collections import OrderedDict
from typing import Any

from fdsl import abi

from .dispatch import NO_REPLY
from .protocol import Request

_INTERRUPT_IN = abi.FUSE_INTERRUPT_IN.codec
_REMEMBERED = 256          # interrupts of requests not seen yet (most are of finished ones)


class Interrupts:
    def __init__(self) -> None:
        self.running: dict[int, bool] = {}        # unique -> True while a worker serves it
        self.pending: OrderedDict[int, None] = OrderedDict()
        self._lock = threading.Lock()

    def interrupted_before_start(self, unique: int) -> bool:
        """Called by a worker after registering `unique` in `running`: was it
        interrupted before that?  (Then it is answered EINTR without running.)"""
        if not self.pending:
            return False
        with self._lock:
            if unique not in self.pending:
                return False
            del self.pending[unique]
            return True

    def handle(self, req: Request) -> Any:
        """The INTERRUPT handler (registered by the session)."""
        (unique,) = req.struct(_INTERRUPT_IN)
        with self._lock:
            if unique in self.running:
                return NO_REPLY
            self.pending[unique] = None
            while len(self.pending) > _REMEMBERED:
                self.pending.popitem(last=False)
        raise OSError(errno.EAGAIN, "interrupted request not found")
