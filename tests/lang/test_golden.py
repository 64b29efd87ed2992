"""Golden diagnostics: each tests/golden/NAME.fdsl has the rendered output in NAME.expected.

Run with FDSL_UPDATE_GOLDEN=1 to rewrite the expectations after an intended
change (then review the diff).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from fdsl.lang.checker import check
from fdsl.lang.diagnostics import render_all
from fdsl.lang.parser import parse_file

GOLDEN = Path(__file__).parent.parent / "golden"
CASES = sorted(p.stem for p in GOLDEN.glob("*.fdsl"))


def render_case(name: str) -> str:
    """Run the front end from inside the golden directory so paths stay relative."""
    cwd = os.getcwd()
    os.chdir(GOLDEN)
    try:
        policy, sources, diags = parse_file(f"{name}.fdsl")
        if not diags:
            diags = check(policy, sources)
        return render_all(diags, sources) + "\n"
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("name", CASES)
def test_golden(name: str) -> None:
    got = render_case(name)
    expected_path = GOLDEN / f"{name}.expected"
    if os.environ.get("FDSL_UPDATE_GOLDEN"):
        expected_path.write_text(got, encoding="utf-8")
    assert got.strip(), f"{name}.fdsl produced no diagnostics"
    assert got == expected_path.read_text(encoding="utf-8")
