"""The JIT disk cache holds native code a root daemon runs: nothing another user
could have written may ever be loaded from it.

Each test builds a cache with a genuine entry, then tampers with one thing
(ownership, mode, a symlink, a parent directory) and checks that the entry is
no longer used, and that compiling still works (caching only costs speed).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from fdsl.vm import jit as jit_mod
from fdsl.vm.interpreter import Caller
from fdsl.vm import jit_cache
from fdsl.vm.jit import Jit
from fdsl.vm.jit_cache import ObjectCache

from vm_util import mov, ret, sample_context

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown to another uid)")

PROGRAM = ret(mov(0, 41))


def _compile(monkeypatch) -> Jit:
    """Compile bypassing the per-process cache, so the disk cache is consulted."""
    monkeypatch.setattr(jit_mod, "_CACHE", {})
    vm = Jit(PROGRAM)
    assert vm.run(sample_context(), Caller()) == 41
    return vm


def _cache_in(directory: Path, monkeypatch) -> Path:
    """Point FDSL_JIT_CACHE at `directory`, fill it with one genuine entry; the entry."""
    monkeypatch.setenv("FDSL_JIT_CACHE", str(directory))
    assert not _compile(monkeypatch).code.from_disk
    [entry] = directory.glob("*.jit")
    assert _compile(monkeypatch).code.from_disk
    return entry


def test_private_cache_dir_is_used_and_created_private(jit_cache_dir, monkeypatch):
    cache = jit_cache_dir / "sub" / "fdsl"
    _cache_in(cache, monkeypatch)
    for d in (cache, cache.parent):
        assert d.stat().st_mode & 0o777 == 0o700
    for f in cache.iterdir():
        assert f.stat().st_mode & 0o777 == 0o600 and not f.name.startswith(".tmp")


def test_cache_below_a_world_writable_dir_is_not_used(tmp_path, monkeypatch):
    """/tmp is sticky and root's, but still writable by all: no cache below it."""
    base = tmp_path
    while base != base.parent and not base.parent.stat().st_mode & 0o002:
        base = base.parent
    if not base.parent.stat().st_mode & 0o002:
        pytest.skip("pytest's tmp dir is not below a world-writable directory here")
    cache = tmp_path / "cache"
    monkeypatch.setenv("FDSL_JIT_CACHE", str(cache))
    assert not _compile(monkeypatch).code.from_disk
    assert not _compile(monkeypatch).code.from_disk
    assert not cache.exists() or not any(cache.glob("*.jit"))


@needs_root
def test_entries_below_a_user_owned_parent_are_not_used(jit_cache_dir, monkeypatch):
    parent = jit_cache_dir / "home"
    parent.mkdir(mode=0o755)
    cache = parent / "fdsl"
    _cache_in(cache, monkeypatch)
    os.chown(parent, NOBODY, NOBODY)     # that user could now swap `fdsl` for anything
    assert not _compile(monkeypatch).code.from_disk
    os.chown(parent, 0, 0)
    assert _compile(monkeypatch).code.from_disk


def test_group_or_other_writable_parent_is_not_used(jit_cache_dir, monkeypatch):
    parent = jit_cache_dir / "shared"
    parent.mkdir(mode=0o755)
    _cache_in(parent / "fdsl", monkeypatch)
    for mode in (0o775, 0o757, 0o1777):
        os.chmod(parent, mode)
        assert not _compile(monkeypatch).code.from_disk, oct(mode)
    os.chmod(parent, 0o755)
    assert _compile(monkeypatch).code.from_disk


def test_symlinked_entry_is_not_used(jit_cache_dir, monkeypatch):
    entry = _cache_in(jit_cache_dir, monkeypatch)
    moved = entry.with_name("elsewhere.bin")
    entry.rename(moved)
    entry.symlink_to(moved.name)
    assert not _compile(monkeypatch).code.from_disk
    assert not entry.is_symlink()                # rewritten as a real file
    assert _compile(monkeypatch).code.from_disk


def test_symlinked_secret_is_not_used(jit_cache_dir, monkeypatch):
    _cache_in(jit_cache_dir, monkeypatch)
    secret = jit_cache_dir / ObjectCache.SECRET
    secret.rename(jit_cache_dir / "key.bin")
    secret.symlink_to("key.bin")
    assert ObjectCache(jit_cache_dir).get("x" * 64) is None
    monkeypatch.setattr(jit_mod, "_CACHE", {})
    assert not _compile(monkeypatch).code.from_disk


def test_symlinked_cache_dir_is_checked_where_it_points(jit_cache_dir, tmp_path, monkeypatch):
    """A link is followed once (realpath), and the chain checked is the real one."""
    real = jit_cache_dir / "real"
    _cache_in(real, monkeypatch)
    link = jit_cache_dir / "link"
    link.symlink_to(real)
    monkeypatch.setenv("FDSL_JIT_CACHE", str(link))
    assert _compile(monkeypatch).code.from_disk
    # the same entries, copied below /tmp and reached through a trusted-looking link
    shutil.copytree(real, tmp_path / "copy")
    link.unlink()
    link.symlink_to(tmp_path / "copy")
    assert not _compile(monkeypatch).code.from_disk


@needs_root
def test_entry_owned_by_another_user_is_not_used(jit_cache_dir, monkeypatch):
    entry = _cache_in(jit_cache_dir, monkeypatch)
    os.chown(entry, NOBODY, NOBODY)
    assert not _compile(monkeypatch).code.from_disk
    assert entry.stat().st_uid == os.geteuid()    # replaced by our own


@needs_root
def test_cache_dir_owned_by_another_user_is_not_used(jit_cache_dir, monkeypatch):
    cache = jit_cache_dir / "fdsl"
    _cache_in(cache, monkeypatch)
    os.chown(cache, NOBODY, NOBODY)
    assert not _compile(monkeypatch).code.from_disk
    os.chown(cache, os.geteuid(), os.getegid())
    assert _compile(monkeypatch).code.from_disk


def test_group_or_other_writable_entry_or_dir_is_not_used(jit_cache_dir, monkeypatch):
    cache = jit_cache_dir / "fdsl"
    entry = _cache_in(cache, monkeypatch)
    os.chmod(entry, 0o620)
    assert not _compile(monkeypatch).code.from_disk
    os.chmod(entry, 0o602)
    assert ObjectCache(cache).get(entry.stem) is None
    os.chmod(entry, 0o600)
    os.chmod(cache, 0o770)
    assert not _compile(monkeypatch).code.from_disk
    os.chmod(cache, 0o700)
    assert _compile(monkeypatch).code.from_disk


def test_entry_not_sealed_with_the_directory_secret_is_not_used(jit_cache_dir, monkeypatch):
    """A well-formed entry made with another secret (copied from elsewhere) is ignored."""
    cache = jit_cache_dir / "a"
    entry = _cache_in(cache, monkeypatch)
    good = entry.read_bytes()
    (cache / ObjectCache.SECRET).write_bytes(os.urandom(32))
    assert ObjectCache(cache).get(entry.stem) is None
    assert not _compile(monkeypatch).code.from_disk
    assert entry.read_bytes() != good and _compile(monkeypatch).code.from_disk


def test_untrusted_cache_writes_nothing_and_logs_once_at_debug(jit_cache_dir, monkeypatch, caplog):
    cache = jit_cache_dir / "open"
    cache.mkdir()
    os.chmod(cache, 0o777)
    monkeypatch.setenv("FDSL_JIT_CACHE", str(cache))
    monkeypatch.setattr(jit_cache, "_REFUSED", set())
    with caplog.at_level("DEBUG", logger="fdsl.vm.jit"):
        for _ in range(3):
            assert not _compile(monkeypatch).code.from_disk
    assert list(cache.iterdir()) == []
    notes = [r for r in caplog.records if r.name == "fdsl.vm.jit" and "not used" in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelname == "DEBUG"


def test_root_defaults_to_a_root_only_location(monkeypatch):
    monkeypatch.delenv("FDSL_JIT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere/else")
    cache = ObjectCache.default()
    assert cache is not None
    if os.geteuid() == 0:
        assert cache.directory == Path("/var/cache/fdsl")
    else:
        assert cache.directory == Path("/somewhere/else/fdsl")
