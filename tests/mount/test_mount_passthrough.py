"""Pure passthrough (no or empty policy): the mount must equal the backing directory."""
from __future__ import annotations

import errno
import os
import stat
import subprocess
import time

import pytest

from mounting import errno_as, fdsl, is_mounted, mounter, needs_fuse  # noqa: F401

pytestmark = [pytest.mark.mount, needs_fuse]


def populate(b) -> None:
    (b / "a.txt").write_bytes(b"hello world\n")
    (b / "empty").write_bytes(b"")
    (b / "big.bin").write_bytes(os.urandom(300_000))
    (b / "dir" / "sub").mkdir(parents=True)
    (b / "dir" / "sub" / "deep.txt").write_text("deep\n")
    os.symlink("a.txt", b / "rel_link")
    os.symlink("/nonexistent/target", b / "dangling")
    os.link(b / "a.txt", b / "hard")
    os.chmod(b / "empty", 0o640)
    os.utime(b / "empty", ns=(1_000_000_123, 2_000_000_456))
    os.setxattr(b / "a.txt", "user.color", b"blue")
    os.mkfifo(b / "fifo")


def snapshot(root) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            item = {"mode": st.st_mode, "size": st.st_size, "nlink": st.st_nlink,
                    "uid": st.st_uid, "gid": st.st_gid, "mtime": st.st_mtime_ns}
            if stat.S_ISLNK(st.st_mode):
                item["target"] = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as fh:
                    item["data"] = fh.read()
                item["xattrs"] = {n: os.getxattr(p, n) for n in os.listxattr(p)}
            out[rel] = item
    return out


def test_tree_equals_backing(mounter):
    b, mnt = mounter.dirs()
    populate(b)
    mounter.mount("", b, mnt)
    assert snapshot(mnt) == snapshot(b)
    assert sorted(os.listdir(mnt)) == sorted(os.listdir(b))
    assert os.stat(mnt / "a.txt").st_ino == os.stat(mnt / "hard").st_ino
    s1, s2 = os.statvfs(mnt), os.statvfs(b)
    assert (s1.f_blocks, s1.f_bsize, s1.f_files, s1.f_namemax) == \
        (s2.f_blocks, s2.f_bsize, s2.f_files, s2.f_namemax)


def test_empty_policy_file_is_passthrough(mounter, tmp_path):
    policy = tmp_path / "empty.fdsl"
    policy.write_text("")
    b, mnt = mounter.dirs()
    populate(b)
    mounter.mount(policy, b, mnt)
    assert snapshot(mnt) == snapshot(b)


def test_mutations(mounter):
    b, mnt = mounter.dirs()
    populate(b)
    m = mounter.mount("", b, mnt)
    # write, append, read back, truncate
    (mnt / "new.txt").write_bytes(b"12345")
    with open(mnt / "new.txt", "ab") as fh:
        fh.write(b"678")
    assert (b / "new.txt").read_bytes() == b"12345678"
    os.truncate(mnt / "new.txt", 3)
    assert (b / "new.txt").read_bytes() == b"123" and os.stat(mnt / "new.txt").st_size == 3
    with open(mnt / "new.txt", "r+b") as fh:
        fh.truncate(1)
    assert (b / "new.txt").read_bytes() == b"1"
    # requested mode and umask honoured, owner is the caller
    old = os.umask(0o027)
    try:
        fd = os.open(mnt / "m.txt", os.O_CREAT | os.O_WRONLY, 0o666)
        os.close(fd)
        os.mkdir(mnt / "mdir", 0o777)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(b / "m.txt").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(b / "mdir").st_mode) == 0o750
    # rename, mkdir/rmdir, symlink, fifo
    os.rename(mnt / "m.txt", mnt / "dir" / "moved.txt")
    assert (b / "dir" / "moved.txt").exists() and not (b / "m.txt").exists()
    os.rmdir(mnt / "mdir")
    assert not (b / "mdir").exists()
    os.symlink("dir/sub", mnt / "sl")
    assert os.readlink(b / "sl") == "dir/sub"
    assert os.listdir(mnt / "sl") == ["deep.txt"]
    os.mknod(mnt / "fifo2", 0o600 | stat.S_IFIFO)
    assert stat.S_ISFIFO(os.lstat(b / "fifo2").st_mode)
    # hard links: link counts fresh after link and unlink
    os.link(mnt / "a.txt", mnt / "hard2")
    assert os.stat(mnt / "a.txt").st_nlink == 3
    os.unlink(mnt / "hard2")
    assert os.stat(mnt / "a.txt").st_nlink == 2
    # rename over an existing file, RENAME_NOREPLACE behaviour through mv -n
    (mnt / "x").write_text("x")
    (mnt / "y").write_text("y")
    os.replace(mnt / "x", mnt / "y")
    assert (b / "y").read_text() == "x"
    # chmod, chown, utime with UTIME_OMIT (only mtime given via os.utime on one)
    os.chmod(mnt / "y", 0o604)
    assert stat.S_IMODE(os.stat(b / "y").st_mode) == 0o604
    os.chown(mnt / "y", 1234, 5678)
    assert (os.stat(b / "y").st_uid, os.stat(b / "y").st_gid) == (1234, 5678)
    before = os.stat(b / "empty")
    subprocess.run(["touch", "-m", "-d", "@1500000000", str(mnt / "empty")], check=True)
    after = os.stat(b / "empty")
    assert after.st_mtime == 1500000000 and after.st_atime_ns == before.st_atime_ns
    # xattrs
    os.setxattr(mnt / "y", "user.k", b"v")
    assert os.getxattr(b / "y", "user.k") == b"v"
    assert "user.k" in os.listxattr(mnt / "y")
    os.removexattr(mnt / "y", "user.k")
    with pytest.raises(OSError) as err:
        os.getxattr(mnt / "y", "user.k")
    assert err.value.errno == errno.ENODATA
    # errors come through unchanged
    with pytest.raises(FileNotFoundError):
        os.stat(mnt / "missing")
    with pytest.raises(OSError) as err:
        os.rmdir(mnt / "dir")
    assert err.value.errno == errno.ENOTEMPTY
    assert m.alive()


def test_changes_in_backing_are_visible(mounter):
    b, mnt = mounter.dirs()
    m = mounter.mount("", b, mnt)
    (b / "late").write_text("1")
    assert (mnt / "late").read_text() == "1"
    (b / "late").write_text("22")
    time.sleep(1.1)  # attr timeout
    assert (mnt / "late").read_text() == "22"
    os.unlink(b / "late")
    time.sleep(1.1)
    assert not (mnt / "late").exists()
    assert m.alive()


def test_long_names_and_deep_paths(mounter):
    b, mnt = mounter.dirs()
    mounter.mount("", b, mnt)
    name = "n" * 255
    (mnt / name).write_text("long")
    assert (b / name).read_text() == "long"
    with pytest.raises(OSError) as err:
        (mnt / ("n" * 256)).write_text("x")
    assert err.value.errno == errno.ENAMETOOLONG
    # a path of ~40 * 200 bytes, far beyond PATH_MAX, walked with dir fds
    comp = "d" * 200
    fd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(40):
            os.mkdir(comp, dir_fd=fd)
            nfd = os.open(comp, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        wfd = os.open("leaf", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd)
        os.write(wfd, b"deep")
        os.close(wfd)
    finally:
        os.close(fd)
    fd = os.open(b, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(40):
            nfd = os.open(comp, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        rfd = os.open("leaf", os.O_RDONLY, dir_fd=fd)
        assert os.read(rfd, 10) == b"deep"
        os.close(rfd)
    finally:
        os.close(fd)


def test_nothing_escapes_the_backing_tree(mounter, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    b, mnt = mounter.dirs()
    (b / "d").mkdir()
    os.symlink(str(outside / "precious"), b / "evil")
    mounter.mount("", b, mnt)
    # the daemon never follows a symlink itself: chmod/chown/utime/xattr act on the link
    os.chown(mnt / "evil", 4242, 4242, follow_symlinks=False)
    os.utime(mnt / "evil", ns=(1, 1), follow_symlinks=False)
    assert os.lstat(b / "evil").st_uid == 4242 and os.lstat(b / "evil").st_mtime_ns == 1
    assert os.stat(outside / "precious").st_mtime_ns != 1
    assert os.stat(outside / "precious").st_uid == 0
    # renaming out of the mount is a cross-device rename
    (mnt / "d" / "f").write_text("f")
    with pytest.raises(OSError) as err:
        os.rename(mnt / "d" / "f", outside / "stolen")
    assert err.value.errno == errno.EXDEV
    # a directory swapped for a symlink after lookup: the node keeps its own inode
    assert os.listdir(mnt / "d") == ["f"]
    os.rename(b / "d", b / "d.old")
    os.symlink(str(outside), b / "d")
    try:
        (mnt / "d" / "created").write_text("c")
    except OSError:
        pass  # the kernel may have revalidated and now sees the symlink: also fine
    assert not (outside / "created").exists() or os.path.islink(mnt / "d")
    # names with '..' or '/' cannot reach the daemon; lookups of '..' stay in the kernel
    assert os.path.realpath(mnt / "..") == os.path.realpath(mnt.parent)


def test_as_non_root_user(mounter):
    b, mnt = mounter.dirs()
    (b / "secret").write_text("root only")
    os.chmod(b / "secret", 0o600)
    (b / "public").write_text("everyone")
    (b / "shared").mkdir(mode=0o2777)
    os.chmod(b / "shared", 0o2777)
    os.chown(b / "shared", 0, 4321)
    mounter.mount("", b, mnt, options="allow_other")
    assert errno_as(1000, 1000, f"r = open({str(mnt / 'secret')!r}).read()") == "EACCES"
    assert errno_as(1000, 1000, f"r = open({str(mnt / 'public')!r}).read()") == "everyone"
    assert errno_as(1000, 1000, f"os.unlink({str(mnt / 'public')!r}); r = 'ok'") == "EACCES"
    r = errno_as(1000, 1000, f"""
        p = {str(mnt / 'shared' / 'mine')!r}
        os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644))
        st = os.stat(p)
        r = [st.st_uid, st.st_gid]
    """)
    assert r == [1000, 4321]  # owned by the caller; group from the setgid directory
    st = os.stat(b / "shared" / "mine")
    assert (st.st_uid, st.st_gid) == (1000, 4321)
    assert errno_as(1000, 1000, f"os.chown({str(mnt / 'shared' / 'mine')!r}, 0, 0); r = 'ok'") == "EPERM"


def test_mount_errors(mounter, tmp_path):
    b, mnt = mounter.dirs()
    proc = fdsl("mount", "", tmp_path / "missing", mnt)
    assert proc.returncode != 0 and "does not exist" in proc.stderr
    proc = fdsl("mount", "", b, tmp_path / "nomnt")
    assert proc.returncode != 0 and "does not exist" in proc.stderr
    mounter.mount("", b, mnt)
    proc = fdsl("mount", "", b, mnt)
    assert proc.returncode != 0 and "busy" in proc.stderr
    proc = fdsl("umount", mnt)
    assert proc.returncode == 0 and not is_mounted(mnt)
