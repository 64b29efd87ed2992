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
