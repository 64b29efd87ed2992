"""What only the /dev/fuse transport does: kernel passthrough (on/off give the
same results; filtered files keep the userspace path), mounting as an
ordinary user through fusermount3, and surviving an unmount from outside."""
from __future__ import annotations

import json
import mmap
import os
import pwd
import errno
import shutil
import signal
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from mounting import (EXAMPLES, Mount, Mounter, is_mounted, dev_mounter, mounter,  # noqa: F401
                      needs_fuse, user_fdsl)

pytestmark = [pytest.mark.mount, needs_fuse]


def workload(d: Path) -> dict:
    """Data operations passthrough takes over, with their visible results."""
    out: dict = {}
    with open(d / "seq", "wb") as fh:
        for i in range(64):
            fh.write(bytes([i]) * 65536)
    with open(d / "seq", "r+b") as fh:
        fh.seek(12345)
        fh.write(b"overwrite")
        fh.truncate(3_000_001)
    with open(d / "seq", "ab") as fh:
        fh.write(b"appended")
    with open(d / "seq", "r+b") as fh:
        with mmap.mmap(fh.fileno(), 0) as m:
            m[100:104] = b"MMAP"
            out["mmap_read"] = m[12340:12360]
    fd = os.open(d / "seq", os.O_RDONLY)
    try:
        out["pread"] = [os.pread(fd, 17, off) for off in (0, 65530, 2_999_990, 3_000_005)]
    finally:
        os.close(fd)
    out["size"] = os.stat(d / "seq").st_size
    out["content"] = (d / "seq").read_bytes()
    return out


def test_passthrough_on_and_off_give_identical_results(dev_mounter):
    results, reads = {}, {}
    for flag in ("1", "0"):
        b, mnt = dev_mounter.dirs()
        m = dev_mounter.mount("", b, mnt, options=f"passthrough={flag}")
        results[flag] = workload(mnt)
        assert (b / "seq").read_bytes() == results[flag]["content"]
        ops = m.stats()["ops"]
        reads[flag] = ops.get("read", 0) + ops.get("write", 0)
    assert results["1"] == results["0"]
    # passthrough=1: the kernel did the data I/O itself; passthrough=0: the daemon did
    assert reads["1"] == 0 and reads["0"] > 0, reads


def test_filtered_files_keep_the_userspace_path(dev_mounter):
    """private_subtree.fdsl has rules on every op under private/ (reads included):
    those reads reach the daemon; files outside go to the kernel."""
    b, mnt = dev_mounter.dirs()
    (b / "private").mkdir()
    (b / "private" / "notes").write_bytes(b"n" * 100_000)
    (b / "public").write_bytes(b"p" * 100_000)
    m = dev_mounter.mount(EXAMPLES / "private_subtree.fdsl", b, mnt)
    assert (mnt / "public").read_bytes() == b"p" * 100_000
    assert m.stats()["ops"].get("read", 0) == 0
    assert (mnt / "private" / "notes").read_bytes() == b"n" * 100_000
    assert m.stats()["ops"].get("read", 0) > 0


def test_unmount_from_outside_ends_the_daemon(mounter):
    b, mnt = mounter.dirs()
    m = mounter.mount("", b, mnt)
    assert subprocess.run(["fusermount3", "-u", str(mnt)]).returncode == 0
    deadline = time.monotonic() + 10
    while m.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not m.alive() and not is_mounted(mnt)


@pytest.fixture
def plain_user():
    """A fresh ordinary user (removed afterwards)."""
    if shutil.which("useradd") is None:
        pytest.skip("useradd is not available")
    name = f"fdsltr{os.getpid() % 100000}"
    subprocess.run(["userdel", name], capture_output=True)
    proc = subprocess.run(["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", name],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], capture_output=True)


@pytest.fixture
def fuse_device_for(plain_user):
    """Let the test user open /dev/fuse (fusermount3 opens it with the user's rights;
    this machine's is 0600 root): a user ACL entry, removed afterwards."""
    dev = "/dev/fuse"
    mode = os.stat(dev).st_mode & 0o7777
    acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, ident) for tag, perm, ident in (
        (0x01, 6, 0xFFFFFFFF), (0x02, 6, plain_user.pw_uid), (0x04, 0, 0xFFFFFFFF),
        (0x10, 6, 0xFFFFFFFF), (0x20, 0, 0xFFFFFFFF)))
    if mode & 0o006 != 0o006:
        os.setxattr(dev, "system.posix_acl_access", acl)
    try:
        yield plain_user
    finally:
        if mode & 0o006 != 0o006:
            os.removexattr(dev, "system.posix_acl_access")
            os.chmod(dev, mode)


def test_ordinary_user_mounts_through_fusermount3(dev_mounter, fuse_device_for):
    """No root anywhere: the user's `fdsl mount` gets its /dev/fuse fd from the
    setuid fusermount3, serves, and `fdsl umount` ends it."""
    uid, gid = fuse_device_for.pw_uid, fuse_device_for.pw_gid
    b, mnt = dev_mounter.dirs()
    for d in (b, mnt):
        os.chown(d, uid, gid)
    (b / "f").write_text("hello")
    os.chown(b / "f", uid, gid)

    def demote() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    def as_user(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=60,
                              preexec_fn=demote, cwd="/",
                              env={"PATH": "/usr/bin:/bin", "HOME": "/"})

    mount = Mount(b, mnt)
    dev_mounter.mounts.append(mount)          # unmounted and killed by the fixture, whatever happens
    proc = as_user(*user_fdsl(), "mount", "", str(b), str(mnt))
    assert proc.returncode == 0, proc.stderr
    assert is_mounted(mnt)
    stats = as_user(*user_fdsl(), "stats", "--json", str(mnt))
    assert stats.returncode == 0, stats.stderr
    mount.pid = json.loads(stats.stdout)["pid"]
    code = f"""
import os
p = {str(mnt)!r}
assert open(p + '/f').read() == 'hello'
with open(p + '/new', 'w') as fh:
    fh.write('made by the user')
st = os.stat(p + '/new')
print(st.st_uid, st.st_gid)
"""
    r = as_user("python3", "-c", code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(uid), str(gid)]
    assert (os.stat(b / "new").st_uid, (b / "new").read_text()) == (uid, "made by the user")
    # without allow_other the kernel lets nobody else in, root included
    assert subprocess.run(["ls", str(mnt)], capture_output=True).returncode != 0
    proc = as_user(*user_fdsl(), "umount", str(mnt))
    assert proc.returncode == 0, proc.stderr
    assert not is_mounted(mnt)
    deadline = time.monotonic() + 10
    while mount.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not mount.alive()


def test_no_flush_requests_on_a_filesystem_without_flush_unless_rules_want_them(dev_mounter):
    """Files on tmpfs (no ->flush) open with FOPEN_NOFLUSH: closing them sends no FLUSH;
    a scope with flush rules still sees every close."""
    b, mnt = dev_mounter.dirs()
    tmpfs = b / "tmpfs"
    tmpfs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "none", str(tmpfs)], check=True)
    policy = b.parent / "flushes.fdsl"
    policy.write_text('under "tmpfs/logged" {\n    on flush pre {\n'
                      '        if uid == 4321 { deny EACCES }\n    }\n}\n')
    try:
        (tmpfs / "logged").mkdir()
        m = dev_mounter.mount(policy, b, mnt)
        for name in ("plain", "logged/file"):
            with open(mnt / "tmpfs" / name, "w") as fh:
                fh.write("x")
            assert (tmpfs / name).read_text() == "x"
        ops = m.stats()["ops"]
        assert ops.get("flush", 0) == 1, ops        # the logged file's close only
        assert ops.get("create", 0) == 2 and ops.get("release", 0) == 2, ops
    finally:
        subprocess.run(["umount", "-l", str(tmpfs)], check=False)


def _state(pid: int) -> str:
    """The scheduler state of a process or thread (R, S, D, T, Z, ...)."""
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0]


def _wait(what, why: str, deadline_s: float = 30.0) -> None:
    """Wait for a condition (a deadline against hangs, not a timing assertion)."""
    deadline = time.monotonic() + deadline_s
    while not what():
        assert time.monotonic() < deadline, \
            f"gave up waiting: {why if isinstance(why, str) else why()}"
        time.sleep(0.02)


def _stat_in_child(path: Path) -> tuple[int, int, int]:
    """A child that stats `path` once told to (a byte on `go`) and writes the size or the
    errno name to `result`; SIGUSR1 does not kill it.  (pid, go, result)."""
    r, w = os.pipe()
    go_r, go_w = os.pipe()
    child = os.fork()
    if child == 0:   # pragma: no cover - the child
        try:
            os.close(r)
            signal.signal(signal.SIGUSR1, lambda *_: None)     # a signal that does not kill
            os.read(go_r, 1)
            try:
                result = str(os.stat(path).st_size)
            except OSError as err:
                result = errno.errorcode[err.errno or errno.EIO]
            os.write(w, result.encode())
        finally:
            os._exit(0)
    os.close(w)
    os.close(go_r)
    return child, go_w, r


def _child_result(child: int, r: int) -> str:
    _, status = os.waitpid(child, 0)
    result = os.read(r, 100).decode()
    os.close(r)
    assert os.waitstatus_to_exitcode(status) == 0, status
    return result


def _op_counter(m: Mount):
    """The mount's request count by opcode, asked over its control socket (`fdsl stats`
    resolves the mount point, which would wait for a stopped backing mount too)."""
    from fdsl.runtime import control

    [sock, *_], _ = control.candidate_sockets(m.mnt)
    return lambda name: int(control._ask(sock, "stats", 5.0, {})["ops"].get(name, 0))


def _stop(m: Mount) -> None:
    """SIGSTOP a mount's daemon (the caller SIGCONTs it in a finally)."""
    os.kill(m.pid, signal.SIGSTOP)
    _wait(lambda: all(_state(int(t)) == "T" for t in os.listdir(f"/proc/{m.pid}/task")),
          "the backing mount's daemon stopped")


def test_interrupting_a_blocked_request_lets_it_finish(dev_mounter):
    """A request blocked on its backing filesystem (the backing tree is another fdsl
    mount whose daemon is stopped), its caller signalled: the kernel sends INTERRUPT,
    which the daemon leaves unanswered while the request runs; once the backing
    filesystem answers, the request completes with its real result.  Default options
    but the caches (each stat must reach the daemon): the stalled request holds one
    worker, the watchdog moves the reading on (session.py), and the INTERRUPT gets
    read."""
    b, inner = dev_mounter.dirs()
    (b / "f").write_bytes(b"x" * 123)
    stale = dev_mounter.mount("", b, inner, options="attr_timeout=0,entry_timeout=0")
    _, outer = dev_mounter.dirs()
    m = dev_mounter.mount("", inner, outer, options="attr_timeout=0,entry_timeout=0")
    assert os.stat(outer / "f").st_size == 123
    child, go, r = _stat_in_child(outer / "f")
    ops = _op_counter(m)
    before = ops("getattr")
    try:
        _stop(stale)
        os.write(go, b"1")            # the child stats, into the stopped mount
        _wait(lambda: ops("getattr") > before and _state(child) == "S",
              lambda: f"the child blocked ({ops('getattr')} getattr, state {_state(child)})")
        os.kill(child, signal.SIGUSR1)
        _wait(lambda: ops("interrupt") >= 1, "an INTERRUPT")
        assert os.waitpid(child, os.WNOHANG) == (0, 0)       # still waiting for the reply
    finally:
        os.kill(stale.pid, signal.SIGCONT)
        os.close(go)
    assert _child_result(child, r) == "123"
    assert m.alive() and os.stat(outer / "f").st_size == 123


def test_a_hung_backing_subtree_does_not_stall_other_callers(dev_mounter):
    """Default options.  The backing tree is a normal directory with another fdsl mount
    inside it (lower/), whose daemon is stopped: a caller's stat under lower/ hangs in
    the daemon's lookup, a metadata request the reading worker runs itself.  Another
    caller's stat and read of a file outside lower/ still complete while the first one
    hangs; it gets its real answer once the lower daemon runs again."""
    b_lower, _ = dev_mounter.dirs()
    (b_lower / "f").write_bytes(b"x" * 123)
    b, mnt = dev_mounter.dirs()
    (b / "plain").write_bytes(b"plain")
    (b / "lower").mkdir()
    lower = dev_mounter.mount("", b_lower, b / "lower",
                              options="attr_timeout=0,entry_timeout=0")
    m = dev_mounter.mount("", b, mnt)
    child, go, r = _stat_in_child(mnt / "lower" / "f")
    ops = _op_counter(m)
    before = ops("lookup")
    outside: list = []
    try:
        _stop(lower)
        os.write(go, b"1")
        _wait(lambda: ops("lookup") > before and _state(child) == "S",
              lambda: f"the child blocked ({ops('lookup')} lookup, state {_state(child)})")
        # in a thread: if the mount stalls, the finally below lets it go on
        reader = threading.Thread(target=lambda: outside.append(
            (os.stat(mnt / "plain").st_size, (mnt / "plain").read_bytes())))
        reader.start()
        reader.join(30)                  # a deadline against a hang, not a timing assertion
        assert outside == [(5, b"plain")], "a stat outside the hung subtree waited for it"
        assert os.waitpid(child, os.WNOHANG) == (0, 0)       # still hung meanwhile
    finally:
        os.kill(lower.pid, signal.SIGCONT)
        os.close(go)
    reader.join()
    assert _child_result(child, r) == "123"
    assert m.alive() and (mnt / "lower" / "f").stat().st_size == 123
