"""POSIX conformance of a mount for callers other than root.

Operations run in a child that dropped to a test user (uid, gid and
supplementary groups); the same operation on a fresh copy in a plain
directory is the oracle for the outcome (value or errno) and for the
resulting owners and modes.  Users (session fixture `posix_users`):

* a: primary group g, supplementary group s
* b: primary group h (not in s)
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

pytest.register_assert_rewrite("posix_fixtures")

from posix_fixtures import POSIX_MARKS, ROOT, access_result, attempt, utimensat  # noqa: E402

pytest_plugins = ["posix_fixtures"]

pytestmark = POSIX_MARKS


def put(path, data: bytes = b"data", mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chown(path, uid, gid)
    os.chmod(path, mode)      # after chown, which clears setuid/setgid bits


def mkd(path, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
    os.mkdir(path)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def read(path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def opened(path, flags, mode=0o666):
    fd = os.open(path, flags, mode)
    os.close(fd)


def owner(path, follow: bool = False):
    st = os.stat(path, follow_symlinks=follow)
    return st.st_uid, st.st_gid, oct(st.st_mode)


# ---------------------------------------------------------------------------
# ownership and modes of new objects
# ---------------------------------------------------------------------------

UMASKS = [0o022, 0o077, 0o002, 0o000]


@pytest.mark.parametrize("umask", UMASKS, ids=[f"umask{u:03o}" for u in UMASKS])
@pytest.mark.parametrize("who", ["a", "b"])
def test_new_objects_belong_to_the_caller(ws, posix_users, who, umask):
    user = getattr(posix_users, who)
    ws.setup(lambda d: mkd(d / "pub", 0o1777))

    def op(d: Path):
        p = d / "pub"
        fd = os.open(p / "file", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        fst = os.fstat(fd)
        os.write(fd, b"mine")
        os.close(fd)
        os.mkdir(p / "dir", 0o777)
        os.mkfifo(p / "fifo", 0o664)
        os.mknod(p / "node", stat.S_IFREG | 0o640)
        os.symlink("file", p / "link")
        os.link(p / "file", p / "hard")
        fd = os.open(p / "dir" / "inner", os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
        return {"fstat_owner": (fst.st_uid, fst.st_gid, oct(fst.st_mode)),
                **{n: owner(p / n) for n in ("file", "dir", "fifo", "node", "link", "dir/inner")}}

    got = ws.compare(op, who=user, umask=umask, what="creating objects")
    assert got[1]["file"][:2] == (user.uid, user.gid), f"[{ws.impl}] new file owner: {got[1]['file']}"


@pytest.mark.parametrize("tag", ["root", "a", "b"])
def test_setgid_directory_inheritance(ws, posix_users, tag):
    """New objects in a setgid directory get the directory's group; subdirectories
    inherit the setgid bit; setgid on a new file survives only for group members."""
    who = ROOT if tag == "root" else getattr(posix_users, tag)

    def prepare(d: Path):
        mkd(d / "sg", 0o2777, 0, posix_users.s)          # group s: a is a member, b is not

    ws.setup(prepare)

    if tag in ("root", "a"):
        ws.xfail_on("bindfs", "bindfs drops the setgid bit requested for a new file")

    def as_user(tag):
        def op(d: Path):
            p = d / "sg"
            fd = os.open(p / f"{tag}_file", os.O_CREAT | os.O_WRONLY, 0o2755)
            os.close(fd)
            os.mkdir(p / f"{tag}_dir", 0o777)
            os.mkdir(p / f"{tag}_dir" / "nested", 0o700)
            fd = os.open(p / f"{tag}_dir" / "nested" / "f", os.O_CREAT | os.O_WRONLY, 0o640)
            os.close(fd)
            os.mkfifo(p / f"{tag}_fifo", 0o666)
            os.symlink("x", p / f"{tag}_link")
            return {n: owner(p / n) for n in sorted(os.listdir(p)) if n.startswith(tag)}
        return op

    got = ws.compare(as_user(tag), who=who, umask=0o022, what=f"creating in a setgid dir as {tag}")
    assert got[1][f"{tag}_file"][1] == posix_users.s, (
        f"[{ws.impl}] file created by {tag} in a setgid dir must get the dir's group "
        f"{posix_users.s}: {got[1]}")


def test_chmod_chown_rules_for_owners(ws, posix_users):
    a = posix_users.a

    def prepare(d: Path):
        put(d / "own_g", b"x", 0o644, a.uid, posix_users.g)
        put(d / "own_h", b"x", 0o644, a.uid, posix_users.h)   # owned by a, group a is not in
        put(d / "root_file", b"x", 0o666)
        mkd(d / "own_dir", 0o755, a.uid, posix_users.h)

    ws.setup(prepare)

    def op(d: Path):
        return {
            "chmod_own": (attempt(os.chmod, d / "own_g", 0o2755), owner(d / "own_g")),
            "chmod_sgid_foreign_group": (attempt(os.chmod, d / "own_h", 0o2755), owner(d / "own_h")),
            "chmod_sgid_dir_foreign_group": (attempt(os.chmod, d / "own_dir", 0o2775), owner(d / "own_dir")),
            "chmod_not_owner": attempt(os.chmod, d / "root_file", 0o600),
            "chown_to_root": attempt(os.chown, d / "own_g", 0, -1),
            "chown_to_self": attempt(os.chown, d / "own_g", a.uid, -1),
            "chgrp_supplementary": (attempt(os.chown, d / "own_g", -1, posix_users.s), owner(d / "own_g")),
            "chgrp_not_member": attempt(os.chown, d / "own_g", -1, posix_users.h),
            "chgrp_not_owner": attempt(os.chown, d / "root_file", -1, posix_users.g),
            "chmod_suid_own": (attempt(os.chmod, d / "own_h", 0o4755), owner(d / "own_h")),
        }

    ws.compare(op, who=a, what="chmod/chown by a non-root owner")


def test_write_by_non_owner_clears_setuid_setgid(ws, posix_users):
    ws.xfail_on("bindfs", "bindfs writes as root (CAP_FSETID): a setgid bit without group-exec "
                "survives a non-owner's write that the backing fs would clear")
    def prepare(d: Path):
        put(d / "suid", b"0123456789", 0o4777)
        put(d / "sgid_x", b"0123456789", 0o2777)
        put(d / "both", b"0123456789", 0o6777)
        put(d / "sgid_nox", b"0123456789", 0o2767)
        put(d / "trunc", b"0123456789", 0o6777)

    ws.setup(prepare)

    def write(path):
        fd = os.open(path, os.O_WRONLY)
        try:
            return os.write(fd, b"AB")
        finally:
            os.close(fd)

    def op(d: Path):
        out = {}
        for n in ("suid", "sgid_x", "both", "sgid_nox"):
            out[n] = (attempt(write, d / n), owner(d / n))
        out["truncate"] = (attempt(os.truncate, d / "trunc", 3), owner(d / "trunc"))
        return out

    ws.compare(op, who=posix_users.a, what="write to setuid/setgid files by a non-owner")


# ---------------------------------------------------------------------------
# permission outcomes
# ---------------------------------------------------------------------------

def _prepare_permissions(d: Path, posix_users) -> None:
    a, b = posix_users.a, posix_users.b
    put(d / "secret", b"root only", 0o600)
    put(d / "grp_s", b"group s", 0o640, 0, posix_users.s)
    put(d / "grp_s_only", b"group but not owner", 0o460, a.uid, posix_users.s)
    put(d / "owner_none", b"owner has no rights", 0o066, a.uid, posix_users.s)
    put(d / "world", b"world readable", 0o644)
    put(d / "world_rw", b"world writable", 0o666)
    mkd(d / "rodir")
    put(d / "rodir" / "inside", b"x", 0o666)
    mkd(d / "pub", 0o1777)
    put(d / "pub" / "a_file", b"a", 0o666, a.uid, posix_users.g)
    put(d / "pub" / "b_file", b"b", 0o666, b.uid, posix_users.h)
    put(d / "pub" / "root_file", b"r", 0o666)
    mkd(d / "pub" / "b_dir", 0o777, b.uid, posix_users.h)
    mkd(d / "nosticky", 0o777)
    put(d / "nosticky" / "b_file", b"b", 0o644, b.uid, posix_users.h)
    mkd(d / "a_home", 0o700, a.uid, posix_users.g)
    put(d / "a_home" / "f", b"private", 0o644, a.uid, posix_users.g)
    mkd(d / "xonly", 0o711)
    put(d / "xonly" / "known", b"k", 0o644)
    mkd(d / "noexec", 0o644)
    put(d / "noexec" / "x", b"x", 0o644)
    mkd(d / "grpdir", 0o770, 0, posix_users.s)
    put(d / "grpdir" / "f", b"g", 0o644)


def _permission_ops(d: Path, uid: int, s_gid: int):
    """The sequence of operations, in a fixed order (some mutate)."""
    out = {}
    out["read_secret"] = attempt(read, d / "secret")
    out["read_grp_s"] = attempt(read, d / "grp_s")
    out["read_grp_s_only"] = attempt(read, d / "grp_s_only")
    out["write_owner_none"] = attempt(opened, d / "owner_none", os.O_WRONLY)
    out["read_world"] = attempt(read, d / "world")
    out["write_world"] = attempt(opened, d / "world", os.O_WRONLY)
    out["trunc_world"] = attempt(opened, d / "world", os.O_WRONLY | os.O_TRUNC)
    out["truncate_world"] = attempt(os.truncate, d / "world", 0)
    out["write_world_rw"] = attempt(opened, d / "world_rw", os.O_WRONLY | os.O_APPEND)
    out["create_in_rodir"] = attempt(opened, d / "rodir" / "new", os.O_CREAT | os.O_WRONLY)
    out["mkdir_in_rodir"] = attempt(os.mkdir, d / "rodir" / "newdir")
    out["unlink_in_rodir"] = attempt(os.unlink, d / "rodir" / "inside")
    out["rename_in_rodir"] = attempt(os.rename, d / "rodir" / "inside", d / "rodir" / "moved")
    out["symlink_in_rodir"] = attempt(os.symlink, "x", d / "rodir" / "ln")
    out["write_in_rodir_file"] = attempt(opened, d / "rodir" / "inside", os.O_WRONLY)
    out["link_secret"] = attempt(os.link, d / "secret", d / "pub" / "stolen")
    out["listdir_a_home"] = attempt(lambda: sorted(os.listdir(d / "a_home")))
    out["stat_a_home_f"] = attempt(lambda: os.stat(d / "a_home" / "f").st_size)
    out["listdir_xonly"] = attempt(os.listdir, d / "xonly")
    out["stat_xonly_known"] = attempt(lambda: os.stat(d / "xonly" / "known").st_size)
    out["read_xonly_known"] = attempt(read, d / "xonly" / "known")
    out["listdir_noexec"] = attempt(lambda: sorted(os.listdir(d / "noexec")))
    out["stat_noexec_x"] = attempt(os.stat, d / "noexec" / "x")
    out["read_grpdir_f"] = attempt(read, d / "grpdir" / "f")
    out["create_grpdir"] = attempt(opened, d / "grpdir" / f"by{uid}", os.O_CREAT | os.O_WRONLY)
    out["utime_world_explicit"] = attempt(utimensat, d / "world", 10**18, 10**18)
    out["utime_world_null"] = attempt(utimensat, d / "world", None, None, null_times=True)
    out["utime_world_rw_null"] = attempt(utimensat, d / "world_rw", None, None, null_times=True)
    out["utime_world_rw_now_now"] = attempt(utimensat, d / "world_rw", "now", "now")
    out["utime_world_rw_now_omit"] = attempt(utimensat, d / "world_rw", "now", None)
    out["utime_world_rw_explicit"] = attempt(utimensat, d / "world_rw", 10**18, None)
    out["xattr_set_world"] = attempt(os.setxattr, d / "world", "user.x", b"1")
    out["xattr_set_world_rw"] = attempt(os.setxattr, d / "world_rw", "user.x", b"1")
    out["xattr_get_secret"] = attempt(os.getxattr, d / "secret", "user.x")
    out["xattr_set_pub"] = attempt(os.setxattr, d / "pub", "user.x", b"1")
    out["chmod_world"] = attempt(os.chmod, d / "world", 0o777)
    # the sticky directory
    out["create_in_pub"] = attempt(opened, d / "pub" / f"new{uid}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    out["open_creat_others_in_pub"] = attempt(opened, d / "pub" / "b_file", os.O_CREAT | os.O_WRONLY)
    out["rename_others_in_pub"] = attempt(os.rename, d / "pub" / "root_file", d / "pub" / "taken")
    out["rename_over_others_in_pub"] = attempt(os.rename, d / "pub" / f"new{uid}", d / "pub" / "root_file")
    out["rmdir_others_in_pub"] = attempt(os.rmdir, d / "pub" / "b_dir")
    out["unlink_a_file_in_pub"] = attempt(os.unlink, d / "pub" / "a_file")
    out["unlink_b_file_in_pub"] = attempt(os.unlink, d / "pub" / "b_file")
    out["unlink_others_nosticky"] = attempt(os.unlink, d / "nosticky" / "b_file")
    out["mkdir_in_pub"] = attempt(os.mkdir, d / "pub" / f"dir{uid}", 0o755)
    out["chgrp_in_pub_own"] = attempt(lambda: os.chown(d / "pub" / f"dir{uid}", -1, s_gid))
    out["listing_pub"] = sorted(os.listdir(d / "pub"))
    return out


@pytest.mark.parametrize("who", ["a", "b"])
def test_permission_outcomes_match_backing(ws, posix_users, who):
    ws.setup(lambda d: _prepare_permissions(d, posix_users))
    user = getattr(posix_users, who)
    ws.compare(lambda d: _permission_ops(d, user.uid, posix_users.s), who=user,
               what=f"permission checks as {who}")


@pytest.mark.parametrize("who", ["a", "b", "root"])
def test_access_matches_backing(ws, posix_users, who):
    user = ROOT if who == "root" else getattr(posix_users, who)
    a = posix_users.a
    cases = [  # name, uid, gid, mode, is_dir
        ("r600", 0, 0, 0o600, False), ("g640s", 0, posix_users.s, 0o640, False),
        ("g460s_owned_by_a", a.uid, posix_users.s, 0o460, False), ("o066_owned_by_a", a.uid, posix_users.s, 0o066, False),
        ("x711", 0, 0, 0o711, False), ("x700_a", a.uid, posix_users.g, 0o700, False),
        ("o007_h", 0, posix_users.h, 0o007, False), ("g070_h", 0, posix_users.h, 0o070, False),
        ("none", a.uid, posix_users.g, 0o000, False), ("d755", 0, 0, 0o755, True),
        ("d700_a", a.uid, posix_users.g, 0o700, True), ("d1777", 0, 0, 0o1777, True),
        ("d750s", 0, posix_users.s, 0o750, True), ("d000", 0, 0, 0o000, True),
    ]

    def prepare(d: Path):
        for name, uid, gid, mode, is_dir in cases:
            (mkd if is_dir else put)(d / name, mode=mode, uid=uid, gid=gid)
        mkd(d / "closed", 0o700)
        put(d / "closed" / "f", b"x", 0o777)

    ws.setup(prepare)

    def op(d: Path):
        modes = {"F": os.F_OK, "R": os.R_OK, "W": os.W_OK, "X": os.X_OK,
                 "RW": os.R_OK | os.W_OK, "RWX": os.R_OK | os.W_OK | os.X_OK}
        out = {f"{name}:{m}": access_result(d / name, bits)
               for name, *_ in cases for m, bits in modes.items()}
        out["closed/f:R"] = access_result(d / "closed" / "f", os.R_OK)
        out["missing:F"] = access_result(d / "missing", os.F_OK)
        return out

    ws.compare(op, who=user, state=False, what=f"access(2) as {who}")


def test_permission_checked_at_open_not_at_write(ws, posix_users):
    """An fd opened for writing stays writable after chmod 000 (by the owner)."""
    a = posix_users.a
    ws.setup(lambda d: put(d / "f", b"0123", 0o644, a.uid, posix_users.g))

    def op(d: Path):
        fd = os.open(d / "f", os.O_RDWR)
        try:
            os.chmod(d / "f", 0o000)
            os.pwrite(fd, b"XY", 0)
            data = os.pread(fd, 10, 0)
            return {"data": data, "reopen": attempt(opened, d / "f", os.O_RDONLY),
                    "fchmod_back": attempt(os.fchmod, fd, 0o600)}
        finally:
            os.close(fd)

    ws.compare(op, who=a, what="writing through an fd after chmod 000")


def test_supplementary_groups_follow_the_caller(ws, posix_users):
    """Two callers with the same uid/gid but different supplementary groups,
    one right after the other: group access must follow each caller."""
    a = posix_users.a
    ws.setup(lambda d: put(d / "f", b"for group s", 0o040, 0, posix_users.s))
    without_s = type(a)(a.name + "-without-s", a.uid, a.gid, (a.gid,))
    for who in (a, without_s, a, without_s):
        ws.compare(lambda d: attempt(read, d / "f"), who=who, state=False,
                   what=f"read of a group-s file as {who}")


def test_user_deep_and_long_names(ws, posix_users):
    """255-byte names and a 40-level chain created by a non-root user via dir fds."""
    a = posix_users.a
    ws.setup(lambda d: mkd(d / "home", 0o755, a.uid, posix_users.g))
    names = [f"{i:02d}" + "u" * 253 for i in range(40)]

    def op(d: Path):
        fds = [os.open(d / "home", os.O_RDONLY | os.O_DIRECTORY)]
        try:
            for name in names:
                os.mkdir(name, 0o750, dir_fd=fds[-1])
                fds.append(os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
            fd = os.open("f" * 255, os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=fds[-1])
            os.write(fd, b"deep")
            os.close(fd)
            st = os.stat("f" * 255, dir_fd=fds[-1])
            return st.st_uid, st.st_gid, oct(st.st_mode), st.st_size
        finally:
            for fd in fds:
                os.close(fd)

    if ws.impl == "bindfs":
        ws.xfail_on("bindfs", "bindfs works on full paths and fails beyond PATH_MAX with ENAMETOOLONG")
    ws.compare(op, who=a, what="deep chain of 255-byte names as a user")


def test_mode_and_owner_changes_apply_at_once(ws, posix_users):
    """root changes a file's mode/owner through the mount; the very next access
    by a user must see the new permissions (no stale cached attributes)."""
    a = posix_users.a
    ws.setup(lambda d: put(d / "f", b"content", 0o644))
    steps = [
        ("chmod600", lambda p: os.chmod(p, 0o600)),
        ("chmod604", lambda p: os.chmod(p, 0o604)),
        ("chown_a_chmod400", lambda p: (os.chown(p, a.uid, -1), os.chmod(p, 0o400))),
        ("chmod000", lambda p: os.chmod(p, 0o000)),
        ("chgrp_s_chmod040", lambda p: (os.chown(p, 0, posix_users.s), os.chmod(p, 0o040))),
    ]
    for name, change in steps:
        for where in ("plain", "mnt"):
            ws.run(lambda d: attempt(read, d / "f"), where, who=a)   # prime caches
            assert ws.run(lambda d: change(d / "f"), where)[0] == "ok"
        ws.compare(lambda d: (attempt(read, d / "f"), access_result(d / "f", os.R_OK)),
                   who=a, state=False, what=f"read right after {name} by root")


def test_group_change_within_one_process(ws, posix_users):
    """The same process (same pid) loses a supplementary group and must lose
    the access that group granted, at once."""
    a = posix_users.a
    ws.setup(lambda d: put(d / "f", b"for group s", 0o040, 0, posix_users.s))

    def op(d: Path):
        results = []
        for groups in ([posix_users.s], [], [posix_users.s], []):
            os.seteuid(0)
            os.setgroups(groups)
            os.setegid(a.gid)
            os.seteuid(a.uid)
            results.append((groups, attempt(read, d / "f")))
        os.seteuid(0)
        return results

    ws.compare(op, state=False, what="reads as uid a while dropping and regaining group s")


def test_directory_rename_and_inode_reuse(ws, posix_users):
    """Nodes must follow renames of looked-up directories, and a backing inode
    number reused after unlink must not resurrect the old node's attributes."""
    a = posix_users.a

    def prepare(d: Path):
        mkd(d / "home", 0o755, a.uid, posix_users.g)
        mkd(d / "home" / "old", 0o755, a.uid, posix_users.g)
        put(d / "home" / "old" / "f", b"in old", 0o644, a.uid, posix_users.g)

    ws.setup(prepare)

    def op(d: Path):
        h = d / "home"
        out = {"before": read(h / "old" / "f")}
        os.rename(h / "old", h / "new")
        out["old_gone"] = attempt(os.stat, h / "old" / "f")
        out["via_new"] = read(h / "new" / "f")
        os.mkdir(h / "old", 0o700)
        out["recreated_old"] = owner(h / "old")
        out["recreated_old_empty"] = os.listdir(h / "old")
        churn = []
        for i in range(30):
            p = h / "new" / f"c{i % 3}"
            kind = i % 3
            if kind == 0:
                fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o640)
                os.write(fd, b"x" * i)
                os.close(fd)
            elif kind == 1:
                os.mkdir(p, 0o751)
            else:
                os.symlink("t" * (i + 1), p)
            st = os.lstat(p)
            churn.append((stat.S_IFMT(st.st_mode), oct(stat.S_IMODE(st.st_mode)), st.st_size if kind != 1 else None,
                          st.st_nlink))
            (os.rmdir if kind == 1 else os.unlink)(p)
            churn.append(attempt(os.lstat, p))
        out["churn"] = churn
        return out

    ws.compare(op, who=a, what="directory rename and create/unlink churn")


# ---------------------------------------------------------------------------
# POSIX ACLs (written as system.posix_acl_* xattrs; no acl tools needed)
# ---------------------------------------------------------------------------

ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK, ACL_OTHER = 1, 2, 4, 8, 0x10, 0x20
_NO_ID = 0xFFFFFFFF


def acl_xattr(entries) -> bytes:
    """entries: (tag, perm bits rwx, id or None); sorted as the kernel wants."""
    import struct
    rows = sorted((tag, perm, _NO_ID if ident is None else ident) for tag, perm, ident in entries)
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *row) for row in rows)


def test_posix_acls(ws, posix_users):
    """An access ACL grants b what the mode bits deny; a default ACL replaces
    the umask for new objects (the mount must not apply the umask itself)."""
    b = posix_users.b

    def prepare(d: Path):
        put(d / "acl_file", b"b may read", 0o600)
        os.setxattr(d / "acl_file", "system.posix_acl_access", acl_xattr(
            [(ACL_USER_OBJ, 6, None), (ACL_USER, 4, b.uid), (ACL_GROUP_OBJ, 0, None),
             (ACL_MASK, 4, None), (ACL_OTHER, 0, None)]))
        put(d / "acl_deny", b"b may not", 0o644)
        os.setxattr(d / "acl_deny", "system.posix_acl_access", acl_xattr(
            [(ACL_USER_OBJ, 6, None), (ACL_USER, 0, b.uid), (ACL_GROUP_OBJ, 4, None),
             (ACL_MASK, 4, None), (ACL_OTHER, 4, None)]))
        mkd(d / "dflt", 0o777)
        os.setxattr(d / "dflt", "system.posix_acl_default", acl_xattr(
            [(ACL_USER_OBJ, 7, None), (ACL_GROUP_OBJ, 7, None), (ACL_MASK, 7, None),
             (ACL_OTHER, 5, None)]))

    ws.setup(prepare)

    def op(d: Path):
        out = {"read_acl_file": attempt(read, d / "acl_file"),
               "access_acl_file": access_result(d / "acl_file", os.R_OK),
               "read_acl_deny": attempt(read, d / "acl_deny"),
               "access_acl_deny": access_result(d / "acl_deny", os.R_OK)}
        out["create"] = attempt(opened, d / "dflt" / "f", os.O_CREAT | os.O_WRONLY, 0o666)
        out["mkdir"] = attempt(os.mkdir, d / "dflt" / "sub", 0o777)
        out["modes"] = {n: owner(d / "dflt" / n) for n in sorted(os.listdir(d / "dflt"))}
        out["inherited_default"] = attempt(lambda: len(os.getxattr(d / "dflt" / "sub", "system.posix_acl_default")))
        return out

    ws.xfail_on("bindfs", "the kernel checks bindfs mounts (default_permissions) against the "
                "mode bits only and applies the umask despite a default ACL")
    ws.xfail_on("pyfuse3", "libfuse through pyfuse3 cannot negotiate FUSE_DONT_MASK: the "
                "kernel applies the umask despite the default ACL")
    ws.compare(op, who=b, umask=0o077, what="POSIX ACLs")
