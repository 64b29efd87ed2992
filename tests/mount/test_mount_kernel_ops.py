"""STATX, POLL and IOCTL through a real mount, against the backing filesystem.

STATX: statx(2) asking for the birth time makes the kernel send FUSE_STATX;
the mount reports the backing inode's btime (and GETATTR's rules still apply
to the basic stats).  POLL: the daemon answers ENOSYS, after which the kernel
reports DEFAULT_POLLMASK, as the backing filesystem does for regular files.
IOCTL: only the attribute flags reads (lsattr) are answered from the backing
file; other commands are not passed on (ENOSYS, which the kernel turns into
ENOTTY).
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import select
import struct
from pathlib import Path

import pytest

from mounting import EXAMPLES, mounter, needs_fuse  # noqa: F401

pytestmark = [pytest.mark.mount, needs_fuse]

_libc = ctypes.CDLL(None, use_errno=True)
STATX_BASIC_STATS, STATX_BTIME = 0x7FF, 0x800
AT_SYMLINK_NOFOLLOW = 0x100


def statx(path: Path, mask: int = STATX_BASIC_STATS | STATX_BTIME) -> dict:
    """statx(2) through libc (the os module of Python 3.11 has none)."""
    buf = ctypes.create_string_buffer(256)
    if _libc.statx(-100, os.fsencode(path), AT_SYMLINK_NOFOLLOW, ctypes.c_uint(mask), buf):
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(path))
    raw = buf.raw
    got, = struct.unpack_from("<I", raw, 0)
    mode, = struct.unpack_from("<H", raw, 28)
    size, = struct.unpack_from("<Q", raw, 40)
    btime = struct.unpack_from("<qI", raw, 80) if got & STATX_BTIME else None
    mtime = struct.unpack_from("<qI", raw, 112)
    return {"btime": btime, "mode": mode, "size": size, "mtime": mtime}


def test_statx_birth_time_is_the_backing_inodes(mounter, request):
    b, mnt = mounter.dirs()
    (b / "f").write_bytes(b"12345")
    (b / "d").mkdir()
    os.symlink("f", b / "l")
    if statx(b / "f")["btime"] is None:
        pytest.skip("not applicable here: the backing filesystem records no birth time")
    if mounter.transport == "pyfuse3":
        request.applymarker(pytest.mark.xfail(
            reason="pyfuse3's libfuse answers FUSE_STATX with ENOSYS: no btime", strict=True))
    mounter.mount("", b, mnt)
    for name in ("f", "d", "l"):
        assert statx(mnt / name) == statx(b / name), name
    # an open file: the kernel sends its file handle along
    fd = os.open(mnt / "f", os.O_RDWR)
    try:
        os.write(fd, b"more")
        got = statx(mnt / "f")
    finally:
        os.close(fd)
    assert got == statx(b / "f") and got["size"] == 5


def test_statx_runs_the_getattr_rules(mounter, request):
    """bindfs_perms.fdsl rewrites modes in getattr post: statx shows them too."""
    b, mnt = mounter.dirs()
    (b / "f").write_text("x")
    os.chmod(b / "f", 0o666)
    mounter.mount(EXAMPLES / "bindfs_perms.fdsl", b, mnt)
    got = statx(mnt / "f")
    assert got["mode"] & 0o7777 == 0o644 and got["size"] == 1
    if statx(b / "f")["btime"] is not None and mounter.transport == "dev":
        assert got["btime"] == statx(b / "f")["btime"]


def _poll_and_select(path: Path, flags: int) -> tuple:
    fd = os.open(path, flags)
    try:
        p = select.poll()
        p.register(fd, select.POLLIN | select.POLLOUT | select.POLLPRI)
        polled = p.poll(0)
        r, w, x = select.select([fd], [fd], [fd], 0)
        return [ev for _, ev in polled], (len(r), len(w), len(x))
    finally:
        os.close(fd)


def test_poll_and_select_on_a_regular_file_match_the_backing_fs(mounter):
    b, mnt = mounter.dirs()
    (b / "f").write_bytes(b"data")
    (b / "d").mkdir()
    m = mounter.mount("", b, mnt)
    for flags in (os.O_RDONLY, os.O_WRONLY, os.O_RDWR):
        for _ in range(2):                    # before and after the kernel learnt ENOSYS
            assert _poll_and_select(mnt / "f", flags) == _poll_and_select(b / "f", flags)
    assert _poll_and_select(mnt / "d", os.O_RDONLY) == _poll_and_select(b / "d", os.O_RDONLY)
    assert m.alive()


FS_IOC_GETFLAGS, FS_IOC_SETFLAGS = 0x80086601, 0x40086602
FS_IOC_FSGETXATTR = 0x801C581F
FS_IOC_GETVERSION = 0x80087601
FS_NOATIME_FL = 0x80


def _flags(path: Path, cmd: int = FS_IOC_GETFLAGS, size: int = 4) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return fcntl.ioctl(fd, cmd, bytes(size))
    finally:
        os.close(fd)


def test_attribute_flags_are_read_from_the_backing_file_and_not_set(mounter):
    """What lsattr reads (FS_IOC_GETFLAGS, FS_IOC_FSGETXATTR, which the kernel asks as
    FUSE_IOCTL) comes from the backing file or directory; setting flags and other
    ioctls are not passed on (ENOTTY from the kernel)."""
    b, mnt = mounter.dirs()
    (b / "f").write_bytes(b"data")
    (b / "d").mkdir()
    fd = os.open(b / "f", os.O_RDONLY)
    try:
        flags = struct.unpack("<i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, bytes(4)))[0]
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("<i", flags | FS_NOATIME_FL))
    except OSError as err:
        pytest.skip(f"not applicable here: the backing fs has no attribute flags ({err})")
    finally:
        os.close(fd)
    m = mounter.mount("", b, mnt)
    if mounter.transport == "pyfuse3":
        # pyfuse3 has no ioctl handler: libfuse answers ENOSYS, the kernel ENOTTY
        with pytest.raises(OSError) as err:
            _flags(mnt / "f")
        assert err.value.errno in (errno.ENOTTY, errno.EOPNOTSUPP)
        return
    for name in ("f", "d"):
        assert _flags(mnt / name) == _flags(b / name), name
        assert _flags(mnt / name, FS_IOC_FSGETXATTR, 28) == _flags(b / name, FS_IOC_FSGETXATTR, 28)
    assert struct.unpack("<i", _flags(mnt / "f"))[0] & FS_NOATIME_FL
    fd = os.open(mnt / "f", os.O_RDONLY)
    try:
        with pytest.raises(OSError) as err:
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("<i", 0))
        assert err.value.errno in (errno.ENOTTY, errno.EOPNOTSUPP)
        with pytest.raises(OSError) as err:
            fcntl.ioctl(fd, FS_IOC_GETVERSION, bytes(8))
        assert err.value.errno == errno.ENOTTY
        assert os.read(fd, 4) == b"data"
    finally:
        os.close(fd)
    assert _flags(b / "f") == _flags(mnt / "f")          # unchanged
    assert m.alive()
