"""Rules on LSEEK, FALLOCATE and COPY_FILE_RANGE run on a real mount (issue 10).

Before these operations had engine table rows, a scope with rules on them
answered EOPNOTSUPP.  Now PRE and POST run like for any other op: a deny
refuses (by scope and by uid), the rewrites the ABI honours (§9: lseek
offset/whence and out.offset, fallocate mode/offset/length, copy_file_range
offsets/len) take effect, and allowing rules leave the result equal to the
backing filesystem's.  pyfuse3 never delivers these opcodes, so the tests
mount the /dev/fuse transport only (tests/mount/test_posix_fileops.py runs
the no-policy comparisons on both).
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
from pathlib import Path

import pytest

from mounting import dev_mounter, errno_as, needs_fuse, run_as  # noqa: F401

pytest_plugins = ["posix_fixtures"]
pytestmark = [pytest.mark.mount, needs_fuse]

SEEK_DATA, SEEK_HOLE = os.SEEK_DATA, os.SEEK_HOLE
KEEP_SIZE, PUNCH_HOLE = 0x01, 0x02
BLOCK = 4096
_libc = ctypes.CDLL(None, use_errno=True)


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    if _libc.fallocate(ctypes.c_int(fd), ctypes.c_int(mode), ctypes.c_long(offset),
                       ctypes.c_long(length)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def outcome(fn, *args):
    try:
        return fn(*args)
    except OSError as err:
        return errno.errorcode[err.errno]


def sparse(path: Path) -> None:
    """16 blocks of data with blocks 4..11 punched out."""
    path.write_bytes(bytes(range(256)) * (16 * BLOCK // 256))
    fd = os.open(path, os.O_RDWR)
    try:
        fallocate(fd, PUNCH_HOLE | KEEP_SIZE, 4 * BLOCK, 8 * BLOCK)
    finally:
        os.close(fd)


POLICY = """
counter calls[u32]
const SEEK_DATA = 3
const SEEK_HOLE = 4
on lseek, fallocate, copy_file_range pre {{ count calls[op] }}
under "locked" {{
    on fallocate, copy_file_range pre {{ deny EPERM }}
}}
under "guarded" {{
    on lseek, fallocate, copy_file_range pre {{ if uid == {uid} {{ deny EACCES }} }}
}}
under "holes" {{
    on lseek pre {{ if in.whence == SEEK_HOLE {{ in.whence = SEEK_DATA }} }}
}}
under "clamp" {{
    on lseek post {{ out.offset = 4096 }}
    on fallocate pre {{ in.mode = in.mode | 1 }}
    on copy_file_range pre {{ if in.len > 10 {{ in.len = 10 }} }}
}}
under "readers" {{
    on read pre {{ if uid == {uid} {{ deny EACCES }} }}
}}
under "ro" {{
    on write pre {{ deny EROFS }}
}}
"""


@pytest.fixture
def ruled(dev_mounter, posix_users, tmp_path):
    """A mount of POLICY (uid = test user a) with one sparse file and one target
    per scope; returns (mount, backing, mnt, user)."""
    user = posix_users.a
    policy = tmp_path / "file_rules.fdsl"
    policy.write_text(POLICY.format(uid=user.uid))
    b, mnt = dev_mounter.dirs()
    for scope in ("plain", "locked", "guarded", "holes", "clamp", "readers", "ro"):
        (b / scope).mkdir(mode=0o777)
        os.chmod(b / scope, 0o777)
        sparse(b / scope / "f")
        (b / scope / "dst").write_bytes(b"")
        for name in ("f", "dst"):
            os.chmod(b / scope / name, 0o666)
    m = dev_mounter.mount(policy, b, mnt, options="allow_other")
    return m, b, mnt, user


def seeks(path: Path) -> list:
    fd = os.open(path, os.O_RDONLY)
    try:
        return [outcome(os.lseek, fd, off, whence)
                for off in (0, 4 * BLOCK, 6 * BLOCK, 12 * BLOCK, 16 * BLOCK)
                for whence in (SEEK_DATA, SEEK_HOLE)]
    finally:
        os.close(fd)


def test_allowing_rules_leave_the_backing_results(ruled):
    """The rules run (the counter moves once per request) and the results are the
    backing filesystem's: sparse seeks, every fallocate mode FUSE passes on,
    copy_file_range across files."""
    m, b, mnt, _ = ruled
    assert seeks(mnt / "plain" / "f") == seeks(b / "plain" / "f")
    counted = m.counters("calls")
    assert counted.get("lseek", 0) == 10, counted
    results = {}
    for where in (b / "oracle", mnt / "plain"):
        if where.parent == b:
            where.mkdir()
        f, dst = where / "g", where / "h"
        sparse(f)
        dst.write_bytes(b"x" * 100)
        fd, out = os.open(f, os.O_RDWR), os.open(dst, os.O_RDWR)
        try:
            modes = [outcome(fallocate, fd, mode, 2 * BLOCK, BLOCK)
                     for mode in (0, KEEP_SIZE, PUNCH_HOLE | KEEP_SIZE, 0x10, 0x10 | KEEP_SIZE)]
            grow = outcome(fallocate, fd, 0, 20 * BLOCK, BLOCK)
            copied = (os.copy_file_range(fd, out, 3 * BLOCK, 10, 50),
                      os.copy_file_range(fd, out, 100 * BLOCK, 18 * BLOCK, 7000))
            results[where.name] = (modes, grow, copied, os.fstat(fd).st_size,
                                   os.pread(fd, 30 * BLOCK, 0), os.pread(out, 100_000, 0),
                                   [outcome(os.lseek, fd, o, SEEK_HOLE) for o in (0, 3 * BLOCK)])
        finally:
            os.close(fd)
            os.close(out)
    assert results["plain"] == results["oracle"]
    counted = m.counters("calls")
    # one punch in sparse() + 6 above; 2 more seeks; 2 copies
    assert counted == {"lseek": 12, "fallocate": 7, "copy_file_range": 2}, counted


def test_a_scope_denies_fallocate_and_copy_file_range(ruled):
    m, b, mnt, _ = ruled
    before = (b / "locked" / "f").read_bytes()
    fd = os.open(mnt / "locked" / "f", os.O_RDWR)
    out = os.open(mnt / "plain" / "dst", os.O_RDWR)
    try:
        assert outcome(fallocate, fd, PUNCH_HOLE | KEEP_SIZE, 0, BLOCK) == "EPERM"
        assert outcome(fallocate, fd, 0, 0, 64 * BLOCK) == "EPERM"
        assert outcome(os.copy_file_range, fd, out, 100, 0, 0) == "EPERM"
        assert os.lseek(fd, 0, SEEK_HOLE) == 4 * BLOCK     # no lseek rule there
    finally:
        os.close(fd)
        os.close(out)
    assert (b / "locked" / "f").read_bytes() == before
    assert (b / "plain" / "dst").read_bytes() == b""


def test_rules_refuse_one_uid_and_let_root_through(ruled):
    m, b, mnt, user = ruled
    code = f"""
        import ctypes, errno, json, os
        libc = ctypes.CDLL(None, use_errno=True)
        def attempt(fn):
            try:
                return fn()
            except OSError as e:
                return errno.errorcode[e.errno]
        def falloc():
            if libc.fallocate(fd, 0, ctypes.c_long(0), ctypes.c_long({64 * BLOCK})):
                raise OSError(ctypes.get_errno(), "")
            return 0
        fd = os.open({str(mnt / "guarded" / "f")!r}, os.O_RDWR)
        out = os.open({str(mnt / "plain" / "dst")!r}, os.O_RDWR)
        print(json.dumps([attempt(lambda: os.lseek(fd, 0, os.SEEK_HOLE)), attempt(falloc),
                          attempt(lambda: os.copy_file_range(fd, out, 10, 0, 0))]))
    """
    proc = run_as(user.uid, user.gid, code)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["EACCES"] * 3
    assert (b / "plain" / "dst").read_bytes() == b""
    fd = os.open(mnt / "guarded" / "f", os.O_RDWR)
    out = os.open(mnt / "plain" / "dst", os.O_RDWR)
    try:
        assert os.lseek(fd, 0, SEEK_HOLE) == 4 * BLOCK
        assert os.copy_file_range(fd, out, 10, 0, 0) == 10
    finally:
        os.close(fd)
        os.close(out)
    assert (b / "plain" / "dst").read_bytes() == bytes(range(10))


def test_rewrites_the_abi_honours(ruled):
    """lseek: a PRE rewrite of in.whence and a POST rewrite of out.offset (which
    becomes the file position); fallocate: in.mode (KEEP_SIZE added: the file
    does not grow); copy_file_range: in.len."""
    m, b, mnt, _ = ruled
    fd = os.open(mnt / "holes" / "f", os.O_RDONLY)
    try:
        assert os.lseek(fd, 4 * BLOCK, SEEK_HOLE) == 12 * BLOCK   # asked as SEEK_DATA
    finally:
        os.close(fd)
    fd = os.open(mnt / "clamp" / "f", os.O_RDWR)
    out = os.open(mnt / "clamp" / "dst", os.O_RDWR)
    try:
        assert os.lseek(fd, 12 * BLOCK, SEEK_DATA) == BLOCK
        assert os.lseek(fd, 0, os.SEEK_CUR) == BLOCK
        assert os.read(fd, 4) == bytes(range(4))
        fallocate(fd, 0, 16 * BLOCK, 8 * BLOCK)
        assert os.copy_file_range(fd, out, 1000, 0, 0) == 10
    finally:
        os.close(fd)
        os.close(out)
    st = os.stat(b / "clamp" / "f")
    assert st.st_size == 16 * BLOCK and st.st_blocks * 512 >= 16 * BLOCK  # allocated, kept size
    assert (b / "clamp" / "dst").read_bytes() == bytes(range(10))


def test_copy_file_range_cannot_bypass_read_or_write_rules(ruled):
    """The copy runs the source's read rules and the destination's write rules
    (as READ and WRITE requests of the caller): the uid refused reading
    readers/f cannot copy it out, nobody can copy into ro/."""
    m, b, mnt, user = ruled
    code = f"""
        import errno, json, os
        fd = os.open({str(mnt / "readers" / "f")!r}, os.O_RDONLY)
        out = os.open({str(mnt / "plain" / "dst")!r}, os.O_RDWR)
        try:
            r = os.copy_file_range(fd, out, 100, 0, 0)
        except OSError as e:
            r = errno.errorcode[e.errno]
        print(json.dumps(r))
    """
    proc = run_as(user.uid, user.gid, code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == '"EACCES"'
    assert (b / "plain" / "dst").read_bytes() == b""
    src = os.open(mnt / "readers" / "f", os.O_RDONLY)
    ro = os.open(mnt / "ro" / "dst", os.O_RDWR)
    out = os.open(mnt / "plain" / "dst", os.O_RDWR)
    try:
        assert os.copy_file_range(src, out, 100, 0, 0) == 100          # root may read
        assert outcome(os.copy_file_range, src, ro, 100, 0, 0) == "EROFS"
    finally:
        for fd in (src, ro, out):
            os.close(fd)
    assert (b / "plain" / "dst").read_bytes() == bytes(range(100))
    assert (b / "ro" / "dst").read_bytes() == b""


def test_the_rows_run_rfc_v1_objects_too(dev_mounter, tmp_path):
    """The same rows serve a policy compiled for RFC v1 (the frames follow the ABI)."""
    policy = tmp_path / "rfc.fdsl"
    policy.write_text("counter calls[u32]\n"
                      "on lseek, fallocate, copy_file_range pre { count calls[op] }\n"
                      "on lseek post { out.offset = 4096 }\n"
                      "on fallocate pre { in.mode = in.mode | 1 }\n")
    b, mnt = dev_mounter.dirs()
    sparse(b / "f")
    m = dev_mounter.mount(policy, b, mnt, options="abi=rfc-v1")
    fd = os.open(mnt / "f", os.O_RDWR)
    out = os.open(mnt / "g", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        assert os.lseek(fd, 12 * BLOCK, SEEK_DATA) == BLOCK
        fallocate(fd, 0, 16 * BLOCK, 4 * BLOCK)                 # KEEP_SIZE added
        assert os.copy_file_range(fd, out, 100, 0, 0) == 100
    finally:
        os.close(fd)
        os.close(out)
    assert os.stat(b / "f").st_size == 16 * BLOCK
    assert (b / "g").read_bytes() == bytes(range(100))
    assert m.counters("calls") == {"lseek": 1, "fallocate": 1, "copy_file_range": 1}
