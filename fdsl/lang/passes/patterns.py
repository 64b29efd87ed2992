"""String patterns of `like` / `matches` / `startswith` / `endswith`: their texts and checks.

Shared by the type pass (is a pattern well formed?) and the placement pass
(can BPF match it?), so both read the same pattern texts.
"""
from __future__ import annotations

from fdsl import regex
from fdsl.lang import ast as A
from fdsl.lang.diagnostics import Diagnostics, Span
from fdsl.lang.passes.common import const_str


def pattern_strings(pattern: A.Expr, keyword: str, diags: Diagnostics | None = None
                    ) -> list[tuple[str, Span]]:
    """The constant texts of a pattern (one string or a set of them) with their spans."""
    if pattern.ty is None:
        return []
    single = const_str(pattern)
    if single is not None:
        return [(single, pattern.span)]
    members: list[A.Expr] | None = None
    if isinstance(pattern, A.SetLit):
        members = pattern.members
    elif isinstance(pattern, A.Ident) and isinstance(pattern.ref, A.SetRef):
        members = pattern.ref.decl.members
    if members is not None and (pattern.ty.kind == "strset" or not members):
        own = isinstance(pattern, A.SetLit)
        found = []
        for m in members:
            text = const_str(m)
            if text is not None:
                found.append((text, m.span if own else pattern.span))
        return found
    if diags is not None:
        diags.error(f"the pattern of '{keyword}' must be a string literal or a set of strings",
                    pattern.span)
    return []


def check_pattern(kind: str, text: str, span: Span, diags: Diagnostics) -> None:
    if kind == "regex":
        try:
            regex.compile_pattern(text)
        except regex.RegexError as err:
            diags.error(f"invalid regular expression: {err}", span, regex.hint_for(text))
    elif kind == "glob":
        problem = glob_problem(text)
        if problem:
            diags.error(f"invalid glob pattern: {problem}", span)


def simple_glob(pattern: str) -> bool:
    """Globs the BPF code can match: at most one '*', any '?', nothing else special."""
    return pattern.count("*") <= 1 and not any(c in pattern for c in "[]\\")


def glob_problem(text: str) -> str | None:
    """Why a `like` pattern is malformed (unclosed class, empty class), or None."""
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            j = i + 1
            if j < len(text) and text[j] in "!^":
                j += 1
            if j < len(text) and text[j] == "]":
                j += 1
            end = text.find("]", j)
            if end < 0:
                return "'[' is not closed"
            i = end + 1
            continue
        if c == "/":
            return "a name never contains '/'"
        i += 1
    return None
