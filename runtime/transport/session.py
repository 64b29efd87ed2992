"""The request loop: INIT first, then worker threads serving requests.

Each worker has its own clone of the /dev/fuse fd (FUSE_DEV_IOC_CLONE; a
non-root daemon, which cannot open /dev/fuse, shares the one fd) and its own
buffer, runs the handler on the spot and writes the reply with one
`os.writev` to the fd it read the request from.

Leader and followers.  One worker at a time reads /dev/fuse (the leader);
it runs cheap metadata requests itself and goes straight back to reading,
so a sequence of requests (a `find`, a create loop, a stat round trip)
costs no thread switch and no GIL hand-off at all.  Before running a
request that may wait on the backing filesystem for long (data I/O, syncs:
`Dispatcher.may_block`) it hands the reading to an idle follower, so a slow
call occupies one worker while the others keep serving.  With 16 workers
all blocked in read(2), as before, the kernel woke the longest-idle one for
every request (its wait queue is FIFO): each request moved to another
thread (two context switches per request instead of one or none, cold
caches, GIL contention with the thread that had just replied).  With
`inline=False` every request counts as blocking (the leader always hands
over).

The watchdog bounds a stall of the leader.  A metadata request is cheap
until the backing filesystem hangs (an NFS server gone, a stacked FUSE
whose daemon is stopped): then the leader would sit in it and nobody would
read /dev/fuse, every other caller (and INTERRUPT) waiting behind it.  The
leader notes the request it runs (one attribute store before and after, no
syscall); a watchdog thread looks every `WATCHDOG_TICK` seconds, and when
the leader is still inside the request it saw the tick before, deposes it:
another worker becomes the reader (an idle follower, or a new one up to
the thread cap).  The deposed leader finishes its request whenever the
backing filesystem answers, sees the leadership term has moved on, and
becomes a follower.  A stall thus costs other callers one to two ticks,
and each hung request holds one worker, as with `inline=False`.

Bad input from the kernel side (a short or inconsistent request, an
undecodable payload) is logged and answered EIO when it has a request id;
an opcode nobody handles gets ENOSYS; an unexpected exception in a handler
is logged with its traceback and answered EIO.  The loop keeps serving in
every case.  It ends when the connection goes away (ENODEV: unmounted, by
us or by `fusermount3 -u`, or aborted).
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
import threading
import time
from typing import Any, Callable

from fdsl import abi

from .dispatch import NO_REPLY, Dispatcher
from .init import InitOptions, Negotiated, negotiate
from .interrupts import Interrupts
from .protocol import OPCODE_NAMES, OPCODES, ProtocolError, Request, out_header, parse

log = logging.getLogger("fdsl.runtime")

_U32 = struct.Struct("<I")
_UNIQUE = struct.Struct("<Q")
_RETRY = (errno.EINTR, errno.EAGAIN, errno.ENOENT)   # ENOENT: request interrupted before read
INIT, DESTROY = OPCODES["init"], OPCODES["destroy"]
# Well above what a cheap request takes (a lookup or a 4 KiB readdir page on a local
# disk: tens of microseconds; a cold one: a few milliseconds), well below what a person
# notices; measured in docs/architecture.md.
WATCHDOG_TICK = 0.025


def clone_fd(devfd: int) -> int | None:
    """A new fd on the same FUSE connection, or None where /dev/fuse cannot be opened."""
    try:
        fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.ioctl(fd, abi.FUSE_DEV_IOC_CLONE, _U32.pack(devfd))
    except OSError as err:
        os.close(fd)
        log.debug("FUSE_DEV_IOC_CLONE failed: %s", err)
        return None
    return fd


class Session:
    def __init__(self, devfd: int, dispatcher: Dispatcher, threads: int = 8,
                 stats: Any = None, inline: bool = True) -> None:
        self.devfd = devfd
        self.dispatcher = dispatcher
        self.threads = max(1, threads)
        self.stats = stats
        self.inline = inline
        self._cond = threading.Condition()
        self._leader = False            # a worker is reading /dev/fuse (or about to)
        self._term = 0                  # +1 whenever the watchdog deposes a leader
        self._idle = 0                  # followers waiting in _lead
        self._leader_slot: list[Request | None] | None = None   # [the request it runs itself]
        self.deposed = 0                # how often the watchdog moved the reading on
        self._start_lock = threading.Lock()
        self._watchdog: threading.Thread | None = None
        self.negotiated: Negotiated | None = None
        self.finished = threading.Event()
        self._finish_lock = threading.Lock()
        self.on_finished: Callable[[], None] | None = None
        self._fds: list[int] = []
        self._workers: list[threading.Thread] = []
        self._buffer_size = abi.FUSE_MIN_READ_BUFFER
        self.interrupts = Interrupts()
        dispatcher.register(OPCODES["interrupt"], self.interrupts.handle)

    # ----------------------------------------------------------- startup

    def handshake(self, options: InitOptions) -> Negotiated:
        """Read and answer FUSE_INIT (the kernel sends nothing else before it)."""
        from .init import MAX_WRITE

        buf = bytearray(MAX_WRITE + 4096)
        while True:
            try:
                n = os.readv(self.devfd, [buf])
            except OSError as err:
                if err.errno in _RETRY:
                    continue
                raise
            req = parse(buf, n)
            if req.opcode != INIT:
                log.error("request %s before FUSE_INIT: EIO", req.name)
                self._reply(self.devfd, req.unique, errno.EIO)
                continue
            payload, negotiated = negotiate(req, options)
            self._reply(self.devfd, req.unique, 0, payload)
            self.negotiated = negotiated
            # header + fuse_write_in + the largest write, rounded up to a page
            self._buffer_size = negotiated.max_write + 4096
            return negotiated

    def start(self, count: int | None = None) -> None:
        """Start the workers; with `count` only that many for now, and a later call starts
        the rest (the daemon serves with one until its mount is ready: every thread start
        waits for the new thread to run, which costs most on a loaded machine)."""
        with self._start_lock:
            if self.finished.is_set():          # the watchdog, late: close() has the fds
                return
            for i in range(len(self._workers), self.threads if count is None
                           else min(count, self.threads)):
                fd = clone_fd(self.devfd) if i else None
                if fd is not None:
                    self._fds.append(fd)
                t = threading.Thread(target=self._serve,
                                     args=(fd if fd is not None else self.devfd,),
                                     name=f"fuse-{i}", daemon=True)
                self._workers.append(t)
                t.start()
            if self.inline and self.threads > 1 and self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch, name="fuse-watchdog",
                                                  daemon=True)
                self._watchdog.start()

    # -------------------------------------------------------------- loop

    def _serve(self, fd: int) -> None:
        buf = bytearray(self._buffer_size)
        readv = os.readv
        slot: list[Request | None] = [None]     # this worker's, for the watchdog
        try:
            while (term := self._lead(slot)) is not None:
                while True:
                    try:
                        n = readv(fd, [buf])
                    except OSError as err:
                        if err.errno in _RETRY:
                            continue
                        if err.errno != errno.ENODEV:
                            log.error("reading /dev/fuse failed: %s", err)
                        return
                    req = self._parse(fd, buf, n)
                    if req is None:
                        continue
                    if not self.inline or self.dispatcher.may_block(req):
                        self._step_down(term)
                        self._run(fd, req)
                        break
                    slot[0] = req               # what the watchdog looks at
                    self._run(fd, req)
                    slot[0] = None
                    if self.finished.is_set():      # DESTROY
                        return
                    if self._term != term:      # deposed while it ran: now a follower
                        break
        finally:
            self._finish()

    def _lead(self, slot: list[Request | None]) -> int | None:
        """Wait until no other worker reads, then become the reader: the leadership
        term it reads in (None: the end).  `slot` is where it notes the request it
        runs itself."""
        with self._cond:
            self._idle += 1
            while self._leader and not self.finished.is_set():
                self._cond.wait()
            self._idle -= 1
            if self.finished.is_set():
                return None
            self._leader = True
            self._leader_slot = slot
            return self._term

    def _step_down(self, term: int) -> None:
        """Hand the reading to a follower (unless the watchdog already did)."""
        with self._cond:
            if self._term == term:
                self._leader = False
                self._cond.notify()

    def _watch(self) -> None:
        """Depose a leader stuck in one request for a whole tick (module docstring)."""
        seen: Request | None = None
        sleep, finished = time.sleep, self.finished   # a plain sleep: the cheapest wake-up
        while not finished.is_set():
            sleep(WATCHDOG_TICK)
            slot = self._leader_slot
            req = slot[0] if slot is not None else None
            if slot is None or req is None or req is not seen:
                seen = req
                continue
            seen = None
            with self._cond:
                if self._leader_slot is not slot or slot[0] is not req:
                    continue
                self._term += 1
                self._leader = False
                self._leader_slot = None
                self.deposed += 1
                idle = self._idle
                self._cond.notify()
            log.debug("request %d (%s) stalls the reader: %s takes over", req.unique,
                      OPCODE_NAMES.get(req.opcode, req.opcode), "a follower" if idle else
                      "a new worker" if len(self._workers) < self.threads else "the next free worker")
            if not idle:
                self.start(len(self._workers) + 1)

    def _parse(self, fd: int, buf: bytearray, n: int) -> Request | None:
        try:
            return parse(buf, n)
        except ProtocolError as err:
            log.error("bad request from the kernel: %s", err)
            if n >= 16:
                self._reply(fd, _UNIQUE.unpack_from(buf, 8)[0], errno.EIO)
            return None

    def _handle(self, fd: int, buf: bytearray, n: int) -> None:
        """Decode and serve the request in the first `n` bytes of `buf`."""
        req = self._parse(fd, buf, n)
        if req is not None:
            self._run(fd, req)

    def _run(self, fd: int, req: Request) -> None:
        name = OPCODE_NAMES.get(req.opcode, str(req.opcode))
        stats = self.stats
        if stats is not None:
            stats.ops[name] += 1
        running = self.interrupts.running
        running[req.unique] = True          # what an INTERRUPT finds running (interrupts.py)
        try:
            if self.interrupts.pending and self.interrupts.interrupted_before_start(req.unique):
                self._reply(fd, req.unique, errno.EINTR)
                return
            self._serve_one(fd, req, name)
        finally:
            del running[req.unique]

    def _serve_one(self, fd: int, req: Request, name: str) -> None:
        stats = self.stats
        try:
            payload = self.dispatcher.handler(req.opcode)(req)
        except OSError as err:
            code = err.errno or errno.EIO
            if stats is not None and code != errno.ENOSYS:
                stats.errors[name] += 1
            self._reply(fd, req.unique, code)
            return
        except ProtocolError as err:
            log.error("bad %s request from the kernel: %s", name, err)
            self._reply(fd, req.unique, errno.EIO)
            return
        except Exception:  # noqa: BLE001 - one bad request must not stop the mount
            log.exception("internal error serving %s", name)
            self._reply(fd, req.unique, errno.EIO)
            return
        if payload is NO_REPLY:
            return
        self._reply(fd, req.unique, 0, payload)
        if req.opcode == DESTROY:
            self._finish()

    def _reply(self, fd: int, unique: int, error: int, payload: Any = None) -> None:
        if not 0 <= error < 1000:
            error = errno.EIO
        if error or payload is None:
            parts = [out_header(unique, error, 0)]
        elif isinstance(payload, list):
            parts = [out_header(unique, 0, sum(map(len, payload))), *payload]
        else:
            parts = [out_header(unique, 0, len(payload)), payload]
        try:
            os.writev(fd, parts)
        except OSError as err:
            # ENOENT: the request was interrupted meanwhile; ENODEV: unmounted.
            if err.errno not in (errno.ENOENT, errno.ENODEV):
                log.error("writing the reply to request %d failed: %s", unique, err)

    # ---------------------------------------------------------- shutdown

    def _finish(self) -> None:
        with self._finish_lock:
            if self.finished.is_set():
                return
            self.finished.set()
        with self._cond:
            self._cond.notify_all()     # followers waiting to lead: the end
        if self.on_finished is not None:
            self.on_finished()

    def close(self) -> None:
        """After the connection ended: close the cloned fds and the main fd."""
        with self._start_lock:
            self.finished.set()
        with self._cond:
            self._cond.notify_all()
        for t in self._workers + ([self._watchdog] if self._watchdog else []):
            t.join(timeout=2.0)
        for fd in self._fds + [self.devfd]:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []
