"""Source text -> AST, with include resolution and syntax diagnostics.

The grammar lives in `grammar/fdsl.lark` (LALR(1), basic lexer).  Lark calls
the `_Builder` callbacks while it reduces, so the AST is built without a
recursive tree walk (deeply nested input cannot blow the Python stack here);
a separate iterative depth check then rejects trees too deep for the later
recursive passes.  Syntax errors never raise: they become `Diagnostic`s, and
when a file has one, each top-level item is re-parsed on its own so that every
broken item is reported in one run.
"""
from __future__ import annotations

import dataclasses
import importlib.resources
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator

from lark import Lark, Token, Transformer
from lark.exceptions import LarkError, UnexpectedInput

from fdsl.lang import ast as A
from fdsl.files import MAX_POLICY_BYTES, InputFileError, read_regular_file
from fdsl.lang.diagnostics import Diagnostic, Severity, Sources, Span
from fdsl.lang.syntax_errors import syntax_diag
from fdsl.lang.includes import IncludeError, IncludeRules

MAX_DEPTH = 100          # deepest AST accepted (expressions + statements + items)
MAX_INT = (1 << 64) - 1
_SUFFIX = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
_STRTEST_KIND = {"startswith": "startswith", "endswith": "endswith", "like": "glob", "matches": "regex"}
ITEM_KEYWORDS = (
    "include", "const", "set", "predicate", "counter", "map", "default", "readonly", "hide",
    "perms", "force_user", "force_group", "on", "under", "userspace", "test",
)


def _error(message: str, span: Span, hint: str | None = None) -> Diagnostic:
    return Diagnostic(Severity.ERROR, message, span, hint)


# ------------------------------------------------------------------ post-lexer

# Tokens after which a newline cannot end a statement, so it is a continuation.
_CONTINUE_AFTER = {
    "EQUAL", "AUG_ASSIGN", "COMMA", "OR", "AND", "NOT", "IN", "COMP_OP",
    "STRTEST_STARTSWITH", "STRTEST_ENDSWITH", "STRTEST_LIKE", "STRTEST_MATCHES",
    "SHIFT_OP", "MUL_OP", "BAR", "CARET", "AMP", "PLUS", "MINUS", "TILDE", "DOT",
}
# Tokens after which "{" opens a set literal rather than a block.
_SET_AFTER = {"EQUAL", "IN", "LPAR", "COMMA", "COMP_OP", "OR", "AND", "WHERE",
              "STRTEST_STARTSWITH", "STRTEST_ENDSWITH", "STRTEST_LIKE", "STRTEST_MATCHES"}


# Tokens before which a newline cannot end a statement: `else`, and `and`/`or`
# starting a continuation line.
_CONTINUE_BEFORE = {"ELSE", "AND", "OR"}
# Tokens that may follow a block's `}` on the same line without a separator.
_AFTER_BLOCK = {"ELSE", "RBRACE", "_NL"}


class _PostLexer:
    """Turns raw newlines into statement separators where they mean one.

    A block's closing `}` also ends its statement or item, so what follows it
    on the same line needs no `;` (`if x { deny EIO } allow`)."""

    always_accept = ()

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        stack: list[str] = []          # "p" (...)/[...], "s" set literal, "b" block
        prev: str | None = None
        pending: Token | None = None
        block_closed = False
        for tok in stream:
            kind = tok.type
            if kind == "_NL":
                if prev is None or prev in _CONTINUE_AFTER or (stack and stack[-1] in "ps"):
                    continue
                pending = pending or tok
                continue
            if pending is not None and kind not in _CONTINUE_BEFORE:
                yield pending
            elif pending is None and block_closed and kind not in _AFTER_BLOCK:
                yield Token.new_borrow_pos("_NL", ";", tok)
            pending = None
            block_closed = kind == "RBRACE" and bool(stack) and stack[-1] == "b"
            if kind == "LBRACE":
                if prev in _SET_AFTER:
                    tok = Token.new_borrow_pos("SET_OPEN", tok.value, tok)
                    stack.append("s")
                else:
                    stack.append("b")
            elif kind in ("LPAR", "LSQB"):
                stack.append("p")
            elif kind in ("RPAR", "RSQB", "RBRACE") and stack:
                stack.pop()
            prev = tok.type
            yield tok
        if pending is not None:
            yield pending


# ---------------------------------------------------------------- AST builder

@dataclass
class _Seq:
    """An intermediate list of nodes with the span it covers."""

    span: Span
    items: list


class _Builder(Transformer):
    """Lark callbacks, one per grammar rule; `file` and `diags` are set per parse."""

    def __init__(self) -> None:
        super().__init__(visit_tokens=False)
        self.file = "<string>"
        self.diags: list[Diagnostic] = []

    # -- helpers
    def span(self, *parts: Any) -> Span:
        found = [self._span_of(p) for p in parts if p is not None]
        spans = [s for s in found if s is not None]
        if not spans:
            return Span.unknown(self.file)
        first, last = spans[0], spans[-1]
        return Span(self.file, first.line, first.col, last.end_line, last.end_col)

    def _span_of(self, part: Any) -> Span | None:
        if isinstance(part, Token):
            if part.line is None or part.column is None:
                return None
            return Span(self.file, part.line, part.column, part.end_line or part.line,
                        part.end_column or part.column + 1)
        if isinstance(part, (A.Node, _Seq)):
            return part.span
        return None

    def whole(self, ch: list) -> Span:
        real = [c for c in ch if c is not None]
        return self.span(real[0], real[-1]) if real else Span.unknown(self.file)

    def string(self, tok: Token) -> str:
        return unescape(tok, self.span(tok), self.diags)

    @staticmethod
    def nodes(ch: list, kind: type | tuple[type, ...] = A.Node) -> list:
        return [c for c in ch if isinstance(c, kind)]

    # -- top level
    def start(self, ch: list) -> _Seq:
        return _Seq(self.whole(ch) if ch else Span.unknown(self.file), self.nodes(ch, A.Item))

    def include(self, ch: list) -> A.Include:
        return A.Include(self.whole(ch), self.string(ch[1]))

    def const_decl(self, ch: list) -> A.ConstDecl:
        return A.ConstDecl(self.whole(ch), str(ch[1]), ch[3])

    def set_decl(self, ch: list) -> A.SetDecl:
        return A.SetDecl(self.whole(ch), str(ch[1]), ch[3].members)

    def pred_decl(self, ch: list) -> A.PredDecl:
        params = next((c.items for c in ch if isinstance(c, _Seq)), [])
        return A.PredDecl(self.whole(ch), str(ch[1]), params, ch[-1])

    def params(self, ch: list) -> _Seq:
        return _Seq(self.whole(ch), [str(t) for t in ch if isinstance(t, Token) and t.type == "NAME"])

    def counter_decl(self, ch: list) -> A.MapDecl:
        names = [t for t in ch if isinstance(t, Token) and t.type == "NAME"]
        kinds = [t for t in ch if isinstance(t, Token) and t.type.startswith("MAPKIND")]
        max_expr = next((c for c in ch if isinstance(c, A.Expr)), None)
        decl = A.MapDecl(self.whole(ch), str(names[0]), "counter", "array", None, A.Type("int", 64), 1)
        if len(names) > 1:
            decl.key_type_name = str(names[1])
            decl.key_type = key_type(str(names[1]))
            decl.map_type = str(kinds[0]) if kinds else "hash"
            decl.max_entries = 1024
            decl.max_expr = max_expr
        return decl

    def map_decl(self, ch: list) -> A.MapDecl:
        """`map NAME[KEY] -> VALUE [array|hash] [max N]`: hash and 1024 entries by default."""
        names = [t for t in ch if isinstance(t, Token) and t.type == "NAME"]
        kinds = [t for t in ch if isinstance(t, Token) and t.type.startswith("MAPKIND")]
        max_expr = next((c for c in ch if isinstance(c, A.Expr)), None)
        value_name = str(names[2])
        decl = A.MapDecl(self.whole(ch), str(names[0]), "map", str(kinds[0]) if kinds else "hash",
                         key_type(str(names[1])), key_type(value_name) or A.Type("int", 64), 1024,
                         max_expr=max_expr, key_type_name=str(names[1]),
                         value_type_name=value_name)
        return decl

    def default_decl(self, ch: list) -> A.Default:
        return A.Default(self.whole(ch), ch[1])

    def readonly(self, ch: list) -> A.Readonly:
        return A.Readonly(self.whole(ch))

    def hide(self, ch: list) -> A.Hide:
        return A.Hide(self.whole(ch), ch[1])

    def perms(self, ch: list) -> A.Perms:
        return A.Perms(self.whole(ch), self.string(ch[1]))

    def force_user(self, ch: list) -> A.ForceOwner:
        return A.ForceOwner(self.whole(ch), ch[1], None)

    def force_group(self, ch: list) -> A.ForceOwner:
        return A.ForceOwner(self.whole(ch), None, ch[1])

    def rule(self, ch: list) -> A.Rule:
        return A.Rule(self.whole(ch), ch[1].items, str(ch[2]), ch[3].items)

    def op_list(self, ch: list) -> _Seq:
        return _Seq(self.whole(ch), self.nodes(ch, A.OpName))

    def opname(self, ch: list) -> A.OpName:
        return A.OpName(self.whole(ch), str(ch[0]))

    def under_rules(self, ch: list) -> A.Under:
        return A.Under(self.whole(ch), self.string(ch[1]), "rules", ch[2].items)

    def under_passthrough(self, ch: list) -> A.Under:
        return A.Under(self.whole(ch), self.string(ch[1]), "passthrough")

    def under_backing(self, ch: list) -> A.Under:
        return A.Under(self.whole(ch), self.string(ch[1]), "backing", backing=self.string(ch[3]))

    def userspace(self, ch: list) -> A.UserspaceBlock:
        return A.UserspaceBlock(self.whole(ch), ch[1].items)

    def item_block(self, ch: list) -> _Seq:
        return _Seq(self.whole(ch), self.nodes(ch, A.Item))

    def test(self, ch: list) -> A.TestBlock:
        req = next(c for c in ch if isinstance(c, _Seq))
        op, phase, path, setup, op_span = req.items
        return A.TestBlock(self.whole(ch), self.string(ch[1]), op, phase, path, setup,
                           self.nodes(ch, A.Expect), op_span=op_span)

    def test_request(self, ch: list) -> _Seq:
        strings = [t for t in ch if isinstance(t, Token) and t.type == "STRING"]
        path = self.string(strings[0]) if strings else None
        setup = self.nodes(ch, (A.Assign, A.MapStore))
        return _Seq(self.whole(ch), [str(ch[0]), str(ch[1]), path, setup, self.span(ch[0])])

    def setup(self, ch: list) -> A.Assign | A.MapStore:
        if isinstance(ch[0], A.MapRead):
            return as_store(ch[0], "=", ch[2], self.whole(ch))
        return A.Assign(self.whole(ch), as_field(ch[0]), "=", ch[2])

    def expect_decision(self, ch: list) -> A.Expect:
        return A.Expect(self.whole(ch), decision=ch[1])

    def expect_log(self, ch: list) -> A.Expect:
        return A.Expect(self.whole(ch), log=self.string(ch[2]))

    def expect_error(self, ch: list) -> A.Expect:
        word, value = ch[1], ch[2]
        if str(word) != "error":
            self.diags.append(_error(f"unexpected '{word}' after 'expect'", self.span(word),
                                     "expect allow, deny E, error E, log \"...\" or a condition"))
        errno: A.Expr = (A.IntLit(self.span(value), parse_int(str(value), self.span(value), self.diags))
                         if value.type == "INT" else A.Ident(self.span(value), str(value)))
        return A.Expect(self.whole(ch), error=errno)

    def expect_check(self, ch: list) -> A.Expect:
        return A.Expect(self.whole(ch), check=ch[1])

    # -- statements
    def block(self, ch: list) -> _Seq:
        return _Seq(self.whole(ch), self.nodes(ch, A.Stmt))

    def allow(self, ch: list) -> A.Allow:
        return A.Allow(self.whole(ch))

    def deny(self, ch: list) -> A.Deny:
        return A.Deny(self.whole(ch), ch[1])

    def return_(self, ch: list) -> A.Return:
        return A.Return(self.whole(ch), ch[1])

    def if_stmt(self, ch: list) -> A.If:
        orelse: list = []
        if len(ch) > 3:
            tail = ch[4]
            orelse = tail.items if isinstance(tail, _Seq) else [tail]
        return A.If(self.whole(ch), ch[1], ch[2].items, orelse)

    def assign(self, ch: list) -> A.Assign | A.MapStore:
        if isinstance(ch[0], A.MapRead):
            return as_store(ch[0], str(ch[1]), ch[2], self.whole(ch))
        return A.Assign(self.whole(ch), as_field(ch[0]), str(ch[1]), ch[2])

    def let_stmt(self, ch: list) -> A.Let:
        return A.Let(self.whole(ch), str(ch[1]), ch[3])

    def count_stmt(self, ch: list) -> A.Count:
        key = by = None
        for i, c in enumerate(ch):
            if isinstance(c, A.Expr):
                marker = ch[i - 1]
                if isinstance(marker, Token) and marker.type == "LSQB":
                    key = c
                else:
                    by = c
        return A.Count(self.whole(ch), str(ch[1]), key, by)

    def log_stmt(self, ch: list) -> A.Log:
        return A.Log(self.whole(ch), self.string(ch[1]), self.nodes(ch, A.Expr),
                     fmt_span=self.span(ch[1]))

    def drop_stmt(self, ch: list) -> A.DropEntries:
        return A.DropEntries(self.whole(ch), ch[-1])

    # -- expressions
    def binary(self, ch: list) -> A.Binary:
        return A.Binary(self.whole(ch), str(ch[1]), ch[0], ch[2])

    def unary(self, ch: list) -> A.Unary:
        return A.Unary(self.whole(ch), str(ch[0]), ch[1])

    def in_test(self, ch: list) -> A.InSet:
        return A.InSet(self.whole(ch), ch[0], ch[2])

    def not_in_test(self, ch: list) -> A.InSet:
        return A.InSet(self.whole(ch), ch[0], ch[3], negated=True)

    def str_test(self, ch: list) -> A.StrTest:
        return A.StrTest(self.whole(ch), _STRTEST_KIND[str(ch[1])], ch[0], ch[2])

    def int_lit(self, ch: list) -> A.IntLit:
        span = self.whole(ch)
        return A.IntLit(span, parse_int(str(ch[0]), span, self.diags))

    def str_lit(self, ch: list) -> A.StrLit:
        return A.StrLit(self.whole(ch), self.string(ch[0]))

    def bool_lit(self, ch: list) -> A.BoolLit:
        return A.BoolLit(self.whole(ch), str(ch[0]) == "true")

    def name_ref(self, ch: list) -> A.Ident:
        return A.Ident(self.whole(ch), str(ch[0]))

    def field(self, ch: list) -> A.FieldRef:
        return A.FieldRef(self.whole(ch), tuple(str(t) for t in ch if t.type != "DOT"))

    def map_ref(self, ch: list) -> A.MapRead:
        return A.MapRead(self.whole(ch), str(ch[0]), ch[2])

    def call(self, ch: list) -> A.Call:
        return A.Call(self.whole(ch), str(ch[0]), self.nodes(ch[1:], A.Expr))

    def paren(self, ch: list) -> A.Expr:
        inner = ch[1]
        inner.span = self.whole(ch)
        return inner

    def set_lit(self, ch: list) -> A.SetLit:
        return A.SetLit(self.whole(ch), self.nodes(ch, A.Expr))


def as_field(target: A.Ident | A.FieldRef) -> A.FieldRef:
    """Assignment targets are always fields; a bare name `uid` becomes path ("uid",)."""
    if isinstance(target, A.Ident):
        return A.FieldRef(target.span, (target.name,))
    return target


def as_store(target: A.MapRead, op: str, value: A.Expr, span: Span) -> A.MapStore:
    """`NAME[key] = value` is a map store, not a field assignment."""
    return A.MapStore(span, target.map, target.key, value, op, map_span=target.span)


def key_type(name: str) -> A.Type | None:
    """Map key and value types: u8/u16/u32/u64 (None = unknown, reported by the checker)."""
    match = re.fullmatch(r"u(8|16|32|64)", name)
    return A.Type("int", int(match.group(1))) if match else None


def parse_int(text: str, span: Span, diags: list[Diagnostic]) -> int:
    """Decimal, 0x, 0o, 0b, underscores, binary K/M/G suffix; clear errors otherwise."""
    body, scale = text, 1
    if body[-1:] in _SUFFIX and not body.lower().startswith(("0x", "0b", "0o")):
        body, scale = body[:-1], _SUFFIX[body[-1]]
    clean = body.replace("_", "")
    base = 10
    if clean[:2].lower() in ("0x", "0o", "0b"):
        base = {"x": 16, "o": 8, "b": 2}[clean[1].lower()]
        clean = clean[2:]
    if len(clean) > 80:
        diags.append(_error(f"integer literal '{text[:24]}...' does not fit in 64 bits", span))
        return 0
    try:
        if not clean or body.endswith("_") or "__" in body:
            raise ValueError
        if base == 10 and len(clean) > 1 and clean[0] == "0":
            diags.append(_error(f"invalid integer literal '{text}'", span,
                                f"write octal numbers as 0o{clean.lstrip('0') or '0'}"))
            return 0
        value = int(clean, base) * scale
    except ValueError:
        diags.append(_error(f"invalid integer literal '{text}'", span,
                            "integers are decimal, 0x.., 0o.. or 0b.., optionally with a K, M or G suffix"))
        return 0
    if value > MAX_INT:
        diags.append(_error(f"integer literal '{text}' does not fit in 64 bits", span,
                            f"the largest value is {MAX_INT:#x}"))
        return 0
    return value


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"'}


def unescape(tok: Token, span: Span, diags: list[Diagnostic]) -> str:
    """Decode a string literal's escapes (\\n \\t \\r \\0 \\\\ \\" \\xNN); others stay verbatim."""
    raw = str(tok)[1:-1]
    out: list[str] = []
    i = 0
    while i < len(raw):
        c = raw[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        nxt = raw[i + 1] if i + 1 < len(raw) else ""
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", raw[i + 2:i + 4]):
            out.append(chr(int(raw[i + 2:i + 4], 16)))
            i += 4
        else:  # unknown escapes stay as written, so regexes like "core\.[0-9]" read naturally
            out.append(c + nxt)
            i += 2
    return "".join(out)


# ------------------------------------------------------------- lark plumbing
# (syntax errors become diagnostics in fdsl/lang/syntax_errors.py)

_LOCK = threading.Lock()
_BUILDER = _Builder()

@lru_cache(maxsize=1)
def _lark() -> Lark:
    text = importlib.resources.files("fdsl.grammar").joinpath("fdsl.lark").read_text(encoding="utf-8")
    return Lark(text, parser="lalr", lexer="basic", keep_all_tokens=True,
                maybe_placeholders=False, postlex=_PostLexer(), transformer=_BUILDER,
                cache=_table_cache(text))


def _table_cache(grammar: str) -> str | bool:
    """Where Lark keeps the analysed grammar (it checks the grammar's hash on load):
    building the LALR tables is most of a cold parse.  False: no trusted cache dir."""
    import hashlib

    import lark

    from fdsl import cache

    directory = cache.private_dir("parser")
    if directory is None:
        return False
    digest = hashlib.sha256(grammar.encode()).hexdigest()[:20]
    return str(directory / f"fdsl-{digest}-lark-{lark.__version__}.tables")


def _parse_text(text: str, file: str) -> tuple[list[A.Item], list[Diagnostic]]:
    """Parse one file's text; on failure, re-parse item by item for more errors."""
    items, diags, failed = _parse_once(text, file)
    if not failed:
        return items, diags
    chunks = _top_level_chunks(text)
    if len(chunks) <= 1:
        return [], diags
    all_diags: list[Diagnostic] = []
    for start_line, chunk in chunks:
        padded = "\n" * (start_line - 1) + chunk
        _, chunk_diags, _ = _parse_once(padded, file)
        all_diags += chunk_diags
    return [], all_diags or diags


def _parse_once(text: str, file: str) -> tuple[list[A.Item], list[Diagnostic], bool]:
    with _LOCK:
        _BUILDER.file = file
        _BUILDER.diags = []
        try:
            result = _lark().parse(text)
            items = result.items if isinstance(result, _Seq) else []
            return items, _BUILDER.diags, False
        except UnexpectedInput as err:
            return [], [syntax_diag(err, text, file)], True
        except (LarkError, RecursionError) as err:  # defensive: never leak a traceback
            return [], [_error(f"cannot parse: {type(err).__name__}", Span.unknown(file))], True


_ITEM_START = re.compile(r"^(" + "|".join(ITEM_KEYWORDS) + r")\b")


def _top_level_chunks(text: str) -> list[tuple[int, str]]:
    """Split at lines that start (in column 1) with an item keyword."""
    chunks: list[tuple[int, list[str]]] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not chunks or _ITEM_START.match(line):
            chunks.append((number, [line]))
        else:
            chunks[-1][1].append(line)
    return [(start, "\n".join(lines)) for start, lines in chunks]


# -------------------------------------------------------------- depth check

def _children(node: Any) -> Iterator[Any]:
    if not dataclasses.is_dataclass(node):
        return
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if isinstance(value, A.Node):
            yield value
        elif isinstance(value, list):
            yield from (v for v in value if isinstance(v, A.Node))


def _too_deep(item: A.Node) -> A.Node | None:
    """Iteratively find a node deeper than MAX_DEPTH (returns it, or None)."""
    stack = [(item, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return node
        stack.extend((child, depth + 1) for child in _children(node))
    return None


def _check_depth(items: list[A.Item], diags: list[Diagnostic]) -> list[A.Item]:
    kept = []
    for item in items:
        deep = _too_deep(item)
        if deep is None:
            kept.append(item)
        else:
            diags.append(_error(f"nesting too deep (more than {MAX_DEPTH} levels)", deep.span,
                                "split the expression with 'let' or a predicate"))
    return kept


# ------------------------------------------------------------- public API

def parse_source(text: str | bytes, filename: str = "<string>",
                 include_dirs: tuple[str, ...] | list[str] = ()) -> tuple[A.Policy, Sources, list[Diagnostic]]:
    """Parse policy text; includes are resolved relative to `filename`'s directory
    (then `include_dirs`) and must stay under those directories (fdsl.lang.includes)."""
    sources = Sources()
    diags: list[Diagnostic] = []
    rules = IncludeRules.for_policy(filename, include_dirs)
    if isinstance(text, bytes):
        rules.count(text)
    items = _parse_tree(text, filename, sources, diags, rules)
    span = Span(filename, 1, 1, 1, 1)
    policy = A.Policy(span, items, files=list(sources.texts))
    return policy, sources, diags


def parse_file(path: str, include_dirs: tuple[str, ...] | list[str] = ()) -> tuple[A.Policy, Sources, list[Diagnostic]]:
    """Parse a policy file and everything it includes."""
    try:
        data = read_regular_file(path, MAX_POLICY_BYTES).data
    except InputFileError as err:
        sources = Sources()
        diag = _error(f"cannot read '{path}': {err.reason}", Span.unknown(path))
        return A.Policy(Span.unknown(path), [], files=[]), sources, [diag]
    return parse_source(data, path, include_dirs)


def _decode(data: str | bytes, file: str, diags: list[Diagnostic]) -> str:
    if isinstance(data, str):
        return data
    if data.startswith(b"\x7fELF"):
        diags.append(_error("this is a compiled object (ELF), not a policy source",
                            Span(file, 1, 1, 1, 2),
                            hint="objects are read by `fdsl disasm`, `verify`, `run` and `mount`"))
        return ""
    if b"\0" in data:
        offset = data.index(b"\0")
        diags.append(_error(f"binary data (a NUL byte at offset {offset}), not a policy source",
                            Span(file, 1, 1, 1, 2)))
        return ""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        col = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        diags.append(_error(f"file is not valid UTF-8 (byte 0x{data[err.start]:02x})",
                            Span(file, line, col, line, col + 1)))
        return data.decode("utf-8", errors="replace")


def _parse_tree(data: str | bytes, file: str, sources: Sources, diags: list[Diagnostic],
                rules: IncludeRules) -> list[A.Item]:
    """Parse one file and splice its includes in place (each file at most once)."""
    before = len(diags)
    text = _decode(data, file, diags)
    sources.texts[file] = text
    if len(diags) > before:
        return []
    items, file_diags = _parse_text(text, file)
    diags += file_diags
    items = _check_depth(items, diags)
    out: list[A.Item] = []
    for item in items:
        if not isinstance(item, A.Include):
            out.append(item)
            continue
        out += _include(item, file, sources, diags, rules)
    return out


def _include(item: A.Include, parent: str, sources: Sources, diags: list[Diagnostic],
             rules: IncludeRules) -> list[A.Item]:
    try:
        found = rules.resolve(item.path, parent)
        if found is None:
            return []
        shown, real = found
        data = rules.read(item.path, shown, real)
    except IncludeError as err:
        hint = err.hint
        if hint is None and "No such file" in str(err):
            hint = "looked for " + ", ".join(f"'{p}'" for p in rules.candidates(item.path, parent))
        diags.append(_error(str(err), item.span, hint))
        return []
    return _parse_tree(data, shown, sources, diags, rules)
