"""The private cache directory (Lark's parser tables are pickles: only trusted dirs)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import private_tmp_base
from fdsl import cache

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def trusted(tmp_path):
    """A scratch dir whose ancestors nobody else may write (not under the sticky /tmp,
    where a checkout may well live): the base the JIT cache tests use too."""
    base = private_tmp_base()
    assert base is not None, "no private base directory ($XDG_RUNTIME_DIR or /run as root)"
    path = Path(tempfile.mkdtemp(prefix=".cache-test-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_private_dir_is_created_0700(trusted, monkeypatch):
    monkeypatch.setenv("FDSL_CACHE", str(trusted / "c"))
    d = cache.private_dir("parser")
    assert d is not None and d.is_dir() and (d.stat().st_mode & 0o777) == 0o700


def test_directories_it_creates_are_private_whatever_the_umask(trusted, monkeypatch):
    """The daemon runs with umask 0: the ancestors it creates must not be 0777."""
    monkeypatch.setenv("FDSL_CACHE", str(trusted / "a" / "b"))
    old = os.umask(0)
    try:
        d = cache.private_dir("objects")
    finally:
        os.umask(old)
    assert d is not None
    for made in (trusted / "a", trusted / "a" / "b", d):
        assert (made.stat().st_mode & 0o777) == 0o700, made


def test_group_writable_or_sticky_ancestors_are_refused(tmp_path, monkeypatch):
    os.chmod(tmp_path, 0o1777)            # like /tmp
    monkeypatch.setenv("FDSL_CACHE", str(tmp_path / "c"))
    assert cache.private_dir("parser") is None
    monkeypatch.setenv("FDSL_CACHE", "off")
    assert cache.private_dir("parser") is None


def test_parser_tables_are_cached_and_reused(trusted):
    env = dict(os.environ, FDSL_CACHE=str(trusted / "c"))
    code = "from fdsl.lang import parser; parser.parse_source('readonly\\n')"
    for _ in range(2):
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    [tables] = (trusted / "c" / "parser").iterdir()
    assert tables.name.endswith(".tables") and tables.stat().st_size > 1000


# ---- compiled objects of .fdsl policies (fdsl.compile.cache), used by fdsl mount

def test_compiled_objects_are_kept_per_abi(trusted, monkeypatch):
    from fdsl import abi
    from fdsl.compile import cache as objects
    from fdsl.vm.loader import load_object

    monkeypatch.setenv("FDSL_CACHE", str(trusted / "c"))
    policy = trusted / "p.fdsl"
    policy.write_text('hide name == ".env"\n')
    data = policy.read_bytes()
    ack, hit = objects.compile_cached(data, str(policy))
    assert not hit
    v1, hit = objects.compile_cached(data, str(policy), abi_id="rfc-v1")
    assert not hit and v1 != ack and load_object(v1).meta.abi == abi.RFC_V1.id
    assert objects.compile_cached(data, str(policy), abi_id="rfc-v1") == (v1, True)
    assert objects.compile_cached(data, str(policy)) == (ack, True)

def test_compiled_object_is_reused_until_an_include_changes(trusted, monkeypatch):
    from fdsl.compile import cache as objects

    monkeypatch.setenv("FDSL_CACHE", str(trusted / "c"))
    policy_dir = trusted / "policy"
    policy_dir.mkdir()
    (policy_dir / "names.fdsl").write_text('set secrets = {".env"}\n')
    main = policy_dir / "main.fdsl"
    main.write_text('include "names.fdsl"\nhide name in secrets\n')
    data = main.read_bytes()
    first, hit = objects.compile_cached(data, str(main))
    assert not hit and first.startswith(b"\x7fELF")
    again, hit = objects.compile_cached(data, str(main))
    assert hit and again == first
    (policy_dir / "names.fdsl").write_text('set secrets = {".env", ".git", ".ssh"}\n')
    changed, hit = objects.compile_cached(data, str(main))
    assert not hit and changed != first


def test_an_entry_others_could_write_is_ignored(trusted, monkeypatch):
    from fdsl.compile import cache as objects

    monkeypatch.setenv("FDSL_CACHE", str(trusted / "c"))
    policy = trusted / "p.fdsl"
    policy.write_text("readonly\n")
    objects.compile_cached(policy.read_bytes(), str(policy))
    [entry] = (trusted / "c" / "objects").glob("*.o")
    os.chmod(entry, 0o666)
    assert objects.lookup(policy.read_bytes(), str(policy)) is None


def test_an_include_swapped_for_a_fifo_never_blocks_the_cache(trusted, monkeypatch):
    """The cache re-reads every recorded include: it must read them as the compiler does
    (issue 11, item 8), so a FIFO is a cache miss and then a clear include error."""
    import threading

    from fdsl.compile import cache as objects
    from fdsl.errors import PolicyError

    monkeypatch.setenv("FDSL_CACHE", str(trusted / "c"))
    policy_dir = trusted / "policy"
    policy_dir.mkdir()
    names = policy_dir / "names.fdsl"
    names.write_text('set secrets = {".env"}\n')
    main = policy_dir / "main.fdsl"
    main.write_text('include "names.fdsl"\nhide name in secrets\n')
    data = main.read_bytes()
    objects.compile_cached(data, str(main))
    names.unlink()
    os.mkfifo(names)
    outcome: list[BaseException | bytes] = []

    def again() -> None:
        try:
            outcome.append(objects.compile_cached(data, str(main))[0])
        except BaseException as err:   # noqa: BLE001 - handed to the test thread
            outcome.append(err)

    worker = threading.Thread(target=again, daemon=True)
    worker.start()
    worker.join(timeout=120)       # only a guard against hanging the suite
    if worker.is_alive():          # unblock the open() so the thread can end
        os.close(os.open(names, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("compile_cached blocked on a FIFO include")
    assert isinstance(outcome[0], PolicyError) and "a FIFO" in str(outcome[0])
