"""Fixtures and helpers for the POSIX-conformance suite of mounts.

The suite (tests/mount/test_posix_mount.py, tests/mount/test_posix_users.py) checks that a
mount behaves like its backing filesystem for every caller.  The backing
filesystem is the oracle: each operation runs twice, once in a plain directory
on the same filesystem as the backing directory and once through the mount,
and the outcomes (return value or errno) and the resulting trees (type, mode,
owner, link count, size, content, symlink target, user.* xattrs) must be equal.
What the mount reports must also equal what the backing files say, times
included (no stale cached attributes).

Implementations (parameter of the session fixture `posix_mount`):

* ``fdsl``   -- ``fdsl mount -f -o allow_other EMPTY.fdsl BACKING MNT`` (the default
  transport over /dev/fuse); skipped with a reason while ``fdsl mount --help``
  does not work;
* ``pyfuse3`` -- the same with ``-o transport=pyfuse3``, the second transport.
  Its known gaps (what libfuse through pyfuse3 cannot do) are marked xfail for
  it only (``ws.xfail_on("pyfuse3", ...)``);
* ``fdsl-fdcache1`` -- ``fdsl`` with ``FDSL_NODE_FD_CACHE=1``: the daemon keeps
  one node fd open and reopens every other node by file handle, so every
  operation runs on reopened (and evicted-while-unused) inodes;
* ``bindfs`` -- ``bindfs -f -o allow_other BACKING MNT``, a reference that
  validates the tests themselves.  Where bindfs does not meet a POSIX
  expectation the test is marked xfail for bindfs only (``ws.xfail_on``).

Every operation runs in a forked child (with its own umask and, for the
user tests, dropped uid/gid/groups) under a timeout, so a hung mount fails a
test instead of hanging the session.  Test modules load this file with
``pytest_plugins = ["posix_fixtures"]`` so that the session fixtures (one mount
per implementation, one set of test users) are shared by both modules.
Fixtures: `posix_mount` (session, parametrized), `posix_users` (session),
`ws` (per test: oracle dir + backing dir + mount dir).
"""
from __future__ import annotations

import ctypes
import errno
import grp
import hashlib
import os
import pickle
import pwd
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

IMPLS = ("fdsl", "fdsl-fdcache1", "pyfuse3", "bindfs")
FDSL_IMPLS = {"fdsl": "dev", "fdsl-fdcache1": "dev", "pyfuse3": "pyfuse3"}  # -> -o transport=
MOUNT_TIMEOUT = 10.0        # seconds until the mount point must be mounted
OP_TIMEOUT = 60.0           # seconds one forked operation may take

# ---------------------------------------------------------------------------
# libc calls the os module lacks
# ---------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
RENAME_NOREPLACE = 1 << 0
RENAME_EXCHANGE = 1 << 1
SEEK_DATA = getattr(os, "SEEK_DATA", 3)
SEEK_HOLE = getattr(os, "SEEK_HOLE", 4)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _timespec(value: int | str | None) -> _Timespec:
    if value == "now":
        return _Timespec(0, UTIME_NOW)
    if value is None or value == "omit":
        return _Timespec(0, UTIME_OMIT)
    assert isinstance(value, int)
    return _Timespec(value // 1_000_000_000, value % 1_000_000_000)


def utimensat(path: os.PathLike | str | bytes | None, atime: int | str | None,
              mtime: int | str | None, *, dir_fd: int = AT_FDCWD,
              follow_symlinks: bool = True, null_times: bool = False) -> None:
    """utimensat(2).  A time is ns since the epoch, "now" (UTIME_NOW) or
    None/"omit" (UTIME_OMIT); null_times passes times=NULL (the `touch` form)."""
    times = None if null_times else (_Timespec * 2)(_timespec(atime), _timespec(mtime))
    flags = 0 if follow_symlinks else AT_SYMLINK_NOFOLLOW
    cpath = None if path is None else os.fsencode(path)
    if _libc.utimensat(ctypes.c_int(dir_fd), cpath, times, ctypes.c_int(flags)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)


def renameat2(old: os.PathLike | str, new: os.PathLike | str, flags: int) -> None:
    """renameat2(2) with RENAME_NOREPLACE / RENAME_EXCHANGE."""
    rc = _libc.renameat2(ctypes.c_int(AT_FDCWD), os.fsencode(old),
                         ctypes.c_int(AT_FDCWD), os.fsencode(new), ctypes.c_uint(flags))
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(old))


# ---------------------------------------------------------------------------
# identities
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Identity:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...] = ()

    def __str__(self) -> str:
        return f"{self.name}(uid={self.uid},gid={self.gid},groups={list(self.groups)})"


ROOT = Identity("root", 0, 0, ())


@dataclass(frozen=True)
class Users:
    """The test identities: `a` (primary group `g`, supplementary group `s`),
    `b` (primary group `h`, not in `s`)."""

    a: Identity
    b: Identity
    g: int      # a's primary group
    s: int      # a's supplementary group
    h: int      # b's primary group


# ---------------------------------------------------------------------------
# running one operation in a forked child
# ---------------------------------------------------------------------------

Outcome = tuple  # ("ok", value) | ("err", "EACCES") | ("crash", text) | ("timeout", secs)


def _capture(fn: Callable[[], Any]) -> Outcome:
    try:
        return ("ok", fn())
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        return ("err", name)


def run_forked(fn: Callable[[], Any], who: Identity = ROOT, umask: int = 0o022,
               timeout: float = OP_TIMEOUT) -> Outcome:
    """Run fn() in a child with identity `who` and `umask`; return its outcome."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(rfd)
            try:
                if who.uid != 0 or who.gid != 0 or who.groups:
                    os.setgroups(list(who.groups))
                    os.setresgid(who.gid, who.gid, who.gid)
                    os.setresuid(who.uid, who.uid, who.uid)
                os.umask(umask)
                result = _capture(fn)
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                result = ("crash", f"{type(exc).__name__}: {exc}")
            try:
                data = pickle.dumps(result)
            except Exception as exc:  # noqa: BLE001
                data = pickle.dumps(("crash", f"unpicklable result: {exc}"))
            view = memoryview(data)
            while view:
                view = view[os.write(wfd, view):]
        finally:
            os._exit(0)
    os.close(wfd)
    chunks = []
    deadline = time.monotonic() + timeout
    timed_out = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([rfd], [], [], left)
            if not ready:
                continue
            chunk = os.read(rfd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(rfd)
    if timed_out:
        os.kill(pid, signal.SIGKILL)
        for _ in range(50):
            if os.waitpid(pid, os.WNOHANG) != (0, 0):
                break
            time.sleep(0.1)
        return ("timeout", timeout)
    os.waitpid(pid, 0)
    if not chunks:
        return ("crash", "child produced no result")
    return pickle.loads(b"".join(chunks))


def value_of(outcome: Outcome, what: str = "operation") -> Any:
    assert outcome[0] == "ok", f"{what} failed: {outcome}"
    return outcome[1]


# ---------------------------------------------------------------------------
# tree snapshots (fd based: works for 25 KB deep paths)
# ---------------------------------------------------------------------------

def _xattrs(dir_fd: int, name: str, follow: bool) -> dict[str, bytes] | str:
    path = f"/proc/self/fd/{dir_fd}/{name}" if name else f"/proc/self/fd/{dir_fd}"
    try:
        names = os.listxattr(path, follow_symlinks=follow)
        return {n: os.getxattr(path, n, follow_symlinks=follow)
                for n in sorted(names) if n.startswith("user.")}
    except OSError as exc:
        return f"error {errno.errorcode.get(exc.errno, exc.errno)}"


def entry_state(st: os.stat_result, times: bool) -> dict[str, Any]:
    kind = stat.S_IFMT(st.st_mode)
    state: dict[str, Any] = {
        "type": {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
                 stat.S_IFIFO: "fifo", stat.S_IFCHR: "chr", stat.S_IFBLK: "blk",
                 stat.S_IFSOCK: "sock"}.get(kind, oct(kind)),
        "mode": oct(stat.S_IMODE(st.st_mode)),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "nlink": st.st_nlink,
    }
    if kind in (stat.S_IFREG, stat.S_IFLNK):
        state["size"] = st.st_size
    if kind in (stat.S_IFCHR, stat.S_IFBLK):
        state["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
    if times:
        state["mtime_ns"] = st.st_mtime_ns
        state["ctime_ns"] = st.st_ctime_ns
    return state


def tree_state(root: str | os.PathLike, times: bool = False,
               content: bool = True) -> dict[bytes, dict[str, Any]]:
    """{relative path: state} for root and everything below it (no following)."""
    out: dict[bytes, dict[str, Any]] = {}
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        out[b"."] = entry_state(os.fstat(top), times)
        out[b"."]["xattrs"] = _xattrs(top, "", True)
        _walk(top, b"", out, times, content)
    finally:
        os.close(top)
    return out


def _walk(dfd: int, prefix: bytes, out: dict, times: bool, content: bool) -> None:
    for name in sorted(os.listdir(dfd)):
        key = prefix + os.fsencode(name)
        st = os.lstat(name, dir_fd=dfd)
        state = entry_state(st, times)
        out[key] = state
        if stat.S_ISLNK(st.st_mode):
            state["target"] = os.readlink(name, dir_fd=dfd)
            state["xattrs"] = _xattrs(dfd, name, False)
            continue
        state["xattrs"] = _xattrs(dfd, name, True)
        if stat.S_ISREG(st.st_mode) and content:
            # no O_NOFOLLOW: lstat said regular file, and the snapshot must not
            # depend on a flag that test_o_trunc_and_o_excl checks on its own
            fd = os.open(name, os.O_RDONLY, dir_fd=dfd)
            try:
                digest = hashlib.sha256()
                while chunk := os.read(fd, 1 << 20):
                    digest.update(chunk)
                state["sha256"] = digest.hexdigest()[:16]
            finally:
                os.close(fd)
        elif stat.S_ISDIR(st.st_mode):
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dfd)
            try:
                _walk(sub, key + b"/", out, times, content)
            finally:
                os.close(sub)


def diff_states(left: dict, right: dict, lname: str, rname: str, limit: int = 12) -> str:
    lines = []
    for key in sorted(set(left) | set(right)):
        a, b = left.get(key), right.get(key)
        if a != b:
            shown = key if len(key) < 80 else key[:30] + b"..." + key[-30:]
            lines.append(f"  {shown!r}:\n    {lname}: {a}\n    {rname}: {b}")
    more = f"\n  ... and {len(lines) - limit} more" if len(lines) > limit else ""
    return "\n".join(lines[:limit]) + more


# ---------------------------------------------------------------------------
# the mount
# ---------------------------------------------------------------------------

def fdsl_executable() -> Path:
    return Path(sys.executable).with_name("fdsl")


def _fdsl_mount_unavailable() -> str | None:
    """None if `fdsl mount --help` works, else the reason."""
    exe = fdsl_executable()
    if not exe.exists():
        return f"{exe.name} is not installed next to {sys.executable}"
    try:
        proc = subprocess.run([str(exe), "mount", "--help"], capture_output=True,
                              text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "`fdsl mount --help` did not finish within 60 s"
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        return f"`fdsl mount` is not available yet (fdsl mount --help: exit {proc.returncode}: {tail})"
    return None


@dataclass
class Mount:
    impl: str
    backing: Path
    mnt: Path
    proc: subprocess.Popen
    log: Path

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty)"

    def check_alive(self) -> None:
        if self.proc.poll() is not None or not os.path.ismount(self.mnt):
            pytest.fail(f"{self.impl} mount at {self.mnt} is gone (daemon exit "
                        f"status {self.proc.poll()}); daemon output:\n{self.log_tail()}")


def _unmount(mnt: Path, proc: subprocess.Popen) -> None:
    if os.path.ismount(mnt):
        r = subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, timeout=30)
        if r.returncode != 0 and os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True, timeout=30)
    if proc.poll() is None:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


@pytest.fixture(scope="session")
def posix_base():
    """A world-traversable base directory (pytest's tmp_path is 0700, which
    would stop the test users before they reach the mount)."""
    if os.geteuid() != 0:
        pytest.skip("POSIX mount suite needs root (mounting with allow_other, test users)")
    if not os.path.exists("/dev/fuse"):
        pytest.skip("/dev/fuse is missing")
    base = Path(tempfile.mkdtemp(prefix="fdsl-posix-"))
    base.chmod(0o755)
    (base / "plain").mkdir(mode=0o755)
    (base / "plain").chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session", params=IMPLS)
def posix_mount(request, posix_base):
    impl = request.param
    env = {**os.environ, "FDSL_NODE_FD_CACHE": "1"} if impl == "fdsl-fdcache1" else None
    if impl in FDSL_IMPLS:
        reason = _fdsl_mount_unavailable()
        if reason:
            pytest.skip(reason)
    elif shutil.which("bindfs") is None:
        pytest.skip("bindfs is not installed")
    if shutil.which("fusermount3") is None:
        pytest.skip("fusermount3 is not installed")
    root = posix_base / impl
    backing, mnt = root / "backing", root / "mnt"
    for d in (root, backing, mnt):
        d.mkdir(mode=0o755)
        d.chmod(0o755)
    log = root / "daemon.log"
    if impl in FDSL_IMPLS:
        policy = root / "empty.fdsl"
        policy.write_text("")
        argv = [str(fdsl_executable()), "mount", "-f", "-o",
                f"allow_other,transport={FDSL_IMPLS[impl]}", str(policy), str(backing), str(mnt)]
    else:
        argv = ["bindfs", "-f", "-o", "allow_other", str(backing), str(mnt)]
    with open(log, "wb") as logf:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                env=env)
    m = Mount(impl, backing, mnt, proc, log)
    try:
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not os.path.ismount(mnt):
            if proc.poll() is not None:
                pytest.fail(f"{' '.join(argv)} exited with {proc.returncode} before "
                            f"mounting:\n{m.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{' '.join(argv)} did not mount within {MOUNT_TIMEOUT} s:\n"
                            f"{m.log_tail()}")
            time.sleep(0.05)
        yield m
    finally:
        _unmount(mnt, proc)


# ---------------------------------------------------------------------------
# test users
# ---------------------------------------------------------------------------

_PREFIX = "fdslpx"
_NAME_RE = re.compile(rf"^{_PREFIX}[a-z](\d+)$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_identities() -> None:
    """Users/groups left by an earlier session of this suite that was killed."""
    for entry in pwd.getpwall():
        m = _NAME_RE.match(entry.pw_name)
        if m and not _pid_alive(int(m.group(1))):
            subprocess.run(["userdel", entry.pw_name], capture_output=True)
    for entry in grp.getgrall():
        m = _NAME_RE.match(entry.gr_name)
        if m and not _pid_alive(int(m.group(1))):
            subprocess.run(["groupdel", entry.gr_name], capture_output=True)


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")


@pytest.fixture(scope="session")
def posix_users(posix_base):
    """Create groups g, s, h and users a (g; s) and b (h); remove them afterwards."""
    for tool in ("useradd", "groupadd", "userdel", "groupdel"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not available")
    _remove_stale_identities()
    tag = str(os.getpid())
    names = {k: f"{_PREFIX}{k}{tag}" for k in "gshab"}
    made_groups, made_users = [], []
    try:
        for k in "gsh":
            _run(["groupadd", names[k]])
            made_groups.append(names[k])
        _run(["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", "-g", names["g"],
              "-G", names["s"], names["a"]])
        made_users.append(names["a"])
        _run(["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", "-g", names["h"], names["b"]])
        made_users.append(names["b"])
        gid = {k: grp.getgrnam(names[k]).gr_gid for k in "gsh"}
        a = pwd.getpwnam(names["a"])
        b = pwd.getpwnam(names["b"])
        yield Users(
            a=Identity(names["a"], a.pw_uid, a.pw_gid, tuple(os.getgrouplist(names["a"], a.pw_gid))),
            b=Identity(names["b"], b.pw_uid, b.pw_gid, tuple(os.getgrouplist(names["b"], b.pw_gid))),
            g=gid["g"], s=gid["s"], h=gid["h"],
        )
    finally:
        for name in made_users:
            subprocess.run(["userdel", name], capture_output=True)
        for name in made_groups:
            subprocess.run(["groupdel", name], capture_output=True)


# ---------------------------------------------------------------------------
# the per-test workspace: an oracle directory and a directory in the mount
# ---------------------------------------------------------------------------

class Workspace:
    """`plain`: oracle directory on the backing filesystem; `backing`: the
    test's directory inside the backing tree; `mnt`: the same directory seen
    through the mount."""

    def __init__(self, mount: Mount, name: str, plain: Path, request) -> None:
        self.m = mount
        self.impl = mount.impl
        self.name = name
        self.plain = plain
        self.backing = mount.backing / name
        self.mnt = mount.mnt / name
        self._request = request

    # -- expectations --------------------------------------------------------
    def xfail_on(self, impl: str, reason: str, *, timing: bool = False) -> None:
        """Known deviation of a reference implementation (bindfs) or of the
        pyfuse3 transport's limits (never used for fdsl's own transport).

        `timing`: the deviation depends on a cache timer (e.g. bindfs's 1 s
        attribute cache), so a run may pass: not strict."""
        assert not impl.startswith("fdsl"), "fdsl failures are reported, not xfailed"
        if self.impl == impl:
            self._request.applymarker(pytest.mark.xfail(reason=f"{impl}: {reason}",
                                                        strict=not timing))

    # -- setup ---------------------------------------------------------------
    def setup(self, fn: Callable[[Path], Any], who: Identity = ROOT, umask: int = 0) -> None:
        """Run fn(dir) on the oracle directory and directly on the backing
        directory (not through the mount)."""
        for where, d in (("plain", self.plain), ("backing", self.backing)):
            value_of(run_forked(lambda: fn(d), who, umask), f"setup in {where}")

    # -- running -------------------------------------------------------------
    def run(self, fn: Callable[[Path], Any], where: str = "mnt", who: Identity = ROOT,
            umask: int = 0o022, timeout: float = OP_TIMEOUT) -> Outcome:
        return run_forked(lambda: fn(getattr(self, where)), who, umask, timeout)

    def state(self, where: str, times: bool = False, content: bool = True) -> dict:
        return value_of(self.run(lambda d: tree_state(d, times, content), where, timeout=120),
                        f"snapshot of {where}")

    def check_states(self, content: bool = True, mount_view: bool = True) -> None:
        """Backing tree == oracle tree; mount view == backing tree (times too)."""
        plain, backing = self.state("plain", content=content), self.state("backing", content=content)
        assert backing == plain, (
            f"[{self.impl}] tree after the operation through the mount differs from the "
            f"same operation on the backing filesystem:\n"
            f"{diff_states(plain, backing, 'expected (plain)', 'via mount (backing)')}")
        if mount_view:
            self.check_view(content)

    def check_view(self, content: bool = True) -> None:
        backing = self.state("backing", times=True, content=content)
        seen = self.state("mnt", times=True, content=content)
        assert seen == backing, (
            f"[{self.impl}] attributes seen through the mount differ from the backing files:\n"
            f"{diff_states(backing, seen, 'backing', 'mount')}")

    def compare(self, fn: Callable[[Path], Any], who: Identity = ROOT, umask: int = 0o022,
                state: bool = True, what: str = "") -> Outcome:
        """Run fn on the oracle and through the mount: equal outcomes and trees."""
        expected = self.run(fn, "plain", who, umask)
        assert expected[0] in ("ok", "err"), f"oracle run of {what or fn} broke: {expected}"
        got = self.run(fn, "mnt", who, umask)
        assert got == expected, (
            f"[{self.impl}] {what or getattr(fn, '__name__', 'operation')} as {who} "
            f"(umask {umask:03o}):\n{_outcome_diff(expected, got)}")
        if state:
            self.check_states()
        return got


def _outcome_diff(expected: Outcome, got: Outcome) -> str:
    """Readable difference; for dict results only the keys that differ."""
    if (expected[0] == got[0] == "ok" and isinstance(expected[1], dict)
            and isinstance(got[1], dict)):
        keys = [k for k in {**expected[1], **got[1]} if expected[1].get(k, "<missing>") != got[1].get(k, "<missing>")]
        return "\n".join(f"  {k!r}: expected (backing fs) {expected[1].get(k, '<missing>')!r}, "
                         f"via mount {got[1].get(k, '<missing>')!r}" for k in keys)
    return f"  expected (backing fs): {expected}\n  via mount:             {got}"


_counter = 0


@pytest.fixture
def ws(posix_mount, request):
    global _counter
    mount = posix_mount
    _counter += 1
    mount.check_alive()
    name = f"t{_counter:04d}-" + re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)[:80]
    plain = mount.backing.parent.parent / "plain" / name
    for d in (plain, mount.backing / name):
        d.mkdir(mode=0o755)
        d.chmod(0o755)
    try:
        yield Workspace(mount, name, plain, request)
    finally:
        for d in (plain, mount.backing / name):
            shutil.rmtree(d, ignore_errors=True)


# -- shared by the POSIX test modules -------------------------------------------

POSIX_MARKS = [
    pytest.mark.mount,
    pytest.mark.skipif(os.geteuid() != 0, reason="POSIX mount suite needs root"),
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="/dev/fuse is missing"),
]

_libc_for_access = ctypes.CDLL(None, use_errno=True)


def attempt(fn, *args, **kwargs):
    """fn's value (or "ok" for None), or the errno name it failed with."""
    try:
        value = fn(*args, **kwargs)
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return "ok" if value is None else value


def access_result(path, mode: int):
    """access(2) as "ok" or the errno name (os.access hides the errno)."""
    if _libc_for_access.access(os.fsencode(path), ctypes.c_int(mode)) == 0:
        return "ok"
    return errno.errorcode.get(ctypes.get_errno(), "?")
