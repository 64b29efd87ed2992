"""`fdsl fmt`: canonical layout, idempotent, comments and meaning kept."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fdsl.fmt import format_source
from fdsl.lang.frontend import load_policy
from mounting import FDSL, ROOT

MESSY = '''

# header
const   LIMIT=64K   # trailing
set secrets = { ".env",".git" ,
     ".ssh" }
predicate secret( n ) = n in secrets or
name like "*.key"


default allow ;
on lookup pre  {if name=="core"{deny ENOENT}}
on getattr post { out.attr.mode &= ~0o022; out.attr.uid = 3 - -1 }
on all pre {
  # inside
      log "uid %d", uid;
}
'''

TIDY = '''# header
const LIMIT = 64K  # trailing
set secrets = {".env", ".git",
    ".ssh"}
predicate secret(n) = n in secrets or
    name like "*.key"

default allow
on lookup pre { if name == "core" { deny ENOENT } }
on getattr post { out.attr.mode &= ~0o022; out.attr.uid = 3 - -1 }
on all pre {
    # inside
    log "uid %d", uid
}
'''

POLICIES = sorted((ROOT / "examples").glob("*.fdsl")) + sorted((ROOT / "bench" / "policies").glob("*.fdsl"))


def test_messy_policy_gets_the_canonical_layout():
    assert format_source(MESSY) == TIDY


def test_formatting_twice_changes_nothing():
    assert format_source(TIDY) == TIDY


def test_meaning_is_kept():
    before, _, _ = load_policy(text=MESSY)
    after, _, _ = load_policy(text=format_source(MESSY))
    assert [type(i).__name__ for i in before.items] == [type(i).__name__ for i in after.items]


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.name)
def test_shipped_policies_are_formatted_and_keep_every_comment(path: Path):
    text = path.read_text()
    out = format_source(text)
    assert out == text, f"{path} is not formatted: run fdsl fmt {path}"
    comments = [line.strip() for line in text.splitlines() if line.strip().startswith("#")]
    assert all(c in out for c in comments)


def _fdsl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*FDSL, *args], input=stdin, capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_check_and_rewrite(tmp_path):
    path = tmp_path / "p.fdsl"
    path.write_text(MESSY)
    proc = _fdsl("fmt", "--check", str(path))
    assert proc.returncode == 1 and "would reformat" in proc.stdout
    assert path.read_text() == MESSY
    assert _fdsl("fmt", str(path)).returncode == 0
    assert path.read_text() == TIDY
    assert _fdsl("fmt", "--check", str(path)).returncode == 0


def test_stdin_and_syntax_errors():
    assert _fdsl("fmt", "-", stdin=MESSY).stdout == TIDY
    proc = _fdsl("fmt", "-", stdin="hide name ==\n")
    assert proc.returncode == 1 and "<stdin>:2:1: error" in proc.stderr
