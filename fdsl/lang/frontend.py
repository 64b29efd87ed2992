"""The front end in one call: parse + check, or a `PolicyError` with every diagnostic.

The back end and the CLI use this so that "did the policy compile?" has one
answer everywhere.
"""
from __future__ import annotations

import os

from fdsl.lang import ast as A
from fdsl.lang.checker import check
from fdsl.lang.diagnostics import Diagnostic, Severity, Sources, render_all
from fdsl.errors import PolicyError
from fdsl.lang.parser import parse_file, parse_source


def load_policy(path: str | os.PathLike | None = None, *, text: str | bytes | None = None,
                filename: str = "<string>",
                include_dirs: tuple[str, ...] | list[str] = ()) -> tuple[A.Policy, Sources, list[Diagnostic]]:
    """Parse and check a policy file (`path`) or policy text (`text=`).

    Includes may also come from `include_dirs` (the `-I` options).
    Returns `(policy, sources, warnings)`.  Raises `PolicyError` carrying all
    diagnostics (errors and warnings, rendered) when there is any error.
    """
    if text is None and path is None:
        raise ValueError("load_policy needs a path or text=")
    if text is not None:
        policy, sources, diags = parse_source(text, filename, include_dirs)
    else:
        policy, sources, diags = parse_file(os.fspath(path), include_dirs)  # type: ignore[arg-type]
    if not has_errors(diags):
        diags = diags + check(policy, sources)
    if has_errors(diags):
        raise PolicyError(diags, render_all(diags, sources))
    return policy, sources, [d for d in diags if d.severity is not Severity.ERROR]


def has_errors(diags: list[Diagnostic]) -> bool:
    return any(d.severity is Severity.ERROR for d in diags)
