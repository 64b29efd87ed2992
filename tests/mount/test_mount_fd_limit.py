"""Known inodes are bounded by memory, not by the daemon's fds (issue 11, item 2).

The daemon runs with a small RLIMIT_NOFILE (soft = hard = 256, so it cannot
raise it); an ordinary user (created for the session) makes the kernel know
many more inodes than that.  Before, every known inode held an O_PATH fd:
the user's creates failed with EMFILE after ~230 files, and so did every
other user's `ls` and `fdsl stats`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from mounting import FDSL, ROOT, USER_PYTHON, Mount, is_mounted, mounter, run_as  # noqa: F401

pytest_plugins = ["posix_fixtures"]
pytestmark = [pytest.mark.mount,
              pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit"),
              pytest.mark.skipif(not os.path.exists("/dev/fuse") or os.geteuid() != 0,
                                 reason="needs root and /dev/fuse")]

LIMIT = 256
FILES = 600


def mount_with_fd_limit(mounter, policy: str = "", options: str = "") -> Mount:
    backing, mnt = mounter.dirs()
    cmd = ["prlimit", f"--nofile={LIMIT}:{LIMIT}", *FDSL, "mount", "-o",
           ",".join(["allow_other"] + ([options] if options else [])),
           policy, str(backing), str(mnt)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
    m = Mount(backing, mnt)
    mounter.mounts.append(m)
    assert proc.returncode == 0, proc.stderr
    assert is_mounted(mnt)
    m.pid = m.stats()["pid"]
    with open(f"/proc/{m.pid}/limits") as fh:
        assert any(line.startswith("Max open files") and line.split()[3] == str(LIMIT)
                   for line in fh)
    return m


def as_user(user, code: str) -> dict:
    proc = run_as(user.uid, user.gid, code, timeout=300)  # ~20 ms a create on a busy machine
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


MAKE_FILES = f"""
import json, os
home = HOME
made, error = 0, None
for i in range({FILES}):
    try:
        with open(os.path.join(home, f"file{{i:05d}}"), "w") as fh:
            fh.write(f"content {{i}}")
        made += 1
    except OSError as e:
        error = os.strerror(e.errno)
        break
known = sum(1 for i in range(made) if os.stat(os.path.join(home, f"file{{i:05d}}")))
print(json.dumps({{"made": made, "known": known, "error": error}}))
"""

READ_FILES = f"""
import json, os, threading
bad = []
def read_all(start):
    for k in range({FILES}):
        i = (start + k) % {FILES}
        if open(os.path.join(HOME, f"file{{i:05d}}")).read() != f"content {{i}}":
            bad.append(i)
readers = [threading.Thread(target=read_all, args=(s * 97,)) for s in range(4)]
for t in readers: t.start()
for t in readers: t.join()
print(json.dumps({{"bad": bad[:5], "root": sorted(os.listdir(ROOT_DIR))}}))
"""


@pytest.mark.parametrize("policy,options", [("", "inline=0"), ("bench/policies/realistic.fdsl", "")],
                         ids=["no-policy-all-in-workers", "realistic"])
def test_more_known_inodes_than_fds(mounter, posix_users, policy, options):
    """Four reader threads, and with inline=0 every request in its own worker thread:
    reopening and evicting run concurrently."""
    m = mount_with_fd_limit(mounter, policy and str(ROOT / policy), options)
    user, other = posix_users.a, posix_users.b
    home = m.backing / "home"
    home.mkdir()
    os.chown(home, user.uid, user.gid)
    (m.backing / "shared").write_text("shared")
    prelude = f"HOME = {str(m.mnt / 'home')!r}\nROOT_DIR = {str(m.mnt)!r}\n"

    made = as_user(user, prelude + MAKE_FILES)
    assert made == {"made": FILES, "known": FILES, "error": None}
    stats = m.stats()                       # the control socket still answers
    assert stats["nodes"] > LIMIT           # the kernel knows more inodes than we have fds
    assert stats["node_fds"] < LIMIT
    # every known inode still works (reopened by file handle), for everyone
    read = as_user(user, prelude + READ_FILES)
    assert read == {"bad": [], "root": ["home", "shared"]}
    assert sorted(os.listdir(m.mnt)) == ["home", "shared"]
    assert as_user(other, prelude + "import json, os\n"
                   "print(json.dumps(sorted(os.listdir(ROOT_DIR))))") == ["home", "shared"]
    with open(f"/proc/{m.pid}/limits") as fh:   # still the same daemon, same limit
        assert any(line.startswith("Max open files") for line in fh)
    assert len(os.listdir(f"/proc/{m.pid}/fd")) < LIMIT
    assert m.alive()


HOLD_FILES = f"""
import json, os, errno, sys
held, error = [], None
for i in range({LIMIT}):
    try:
        held.append(os.open(os.path.join(HOME, f"file{{i:05d}}"), os.O_RDONLY))
    except OSError as e:
        error = errno.errorcode[e.errno]
        break
print(json.dumps({{"held": len(held), "error": error}}), flush=True)
sys.stdin.readline()
try:
    held.append(os.open(os.path.join(HOME, "created"), os.O_CREAT | os.O_WRONLY, 0o644))
    error = None
except OSError as e:
    error = errno.errorcode[e.errno]
print(json.dumps({{"create": error}}), flush=True)
sys.stdin.read()                            # hold them until the test is done
"""


def test_open_files_leave_the_daemon_a_reserve(mounter, posix_users):
    """Open handles are capped below the fd limit: the user gets ENFILE, the daemon
    keeps fds for lookups, its control socket and its own work."""
    m = mount_with_fd_limit(mounter)
    user = posix_users.a
    home = m.backing / "home"
    home.mkdir()
    for i in range(LIMIT):
        (home / f"file{i:05d}").write_text(str(i))
    os.chown(home, user.uid, user.gid)

    def demote() -> None:
        os.setgroups([])
        os.setgid(user.gid)
        os.setuid(user.uid)

    holder = subprocess.Popen([USER_PYTHON, "-c", f"HOME = {str(m.mnt / 'home')!r}\n" + HOLD_FILES],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              preexec_fn=demote, cwd="/")
    try:
        held = json.loads(holder.stdout.readline())
        assert held["error"] == "ENFILE" and 16 <= held["held"] < LIMIT
        stats = m.stats()                       # answered while the user holds the handles
        assert stats["open_handles"] == held["held"]
        holder.stdin.write("create\n")
        holder.stdin.flush()
        assert json.loads(holder.stdout.readline()) == {"create": "ENFILE"}
        after = m.stats()                       # the refused create left no node behind
        assert (after["open_handles"], after["nodes"]) == (held["held"], stats["nodes"])
        assert os.stat(m.mnt / "home" / "file00255").st_size == 3   # lookups still work
    finally:
        holder.communicate("", timeout=30)
    assert sorted(os.listdir(m.mnt)) == ["home"]
    assert m.stats()["open_handles"] == 0
    assert m.alive()


def test_operations_on_two_evicted_nodes_with_a_cache_of_one(mounter):
    """With one cached fd, renaming or linking between two directories reopens both:
    the first fd must stay open (pinned) while the second is reopened."""
    backing, mnt = mounter.dirs()
    for d in ("a", "b", "c"):
        (backing / d).mkdir()
    (backing / "a" / "x").write_text("x")
    (backing / "c" / "y").write_text("y")
    env = {**os.environ, "FDSL_NODE_FD_CACHE": "1"}
    proc = subprocess.run([*FDSL, "mount", "-o", "attr_timeout=0,entry_timeout=0", "",
                           str(backing), str(mnt)], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env=env)
    m = Mount(backing, mnt)
    mounter.mounts.append(m)
    assert proc.returncode == 0, proc.stderr
    m.pid = m.stats()["pid"]
    for _ in range(3):
        os.rename(mnt / "a" / "x", mnt / "b" / "x")
        os.link(mnt / "c" / "y", mnt / "b" / "y")
        os.rename(mnt / "b" / "x", mnt / "a" / "x")
        os.unlink(mnt / "b" / "y")
    assert (backing / "a" / "x").read_text() == "x" and os.listdir(backing / "b") == []
    assert sorted(os.listdir(mnt / "c")) == ["y"] and (mnt / "c" / "y").read_text() == "y"
    assert m.stats()["node_fds"] <= 1 + 1 + 2    # cache + root + mount fd (+ one pinned)
    assert m.alive()
