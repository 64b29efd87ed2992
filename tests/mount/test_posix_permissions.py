"""pjdfstest-style permission cases that a cached path or a FIFO open skips.

Without `default_permissions` the kernel checks no directory modes during a
path walk: for the entry timeout after a path was used, an operation on it
reaches the daemon directly, which checks the file itself but not the
search permission of its parents; and opening a FIFO sends no request at
all.  fdsl mounts with `default_permissions` (and POSIX ACLs negotiated), so
the kernel checks every component as a local filesystem would.  Each case
first uses the path (priming the kernel's caches), then removes search
permission and repeats it at once; the backing filesystem is the oracle.

Cases after pjdfstest: chmod/05, chown/05, truncate/05, ftruncate/05,
link/06, open/06 (FIFO).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.register_assert_rewrite("posix_fixtures")

from posix_fixtures import POSIX_MARKS, attempt  # noqa: E402

pytest_plugins = ["posix_fixtures"]

pytestmark = POSIX_MARKS

PYFUSE3_GAP = ("the pyfuse3 transport mounts without default_permissions (libfuse cannot "
               "negotiate FUSE_POSIX_ACL): cached paths skip the parents' search permission")


def _prepare(d: Path, uid: int, gid: int) -> None:
    """d/dir (0755) and d/dir/f (0644), both owned by the test user."""
    os.mkdir(d / "dir")
    fd = os.open(d / "dir" / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"0123456789")
    os.close(fd)
    for p in (d / "dir" / "f", d / "dir"):
        os.chown(p, uid, gid)
        os.chmod(p, 0o755 if p.name == "dir" else 0o644)
    os.mkdir(d / "other", 0o777)
    os.chmod(d / "other", 0o777)


OPERATIONS = {
    "chmod_05": lambda p, d: os.chmod(p, 0o600),
    "chown_05": lambda p, d: os.chown(p, -1, os.getgid()),
    "truncate_05": lambda p, d: os.truncate(p, 3),
    "ftruncate_05": lambda p, d: os.close(os.open(p, os.O_WRONLY)),
    "link_06": lambda p, d: os.link(p, d / "other" / "linked"),
}


@pytest.mark.parametrize("case", sorted(OPERATIONS))
def test_search_permission_of_a_cached_path(ws, posix_users, case):
    """The owner uses dir/f, makes dir 0644 (no search permission for anyone
    but root) and repeats the operation: EACCES, as on the backing fs."""
    a = posix_users.a
    ws.xfail_on("pyfuse3", PYFUSE3_GAP, timing=True)
    if case == "link_06":
        ws.xfail_on("bindfs", "high-level libfuse caches the link count for 1 s", timing=True)
    ws.setup(lambda d: _prepare(d, a.uid, a.gid))
    operation = OPERATIONS[case]

    def op(d: Path):
        path = d / "dir" / "f"
        first = attempt(operation, path, d)
        if case == "link_06":
            os.unlink(d / "other" / "linked")
        os.chmod(d / "dir", 0o644)
        again = attempt(operation, path, d)
        os.chmod(d / "dir", 0o755)
        return first, again

    outcome = ws.compare(op, who=a, what=f"{case}: repeat after chmod 0644 of the parent")
    assert outcome[1][1] == "EACCES", outcome


def test_fifo_open_checks_the_mode(ws, posix_users):
    """open/06: a FIFO's mode decides who may open it, though its open sends no
    request to the daemon."""
    a, b = posix_users.a, posix_users.b
    ws.xfail_on("pyfuse3", PYFUSE3_GAP)

    def prepare(d: Path):
        os.mkfifo(d / "wo", 0o200)
        os.chown(d / "wo", a.uid, a.gid)
        os.chmod(d / "wo", 0o200)
        os.mkfifo(d / "private", 0o600)
        os.chmod(d / "private", 0o600)

    ws.setup(prepare)
    nonblocking_read = os.O_RDONLY | os.O_NONBLOCK

    def as_owner(d: Path):
        return attempt(lambda: os.close(os.open(d / "wo", nonblocking_read)))

    def as_other(d: Path):
        return attempt(lambda: os.close(os.open(d / "private", nonblocking_read)))

    assert ws.compare(as_owner, who=a, what="owner opens a 0200 FIFO for reading")[1] == "EACCES"
    assert ws.compare(as_other, who=b, what="other user opens root's 0600 FIFO")[1] == "EACCES"
