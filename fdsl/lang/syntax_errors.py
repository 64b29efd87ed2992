"""Syntax errors as diagnostics: lark's lexing/parsing errors in the user's terms.

"unexpected ')'", what was expected in words ("an expression, ']'"), an
unclosed '{' found where it was opened, and hints for common slips ('=' for
'==', 'elif', single quotes).
"""
from __future__ import annotations

import re

from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.lexer import PatternStr

from fdsl.lang.diagnostics import Diagnostic, Severity, Span


def _error(message: str, span: Span, hint: str | None = None) -> Diagnostic:
    """An error diagnostic (the parser's own errors are made the same way)."""
    return Diagnostic(Severity.ERROR, message, span, hint)


_FRIENDLY = {
    "NAME": "a name", "INT": "a number", "STRING": "a string", "_NL": "end of line",
    "$END": "end of file", "COMP_OP": "a comparison operator", "SHIFT_OP": "'<<' or '>>'",
    "MUL_OP": "'*', '/' or '%'", "AUG_ASSIGN": "'|=', '&=', '+=', '-=' or '^='",
    "SET_OPEN": "'{'",
}
_EXPR_START = {"INT", "STRING", "NAME", "LPAR"}


def _describe_terminal(name: str) -> str:
    if name in _FRIENDLY:
        return _FRIENDLY[name]
    try:
        from fdsl.lang.parser import _lark   # the one parser; imported late (it imports us)

        term = _lark().get_terminal(name)
    except KeyError:
        return name.lower()
    if isinstance(term.pattern, PatternStr):
        return f"'{term.pattern.value}'"
    return name.lower()


def describe_expected(expected: set[str]) -> str:
    """Render lark's expected-terminal set as a short English list."""
    names = set(expected)
    parts: list[str] = []
    if _EXPR_START <= names:
        parts.append("an expression")
        names -= _EXPR_START | {"MINUS", "TILDE", "NOT", "IN", "OUT", "TRUE", "FALSE", "SET_OPEN"}
    parts += sorted(_describe_terminal(n) for n in names)
    if len(parts) > 8:
        parts = parts[:8] + ["..."]
    return ", ".join(parts)


def _token_text(tok: Token) -> str:
    if tok.type == "$END":
        return "end of file"
    if tok.type == "_NL":
        return "end of line" if "\n" in tok.value else "';'"
    value = str(tok.value)
    return f"'{value[:40]}'" if tok.type != "STRING" else f"string {value[:40]}"


_BRACE_SCAN = re.compile(r'"(?:[^"\\\n]|\\.)*"?|#[^\n]*|[{}]')


def _unclosed_brace(text: str, file: str) -> Span | None:
    """Position of the innermost '{' left open at the end of the text."""
    stack: list[int] = []
    for m in _BRACE_SCAN.finditer(text):
        if m.group() == "{":
            stack.append(m.start())
        elif m.group() == "}" and stack:
            stack.pop()
    if not stack:
        return None
    pos = stack[-1]
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return Span(file, line, col, line, col + 1)


def _end_span(text: str, file: str) -> Span:
    lines = text.split("\n")
    last = len(lines)
    col = len(lines[-1]) + 1
    return Span(file, last, col, last, col + 1)


def syntax_diag(err: UnexpectedInput, text: str, file: str) -> Diagnostic:
    """One friendly diagnostic for a lark lexing or parsing error."""
    if isinstance(err, UnexpectedCharacters):
        pos, line, column = err.pos_in_stream or 0, err.line or 1, err.column or 1
        ch = text[pos] if 0 <= pos < len(text) else "?"
        span = Span(file, line, column, line, column + 1)
        if ch == '"':
            return _error("unterminated string literal", span, 'close the string with \'"\' on the same line')
        if ch == "'":
            return _error("strings use double quotes", span, 'write "..." instead of \'...\'')
        shown = ch if ch.isprintable() and not ch.isspace() else f"U+{ord(ch):04X}"
        return _error(f"unexpected character '{shown}'", span)
    assert isinstance(err, (UnexpectedToken, UnexpectedEOF))
    tok = err.token if isinstance(err, UnexpectedToken) else Token("$END", "")
    if tok.type == "$END" or tok.line is None or tok.line < 1 or tok.column is None:
        span = _end_span(text, file)
    else:
        end_col = tok.end_column if tok.end_line == tok.line and tok.end_column else tok.column + 1
        span = Span(file, tok.line, tok.column, tok.line, end_col)
    expected = getattr(err, "expected", None) or getattr(err, "accepts", None) or set()
    message = f"unexpected {_token_text(tok)}"
    hint = f"expected {describe_expected(set(expected))}" if expected else None
    if tok.type == "EQUAL" and "COMP_OP" in expected:
        hint = "use '==' to compare"
    elif tok.type == "$END" and "RBRACE" in expected:
        brace = _unclosed_brace(text, file)
        if brace is not None:
            return _error("'{' is not closed", brace, "the file ends before its '}'")
        message, hint = "unexpected end of file", "a '{' is not closed"
    elif tok.type == "NAME" and str(tok) in ("elif", "elsif"):
        hint = "write 'else if'"
    return _error(message, span, hint)
