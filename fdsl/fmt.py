"""`fdsl fmt`: the canonical layout of a policy, comments kept.

Works on the token stream of the parser's own lexer (`Lark.lex` with
`dont_ignore`, so comments and blanks are seen), not on the AST: nothing the
author wrote is lost.  The author's line breaks stay where they are; within a
line tokens get canonical spacing, lines get four spaces of indentation per
open bracket (one more for an expression continued after an operator), runs
of blank lines shrink to one, trailing `;` and blanks go.  The result holds
exactly the same significant tokens (checked: `FormatError` otherwise), so
formatting cannot change what a policy means, and formatting it again
changes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

from lark import Token

from fdsl.errors import FdslError

INDENT = " " * 4
LAYOUT = {"_NL", "COMMENT"}                       # besides the ignored whitespace
OPEN = {"LBRACE": "RBRACE", "LPAR": "RPAR", "LSQB": "RSQB"}
CLOSE = set(OPEN.values())
# A `-` after one of these is binary; anywhere else it is a sign.
VALUE_END = {"NAME", "INT", "STRING", "TRUE", "FALSE", "RPAR", "RSQB", "RBRACE"}


class FormatError(FdslError):
    """The policy cannot be formatted (it does not lex, or a formatter bug was caught)."""


@dataclass
class _Line:
    depth: int          # open brackets at the start of the line
    hanging: bool       # continues an expression from the line above
    tokens: list[Token]
    comment: str | None = None


def format_source(text: str) -> str:
    """The formatted policy; raises FormatError if `text` cannot be tokenized."""
    tokens = _tokens(text)
    out = _render(_lines(tokens))
    if _significant(_tokens(out)) != _significant(tokens):
        raise FormatError("internal error: formatting would change the policy; left as is")
    return out


def _tokens(text: str) -> list[Token]:
    from lark.exceptions import LarkError
    from lark.lexer import LexerThread

    from fdsl.lang.parser import _lark

    # The parser's lexer with nothing ignored and without its post-lexer (which drops
    # the line breaks inside brackets that the layout must keep).
    lexer = _lark()._build_lexer(dont_ignore=True)
    try:
        return [t for t in LexerThread.from_text(lexer, text).lex(None)
                if t.type in LAYOUT or not t.type.startswith("__")
                or t.value.startswith("\\")]    # keep `\`-newline continuations
    except LarkError as err:
        line = getattr(err, "line", "?")
        column = getattr(err, "column", "?")
        raise FormatError(f"{line}:{column}: cannot tokenize: not a valid policy here") from None


def _significant(tokens: list[Token]) -> list[tuple[str, str]]:
    return [(t.type, t.value) for t in tokens
            if t.type not in LAYOUT and not t.type.startswith("__")]


def _lines(tokens: list[Token]) -> list[_Line | None]:
    """Split into lines (None = one blank line), with each line's bracket depth."""
    from fdsl.lang.parser import _CONTINUE_AFTER, _SET_AFTER

    lines: list[_Line | None] = []
    stack: list[str] = []          # "b" block, "s" set literal, "p" (...) or [...]
    current: _Line | None = None
    prev: str | None = None        # last significant token type
    for tok in tokens:
        if tok.type == "_NL" or tok.type.startswith("__"):
            newlines = tok.value.count("\n")
            if newlines == 0:                    # `;` between statements on one line
                if current is not None:
                    current.tokens.append(Token("SEMI", ";"))
                continue
            if current is not None:
                lines.append(current)
                current = None
                if newlines > 1 and not tok.type.startswith("__"):
                    lines.append(None)
            elif newlines > 1 and lines and lines[-1] is not None:
                lines.append(None)
            continue
        if current is None:
            depth = len(stack) - (1 if tok.type in CLOSE and stack else 0)
            inside_block = not stack or stack[-1] == "b"   # brackets indent by themselves
            hanging = prev in _CONTINUE_AFTER and inside_block and tok.type != "COMMENT"
            current = _Line(max(depth, 0), hanging, [])
        if tok.type == "COMMENT":
            current.comment = tok.value.rstrip()
            continue
        if tok.type == "LBRACE":
            stack.append("s" if prev in _SET_AFTER else "b")
        elif tok.type in OPEN:
            stack.append("p")
        elif tok.type in CLOSE and stack:
            stack.pop()
        current.tokens.append(tok)
        prev = tok.type
    if current is not None:
        lines.append(current)
    while lines and lines[0] is None:
        lines.pop(0)
    while lines and lines[-1] is None:
        lines.pop()
    return lines


def _render(lines: list[_Line | None]) -> str:
    from fdsl.lang.parser import _SET_AFTER

    out: list[str] = []
    sets: list[bool] = []          # per open "{": is it a set literal?
    prev_type: str | None = None   # across lines, for set detection
    for line in lines:
        if line is None:
            out.append("")
            continue
        while line.tokens and line.tokens[-1].type == "SEMI":
            line.tokens.pop()      # a trailing `;` says nothing a newline does not
        text, prev_type = _join(line.tokens, sets, prev_type, _SET_AFTER)
        if line.comment is not None:
            text = f"{text}  {line.comment}" if text else line.comment
        indent = INDENT * (line.depth + (1 if line.hanging else 0))
        out.append(indent + text if text else "")
    return "\n".join(out) + "\n" if out else ""


def _join(tokens: list[Token], sets: list[bool], prev: str | None,
          set_after: set[str]) -> tuple[str, str | None]:
    """One line's tokens with canonical spacing; `sets` and `prev` carry the bracket
    state across lines (a set literal may span several)."""
    parts: list[str] = []
    last: Token | None = None
    last_opened_set = False        # `last` is the "{" of a set literal
    last_unary = False             # `last` is a sign, not a subtraction
    for tok in tokens:
        kind = tok.type
        closes_set = False
        if kind == "LBRACE":
            sets.append(prev in set_after)
        elif kind == "RBRACE":
            closes_set = sets.pop() if sets else False
        unary = kind == "MINUS" and (prev is None or prev not in VALUE_END)
        if last is not None and _space_between(last.type, kind, last_opened_set,
                                               closes_set, last_unary):
            parts.append(" ")
        parts.append(tok.value)
        if kind != "SEMI":
            prev = kind
        last, last_unary = tok, unary
        last_opened_set = kind == "LBRACE" and sets[-1]
    return "".join(parts), prev


def _space_between(x: str, y: str, x_opens_set: bool, y_closes_set: bool,
                   x_unary: bool) -> bool:
    """Whether a blank separates token types `x` and `y` on one line."""
    if y in ("SEMI", "COMMA", "DOT", "RPAR", "RSQB") or x in ("DOT", "LPAR", "LSQB"):
        return False
    if y in ("LPAR", "LSQB") and x == "NAME":
        return False               # a call or a map index: f(x), m[k]
    if x == "LBRACE" and y == "RBRACE":
        return False               # {} (an empty block or set)
    if x_opens_set or y_closes_set:
        return False               # {"a", "b"}
    if x == "TILDE" or (x == "MINUS" and x_unary):
        return False               # ~mask, -1
    return True
