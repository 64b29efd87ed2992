"""`matches` runs on RE2 (issue 11, item 10): linear-time matching in the daemon, and patterns
RE2 cannot run are refused when the policy compiles, with file:line:col."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fdsl import regex
from fdsl.compile.driver import compile_source
from fdsl.errors import PolicyError
from fdsl.vm import userspace

ROOT = Path(__file__).resolve().parent.parent.parent


def test_catastrophic_backtracking_pattern_answers_through_fdsl_run(tmp_path):
    """Python's re needs ~10 s for 25 characters here and doubles per character; 60 would
    never finish.  The timeout only keeps a regression from hanging the suite."""
    policy = tmp_path / "redos.fdsl"
    policy.write_text('hide name matches "^(a+)+$"\n')
    for name, decision in (("a" * 60 + "b", "allow"), ("a" * 60, "deny")):
        proc = subprocess.run([sys.executable, "-m", "fdsl.cli", "run", str(policy), "--op", "lookup",
                               "--name", name, "--backend", "interp", "--json"],
                              capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert decision in proc.stdout, proc.stdout


@pytest.mark.parametrize("pattern, reason", [
    (r"^(x+)\\1$", "invalid escape sequence"),       # backreference
    (r"^(?=a)", "invalid perl operator"),            # lookahead
    (r"a{1001}", "invalid repetition size"),
])
def test_patterns_re2_cannot_run_are_refused_at_compile_time(pattern, reason):
    with pytest.raises(PolicyError) as err:
        compile_source(f'on lookup pre {{ if name matches "{pattern}" {{ deny ENOENT }} }}\n', "p.fdsl")
    assert f"p.fdsl:1:" in str(err.value) and reason in str(err.value)


def test_python_only_syntax_gets_the_re2_hint():
    with pytest.raises(PolicyError, match="no backreferences, lookaround"):
        compile_source('hide name matches "(?<=x)y"\n', "p.fdsl")


def test_names_that_are_not_utf8_cannot_slip_past_a_pattern():
    rule = {"s": "if", "c": {"e": "strtest", "kind": "regex", "x": {"e": "field", "path": "name"},
                             "pats": ["^caf.*txt$"]},
            "then": [{"s": "deny", "errno": {"e": "int", "v": 2}}], "else": []}
    name = os.fsdecode(b"caf\xe9.txt")          # what the daemon decodes from a Latin-1 name
    outcome = userspace.evaluate([[rule]], userspace.Request("lookup", "pre", {"name": name}))
    assert outcome.decision == "deny"


def test_search_is_bounded_by_re2_memory_budget():
    with pytest.raises(regex.RegexError, match="pattern too large"):
        regex.compile_pattern("|".join(f"{i}x[a-z]{{1000}}" for i in range(1000)))
