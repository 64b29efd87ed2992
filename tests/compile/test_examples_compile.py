"""Every example and the hand-written-equivalent fixture compile; explain snapshot."""
from __future__ import annotations

import pathlib

import pytest

from fdsl.compile.driver import compile_file, load_checked
from fdsl.compile.explain import explain
from fdsl.compile.planner import build_plan

from backend_util import objdump

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.fdsl"))
FIXTURE = ROOT / "tests" / "fixtures" / "handwritten_equivalent.fdsl"
SNAPSHOT = ROOT / "tests" / "fixtures" / "explain_private_subtree.txt"


@pytest.mark.parametrize("path", EXAMPLES + [FIXTURE], ids=lambda p: p.name)
def test_compiles(path, tmp_path):
    result = compile_file(str(path))
    assert result.obj[:4] == b"\x7fELF"
    objdump(result.obj, tmp_path)
    assert result.metadata.programs


def test_explain_snapshot():
    """`fdsl explain` output for examples/private_subtree.fdsl.

    A missing snapshot is a failure, never written here.  Regenerate after an
    intended change with:
    PYTHONPATH=tests/compile .venv/bin/python -c 'import test_examples_compile as t; t.regenerate()'"""
    assert SNAPSHOT.exists(), f"{SNAPSHOT} is missing: regenerate it (see this test's docstring)"
    assert _explain(ROOT / "examples" / "private_subtree.fdsl") == SNAPSHOT.read_text()


def _explain(path: pathlib.Path) -> str:
    import os

    policy, _, _ = load_checked(os.path.relpath(path, ROOT))
    return explain(build_plan(policy))


def regenerate() -> None:
    import os

    os.chdir(ROOT)
    SNAPSHOT.write_text(_explain(ROOT / "examples" / "private_subtree.fdsl"))
