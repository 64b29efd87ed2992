"""Each example policy end to end through a real mount."""
from __future__ import annotations

import errno
import os
import stat

import pytest

from mounting import EXAMPLES, errno_as, mounter, needs_fuse  # noqa: F401

pytestmark = [pytest.mark.mount, needs_fuse]


def test_readonly_refuses_every_mutation(mounter):
    b, mnt = mounter.dirs()
    (b / "f").write_text("data")
    (b / "d").mkdir()
    os.setxattr(b / "f", "user.x", b"1")
    m = mounter.mount(EXAMPLES / "readonly.fdsl", b, mnt)
    assert (mnt / "f").read_text() == "data"
    assert os.listdir(mnt / "d") == []
    assert os.getxattr(mnt / "f", "user.x") == b"1"
    mutations = {
        "write": lambda: open(mnt / "f", "w"),
        "append": lambda: open(mnt / "f", "a"),
        "create": lambda: open(mnt / "new", "w"),
        "mkdir": lambda: os.mkdir(mnt / "nd"),
        "rmdir": lambda: os.rmdir(mnt / "d"),
        "unlink": lambda: os.unlink(mnt / "f"),
        "rename": lambda: os.rename(mnt / "f", mnt / "g"),
        "symlink": lambda: os.symlink("f", mnt / "s"),
        "link": lambda: os.link(mnt / "f", mnt / "h"),
        "mknod": lambda: os.mkfifo(mnt / "p"),
        "chmod": lambda: os.chmod(mnt / "f", 0o777),
        "chown": lambda: os.chown(mnt / "f", 1, 1),
        "truncate": lambda: os.truncate(mnt / "f", 0),
        "utime": lambda: os.utime(mnt / "f", (1, 1)),
        "setxattr": lambda: os.setxattr(mnt / "f", "user.y", b"2"),
        "removexattr": lambda: os.removexattr(mnt / "f", "user.x"),
    }
    for what, action in mutations.items():
        with pytest.raises(OSError) as err:
            action()
        assert err.value.errno == errno.EROFS, what
    assert (b / "f").read_text() == "data" and sorted(os.listdir(b)) == ["d", "f"]
    assert m.alive()


def test_hide_secrets(mounter):
    b, mnt = mounter.dirs()
    for name in (".env", "id_rsa", "server.key", "README.md", "notes.txt"):
        (b / name).write_text(name)
    (b / "sub").mkdir()
    (b / "sub" / "deploy.key").write_text("k")
    (b / "sub" / "ok").write_text("ok")
    mounter.mount(EXAMPLES / "hide_secrets.fdsl", b, mnt)
    assert sorted(os.listdir(mnt)) == ["README.md", "notes.txt", "sub"]
    assert sorted(os.listdir(mnt / "sub")) == ["ok"]
    for name in (".env", "id_rsa", "server.key", "sub/deploy.key"):
        assert not os.path.lexists(mnt / name), name
        with pytest.raises(FileNotFoundError):
            open(mnt / name)
    assert (mnt / "README.md").read_text() == "README.md"
    # creating or renaming onto a hidden name: the VFS looks it up first, and a
    # fuse-bpf kernel answers the refused LOOKUP with ENOENT (spec §6)
    with pytest.raises(FileNotFoundError):
        open(mnt / "new.key", "w")
    with pytest.raises(FileNotFoundError):
        os.rename(mnt / "notes.txt", mnt / ".env")
    assert not (b / "new.key").exists()


def test_bindfs_perms_rewrites_stat(mounter):
    b, mnt = mounter.dirs()
    (b / "f").write_text("x")
    os.chmod(b / "f", 0o666)
    (b / "d").mkdir(mode=0o777)
    os.chmod(b / "d", 0o777)
    mounter.mount(EXAMPLES / "bindfs_perms.fdsl", b, mnt)
    st = os.stat(mnt / "f")
    assert stat.S_IMODE(st.st_mode) == 0o644
    assert (st.st_uid, st.st_gid) == (1000, 100)
    assert stat.S_IMODE(os.stat(mnt / "d").st_mode) == 0o755
    # the backing files are unchanged
    assert stat.S_IMODE(os.stat(b / "f").st_mode) == 0o666 and os.stat(b / "f").st_uid == 0


def test_private_subtree_per_uid(mounter):
    b, mnt = mounter.dirs()
    (b / "private").mkdir(mode=0o777)
    os.chmod(b / "private", 0o777)
    (b / "private" / "notes").write_text("mine")
    os.chmod(b / "private" / "notes", 0o644)
    (b / "vendor").mkdir()
    (b / "vendor" / "lib").write_text("lib")
    (b / "public").write_text("pub")
    mounter.mount(EXAMPLES / "private_subtree.fdsl", b, mnt, options="allow_other")
    notes = str(mnt / "private" / "notes")
    assert errno_as(1000, 1000, f"r = open({notes!r}).read()") == "mine"
    # refused as a fuse-bpf kernel refuses it (spec §6): the LOOKUP of "notes" gives
    # ENOENT; with default_permissions the kernel first asks GETATTR of "private",
    # whose refusal gives EIO
    assert errno_as(1001, 1001, f"r = open({notes!r}).read()") in ("ENOENT", "EIO")
    assert errno_as(1001, 1001, f"r = os.listdir({str(mnt / 'private')!r})") in ("EACCES", "EIO")
    assert errno_as(1001, 1001, f"r = open({str(mnt / 'public')!r}).read()") == "pub"
    assert errno_as(1001, 1001, f"r = open({str(mnt / 'vendor' / 'lib')!r}).read()") == "lib"
    assert (mnt / "private" / "notes").read_text() == "mine"  # root is trusted


def test_audit_counters_increase(mounter):
    b, mnt = mounter.dirs()
    (b / "f").write_text("x")
    m = mounter.mount(EXAMPLES / "audit.fdsl", b, mnt, options="allow_other")
    before = m.counters("ops").get("total", 0)
    for _ in range(3):
        os.stat(mnt / "f")
        (mnt / "f").read_text()
    errno_as(1000, 1000, f"r = open({str(mnt / 'f')!r}).read()")
    after = m.counters("ops")["total"]
    assert after >= before + 6
    by_uid = m.counters("by_uid")
    assert any(k.startswith("1000") for k in by_uid) and any(k.startswith("0") for k in by_uid)
    by_op = m.counters("by_op")
    assert by_op.get("getattr", 0) >= 1 and by_op.get("open", 0) >= 3
    with pytest.raises(FileExistsError):
        os.mkdir(mnt / "f")
    proc_stats = m.stats()
    assert proc_stats["ops"]["lookup"] >= 1
