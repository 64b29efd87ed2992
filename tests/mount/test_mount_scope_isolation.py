"""`under` scopes hold whatever renames and hard links happen (issue 11, item 3).

A node's program is fixed when it is first looked up; renames and links are
the only ways to give an existing inode a path in another scope, so the
daemon refuses them with EXDEV (runtime/scopes.py).  The attack of the issue:
a user who may write the parent renames `private/` away and back after the
kernel forgot the node, and the node came back with the root program.
Users are created for the session (`posix_users`); the backing filesystem is
the oracle for who may do what without a policy.
"""
from __future__ import annotations

import errno
import os
import subprocess
import time

import pytest

from mounting import EXAMPLES, ROOT, errno_as, mounter, needs_fuse  # noqa: F401

pytest_plugins = ["posix_fixtures"]
pytestmark = [pytest.mark.mount, needs_fuse]


def forget_everything() -> None:
    """Make the kernel drop unused dentries and inodes (it sends FORGET for each)."""
    with open("/proc/sys/vm/drop_caches", "w") as fh:
        fh.write("2\n")
    time.sleep(0.2)


def private_policy(tmp_path, owner: int):
    """examples/private_subtree.fdsl with its owner set to a user of this session."""
    text = (EXAMPLES / "private_subtree.fdsl").read_text()
    assert "const OWNER = 1000" in text
    path = tmp_path / "private_subtree.fdsl"
    path.write_text(text.replace("const OWNER = 1000", f"const OWNER = {owner}"))
    return path


def put(path, text: str, uid: int, gid: int, mode: int = 0o644) -> None:
    path.write_text(text)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def test_renaming_the_private_scope_away_and_back_does_not_open_it(mounter, tmp_path, posix_users):
    owner, other = posix_users.a, posix_users.b
    b, mnt = mounter.dirs()
    os.chmod(b, 0o777)                      # `other` may rename entries of the root
    (b / "private").mkdir()
    os.chown(b / "private", owner.uid, owner.gid)
    os.chmod(b / "private", 0o755)
    put(b / "private" / "notes", "secret", owner.uid, owner.gid)
    mounter.mount(private_policy(tmp_path, owner.uid), b, mnt, options="allow_other")
    private, moved = str(mnt / "private"), str(mnt / "x")
    notes = f"{private}/notes"
    assert errno_as(owner.uid, owner.gid, f"r = open({notes!r}).read()") == "secret"
    # refused as on a fuse-bpf kernel (spec §6): a refused LOOKUP is ENOENT, the
    # GETATTR default_permissions asks for first is EIO
    assert errno_as(other.uid, other.gid, f"r = open({notes!r}).read()") in ("ENOENT", "EIO")

    # the attack: rename away, let the kernel forget the node, rename back
    away = errno_as(other.uid, other.gid, f"os.rename({private!r}, {moved!r}); r = 'renamed'")
    forget_everything()
    errno_as(other.uid, other.gid, f"os.rename({moved!r}, {private!r}); r = 'back'")
    # refused as on a fuse-bpf kernel (spec §6): a refused LOOKUP is ENOENT, the
    # GETATTR default_permissions asks for first is EIO
    assert errno_as(other.uid, other.gid, f"r = open({notes!r}).read()") in ("ENOENT", "EIO")
    assert away == "EXDEV"
    forget_everything()
    assert errno_as(other.uid, other.gid, f"r = open({moved + '/notes'!r}).read()") \
        in ("EACCES", "ENOENT")
    # the backing tree is as it was, and the owner still reads the file
    assert sorted(os.listdir(b)) == ["private"]
    assert errno_as(owner.uid, owner.gid, f"r = open({notes!r}).read()") == "secret"
    # without a policy the same rename is allowed: EXDEV comes from the scope, not the fs
    os.rename(b / "private", b / "y")
    os.rename(b / "y", b / "private")


def test_moves_and_links_across_the_private_boundary(mounter, tmp_path, posix_users):
    owner = posix_users.a
    b, mnt = mounter.dirs()
    os.chmod(b, 0o777)
    (b / "private" / "sub").mkdir(parents=True)
    for d in ("private", "private/sub"):
        os.chown(b / d, owner.uid, owner.gid)
    put(b / "private" / "notes", "secret", owner.uid, owner.gid)
    put(b / "public", "pub", owner.uid, owner.gid)
    (b / "dir").mkdir()
    os.chown(b / "dir", owner.uid, owner.gid)
    mounter.mount(private_policy(tmp_path, owner.uid), b, mnt, options="allow_other")

    def as_owner(code: str) -> object:
        return errno_as(owner.uid, owner.gid, code)

    p, m = f"{mnt}/private", str(mnt)
    # out of the scope, into it, and onto its anchors: refused
    assert as_owner(f"os.rename('{p}/notes', '{m}/notes'); r = 'ok'") == "EXDEV"
    assert as_owner(f"os.rename('{m}/public', '{p}/public'); r = 'ok'") == "EXDEV"
    assert as_owner(f"os.rename('{m}/dir', '{p}/dir'); r = 'ok'") == "EXDEV"
    assert as_owner(f"os.link('{p}/notes', '{m}/notes'); r = 'ok'") == "EXDEV"
    assert as_owner(f"os.link('{m}/public', '{p}/public'); r = 'ok'") == "EXDEV"
    assert as_owner(f"os.rename('{m}/dir', '{m}/vendor'); r = 'ok'") == "EXDEV"   # passthrough anchor
    # inside one scope: as on the backing filesystem
    assert as_owner(f"os.rename('{p}/notes', '{p}/sub/notes'); r = 'ok'") == "ok"
    assert as_owner(f"os.link('{p}/sub/notes', '{p}/again'); r = 'ok'") == "ok"
    assert as_owner(f"os.rename('{m}/dir', '{m}/dir2'); r = 'ok'") == "ok"
    assert as_owner(f"os.link('{m}/public', '{m}/public2'); r = 'ok'") == "ok"
    assert sorted(os.listdir(b / "private")) == ["again", "sub"]
    assert sorted(os.listdir(b)) == ["dir2", "private", "public", "public2"]
    forget_everything()
    other = posix_users.b
    assert errno_as(other.uid, other.gid, f"r = open('{p}/again').read()") in ("ENOENT", "EIO")
    assert errno_as(other.uid, other.gid, f"r = open('{m}/public2').read()") == "pub"


def test_readonly_scope_of_the_realistic_policy_cannot_be_bypassed(mounter):
    """bench/policies/realistic.fdsl: `under "archive" { readonly ... }`, as root."""
    b, mnt = mounter.dirs()
    (b / "archive").mkdir()
    (b / "archive" / "report").write_text("v1")
    (b / "draft").write_text("mine")
    mounter.mount(ROOT / "bench" / "policies" / "realistic.fdsl", b, mnt)
    archive = mnt / "archive"
    with pytest.raises(OSError) as refused:
        (archive / "report").write_text("v2")
    assert refused.value.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
    for move, expected in ((lambda: os.rename(mnt / "draft", archive / "draft"), errno.EXDEV),
                           (lambda: os.rename(archive, mnt / "x"), errno.EXDEV),
                           # the policy refuses every hard link itself (rule 13)
                           (lambda: os.link(archive / "report", mnt / "report"), errno.EPERM)):
        with pytest.raises(OSError) as crossed:
            move()
        assert crossed.value.errno == expected
    forget_everything()
    with pytest.raises(OSError):
        (archive / "report").write_text("v2")
    assert (b / "archive" / "report").read_text() == "v1"
    assert sorted(os.listdir(b)) == ["archive", "draft"]


def test_parent_of_a_nested_scope_is_an_anchor_too(mounter, tmp_path):
    policy = tmp_path / "nested.fdsl"
    policy.write_text('under "a/b" { on lookup pre { if name == "f" { deny EACCES } } }\n')
    b, mnt = mounter.dirs()
    (b / "a" / "b").mkdir(parents=True)
    (b / "a" / "b" / "f").write_text("x")
    (b / "a" / "c").mkdir()
    mounter.mount(policy, b, mnt)
    with pytest.raises(OSError) as crossed:
        os.rename(mnt / "a", mnt / "z")
    assert crossed.value.errno == errno.EXDEV
    os.rename(mnt / "a" / "c", mnt / "a" / "c2")  # neither name is an anchor
    os.rename(mnt / "a" / "c2", mnt / "c")        # same (root) scope on both sides
    with pytest.raises(OSError) as crossed:
        os.rename(mnt / "c", mnt / "a" / "b")     # onto the scope's anchor
    assert crossed.value.errno == errno.EXDEV
    with pytest.raises(FileNotFoundError):   # a refused LOOKUP is ENOENT (spec §6)
        (mnt / "a" / "b" / "f").read_text()
    assert subprocess.run(["ls", str(mnt / "a")], capture_output=True, text=True).stdout.split() \
        == ["b"]
