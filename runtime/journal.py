"""Log records to the systemd journal (`-o log=journal`), over its native protocol.

One datagram per record to journald's socket: `FIELD=value` lines, and for a
value holding a newline the binary form (`FIELD`, newline, its length as 64-bit
little-endian, the bytes, newline).  A record too big for one datagram goes
as a sealed memfd passed with SCM_RIGHTS, as journald asks.  Fields: MESSAGE,
PRIORITY (syslog levels), SYSLOG_IDENTIFIER=fdsl, FDSL_MOUNTPOINT (so
`journalctl -t fdsl FDSL_MOUNTPOINT=/mnt/view` shows one mount),
FDSL_LOGGER (fdsl.policy for policy `log` lines, fdsl.runtime for the daemon).

Written here rather than with the python-systemd binding: that one has no
wheels and builds against libsystemd's headers, which a plain `pip install`
on a machine without libsystemd-dev cannot do; the protocol is a few lines.

The socket is non-blocking: a journal that is down or full drops records
(counted in `dropped`) rather than stalling the FUSE worker that logs.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import stat
import struct

DEFAULT_SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "fdsl"


def priority(levelno: int) -> int:
    """Python logging level -> syslog priority (what journalctl -p filters on)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def encode(fields: dict[str, str]) -> bytes:
    """The native protocol's serialization of one entry."""
    out = bytearray()
    for key, value in fields.items():
        data = value.encode("utf-8", "backslashreplace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


def check_socket(path: str) -> str | None:
    """Why `path` cannot be journald's socket (None when it can)."""
    try:
        st = os.stat(path)
    except OSError as err:
        return f"no journal socket at {path} ({err.strerror}): is systemd-journald running?"
    if not stat.S_ISSOCK(st.st_mode):
        return f"{path} is not a socket"
    return None


class JournalHandler(logging.Handler):
    """A logging handler that sends each record to the journal."""

    def __init__(self, mountpoint: str, path: str = DEFAULT_SOCKET) -> None:
        super().__init__()
        self.path = path
        self.extra = {"SYSLOG_IDENTIFIER": IDENTIFIER, "FDSL_MOUNTPOINT": mountpoint}
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setblocking(False)
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            data = encode({"MESSAGE": message, "PRIORITY": str(priority(record.levelno)),
                           **self.extra, "FDSL_LOGGER": record.name})
            self.send(data)
        except OSError:
            self.dropped += 1
        except Exception:  # noqa: BLE001 - a record must never stop the daemon
            self.handleError(record)

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendto(data, self.path)
        except OSError as err:
            if err.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            self._send_memfd(data)

    def _send_memfd(self, data: bytes) -> None:
        fd = os.memfd_create("fdsl-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(fd, data)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
                        | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
            self.sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                    struct.pack("i", fd))], 0, self.path)
        finally:
            os.close(fd)

    def close(self) -> None:
        self.sock.close()
        super().close()
