"""POSIX conformance of a mount, as root: the mount must behave exactly like
its backing filesystem (see tests/posix_fixtures.py for the method).

Each test runs the same operation in a plain directory (the oracle) and
through the mount, then compares outcomes, the resulting backing trees and
what the mount reports about them (times included).
"""
from __future__ import annotations

import errno
import mmap
import os
import stat
import time
from pathlib import Path

import pytest

pytest.register_assert_rewrite("posix_fixtures")

from posix_fixtures import (  # noqa: E402
    POSIX_MARKS, RENAME_EXCHANGE, access_result, attempt, RENAME_NOREPLACE, SEEK_DATA, SEEK_HOLE, entry_state, renameat2,
    utimensat, value_of,
)

pytest_plugins = ["posix_fixtures"]

pytestmark = POSIX_MARKS


def write_file(path, data: bytes = b"", mode: int = 0o644) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, mode)


def read_file(path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def st_now(path, follow: bool = True) -> dict:
    """stat with times, for comparing the mount's view with the backing file."""
    return entry_state(os.stat(path, follow_symlinks=follow), times=True)


def assert_view_matches_backing(ws, seen: dict[str, dict], what: str) -> None:
    """`seen`: {relative name: st_now() taken through the mount right after an
    operation}; each must equal a stat of the backing file now."""
    def backing_stats(d):
        return {rel: st_now(d / rel if rel != "." else d, follow=False) for rel in seen}
    backing = value_of(ws.run(backing_stats, "backing"), "stat of the backing files")
    for rel in seen:
        assert seen[rel] == backing[rel], (
            f"[{ws.impl}] stat of {rel!r} through the mount right after {what} is stale:\n"
            f"  mount:   {seen[rel]}\n  backing: {backing[rel]}")


UMASKS = [0o022, 0o077, 0o002, 0o000, 0o027]
UMASK_IDS = [f"umask{u:03o}" for u in UMASKS]


# ---------------------------------------------------------------------------
# creating objects: owner, mode, umask
# ---------------------------------------------------------------------------

FILE_MODES = [0o666, 0o644, 0o600, 0o755, 0o000, 0o777, 0o123]
SPECIAL_FILE_MODES = [0o4755, 0o2755, 0o1777, 0o7777, 0o6711]
BINDFS_SPECIAL_BITS = "bindfs drops setuid/setgid/sticky bits from the mode of new files and directories"


@pytest.mark.parametrize("special", [False, True], ids=["rwx", "special_bits"])
@pytest.mark.parametrize("umask", UMASKS, ids=UMASK_IDS)
def test_open_creat_honours_mode_and_umask(ws, umask, special):
    modes = SPECIAL_FILE_MODES if special else FILE_MODES
    if special:
        ws.xfail_on("bindfs", BINDFS_SPECIAL_BITS)

    def op(d: Path):
        made = {}
        for mode in modes:
            fd = os.open(d / f"f{mode:o}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
            try:
                st = os.fstat(fd)
                made[oct(mode)] = (oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid)
            finally:
                os.close(fd)
        return made

    ws.compare(op, umask=umask, what="open(O_CREAT) with modes " + ", ".join(map(oct, modes)))


@pytest.mark.parametrize("special", [False, True], ids=["rwx", "special_bits"])
@pytest.mark.parametrize("umask", UMASKS, ids=UMASK_IDS)
def test_mkdir_honours_mode_and_umask(ws, umask, special):
    modes = (0o1777, 0o2775, 0o4755, 0o7777) if special else (0o777, 0o755, 0o700, 0o000, 0o751)
    if special:
        ws.xfail_on("bindfs", BINDFS_SPECIAL_BITS)

    def op(d: Path):
        for mode in modes:
            os.mkdir(d / f"d{mode:o}", mode)
        return {n: oct(stat.S_IMODE(os.stat(d / n).st_mode)) for n in sorted(os.listdir(d))}

    ws.compare(op, umask=umask, what="mkdir with modes")


@pytest.mark.parametrize("umask", UMASKS, ids=UMASK_IDS)
def test_mknod_fifo_and_devices_honour_mode_and_umask(ws, umask):
    def op(d: Path):
        os.mkfifo(d / "fifo666", 0o666)
        os.mknod(d / "fifo640", stat.S_IFIFO | 0o640)
        os.mknod(d / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.mknod(d / "blk", stat.S_IFBLK | 0o600, os.makedev(7, 200))
        os.mknod(d / "reg", stat.S_IFREG | 0o751)
        os.mknod(d / "sock", stat.S_IFSOCK | 0o777)
        return {n: oct(os.lstat(d / n).st_mode) for n in sorted(os.listdir(d))}

    ws.compare(op, umask=umask, what="mknod")


def test_creat_existing_keeps_mode_and_owner(ws):
    ws.setup(lambda d: (write_file(d / "f", b"old", 0o640), os.chown(d / "f", 4321, 5432)))

    def op(d: Path):
        fd = os.open(d / "f", os.O_CREAT | os.O_WRONLY, 0o777)
        os.close(fd)
        st = os.stat(d / "f")
        return oct(st.st_mode), st.st_uid, st.st_gid, st.st_size

    ws.compare(op, what="open(O_CREAT) of an existing file")


# ---------------------------------------------------------------------------
# names and paths
# ---------------------------------------------------------------------------

def test_255_byte_names_work_and_256_are_refused(ws):
    n255 = "n" * 250 + ".txt_"
    assert len(n255) == 255
    utf = "é" * 127 + "x"          # 255 bytes of UTF-8
    assert len(utf.encode()) == 255

    def op(d: Path):
        out = {}
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            out["create255"] = attempt(lambda: os.close(os.open(n255, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd)))
            out["stat255"] = attempt(lambda: os.stat(n255, dir_fd=fd).st_size)
            out["mkdir255"] = attempt(os.mkdir, "D" * 255, dir_fd=fd)
            out["symlink255"] = attempt(os.symlink, "T" * 255, "L" * 255, dir_fd=fd)
            out["readlink255"] = attempt(os.readlink, "L" * 255, dir_fd=fd)
            out["link255"] = attempt(os.link, n255, "K" * 255, src_dir_fd=fd, dst_dir_fd=fd)
            out["rename255"] = attempt(os.rename, "K" * 255, "R" * 255, src_dir_fd=fd, dst_dir_fd=fd)
            out["utf8_255"] = attempt(lambda: os.close(os.open(utf, os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=fd)))
            out["setxattr255"] = attempt(os.setxattr, f"/proc/self/fd/{fd}/{n255}", "user.k", b"v")
            out["create256"] = attempt(lambda: os.close(os.open("x" * 256, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd)))
            out["mkdir256"] = attempt(os.mkdir, "y" * 256, dir_fd=fd)
            out["stat256"] = attempt(os.stat, "z" * 256, dir_fd=fd)
            out["rename_to_256"] = attempt(os.rename, n255, "w" * 256, src_dir_fd=fd, dst_dir_fd=fd)
            out["listing"] = sorted(len(n) for n in os.listdir(fd))
        finally:
            os.close(fd)
        return out

    ws.compare(op, what="255/256-byte names")


DEPTH = 100


def test_deep_chain_of_255_byte_directories(ws):
    """A 100-level chain of 255-byte names (a 25.6 KB path), walked with dir fds."""
    ws.xfail_on("bindfs", "bindfs works on full paths and fails beyond PATH_MAX with ENAMETOOLONG")
    names = [f"{i:03d}" + "d" * 252 for i in range(DEPTH)]

    def op(d: Path):
        fds = [os.open(d, os.O_RDONLY | os.O_DIRECTORY)]
        try:
            for name in names:
                os.mkdir(name, 0o755, dir_fd=fds[-1])
                fds.append(os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
            bottom = fds[-1]
            fd = os.open("f" * 255, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o640, dir_fd=bottom)
            os.write(fd, b"deep data\n")
            os.close(fd)
            os.rename("f" * 255, "g" * 255, src_dir_fd=bottom, dst_dir_fd=bottom)
            os.symlink("g" * 255, "s" * 255, dir_fd=bottom)
            st = os.stat("s" * 255, dir_fd=bottom)
            listing = sorted(n[:1] for n in os.listdir(bottom))
            # walk down again from the top with fresh lookups
            walk = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
            for name in names:
                nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=walk)
                os.close(walk)
                walk = nxt
            rfd = os.open("g" * 255, os.O_RDONLY, dir_fd=walk)
            data = os.read(rfd, 100)
            os.close(rfd)
            os.close(walk)
            # remove one level in the middle: rmdir of a non-empty dir must fail
            middle = attempt(os.rmdir, names[51], dir_fd=fds[51])
            return {"size": st.st_size, "mode": oct(st.st_mode), "listing": listing,
                    "data": data, "rmdir_nonempty": middle}
        finally:
            for fd in fds:
                os.close(fd)

    ws.compare(op, what=f"{DEPTH}-level chain of 255-byte directory names")


def test_odd_names(ws):
    names = [b"with space", b"new\nline", b"tab\tname", b"\xff\xfe\x80raw", b"-dash", b"...",
             b"..a", b" lead", b"trail ", b"\xe2\x98\x83snow", b"back\\slash", b"q\"uote'",
             b"\x01ctl", b"*?[glob]"]

    def op(d: Path):
        db = os.fsencode(d)
        out = {}
        for n in names:
            out[n] = attempt(lambda: os.close(os.open(db + b"/" + n, os.O_CREAT | os.O_WRONLY, 0o600)))
            os.mkdir(db + b"/dir_" + n)
            os.rename(db + b"/dir_" + n, db + b"/ren_" + n)
        out["stat"] = [attempt(lambda: os.stat(db + b"/" + n).st_mode) for n in names]
        out["listing"] = sorted(os.listdir(db))
        return out

    ws.compare(op, what="names with spaces, newlines and non-UTF-8 bytes")


# ---------------------------------------------------------------------------
# times
# ---------------------------------------------------------------------------

T_A = 1_000_000_000_123_456_789        # 2001, odd nanoseconds
T_M = 1_100_000_000_987_654_321        # 2004
T_NEW = 1_700_000_000_000_000_001


def _prepare_times(d: Path) -> None:
    write_file(d / "f", b"data", 0o644)
    os.utime(d / "f", ns=(T_A, T_M))
    os.symlink("f", d / "ln")
    os.utime(d / "ln", ns=(T_A, T_M), follow_symlinks=False)


UTIMENSAT_CASES = {
    "omit_atime_set_mtime": (None, T_NEW),
    "set_atime_omit_mtime": (T_NEW, None),
    "omit_both": (None, None),
    "now_mtime_omit_atime": (None, "now"),
    "now_atime_omit_mtime": ("now", None),
    "now_both": ("now", "now"),
    "set_both": (T_NEW, T_NEW + 7),
    "pre_epoch": (-86_400_000_000_123, -1_000_000_000),
    "year_2200": (7_258_118_400_000_000_000, 7_258_118_400_999_999_999),
}


@pytest.mark.parametrize("follow", [True, False], ids=["file", "symlink_nofollow"])
@pytest.mark.parametrize("case", list(UTIMENSAT_CASES))
def test_utimensat_omit_and_now(ws, case, follow):
    atime, mtime = UTIMENSAT_CASES[case]
    ws.setup(_prepare_times)
    target = "f" if follow else "ln"
    if (atime is None) != (mtime is None):
        ws.xfail_on("bindfs", "a utimensat with one side UTIME_OMIT changes nothing at all")

    def op(d: Path):
        p = d / target
        before = os.stat(p, follow_symlinks=False)  # also primes the attribute cache
        time.sleep(0.02)
        t0 = time.time_ns()
        utimensat(p, atime, mtime, follow_symlinks=follow)
        t1 = time.time_ns()
        st = os.stat(p, follow_symlinks=False)
        slack = 50_000_000  # coarse kernel clock

        def describe(value, requested):
            if requested == "now":
                return "now" if t0 - slack <= value <= t1 + slack else f"not now: {value}"
            return value

        return {
            "atime": describe(st.st_atime_ns, atime),
            "mtime": describe(st.st_mtime_ns, mtime),
            "ctime_changed": st.st_ctime_ns != before.st_ctime_ns,
            # the file behind the symlink must be untouched by AT_SYMLINK_NOFOLLOW
            "file_times": (describe(os.stat(d / "f").st_atime_ns, atime if follow else T_A),
                           describe(os.stat(d / "f").st_mtime_ns, mtime if follow else T_M)),
        }

    ws.compare(op, what=f"utimensat({case}) on {'the file' if follow else 'a symlink (AT_SYMLINK_NOFOLLOW)'}")


def test_write_updates_mtime_ctime_and_size_immediately(ws):
    ws.setup(lambda d: (write_file(d / "f", b"x" * 10), os.utime(d / "f", ns=(T_A, T_M))))

    def op(d: Path):
        p = d / "f"
        os.stat(p)
        fd = os.open(p, os.O_WRONLY)
        os.pwrite(fd, b"y" * 5000, 100)
        while_open = st_now(p)
        os.fsync(fd)
        os.close(fd)
        return {"while_open_size": while_open["size"],
                "mtime_changed": while_open["mtime_ns"] != T_M,
                "after": st_now(p), "dir": st_now(d)}

    seen = value_of(ws.run(op), "write through the mount")
    assert seen["while_open_size"] == 5100, f"[{ws.impl}] size seen while the file is open: {seen}"
    assert seen["mtime_changed"], f"[{ws.impl}] mtime unchanged after a write: {seen}"
    assert_view_matches_backing(ws, {"f": seen["after"], ".": seen["dir"]}, "a write")


# ---------------------------------------------------------------------------
# link counts and ctime right after link / unlink / rename
# ---------------------------------------------------------------------------

BINDFS_STALE = ("high-level libfuse gives every name its own node and caches attributes for 1 s: "
                "the other names of a file show stale link counts and ctime")


def test_link_and_unlink_update_nlink_and_ctime(ws):
    ws.xfail_on("bindfs", BINDFS_STALE, timing=True)
    ws.setup(lambda d: (write_file(d / "f", b"data"), os.mkdir(d / "sub")))

    def op(d: Path):
        views = []
        os.stat(d / "f"), os.stat(d)
        time.sleep(0.02)
        os.link(d / "f", d / "sub" / "g")
        views.append(("link", {"f": st_now(d / "f"), "sub/g": st_now(d / "sub" / "g"), "sub": st_now(d / "sub")}))
        time.sleep(0.02)
        os.link(d / "sub" / "g", d / "h")
        views.append(("second link", {"f": st_now(d / "f"), ".": st_now(d)}))
        time.sleep(0.02)
        os.unlink(d / "sub" / "g")
        views.append(("unlink", {"f": st_now(d / "f"), "h": st_now(d / "h"), "sub": st_now(d / "sub")}))
        return views

    views = value_of(ws.run(op), "link/unlink through the mount")
    # the last view must equal the backing files now; earlier ones are checked for nlink
    for what, seen in views[:-1]:
        nlinks = {rel: s["nlink"] for rel, s in seen.items() if rel not in (".", "sub")}
        expected = 2 if what == "link" else 3
        assert set(nlinks.values()) == {expected}, (
            f"[{ws.impl}] after {what} through the mount, link counts seen: {nlinks}, expected {expected}")
    assert_view_matches_backing(ws, views[-1][1], "link, link, unlink")
    assert views[-1][1]["f"]["nlink"] == 2
    assert views[0][1]["f"]["ctime_ns"] != views[-1][1]["f"]["ctime_ns"], "ctime must change on unlink"


def test_rename_updates_ctime_and_replaced_file_nlink(ws):
    ws.xfail_on("bindfs", BINDFS_STALE, timing=True)
    def prepare(d: Path):
        write_file(d / "src", b"source")
        write_file(d / "dst", b"replaced")
        os.link(d / "dst", d / "dst_other_link")

    ws.setup(prepare)

    def op(d: Path):
        for n in ("src", "dst", "dst_other_link"):
            os.stat(d / n)
        time.sleep(0.02)
        os.rename(d / "src", d / "dst")
        return {"dst": st_now(d / "dst"), "dst_other_link": st_now(d / "dst_other_link"),
                ".": st_now(d), "src_gone": attempt(os.stat, d / "src"),
                "content": read_file(d / "dst")}

    seen = value_of(ws.run(op), "rename over a file through the mount")
    assert seen["src_gone"] == "ENOENT", f"[{ws.impl}] old name still there: {seen['src_gone']}"
    assert seen["content"] == b"source"
    assert seen["dst_other_link"]["nlink"] == 1, (
        f"[{ws.impl}] the replaced file's other link should have nlink 1: {seen['dst_other_link']}")
    assert_view_matches_backing(ws, {k: seen[k] for k in ("dst", "dst_other_link", ".")},
                                "rename over a file")


def test_unlink_of_open_file(ws):
    """The open file stays readable, fstat says nlink 0, and no stray
    (.fuse_hidden*) names appear in the directory."""
    ws.setup(lambda d: write_file(d / "f", b"still here"))

    def op(d: Path):
        fd = os.open(d / "f", os.O_RDWR)
        try:
            os.unlink(d / "f")
            os.pwrite(fd, b"STILL", 0)
            return {"nlink": os.fstat(fd).st_nlink, "data": os.pread(fd, 100, 0),
                    "listing": sorted(os.listdir(d)), "stat": attempt(os.stat, d / "f")}
        finally:
            os.close(fd)

    ws.xfail_on("bindfs", "high-level libfuse renames open unlinked files to .fuse_hidden* (no hard_remove)")
    ws.compare(op, what="unlink of an open file")


# ---------------------------------------------------------------------------
# rename
# ---------------------------------------------------------------------------

def _prepare_rename(d: Path) -> None:
    write_file(d / "f1", b"one")
    write_file(d / "f2", b"two")
    os.link(d / "f2", d / "f2b")
    os.mkdir(d / "d1")
    os.mkdir(d / "d2")
    os.mkdir(d / "d3")
    write_file(d / "d3" / "inside", b"x")
    os.symlink("f1", d / "s1")


RENAME_CASES = {
    "file_over_file": ("f1", "f2"),
    "file_to_new_name": ("f1", "new"),
    "file_into_dir": ("f1", "d1/f1"),
    "dir_over_empty_dir": ("d1", "d2"),
    "dir_over_nonempty_dir": ("d1", "d3"),
    "file_over_dir": ("f1", "d1"),
    "dir_over_file": ("d1", "f1"),
    "dir_into_itself": ("d1", "d1/sub"),
    "same_name": ("f1", "f1"),
    "hard_links_of_same_file": ("f2", "f2b"),
    "missing_source": ("nope", "f1"),
    "symlink_over_file": ("s1", "f2"),
    "nonempty_dir_to_new_name": ("d3", "d4"),
    "dir_over_its_parent_dot": ("d3/inside", "d3"),
}


@pytest.mark.parametrize("case", list(RENAME_CASES))
def test_rename(ws, case):
    src, dst = RENAME_CASES[case]
    ws.setup(_prepare_rename)
    if case in ("file_over_file", "symlink_over_file"):
        ws.xfail_on("bindfs", BINDFS_STALE, timing=True)

    def op(d: Path):
        for n in ("f1", "f2", "f2b", "d1", "d2", "d3"):
            os.lstat(d / n)
        return attempt(os.rename, d / src, d / dst)

    ws.compare(op, what=f"rename({src!r}, {dst!r})")


RENAMEAT2_CASES = {
    "noreplace_existing": ("f1", "f2", RENAME_NOREPLACE),
    "noreplace_new": ("f1", "new", RENAME_NOREPLACE),
    "exchange_files": ("f1", "f2", RENAME_EXCHANGE),
    "exchange_file_dir": ("f1", "d3", RENAME_EXCHANGE),
    "exchange_missing": ("f1", "missing", RENAME_EXCHANGE),
    "both_flags": ("f1", "f2", RENAME_EXCHANGE | RENAME_NOREPLACE),
}


def _renameat2_supported(d: Path) -> bool:
    write_file(d / ".probe_a")
    write_file(d / ".probe_b")
    try:
        renameat2(d / ".probe_a", d / ".probe_b", RENAME_EXCHANGE)
        return True
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            return False
        raise
    finally:
        os.unlink(d / ".probe_a")
        os.unlink(d / ".probe_b")


@pytest.mark.parametrize("case", list(RENAMEAT2_CASES))
def test_renameat2_flags(ws, case):
    if not value_of(ws.run(_renameat2_supported, "plain"), "renameat2 probe"):
        pytest.skip("the backing filesystem does not support renameat2 flags")
    src, dst, flags = RENAMEAT2_CASES[case]
    ws.setup(_prepare_rename)
    if case in ("noreplace_new", "exchange_files", "exchange_file_dir"):
        ws.xfail_on("bindfs", "bindfs refuses every renameat2 flag with EINVAL")

    def op(d: Path):
        result = attempt(renameat2, d / src, d / dst, flags)
        return result, {n: attempt(read_file, d / n) for n in ("f1", "f2", "new")}

    ws.compare(op, what=f"renameat2({src!r}, {dst!r}, flags={flags})")


# ---------------------------------------------------------------------------
# open flags, truncation, sparse files
# ---------------------------------------------------------------------------

def test_o_append(ws):
    ws.setup(lambda d: write_file(d / "f", b"0123456789"))

    def op(d: Path):
        p = d / "f"
        fd = os.open(p, os.O_WRONLY | os.O_APPEND)
        fd2 = os.open(p, os.O_WRONLY | os.O_APPEND)
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, b"AB")
            pos = os.lseek(fd, 0, os.SEEK_CUR)
            os.write(fd2, b"cd")
            os.write(fd, b"EF")
            os.pwrite(fd, b"XY", 0)      # Linux: pwrite on O_APPEND appends
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
            os.close(fd2)
        return {"pos": pos, "size": size, "content": read_file(p)}

    ws.compare(op, what="O_APPEND writes")


def test_o_trunc_and_o_excl(ws):
    def prepare(d: Path):
        write_file(d / "full", b"x" * 5000)
        write_file(d / "full_ro", b"y" * 100)
        os.symlink("nowhere", d / "dangling")
        os.symlink("made_by_creat", d / "dangling2")
        os.mkdir(d / "dir")

    ws.setup(prepare)

    def op(d: Path):
        out = {}

        def opened(path, flags, mode=0o644):
            fd = os.open(path, flags, mode)
            try:
                return os.fstat(fd).st_size
            finally:
                os.close(fd)

        out["trunc_wronly"] = attempt(opened, d / "full", os.O_WRONLY | os.O_TRUNC)
        out["size_after_trunc"] = os.stat(d / "full").st_size
        out["trunc_rdonly"] = attempt(opened, d / "full_ro", os.O_RDONLY | os.O_TRUNC)
        out["excl_new"] = attempt(opened, d / "new", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        out["excl_existing"] = attempt(opened, d / "full", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        out["excl_dangling_symlink"] = attempt(opened, d / "dangling", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        out["excl_dir"] = attempt(opened, d / "dir", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        out["creat_through_dangling"] = attempt(opened, d / "dangling2", os.O_CREAT | os.O_WRONLY)
        out["creat_on_dir"] = attempt(opened, d / "dir", os.O_CREAT | os.O_WRONLY)
        out["wronly_dir"] = attempt(opened, d / "dir", os.O_WRONLY)
        out["directory_flag_on_file"] = attempt(opened, d / "full", os.O_RDONLY | os.O_DIRECTORY)
        out["nofollow_symlink"] = attempt(opened, d / "dangling", os.O_RDONLY | os.O_NOFOLLOW)
        out["nofollow_regular_file"] = attempt(opened, d / "full_ro", os.O_RDONLY | os.O_NOFOLLOW)
        out["nofollow_dir"] = attempt(opened, d / "dir", os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY)
        out["missing"] = attempt(opened, d / "missing", os.O_RDONLY)
        out["missing_parent"] = attempt(opened, d / "missing" / "x", os.O_CREAT | os.O_WRONLY)
        out["file_as_dir"] = attempt(opened, d / "full" / "x", os.O_RDONLY)
        return out

    ws.compare(op, what="O_TRUNC / O_EXCL / open errors")


def test_truncate_and_ftruncate(ws):
    ws.setup(lambda d: (write_file(d / "f", bytes(range(256)) * 40), os.mkdir(d / "dir")))

    def op(d: Path):
        p = d / "f"
        out = {}
        os.stat(p)
        out["shrink"] = attempt(os.truncate, p, 1000)
        out["size1"] = os.stat(p).st_size
        out["grow"] = attempt(os.truncate, p, 70000)
        out["size2"] = os.stat(p).st_size
        fd = os.open(p, os.O_RDWR)
        out["ftruncate"] = attempt(os.ftruncate, fd, 12345)
        out["fsize"] = os.fstat(fd).st_size
        out["tail"] = os.pread(fd, 20, 12335)
        out["read_past_end"] = os.pread(fd, 10, 20000)
        os.close(fd)
        ro = os.open(p, os.O_RDONLY)
        out["ftruncate_rdonly"] = attempt(os.ftruncate, ro, 0)
        os.close(ro)
        out["truncate_dir"] = attempt(os.truncate, d / "dir", 0)
        out["truncate_negative"] = attempt(os.truncate, p, -1)
        out["truncate_missing"] = attempt(os.truncate, d / "missing", 0)
        return out

    ws.compare(op, what="truncate/ftruncate")


def test_sparse_file_and_seeks(ws):
    ws.xfail_on("bindfs", "bindfs has no lseek handler: SEEK_HOLE/SEEK_DATA see the file as all data")
    ws.xfail_on("pyfuse3", "pyfuse3 does not deliver FUSE_LSEEK (README: Known gaps)")
    def op(d: Path):
        fd = os.open(d / "sparse", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            os.pwrite(fd, b"start", 0)
            os.pwrite(fd, b"end", 8 * 1024 * 1024)
            os.fsync(fd)
            st = os.fstat(fd)
            out = {
                "size": st.st_size,
                "sparse": st.st_blocks * 512 < st.st_size // 4,
                "hole_reads_zero": os.pread(fd, 4096, 4 * 1024 * 1024) == bytes(4096),
                "seek_end": os.lseek(fd, 0, os.SEEK_END),
                "seek_past_end": os.lseek(fd, 100, os.SEEK_END),
                "seek_data_0": attempt(os.lseek, fd, 0, SEEK_DATA),
                "seek_hole_0": attempt(os.lseek, fd, 0, SEEK_HOLE),
                "seek_data_mid": attempt(os.lseek, fd, 4 * 1024 * 1024, SEEK_DATA),
                "seek_data_past_eof": attempt(os.lseek, fd, 9 * 1024 * 1024, SEEK_DATA),
                "seek_negative": attempt(os.lseek, fd, -1, os.SEEK_SET),
            }
            os.pwrite(fd, b"!", 20 * 1024 * 1024)  # write after a seek past the end
            out["size_after_far_write"] = os.fstat(fd).st_size
            return out
        finally:
            os.close(fd)

    ws.compare(op, what="sparse file, SEEK_DATA/SEEK_HOLE")
    blocks = value_of(ws.run(lambda d: os.stat(d / "sparse").st_blocks, "backing"))
    seen = value_of(ws.run(lambda d: os.stat(d / "sparse").st_blocks, "mnt"))
    assert seen == blocks, f"[{ws.impl}] st_blocks through the mount {seen} != backing {blocks}"


def test_posix_fallocate_and_mmap(ws):
    ws.setup(lambda d: write_file(d / "m", b"\0" * 8192))

    def op(d: Path):
        out = {}
        fd = os.open(d / "a", os.O_CREAT | os.O_RDWR, 0o644)
        out["fallocate"] = attempt(os.posix_fallocate, fd, 0, 1 << 20)
        out["size"] = os.fstat(fd).st_size
        os.close(fd)
        fd = os.open(d / "m", os.O_RDWR)
        with mmap.mmap(fd, 8192, mmap.MAP_SHARED) as mm:
            mm[100:105] = b"hello"
            mm[5000:5003] = b"abc"
            mm.flush()
        out["pread_after_mmap"] = os.pread(fd, 5, 100)
        os.close(fd)
        return out

    ws.compare(op, what="posix_fallocate and MAP_SHARED writes")


def test_large_read_write_roundtrip(ws):
    payload = os.urandom(3 * 1024 * 1024 + 123)

    def op(d: Path):
        fd = os.open(d / "big", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
            os.pwrite(fd, b"PATCH", 1_000_000)
            os.fdatasync(fd)
            chunks = [os.pread(fd, 65536, off) for off in range(0, len(payload), 65536)]
            return {"equal": b"".join(chunks) == payload[:1_000_000] + b"PATCH" + payload[1_000_005:],
                    "size": os.fstat(fd).st_size}
        finally:
            os.close(fd)

    ws.compare(op, what="3 MiB write/read round trip")


# ---------------------------------------------------------------------------
# directories
# ---------------------------------------------------------------------------

N_ENTRIES = 3000


def _odd(i: int) -> bytes:
    kinds = [b"plain%d", b"with space %d", b"new\nline%d", b"\xff\xfe%d", b"\xe2\x98\x83%d",
             b"%d" + b"L" * 240]
    return kinds[i % len(kinds)] % i


def test_readdir_of_a_large_directory(ws):
    def prepare(d: Path):
        db = os.fsencode(d / "big")
        os.mkdir(db)
        for i in range(N_ENTRIES):
            if i % 97 == 0:
                os.mkdir(db + b"/" + _odd(i))
            elif i % 89 == 0:
                os.symlink(b"target", db + b"/" + _odd(i))
            else:
                os.close(os.open(db + b"/" + _odd(i), os.O_CREAT | os.O_WRONLY, 0o644))

    ws.setup(prepare)

    def op(d: Path):
        db = os.fsencode(d / "big")
        for i in range(200):   # entries created through the mount right before listing
            os.close(os.open(db + b"/new%d \n\xfe" % i, os.O_CREAT | os.O_WRONLY, 0o600))
        for i in range(0, N_ENTRIES, 5):
            name = db + b"/" + _odd(i)
            if i % 97 and i % 89:
                os.unlink(name)
        names = os.listdir(db)
        with os.scandir(db) as it:
            kinds = sorted((e.name, e.is_dir(follow_symlinks=False), e.is_symlink()) for e in it)
        return {"count": len(names), "unique": len(set(names)), "names": sorted(names),
                "kinds": kinds}

    got = ws.compare(op, state=False, what=f"readdir of a directory with {N_ENTRIES} entries")
    assert got[1]["count"] == got[1]["unique"], f"[{ws.impl}] duplicate names in readdir"


def test_directory_errors(ws):
    def prepare(d: Path):
        os.mkdir(d / "full")
        write_file(d / "full" / "x")
        os.mkdir(d / "empty")
        write_file(d / "file")
        os.symlink("empty", d / "link_to_dir")

    ws.setup(prepare)

    def op(d: Path):
        return {
            "rmdir_nonempty": attempt(os.rmdir, d / "full"),
            "rmdir_file": attempt(os.rmdir, d / "file"),
            "rmdir_symlink": attempt(os.rmdir, d / "link_to_dir"),
            "rmdir_dot": attempt(os.rmdir, os.path.join(d / "empty", ".")),
            "unlink_dir": attempt(os.unlink, d / "empty"),
            "unlink_missing": attempt(os.unlink, d / "missing"),
            "mkdir_existing": attempt(os.mkdir, d / "file"),
            "mkdir_existing_dir": attempt(os.mkdir, d / "full"),
            "mkdir_in_file": attempt(os.mkdir, d / "file" / "sub"),
            "listdir_file": attempt(os.listdir, d / "file"),
            "rmdir_empty": attempt(os.rmdir, d / "empty"),
            "stat_after_rmdir": attempt(os.stat, d / "empty"),
            "dangling_now": attempt(os.stat, d / "link_to_dir"),
            "mkdir_again": attempt(os.mkdir, d / "empty"),
        }

    ws.compare(op, what="directory error cases")


# ---------------------------------------------------------------------------
# symlinks and hard links
# ---------------------------------------------------------------------------

def test_symlinks(ws):
    long_target = "t" * 4095

    def prepare(d: Path):
        write_file(d / "target", b"target data", 0o640)
        os.mkdir(d / "sub")
        write_file(d / "sub" / "inner", b"inner")
        for name, target in {"ln": "target", "dangling": "nowhere", "dirln": "sub",
                             "abs": "/nonexistent-fdsl-posix/x", "loop1": "loop2",
                             "loop2": "loop1", "chain": "ln", "long": long_target,
                             "dotdot": "sub/../target", "self": "self"}.items():
            os.symlink(target, d / name)

    ws.setup(prepare)
    names = ["ln", "dangling", "dirln", "abs", "loop1", "chain", "long", "dotdot", "self", "target"]

    def op(d: Path):
        out = {}
        for n in names:
            p = d / n
            out[n] = {
                "readlink": attempt(os.readlink, p),
                "lstat": attempt(lambda: oct(os.lstat(p).st_mode)),
                "lstat_size": attempt(lambda: os.lstat(p).st_size),
                "stat": attempt(lambda: oct(os.stat(p).st_mode)),
                "read": attempt(read_file, p),
            }
        out["through_dirln"] = attempt(read_file, d / "dirln" / "inner")
        out["new_symlink"] = attempt(os.symlink, "target", d / "made")
        out["new_symlink_mode"] = oct(os.lstat(d / "made").st_mode)
        out["symlink_exists"] = attempt(os.symlink, "x", d / "ln")
        out["symlink_empty_target"] = attempt(os.symlink, "", d / "empty_target")
        out["readlink_file"] = attempt(os.readlink, d / "target")
        out["lchown"] = attempt(os.chown, d / "ln", 1234, 2345, follow_symlinks=False)
        out["target_owner_after_lchown"] = (os.stat(d / "target").st_uid, os.stat(d / "target").st_gid)
        return out

    ws.compare(op, what="symlink behaviour")


def test_hard_links(ws):
    ws.xfail_on("bindfs", BINDFS_STALE, timing=True)
    def prepare(d: Path):
        write_file(d / "f", b"linked")
        os.mkdir(d / "dir")
        os.symlink("f", d / "sym")

    ws.setup(prepare)

    def op(d: Path):
        out = {
            "link": attempt(os.link, d / "f", d / "g"),
            "link_to_existing": attempt(os.link, d / "f", d / "dir"),
            "link_dir": attempt(os.link, d / "dir", d / "dir2"),
            "link_missing": attempt(os.link, d / "missing", d / "x"),
            "link_symlink_itself": attempt(os.link, d / "sym", d / "sym_hard", follow_symlinks=False),
            "link_symlink_target": attempt(os.link, d / "sym", d / "f_via_sym", follow_symlinks=True),
        }
        st_f, st_g = os.stat(d / "f"), os.stat(d / "g")
        out["same_inode"] = st_f.st_ino == st_g.st_ino
        out["nlink"] = (st_f.st_nlink, st_g.st_nlink)
        out["sym_hard_is_symlink"] = stat.S_ISLNK(os.lstat(d / "sym_hard").st_mode)
        with open(d / "g", "r+b") as fh:
            fh.write(b"LINKED")
        out["content_via_other_name"] = read_file(d / "f")
        return out

    ws.compare(op, what="hard links")


# ---------------------------------------------------------------------------
# xattrs
# ---------------------------------------------------------------------------

def test_user_xattrs(ws):
    def prepare(d: Path):
        write_file(d / "f", b"x")
        os.mkdir(d / "dir")
        os.symlink("f", d / "ln")

    ws.setup(prepare)

    def op(d: Path):
        p = d / "f"
        out = {
            "set": attempt(os.setxattr, p, "user.one", b"1"),
            "set_empty": attempt(os.setxattr, p, "user.empty", b""),
            "set_big": attempt(os.setxattr, p, "user.big", b"B" * 4000),
            "set_binary": attempt(os.setxattr, p, "user.bin", bytes(range(256))),
            "set_long_name": attempt(os.setxattr, p, "user." + "n" * 250, b"long"),
            "set_too_long_name": attempt(os.setxattr, p, "user." + "n" * 251, b"x"),
            "create_existing": attempt(os.setxattr, p, "user.one", b"2", os.XATTR_CREATE),
            "replace_missing": attempt(os.setxattr, p, "user.none", b"2", os.XATTR_REPLACE),
            "replace_existing": attempt(os.setxattr, p, "user.one", b"11", os.XATTR_REPLACE),
            "get": attempt(os.getxattr, p, "user.one"),
            "get_empty": attempt(os.getxattr, p, "user.empty"),
            "get_big": attempt(lambda: len(os.getxattr(p, "user.big"))),
            "get_binary": attempt(os.getxattr, p, "user.bin"),
            "get_missing": attempt(os.getxattr, p, "user.missing"),
            "remove": attempt(os.removexattr, p, "user.bin"),
            "remove_missing": attempt(os.removexattr, p, "user.bin"),
            "list": sorted(n for n in os.listxattr(p) if n.startswith("user.")),
            "bad_namespace": attempt(os.setxattr, p, "bogus.x", b"1"),
            "dir_set": attempt(os.setxattr, d / "dir", "user.d", b"dir"),
            "dir_get": attempt(os.getxattr, d / "dir", "user.d"),
            "symlink_nofollow": attempt(os.setxattr, d / "ln", "user.s", b"s", follow_symlinks=False),
            "symlink_follow": attempt(os.setxattr, d / "ln", "user.via_link", b"v"),
            "trusted": attempt(os.setxattr, p, "trusted.fdsl", b"t"),
            "trusted_get": attempt(os.getxattr, p, "trusted.fdsl"),
        }
        fd = os.open(p, os.O_RDONLY)
        out["fget"] = attempt(os.getxattr, fd, "user.one")
        out["fset"] = attempt(os.setxattr, fd, "user.fd", b"fd")
        os.close(fd)
        return out

    ws.compare(op, what="user.* xattrs")


# ---------------------------------------------------------------------------
# special files, chmod, chown
# ---------------------------------------------------------------------------

def test_fifo_through_the_mount(ws):
    def op(d: Path):
        os.mkfifo(d / "fifo", 0o644)
        r = os.open(d / "fifo", os.O_RDONLY | os.O_NONBLOCK)
        w = os.open(d / "fifo", os.O_WRONLY | os.O_NONBLOCK)
        os.write(w, b"through the pipe")
        data = os.read(r, 100)
        os.close(w)
        os.close(r)
        no_reader = attempt(os.open, d / "fifo", os.O_WRONLY | os.O_NONBLOCK)
        return {"data": data, "writer_without_reader": no_reader,
                "mode": oct(os.stat(d / "fifo").st_mode)}

    ws.compare(op, what="FIFO created and used through the mount")


CHMOD_MODES = [0o000, 0o644, 0o755, 0o4755, 0o2755, 0o1777, 0o7777, 0o2745, 0o4000, 0o0001]


def test_chmod(ws):
    def prepare(d: Path):
        write_file(d / "f", b"x")
        os.mkdir(d / "dir")
        os.symlink("f", d / "ln")

    ws.setup(prepare)

    def op(d: Path):
        out = {}
        for mode in CHMOD_MODES:
            out[f"file{mode:o}"] = (attempt(os.chmod, d / "f", mode), oct(os.stat(d / "f").st_mode))
            out[f"dir{mode:o}"] = (attempt(os.chmod, d / "dir", mode), oct(os.stat(d / "dir").st_mode))
        out["through_symlink"] = attempt(os.chmod, d / "ln", 0o600)
        out["symlink_mode"] = oct(os.lstat(d / "ln").st_mode)
        fd = os.open(d / "f", os.O_RDONLY)
        out["fchmod"] = attempt(os.fchmod, fd, 0o640)
        out["fstat"] = oct(os.fstat(fd).st_mode)
        os.close(fd)
        out["missing"] = attempt(os.chmod, d / "missing", 0o644)
        return out

    ws.compare(op, what="chmod")


def test_chown_as_root(ws):
    def prepare(d: Path):
        for n, mode in (("suid", 0o6755), ("sgid_noexec", 0o2644), ("plain", 0o644)):
            write_file(d / n, b"x", mode)
        os.mkdir(d / "sgid_dir")
        os.chmod(d / "sgid_dir", 0o2775)
        os.symlink("plain", d / "ln")

    ws.setup(prepare)

    def op(d: Path):
        def owner(n, follow=True):
            st = os.stat(d / n, follow_symlinks=follow)
            return st.st_uid, st.st_gid, oct(st.st_mode)

        out = {}
        for n in ("suid", "sgid_noexec", "plain", "sgid_dir"):
            out[n] = (attempt(os.chown, d / n, 40001, 40002), owner(n))
        out["uid_only"] = (attempt(os.chown, d / "plain", 40003, -1), owner("plain"))
        out["gid_only"] = (attempt(os.chown, d / "plain", -1, 40004), owner("plain"))
        out["noop"] = (attempt(os.chown, d / "plain", -1, -1), owner("plain"))
        out["lchown"] = (attempt(os.chown, d / "ln", 40005, 40006, follow_symlinks=False),
                         owner("ln", False), owner("plain"))
        out["follow"] = (attempt(os.chown, d / "ln", 40007, 40008), owner("ln", False), owner("plain"))
        fd = os.open(d / "suid", os.O_RDONLY)
        out["fchown"] = attempt(os.fchown, fd, 0, 0)
        out["fstat"] = (os.fstat(fd).st_uid, os.fstat(fd).st_gid)
        os.close(fd)
        return out

    ws.compare(op, what="chown as root")


def test_statfs_is_plausible_and_matches_backing(ws):
    def vfs(d: Path):
        s = os.statvfs(d)
        return {k: getattr(s, k) for k in ("f_bsize", "f_frsize", "f_blocks", "f_bfree",
                                            "f_bavail", "f_files", "f_ffree", "f_namemax")}

    backing = value_of(ws.run(vfs, "backing"))
    seen = value_of(ws.run(vfs, "mnt"))
    assert seen["f_blocks"] > 0 and seen["f_bsize"] > 0 and seen["f_frsize"] > 0, seen
    assert seen["f_bavail"] <= seen["f_bfree"] <= seen["f_blocks"], seen
    assert seen["f_ffree"] <= seen["f_files"], seen
    assert seen["f_namemax"] == backing["f_namemax"] == 255, (seen, backing)
    assert seen["f_blocks"] * seen["f_frsize"] == backing["f_blocks"] * backing["f_frsize"], (
        f"[{ws.impl}] statvfs size: mount {seen} backing {backing}")
    assert seen["f_files"] == backing["f_files"], f"[{ws.impl}] f_files: {seen} vs {backing}"
    free_seen = seen["f_bfree"] * seen["f_frsize"]
    free_backing = backing["f_bfree"] * backing["f_frsize"]
    assert abs(free_seen - free_backing) <= max(64 << 20, free_backing // 100), (
        f"[{ws.impl}] free space differs: mount {free_seen} backing {free_backing}")


def test_access_as_root(ws):
    def prepare(d: Path):
        for n, mode in (("m000", 0o000), ("m644", 0o644), ("m744", 0o744), ("m001", 0o001),
                        ("m010", 0o010), ("m444", 0o444)):
            write_file(d / n, b"#!/bin/sh\n", mode)
        os.mkdir(d / "dir000", 0o000)
        os.chmod(d / "dir000", 0o000)

    ws.setup(prepare)

    def op(d: Path):
        return {(n, m): access_result(d / n, m)
                for n in ("m000", "m644", "m744", "m001", "m010", "m444", "dir000", "missing")
                for m in (os.F_OK, os.R_OK, os.W_OK, os.X_OK, os.R_OK | os.W_OK | os.X_OK)}

    ws.compare(op, state=False, what="access(2) as root")
