"""runtime/journal.py against a socket the test binds: the binary field form for values
with newlines, and records too big for a datagram passed as a sealed memfd."""
from __future__ import annotations

import array
import fcntl
import logging
import os
import socket
import struct

from fdsl.runtime import journal


def _receive(sock: socket.socket) -> bytes:
    """One entry as journald would take it: the datagram, or the memfd it carries."""
    fds = array.array("i")
    data, ancdata, _flags, _addr = sock.recvmsg(1 << 20, socket.CMSG_SPACE(fds.itemsize))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:fds.itemsize])
    if not fds:
        return data
    fd = fds[0]
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        assert seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_SHRINK
        return os.pread(fd, os.fstat(fd).st_size, 0)
    finally:
        os.close(fd)


def _record(message: str, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord("fdsl.runtime", level, __file__, 1, message, None, None)


def test_multiline_values_use_the_binary_form(tmp_path):
    assert journal.encode({"A": "x", "B": "two\nlines"}) == (
        b"A=x\nB\n" + struct.pack("<Q", 9) + b"two\nlines\n")


def test_big_records_go_as_a_sealed_memfd(tmp_path):
    path = tmp_path / "j.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        handler = journal.JournalHandler("/mnt/x", str(path))
        try:
            handler.emit(_record("small"))
            assert b"MESSAGE=small\nPRIORITY=4\n" in _receive(receiver)
            big = "y" * (4 << 20)              # far above any datagram limit
            handler.emit(_record(big, logging.ERROR))
            entry = _receive(receiver)
            assert b"MESSAGE=" + big.encode() + b"\nPRIORITY=3\n" in entry
            assert b"FDSL_MOUNTPOINT=/mnt/x\n" in entry and handler.dropped == 0
        finally:
            handler.close()


def test_a_journal_that_is_gone_drops_records_without_raising(tmp_path):
    handler = journal.JournalHandler("/mnt/x", str(tmp_path / "missing.sock"))
    try:
        handler.emit(_record("lost"))
        assert handler.dropped == 1
    finally:
        handler.close()
