"""The /dev/fuse transport's request handling, driven over a socket pair.

A SOCK_SEQPACKET pair stands in for the device's fd (one message per
request or reply, as /dev/fuse gives them); everything above the fd is the
real code: header decoding, the dispatch table, error replies, one writev
per reply, INIT negotiation.  Mounted behaviour is in tests/mount.
"""
from __future__ import annotations

import errno
import socket
import struct
import threading

import pytest

from fdsl import abi
from fdsl.runtime.transport.dispatch import NO_REPLY, Dispatcher
from fdsl.runtime.transport.init import InitOptions
from fdsl.runtime.transport.protocol import OPCODES
from fdsl.runtime.transport.session import Session

HEADER = abi.FUSE_IN_HEADER.codec
OUT = abi.FUSE_OUT_HEADER.codec
F = abi.INIT_FLAGS


def request(opcode: int, unique: int, payload: bytes = b"", nodeid: int = 1) -> bytearray:
    return bytearray(HEADER.pack(HEADER.size + len(payload), opcode, unique, nodeid,
                                 1000, 1000, 4242, 0) + payload)


@pytest.fixture
def wire():
    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    dispatcher = Dispatcher()
    session = Session(ours.fileno(), dispatcher, threads=1)
    try:
        yield session, dispatcher, kernel
    finally:
        ours.close()
        kernel.close()


def served(session: Session, kernel: socket.socket, data: bytearray) -> tuple[int, int, bytes]:
    """Hand one request to the session; (error, unique, payload) of its reply."""
    session._handle(session.devfd, data, len(data))
    reply = kernel.recv(1 << 16)
    length, error, unique = OUT.unpack_from(reply)
    assert length == len(reply), "header length must cover the whole reply"
    return error, unique, reply[OUT.size:]


def test_unknown_opcode_is_enosys_and_serving_goes_on(wire):
    session, dispatcher, kernel = wire
    assert served(session, kernel, request(4000, 7))[:2] == (-errno.ENOSYS, 7)
    dispatcher.register(OPCODES["statfs"], lambda req: b"ok")
    assert served(session, kernel, request(OPCODES["statfs"], 8)) == (0, 8, b"ok")


def test_inconsistent_header_gets_eio(wire):
    session, _, kernel = wire
    data = request(OPCODES["getattr"], 9, bytes(16))
    struct.pack_into("<I", data, 0, 999)           # len disagrees with what was read
    assert served(session, kernel, data)[:2] == (-errno.EIO, 9)


def test_short_read_is_dropped_without_reply(wire):
    session, _, kernel = wire
    session._handle(session.devfd, bytearray(b"\1" * 12), 12)
    kernel.setblocking(False)
    with pytest.raises(BlockingIOError):
        kernel.recv(100)


def test_short_payload_and_handler_crash_get_eio(wire):
    session, dispatcher, kernel = wire

    def crash(req):
        raise RuntimeError("bug")

    dispatcher.register(OPCODES["getattr"], lambda req: req.struct(abi.FUSE_GETATTR_IN.codec))
    dispatcher.register(OPCODES["readlink"], crash)
    assert served(session, kernel, request(OPCODES["getattr"], 10, b"\0" * 3))[:2] == (-errno.EIO, 10)
    assert served(session, kernel, request(OPCODES["readlink"], 11))[:2] == (-errno.EIO, 11)


def test_errno_and_multipart_replies(wire):
    """OSError -> its errno; a list payload is sent as one reply (LOOKUP + the 32-byte
    fuse-bpf block is how kernel mode uses it); NO_REPLY sends nothing; filter
    opcodes (OP | 0x10000) dispatch like any other."""
    session, dispatcher, kernel = wire
    block = abi.FUSE_ENTRY_BPF_OUT.pack({"backing_action": 2})

    def missing(req):
        raise OSError(errno.ENOENT, "no")

    dispatcher.register(OPCODES["lookup"], missing)
    dispatcher.register(OPCODES["lookup"] | abi.PREFILTER, lambda req: [bytes(128), block])
    dispatcher.register(OPCODES["forget"], lambda req: NO_REPLY)
    assert served(session, kernel, request(OPCODES["lookup"], 12, b"x\0"))[:2] == (-errno.ENOENT, 12)
    assert served(session, kernel, request(OPCODES["lookup"] | abi.PREFILTER, 13, b"x\0")) == (
        0, 13, bytes(128) + bytes(block))
    session._handle(session.devfd, request(OPCODES["forget"], 14, bytes(8)), 48)
    kernel.setblocking(False)
    with pytest.raises(BlockingIOError):
        kernel.recv(100)


def _init_request(flags: int) -> bytearray:
    payload = abi.FUSE_INIT_IN.codec.pack(7, 41, 131072, flags & 0xFFFFFFFF, flags >> 32)
    return request(OPCODES["init"], 1, payload)


@pytest.mark.parametrize("passthrough", [True, False])
def test_init_takes_only_offered_flags(wire, passthrough):
    session, _, kernel = wire
    offered = (F["ASYNC_READ"] | F["DONT_MASK"] | F["POSIX_ACL"] | F["INIT_EXT"]
               | F["HANDLE_KILLPRIV_V2"] | F["PASSTHROUGH"] | F["WRITEBACK_CACHE"])
    kernel.send(_init_request(offered))
    negotiated = session.handshake(InitOptions(passthrough=passthrough, max_stack_depth=2))
    reply = kernel.recv(1 << 16)
    out = abi.FUSE_INIT_OUT.unpack(reply[OUT.size:])
    chosen = out["flags"] | out["flags2"] << 32
    assert chosen & ~offered == 0
    assert chosen & F["DONT_MASK"] and chosen & F["POSIX_ACL"] and chosen & F["HANDLE_KILLPRIV_V2"]
    assert not chosen & F["WRITEBACK_CACHE"]
    assert bool(chosen & F["PASSTHROUGH"]) == passthrough == negotiated.passthrough
    assert out["max_stack_depth"] == (2 if passthrough else 0)
    assert out["max_write"] == negotiated.max_write and out["max_pages"] * 4096 == out["max_write"]


def _interrupt(unique: int, target: int) -> bytearray:
    """INTERRUPT as the kernel sends it: its own id is the target's with bit 0 set."""
    return request(OPCODES["interrupt"], unique, abi.FUSE_INTERRUPT_IN.codec.pack(target))


def _no_reply(kernel: socket.socket) -> bool:
    kernel.setblocking(False)
    try:
        kernel.recv(100)
    except BlockingIOError:
        return True
    finally:
        kernel.setblocking(True)
    return False


def test_interrupting_a_running_request_lets_it_finish(wire):
    """A request blocked in its handler (as on a slow backing fs): its INTERRUPT gets
    no answer, and the request's own reply, when it finishes, ends it."""
    session, dispatcher, kernel = wire
    release, started = threading.Event(), threading.Event()

    def blocking(req):
        started.set()
        assert release.wait(60)
        return b"done"

    dispatcher.register(OPCODES["read"], blocking)
    worker = threading.Thread(target=session._handle, args=(
        session.devfd, request(OPCODES["read"], 100, bytes(40)), 80))
    worker.start()
    try:
        assert started.wait(60)
        data = _interrupt(101, 100)
        session._handle(session.devfd, data, len(data))
        assert _no_reply(kernel)
    finally:
        release.set()
        worker.join(60)
    reply = kernel.recv(1 << 16)
    assert OUT.unpack_from(reply)[1:] == (0, 100) and reply[OUT.size:] == b"done"


def test_interrupt_of_an_unknown_request_is_eagain_and_it_never_runs(wire):
    """An INTERRUPT that finds no running request is answered EAGAIN (the kernel then
    queues it again, or drops the answer if the request has finished).  If the
    request turns up afterwards (read by another worker that had not started it),
    it is answered EINTR without running; later requests run as usual."""
    session, dispatcher, kernel = wire
    ran: list[int] = []
    dispatcher.register(OPCODES["getattr"], lambda req: ran.append(req.unique) or b"attr")
    assert served(session, kernel, _interrupt(201, 200)) == (-errno.EAGAIN, 201, b"")
    assert served(session, kernel, request(OPCODES["getattr"], 200, bytes(16))) == (
        -errno.EINTR, 200, b"")
    assert served(session, kernel, request(OPCODES["getattr"], 202, bytes(16))) == (
        0, 202, b"attr")
    assert ran == [202]
    # a finished request: EAGAIN too (the kernel finds nothing to queue again)
    assert served(session, kernel, _interrupt(203, 202)) == (-errno.EAGAIN, 203, b"")
    assert session.interrupts.running == {}


def _truncated_header() -> bytearray:
    return request(OPCODES["getattr"], 31, bytes(16))[:24]      # has its id, not the rest


def _wrong_length() -> bytearray:
    data = request(OPCODES["getattr"], 31, bytes(16))
    struct.pack_into("<I", data, 0, 4096)
    return data


@pytest.mark.parametrize("bad, expected, logged", [
    (_truncated_header, -errno.EIO, "short read"),
    (_wrong_length, -errno.EIO, "header says"),
    (lambda: request(4001, 31), -errno.ENOSYS, "not implemented"),
    (lambda: request(OPCODES["getattr"], 31, b"\0" * 5), -errno.EIO, "payload of 5 bytes"),
], ids=["truncated-header", "wrong-length", "unknown-opcode", "short-payload"])
def test_bad_input_is_answered_logged_and_serving_goes_on(wire, caplog, bad, expected, logged):
    session, dispatcher, kernel = wire
    dispatcher.register(OPCODES["getattr"], lambda req: bytes(req.struct(abi.FUSE_GETATTR_IN.codec)[:1]))
    with caplog.at_level("INFO", logger="fdsl.runtime"):
        assert served(session, kernel, bad())[:2] == (expected, 31)
    assert any(logged in r.getMessage() for r in caplog.records), caplog.text
    assert served(session, kernel, request(OPCODES["getattr"], 32, bytes(16))) == (0, 32, b"\0")


@pytest.fixture
def running():
    """A started session with two workers on one socket (clones fail there)."""
    def start(inline: bool):
        ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        dispatcher = Dispatcher()
        dispatcher.register(OPCODES["destroy"], lambda req: None)
        session = Session(ours.detach(), dispatcher, threads=2, inline=inline)  # it closes the fd
        opened.append((session, kernel))
        return session, dispatcher, kernel

    opened: list = []
    yield start
    for session, kernel in opened:
        kernel.send(request(OPCODES["destroy"], 99))
        assert session.finished.wait(5)
        session.close()
        kernel.close()


def _replies(kernel: socket.socket, count: int) -> dict[int, bytes]:
    kernel.settimeout(5)
    out = {}
    for _ in range(count):
        reply = kernel.recv(1 << 16)
        _, error, unique = OUT.unpack_from(reply)
        assert error == 0
        out[unique] = reply[OUT.size:]
    return out


def _held_and_traced(dispatcher: Dispatcher, held: str, answer: bytes
                     ) -> tuple[threading.Event, list[str]]:
    """`held` requests wait until the event is set, then answer `answer`; getattrs answer
    b"attr" and note the thread that served them in the list."""
    release = threading.Event()
    seen: list[str] = []

    def hold(req):
        assert release.wait(10)
        return answer

    def getattr_(req):
        seen.append(threading.current_thread().name)
        return b"attr"

    dispatcher.register(OPCODES[held], hold)
    dispatcher.register(OPCODES["getattr"], getattr_)
    return release, seen


def test_cheap_requests_stay_in_the_reading_thread_blocking_ones_hand_reading_over(running):
    session, dispatcher, kernel = running(inline=True)
    release, seen = _held_and_traced(dispatcher, "read", b"data")
    session.start()
    kernel.send(request(OPCODES["read"], 1))
    for unique in (2, 3, 4):
        kernel.send(request(OPCODES["getattr"], unique))
    # answered while the read still blocks a worker: the other one took over reading
    assert _replies(kernel, 3) == {2: b"attr", 3: b"attr", 4: b"attr"}
    assert len(set(seen)) == 1
    release.set()
    assert _replies(kernel, 1) == {1: b"data"}


def test_without_inline_a_blocked_metadata_request_stalls_only_itself(running):
    session, dispatcher, kernel = running(inline=False)
    release = threading.Event()

    def lookup(req):
        assert release.wait(5)
        return b"entry"

    dispatcher.register(OPCODES["lookup"], lookup)
    dispatcher.register(OPCODES["getattr"], lambda req: b"attr")
    session.start()
    kernel.send(request(OPCODES["lookup"], 1, b"x\0"))
    kernel.send(request(OPCODES["getattr"], 2))
    assert _replies(kernel, 1) == {2: b"attr"}
    release.set()
    assert _replies(kernel, 1) == {1: b"entry"}


def _threads_serving(kernel: socket.socket, seen: list[str], uniques: range) -> set[str]:
    """Send getattrs one at a time (each answered before the next): which threads read them."""
    del seen[:]
    for unique in uniques:
        kernel.send(request(OPCODES["getattr"], unique))
        assert _replies(kernel, 1) == {unique: b"attr"}
    return set(seen)


@pytest.mark.parametrize("started", [2, 1], ids=["idle-follower", "new-worker"])
def test_a_stalled_metadata_request_is_bounded_by_the_watchdog(running, started):
    """inline=True: a lookup that hangs in the leader does not stop the reading: the
    watchdog makes another worker the reader (an idle follower, or with only one
    started, a new one up to the cap).  Once the lookup returns, its worker becomes a
    follower again: one reader serves the requests that follow, not two in turn."""
    session, dispatcher, kernel = running(inline=True)
    release, seen = _held_and_traced(dispatcher, "lookup", b"entry")
    session.start(started)
    kernel.send(request(OPCODES["lookup"], 1, b"x\0"))
    kernel.send(request(OPCODES["getattr"], 2))
    assert _replies(kernel, 1) == {2: b"attr"}         # while the lookup still hangs
    assert session.deposed == 1 and len(session._workers) == 2
    release.set()
    assert _replies(kernel, 1) == {1: b"entry"}
    assert len(_threads_serving(kernel, seen, range(3, 11))) == 1
    assert session.deposed == 1
