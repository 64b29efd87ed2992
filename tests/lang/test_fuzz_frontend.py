"""Hypothesis: no input makes the front end raise; it only ever returns diagnostics."""
from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fdsl.lang.checker import check
from fdsl.lang.diagnostics import Diagnostic, render_all
from fdsl.lang.parser import parse_source

ROOT = Path(__file__).resolve().parent.parent.parent
SEEDS = [p.read_text() for p in sorted((ROOT / "examples").glob("*.fdsl"))]
SEEDS += [p.read_text() for p in sorted((ROOT / "tests/golden").glob("*.fdsl"))
          if p.read_bytes().isascii()]
TOKENS = ["on", "pre", "post", "{", "}", "(", ")", "[", "]", ",", ";", "\n", "if", "else", "deny",
          "allow", "return", "name", "in.flags", "out.attr.mode", "==", "=", "&=", "in", "not",
          "like", "matches", '"*.key"', '"x', "0x1F", "4K", "99999999999999999999999", "uid",
          "ENOENT", "EPERMM", "count", "log", '"%d"', "drop", "entries", "where", "under",
          '"a/b"', "test", "expect", "hide", "perms", '"a-w"', "readonly", "let", "x", "&", "~",
          "-", "<<", "set", "const", "predicate", "counter", "max", "all", "mutating", "#"]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run_frontend(text: str | bytes) -> list[Diagnostic]:
    """Parse, then check when parsing succeeded; rendering must work too."""
    policy, sources, diags = parse_source(text, "fuzz.fdsl")
    if not diags:
        diags = check(policy, sources)
    render_all(diags, sources)
    for d in diags:
        assert isinstance(d, Diagnostic) and d.span.line >= 1
    return diags


@SETTINGS
@given(st.text(max_size=300))
def test_random_text(text: str) -> None:
    run_frontend(text)


@SETTINGS
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    run_frontend(data)


@SETTINGS
@given(st.lists(st.sampled_from(TOKENS), max_size=60).map(" ".join))
def test_token_soup(text: str) -> None:
    run_frontend(text)


@SETTINGS
@given(st.sampled_from(SEEDS), st.data())
def test_mutated_policies(seed: str, data: st.DataObject) -> None:
    text = seed
    for _ in range(data.draw(st.integers(1, 4))):
        if not text:
            break
        pos = data.draw(st.integers(0, len(text) - 1))
        action = data.draw(st.sampled_from(["delete", "insert", "replace", "duplicate"]))
        if action == "delete":
            end = pos + data.draw(st.integers(1, 10))
            text = text[:pos] + text[end:]
        elif action == "insert":
            text = text[:pos] + data.draw(st.sampled_from(TOKENS)) + text[pos:]
        elif action == "replace":
            text = text[:pos] + data.draw(st.characters()) + text[pos + 1:]
        else:
            end = pos + data.draw(st.integers(1, 40))
            text = text[:end] + text[pos:end] + text[end:]
    run_frontend(text)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3000), st.sampled_from(["(", "-", "~", "not ", "if uid { "]))
def test_deep_nesting(depth: int, opener: str) -> None:
    if opener.startswith("if"):
        text = "on lookup pre { " + opener * depth + "deny EPERM" + " }" * depth + " }"
    else:
        closer = ")" if opener == "(" else ""
        text = "const A = " + opener * depth + "1" + closer * depth
    run_frontend(text)


REGEX_TOKENS = ["a", "b", ".", "(", ")", "+", "*", "?", "|", "^", "$", "{2,}", "{3}", "[ab]", "[^a]",
                "\\\\1", "(?=", "(?!", "(?<=", "(?:", "(?P<g>", "*+", "\\\\d", "\\\\w", "é"]


@SETTINGS
@given(st.lists(st.sampled_from(REGEX_TOKENS), min_size=1, max_size=25).map("".join))
def test_fuzzed_regexes_compile_to_re2_or_a_diagnostic(pattern: str) -> None:
    """A `matches` pattern is either refused at compile time (with a position) or runs on
    RE2 in the evaluator: a hostile 4000-character name gets an answer (issue 11, item 10)."""
    from fdsl.vm import userspace

    diags = run_frontend(f'hide name matches "{pattern}"\n')
    if diags:
        assert all(d.span.line == 1 for d in diags)
        return
    text = pattern.replace("\\\\", "\\")
    rule = {"e": "strtest", "kind": "regex", "x": {"e": "field", "path": "name"}, "pats": [text]}
    body = [{"s": "if", "c": rule, "then": [{"s": "deny", "errno": {"e": "int", "v": 2}}], "else": []}]
    for name in ("a" * 4000 + "!", "ab" * 2000, "é" * 1000 + "\udce9"):
        outcome = userspace.evaluate([body], userspace.Request("lookup", "pre", {"name": name}))
        assert outcome.decision in (None, "deny")
