"""File operations the pyfuse3 transport never delivered: fallocate modes,
copy_file_range, setxattr flags, O_TMPFILE.  The backing filesystem is the
oracle (same operation in a plain directory, equal outcomes and trees)."""
from __future__ import annotations

import ctypes
import os
from pathlib import Path

import pytest

pytest.register_assert_rewrite("posix_fixtures")

from posix_fixtures import POSIX_MARKS, SEEK_DATA, SEEK_HOLE, attempt  # noqa: E402

pytest_plugins = ["posix_fixtures"]

pytestmark = POSIX_MARKS

_libc = ctypes.CDLL(None, use_errno=True)
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_COLLAPSE_RANGE = 0x08
FALLOC_FL_ZERO_RANGE = 0x10
FALLOC_FL_INSERT_RANGE = 0x20
# Every mode the kernel's FUSE fallocate passes on (fs/fuse/file.c allows
# KEEP_SIZE, PUNCH_HOLE and ZERO_RANGE; it refuses the rest itself).
MODES = {
    "allocate": 0,
    "keep_size": FALLOC_FL_KEEP_SIZE,
    "punch_hole": FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
    "zero_range": FALLOC_FL_ZERO_RANGE,
    "zero_range_keep_size": FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
}
KERNEL_REFUSED = {
    "collapse_range": FALLOC_FL_COLLAPSE_RANGE,
    "insert_range": FALLOC_FL_INSERT_RANGE,
    "punch_without_keep_size": FALLOC_FL_PUNCH_HOLE,
}
BLOCK = 4096


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    if _libc.fallocate(ctypes.c_int(fd), ctypes.c_int(mode), ctypes.c_long(offset),
                       ctypes.c_long(length)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _data(n: int) -> bytes:
    return bytes((i * 7 + 3) % 251 for i in range(n))


@pytest.mark.parametrize("mode", sorted(MODES))
def test_fallocate_modes(ws, mode):
    ws.xfail_on("pyfuse3", "pyfuse3 does not deliver FUSE_FALLOCATE")
    ws.xfail_on("bindfs", "bindfs implements only plain fallocate", timing=mode == "allocate")
    ws.setup(lambda d: (d / "f").write_bytes(_data(8 * BLOCK)))

    def op(d: Path):
        fd = os.open(d / "f", os.O_RDWR)
        try:
            result = attempt(fallocate, fd, MODES[mode], 2 * BLOCK, 3 * BLOCK)
            os.fsync(fd)
            st = os.fstat(fd)
            return {"result": result, "size": st.st_size,
                    "content": os.pread(fd, st.st_size + 1, 0),
                    "hole_at_2": attempt(os.lseek, fd, 2 * BLOCK, SEEK_HOLE)}
        finally:
            os.close(fd)

    ws.compare(op, what=f"fallocate({mode})")


@pytest.mark.parametrize("mode", sorted(KERNEL_REFUSED))
def test_fallocate_modes_fuse_does_not_pass_on(ws, mode):
    """The kernel refuses these for every FUSE fs before a request is sent: EOPNOTSUPP
    (EINVAL for a hole without KEEP_SIZE, as everywhere), the file untouched."""
    ws.setup(lambda d: (d / "f").write_bytes(_data(8 * BLOCK)))

    def op(d: Path):
        fd = os.open(d / "f", os.O_RDWR)
        try:
            return attempt(fallocate, fd, KERNEL_REFUSED[mode], 2 * BLOCK, 2 * BLOCK)
        finally:
            os.close(fd)

    got = ws.run(op)
    assert got[0] == "ok" and got[1] in ("EOPNOTSUPP", "ENOTSUP", "EINVAL"), got
    assert ws.state("backing") == ws.state("plain")


def test_copy_file_range(ws):
    ws.setup(lambda d: ((d / "src").write_bytes(_data(5 * BLOCK + 17)),
                        (d / "dst").write_bytes(b"x" * 100)))

    def op(d: Path):
        src = os.open(d / "src", os.O_RDONLY)
        dst = os.open(d / "dst", os.O_RDWR)
        try:
            n1 = os.copy_file_range(src, dst, 3 * BLOCK, 10, 50)
            n2 = os.copy_file_range(src, dst, 10 * BLOCK, 4 * BLOCK, 7000)   # short: EOF
            beyond = os.copy_file_range(src, dst, 100, 6 * BLOCK, 0)
            same = attempt(os.copy_file_range, src, src, 10, 0, 20)          # read-only dst
            return {"copied": (n1, n2, beyond), "same_file": same,
                    "dst": os.pread(dst, 100_000, 0)}
        finally:
            os.close(src)
            os.close(dst)

    ws.compare(op, what="copy_file_range")


XATTR_CREATE, XATTR_REPLACE = os.XATTR_CREATE, os.XATTR_REPLACE


def test_setxattr_flags(ws):
    ws.setup(lambda d: ((d / "f").write_bytes(b"x"), os.setxattr(d / "f", "user.old", b"1"),
                        os.setxattr(d / "f", "user.long", b"0123456789")))

    def op(d: Path):
        f = d / "f"
        return {
            "create_existing": attempt(os.setxattr, f, "user.old", b"2", XATTR_CREATE),
            "replace_missing": attempt(os.setxattr, f, "user.new", b"3", XATTR_REPLACE),
            "create_new": attempt(os.setxattr, f, "user.new", b"4", XATTR_CREATE),
            "replace_existing": attempt(os.setxattr, f, "user.old", b"5", XATTR_REPLACE),
            "values": {n: os.getxattr(f, n) for n in sorted(os.listxattr(f))},
            "size_query": attempt(_getxattr_size, f, "user.long", 0),
            "too_small": attempt(_getxattr_size, f, "user.long", 4),
        }

    ws.compare(op, what="setxattr XATTR_CREATE/XATTR_REPLACE")


def _getxattr_size(path: Path, name: str, size: int) -> int:
    buf = ctypes.create_string_buffer(max(size, 1))
    n = _libc.getxattr(os.fsencode(path), name.encode(), buf, ctypes.c_size_t(size))
    if n < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return n


def test_tmpfile_then_link(ws):
    ws.xfail_on("pyfuse3", "pyfuse3 does not deliver FUSE_TMPFILE")
    ws.xfail_on("bindfs", "bindfs has no tmpfile handler")

    def op(d: Path):
        fd = os.open(d, os.O_TMPFILE | os.O_RDWR, 0o640)
        try:
            os.write(fd, b"anonymous")
            before = sorted(os.listdir(d))
            os.link(f"/proc/self/fd/{fd}", d / "named", follow_symlinks=True)
            return {"before": before, "after": sorted(os.listdir(d)),
                    "content": (d / "named").read_bytes(),
                    "mode": oct(os.stat(d / "named").st_mode)}
        finally:
            os.close(fd)

    ws.compare(op, what="O_TMPFILE + linkat", umask=0o022)


def test_seek_data_and_hole_after_punch(ws):
    """SEEK_DATA/SEEK_HOLE reach the backing file (FUSE_LSEEK)."""
    ws.xfail_on("pyfuse3", "pyfuse3 does not deliver FUSE_LSEEK")
    ws.xfail_on("bindfs", "bindfs has no lseek handler")
    ws.setup(lambda d: (d / "f").write_bytes(_data(16 * BLOCK)))

    def op(d: Path):
        fd = os.open(d / "f", os.O_RDWR)
        try:
            fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4 * BLOCK, 8 * BLOCK)
            return [attempt(os.lseek, fd, off, whence)
                    for off in (0, 4 * BLOCK, 6 * BLOCK, 12 * BLOCK, 16 * BLOCK)
                    for whence in (SEEK_DATA, SEEK_HOLE)]
        finally:
            os.close(fd)

    ws.compare(op, what="SEEK_DATA/SEEK_HOLE around a punched hole")
