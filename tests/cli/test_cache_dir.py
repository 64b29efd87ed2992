"""The private cache directory (Lark's parser tables are pickles: only trusted dirs)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from fdsl import cache

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def trusted(tmp_path):
    """A scratch dir whose ancestors nobody else may write (not under the sticky /tmp)."""
    path = Path(tempfile.mkdtemp(prefix=".cache-test-", dir=ROOT))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_private_dir_is_created_0700(trusted, monkeypatch):
    monkeypatch.setenv("FDSL_CACHE", str(trusted / "c"))
    d = cache.private_dir("parser")
    assert d is not None and d.is_dir() and (d.stat().st_mode & 0o777) == 0o700


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
