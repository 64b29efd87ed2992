"""`matches` patterns on RE2 (google-re2): matching time linear in the name, memory bounded.

Python's `re` backtracks: `hide name matches "^(a+)+$"` made one lookup of a
25-character name take seconds in the daemon, doubling per character.  RE2
guarantees linear time and a bounded automaton; in exchange it refuses
backreferences and lookaround, which the checker reports at compile time (the
same `compile_pattern` runs there and in the daemon, so a policy that
compiles never meets a pattern the daemon cannot run).

Patterns and names are matched as UTF-8.  A byte of a name that is not valid
UTF-8 (the daemon decodes names with surrogateescape) is matched as U+FFFD:
`.` and negated classes match it, as Python's `re` did, so such a name cannot
slip past a `hide name matches "^secret.*"`.
"""
from __future__ import annotations

import re
from functools import lru_cache

import re2  # type: ignore[import-untyped]

MAX_MEM = 8 << 20        # RE2's memory budget per compiled pattern (its default, made explicit)
CACHE_PATTERNS = 512     # compiled patterns kept by the evaluator


HINT = "patterns run on RE2 (linear time): no backreferences, lookaround or possessive quantifiers"


def hint_for(pattern: str) -> str | None:
    """HINT when the pattern is valid elsewhere (Python/Perl syntax RE2 lacks), else None."""
    try:
        re.compile(pattern)   # compiling is cheap; only matching can backtrack
    except (re.error, RecursionError, OverflowError):
        return None
    return HINT


class RegexError(ValueError):
    """RE2 cannot run this pattern; str() says why."""


def _options() -> "re2.Options":
    options = re2.Options()
    options.max_mem = MAX_MEM
    options.log_errors = False   # RE2 would print its own copy of the error to stderr
    return options


@lru_cache(maxsize=CACHE_PATTERNS)
def compile_pattern(pattern: str) -> "re2._Regexp":
    """The compiled pattern, or RegexError with RE2's reason."""
    try:
        return re2.compile(pattern.encode("utf-8", "replace"), options=_options())
    except re2.error as err:
        reason = err.args[0] if err.args else err
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise RegexError(str(reason)) from None


_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def _utf8(subject: str) -> bytes:
    try:
        return subject.encode("utf-8")
    except UnicodeEncodeError:   # surrogate-escaped bytes that are not UTF-8
        return _ESCAPED_BYTE.sub("\ufffd", subject).encode("utf-8", "replace")


def search(pattern: str, subject: str) -> bool:
    """Does `pattern` match anywhere in `subject` (a name or path)?"""
    return compile_pattern(pattern).search(_utf8(subject)) is not None
