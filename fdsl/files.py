"""Reading input files (policies, includes, objects) without blocking or unbounded reads.

A path given to the toolchain may name a FIFO (open(2) blocks until a writer
comes), a device such as /dev/zero (read(2) never ends), or a huge file.  Every
input is therefore stat'ed first (nothing but a regular file is opened), opened
with O_NONBLOCK and O_NOCTTY, checked again on the open fd (the path may have
been swapped in between) and read up to a size cap.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass

MAX_POLICY_BYTES = 4 << 20    # one .fdsl source file (a 100k-name deny list is ~2 MiB)
MAX_OBJECT_BYTES = 64 << 20   # one .bpf.o


class InputFileError(Exception):
    """The file cannot be read as an input; `reason` is a short phrase for messages."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _kind(mode: int) -> str | None:
    """What a non-regular file is, for the message (None for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _refuse(mode: int, size: int, limit: int) -> None:
    kind = _kind(mode)
    if kind is not None:
        raise InputFileError(f"{kind}, not a regular file")
    if size > limit:
        raise InputFileError(f"too large ({size} bytes; the limit is {limit})")


@dataclass(frozen=True)
class InputFile:
    data: bytes
    real_path: str   # where the opened fd really is (a symlink swapped after a check cannot fool it)


def read_regular_file(path: str, limit: int) -> InputFile:
    """The bytes of the regular file `path`, at most `limit` of them.

    Raises InputFileError for anything else (missing, special file, too big).
    """
    try:
        st = os.stat(path)
        _refuse(st.st_mode, st.st_size, limit)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as err:
        raise InputFileError(err.strerror or str(err)) from None
    try:
        st = os.fstat(fd)
        _refuse(st.st_mode, st.st_size, limit)
        chunks: list[bytes] = []
        total = 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:  # the file grew while we read it
            raise InputFileError(f"too large (more than {limit} bytes)")
        return InputFile(b"".join(chunks), _fd_path(fd, path))
    except OSError as err:
        raise InputFileError(err.strerror or str(err)) from None
    finally:
        os.close(fd)


def _fd_path(fd: int, path: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(path)
