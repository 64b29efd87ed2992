"""Caching and dispatch of the daemon: per-node timeouts from the policy metadata,
fresh attributes after mutations, and both thread modes (`-o inline=0|1`)."""
from __future__ import annotations

import os

import pytest

from mounting import errno_as, mounter, needs_fuse  # noqa: F401

pytestmark = [pytest.mark.mount, needs_fuse]

# Deterministic given the backing attributes: the kernel may cache the result.
CACHEABLE = 'on getattr post { if out.attr.size > 1000000000 { deny EFBIG } }\n'
# Reads the caller's uid: every stat must reach the program.
PER_CALLER = 'on getattr pre { if uid == 4242 { deny EACCES } }\n'
# Counts: every stat must reach the program, or the counter lies.
COUNTING = 'counter stats\non getattr pre { count stats }\n'


def _getattrs(m) -> int:
    return m.stats()["ops"].get("getattr", 0)


@pytest.mark.parametrize("policy,cached", [(CACHEABLE, True), (PER_CALLER, False),
                                           (COUNTING, False)],
                         ids=["deterministic", "identity", "side_effects"])
def test_getattr_results_cached_only_when_deterministic(mounter, tmp_path, policy, cached):
    path = tmp_path / "p.fdsl"
    path.write_text(policy)
    b, mnt = mounter.dirs()
    (b / "f").write_text("x")
    m = mounter.mount(path, b, mnt, options="attr_timeout=30,entry_timeout=30")
    os.stat(mnt / "f")
    before = _getattrs(m)
    for _ in range(20):
        assert os.stat(mnt / "f").st_size == 1
    asked = _getattrs(m) - before
    if cached:
        assert asked <= 1, f"{asked} GETATTR requests for 20 stats of a cacheable result"
    else:
        assert asked >= 20, f"only {asked} GETATTR requests for 20 stats"


def test_identity_rules_are_not_cached_across_users(mounter, tmp_path):
    """uid 4242 is refused even right after root's stat filled the caches."""
    path = tmp_path / "p.fdsl"
    path.write_text(PER_CALLER)
    b, mnt = mounter.dirs()
    (b / "f").write_text("x")
    os.chmod(b / "f", 0o644)
    mounter.mount(path, b, mnt, options="allow_other,attr_timeout=30,entry_timeout=30")
    assert os.stat(mnt / "f").st_size == 1
    # a refused GETATTR reaches the caller as EIO, as on a fuse-bpf kernel (spec §6)
    assert errno_as(4242, 4242, f"r = os.stat({str(mnt / 'f')!r}).st_size") == "EIO"
    assert errno_as(4243, 4243, f"r = os.stat({str(mnt / 'f')!r}).st_size") == 1


def test_rewritten_attributes_stay_rewritten_with_caching(mounter, tmp_path):
    """A getattr post rule that rewrites the mode: lookup and setattr replies carry
    the backing attributes, so they must not be cached in place of the rewrite."""
    path = tmp_path / "p.fdsl"
    path.write_text('on getattr post { out.attr.mode = out.attr.mode & 0o170755 }\n')
    b, mnt = mounter.dirs()
    (b / "f").write_text("x")
    os.chmod(b / "f", 0o666)
    mounter.mount(path, b, mnt, options="attr_timeout=30,entry_timeout=30")
    assert os.stat(mnt / "f").st_mode & 0o7777 == 0o644
    os.chmod(mnt / "f", 0o777)
    assert os.stat(b / "f").st_mode & 0o7777 == 0o777
    assert os.stat(mnt / "f").st_mode & 0o7777 == 0o755


def test_mutations_refresh_cached_attributes(mounter, tmp_path):
    """Link counts and ctimes right after link/unlink/rename/write through the mount."""
    path = tmp_path / "p.fdsl"
    path.write_text(CACHEABLE)
    b, mnt = mounter.dirs()
    (b / "f").write_text("x")
    (b / "victim").write_text("v")
    mounter.mount(path, b, mnt, options="attr_timeout=30,entry_timeout=30")

    def same(name: str) -> None:
        seen, real = os.stat(mnt / name), os.stat(b / name)
        assert (seen.st_nlink, seen.st_size, seen.st_ctime_ns, seen.st_mtime_ns) == \
            (real.st_nlink, real.st_size, real.st_ctime_ns, real.st_mtime_ns), name

    same("f")
    os.link(mnt / "f", mnt / "g")
    same("f")
    same("g")
    os.unlink(mnt / "g")
    same("f")
    os.stat(mnt / "victim")
    os.link(mnt / "victim", mnt / "victim2")
    os.rename(mnt / "f", mnt / "victim")  # replaces one name of victim2's inode
    same("victim")
    same("victim2")
    with open(mnt / "victim", "a") as fh:
        fh.write("more")
    same("victim")
    os.chmod(mnt / "victim", 0o600)
    same("victim")


@pytest.mark.parametrize("inline", ["0", "1"])
def test_both_thread_modes_serve_everything(mounter, inline):
    b, mnt = mounter.dirs()
    m = mounter.mount("", b, mnt,
                      options=f"allow_other,inline={inline},attr_timeout=0,entry_timeout=0")
    (mnt / "d").mkdir()
    data = os.urandom(300_000)
    (mnt / "d" / "f").write_bytes(data)
    assert (b / "d" / "f").read_bytes() == data
    assert (mnt / "d" / "f").read_bytes() == data
    os.rename(mnt / "d" / "f", mnt / "d" / "g")
    os.symlink("g", mnt / "d" / "s")
    assert sorted(os.listdir(mnt / "d")) == ["g", "s"]
    os.setxattr(mnt / "d" / "g", "user.k", b"v")
    assert os.getxattr(mnt / "d" / "g", "user.k") == b"v"
    # a non-root caller after root: the daemon's threads must not keep root rights
    os.chmod(mnt / "d" / "g", 0o600)
    assert errno_as(4242, 4242, f"r = open({str(mnt / 'd' / 'g')!r}, 'rb').read(1)") == "EACCES"
    assert errno_as(4242, 4242, f"r = sorted(os.listdir({str(mnt / 'd')!r}))") == ["g", "s"]
    os.unlink(mnt / "d" / "s")
    os.unlink(mnt / "d" / "g")
    os.rmdir(mnt / "d")
    assert os.listdir(b) == []
    assert m.alive()
