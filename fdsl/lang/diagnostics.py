"""Source spans and diagnostics, carried through every compiler pass.

A `Diagnostic` is rendered kafel/rustc style:

    policy.fdsl:3:12: error: unknown field 'out.attr.mdoe' for getattr post
        on getattr post { out.attr.mdoe = 0o644 }
                          ^^^^^^^^^^^^^
    hint: did you mean 'out.attr.mode'?
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


@dataclass(frozen=True)
class Span:
    """A region of one source file; lines and columns are 1-based, end exclusive."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    @staticmethod
    def unknown(file: str = "<unknown>") -> "Span":
        return Span(file, 1, 1, 1, 1)


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


@dataclass
class Diagnostic:
    severity: Severity
    message: str
    span: Span
    hint: str | None = None
    notes: list[tuple[str, Span | None]] = field(default_factory=list)


@dataclass
class Sources:
    """Text of every file read, so diagnostics can quote the offending line."""

    texts: dict[str, str] = field(default_factory=dict)

    def line(self, file: str, number: int) -> str | None:
        text = self.texts.get(file)
        if not text:
            return None          # unknown file, or one that was not text at all
        # Split on "\n" only: the lexer counts lines that way, and splitlines()
        # would also break at \f, \x1c, U+2028 ... and misplace the caret.
        lines = text.split("\n")
        return lines[number - 1].rstrip("\r") if 0 < number <= len(lines) else None


def render(diag: Diagnostic, sources: Sources) -> str:
    """Format one diagnostic with its source line and a caret underline."""
    span = diag.span
    out = [f"{span.file}:{span.line}:{span.col}: {diag.severity.value}: {diag.message}"]
    text = sources.line(span.file, span.line)
    if text is not None:
        # One printable character per source character keeps the caret aligned.
        shown = "".join(c if c.isprintable() else " " if c == "\t" else "?" for c in text)
        out.append(f"    {shown}")
        width = (span.end_col - span.col) if span.end_line == span.line else len(text) - span.col + 1
        out.append("    " + " " * (span.col - 1) + "^" * max(1, width))
    if diag.hint:
        out.append(f"    hint: {diag.hint}")
    for message, note_span in diag.notes:
        where = f"{note_span.file}:{note_span.line}:{note_span.col}: " if note_span else ""
        out.append(f"    {where}note: {message}")
    return "\n".join(out)


def render_all(diags: list[Diagnostic], sources: Sources) -> str:
    return "\n".join(render(d, sources) for d in diags)


class Diagnostics:
    """The one collector every checker pass reports into.

    A problem found twice (the same message at the same place, for instance in
    a predicate inlined at two calls) is kept once; `ordered` sorts by position
    so the output does not depend on which pass found what first."""

    def __init__(self) -> None:
        self.items: list[Diagnostic] = []
        self._seen: set[tuple[Severity, str, Span]] = set()

    def report(self, severity: Severity, message: str, span: Span, hint: str | None = None,
               notes: list[tuple[str, Span | None]] | None = None) -> None:
        key = (severity, message, span)
        if key in self._seen:
            return
        self._seen.add(key)
        self.items.append(Diagnostic(severity, message, span, hint, notes or []))

    def error(self, message: str, span: Span, hint: str | None = None,
              notes: list[tuple[str, Span | None]] | None = None) -> None:
        self.report(Severity.ERROR, message, span, hint, notes)

    def warn(self, message: str, span: Span, hint: str | None = None,
             notes: list[tuple[str, Span | None]] | None = None) -> None:
        self.report(Severity.WARNING, message, span, hint, notes)

    def error_count(self) -> int:
        return sum(1 for d in self.items if d.severity is Severity.ERROR)

    def has_error_within(self, span: Span) -> bool:
        """Whether some error was reported inside `span` (by any pass)."""
        return any(d.severity is Severity.ERROR and d.span.file == span.file
                   and (d.span.line, d.span.col) >= (span.line, span.col)
                   and (d.span.end_line, d.span.end_col) <= (span.end_line, span.end_col)
                   for d in self.items)

    def ordered(self, files: list[str]) -> list[Diagnostic]:
        """By file (in include order), line and column; stable for equal positions."""
        order = {f: i for i, f in enumerate(files)}
        return sorted(self.items, key=lambda d: (order.get(d.span.file, len(order)),
                                                 d.span.line, d.span.col))
