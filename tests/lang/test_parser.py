"""Grammar and parser: every construct parses to the expected AST, syntax errors are diagnostics."""
from __future__ import annotations

from pathlib import Path

import pytest

from fdsl.lang import ast as A
from fdsl.lang.parser import parse_file, parse_source

ROOT = Path(__file__).resolve().parent.parent.parent


def parse_ok(text: str) -> list[A.Item]:
    policy, _, diags = parse_source(text)
    assert diags == [], [d.message for d in diags]
    return policy.items


def one_expr(text: str) -> A.Expr:
    (item,) = parse_ok(f"const X = {text}")
    return item.value


def test_precedence_bitand_binds_tighter_than_comparison() -> None:
    e = one_expr("a & b != c")
    assert isinstance(e, A.Binary) and e.op == "!="
    assert isinstance(e.left, A.Binary) and e.left.op == "&"


@pytest.mark.parametrize("text, top", [
    ("a or b and c", "or"), ("not a == b", "not"), ("a | b ^ c", "|"), ("a ^ b & c", "^"),
    ("a & b << c", "&"), ("a << b + c", "<<"), ("a + b * c", "+"), ("-a * b", "*"),
    ("a - b - c", "-"),
])
def test_precedence_table(text: str, top: str) -> None:
    e = one_expr(text)
    assert getattr(e, "op", None) == top


def test_left_associative() -> None:
    e = one_expr("a - b - c")
    assert isinstance(e.left, A.Binary) and e.left.op == "-"


@pytest.mark.parametrize("text, value", [
    ("42", 42), ("0x2A", 42), ("0o52", 42), ("0b101010", 42), ("1_000", 1000),
    ("4K", 4096), ("2M", 2 << 20), ("1G", 1 << 30), ("0", 0), ("0xffff_ffff_ffff_ffff", (1 << 64) - 1),
])
def test_integer_literals(text: str, value: int) -> None:
    e = one_expr(text)
    assert isinstance(e, A.IntLit) and e.value == value


@pytest.mark.parametrize("text", ["0o9", "12Q", "0x", "1__0", "0755", "99999999999999999999999"])
def test_bad_integer_literals_are_diagnostics(text: str) -> None:
    _, _, diags = parse_source(f"const X = {text}")
    assert diags and diags[0].severity.value == "error"


def test_string_escapes_and_regex_backslashes() -> None:
    e = one_expr(r'"a\tb\"c\x41\."')
    assert isinstance(e, A.StrLit) and e.value == 'a\tb"cA\\.'


def test_in_not_in_and_string_tests() -> None:
    e = one_expr('x not in {"a", "b"}')
    assert isinstance(e, A.InSet) and e.negated and isinstance(e.members, A.SetLit)
    for word, kind in [("like", "glob"), ("matches", "regex"), ("startswith", "startswith"),
                       ("endswith", "endswith")]:
        e = one_expr(f'name {word} "x"')
        assert isinstance(e, A.StrTest) and e.kind == kind


def test_fields_and_calls() -> None:
    e = one_expr("in.flags & out.attr.mode")
    assert e.left.path == ("in", "flags") and e.right.path == ("out", "attr", "mode")
    call = one_expr("secret(name, 1)")
    assert isinstance(call, A.Call) and call.func == "secret" and len(call.args) == 2


def test_all_item_kinds() -> None:
    items = parse_ok('''
const MAX = 4K
set s = {".env", ".git"}
predicate secret(n) = n in s
predicate root = uid == 0
counter ops
counter by_uid[u32] max 1024
counter by_op[u32] array max 64
default deny EPERM
readonly
hide secret(name)
perms "a-w"
force_user 1000; force_group 100
on lookup, getattr pre { allow }
under "private" { on all pre { deny EACCES } }
under "vendor" passthrough
under "data" backing "/srv/other"
test "t" {
    lookup pre at "a/b" { name = "x"; uid = 1 }
    expect deny ENOENT
    expect out.nodeid == 1
}
''')
    kinds = [type(i).__name__ for i in items]
    assert kinds == ["ConstDecl", "SetDecl", "PredDecl", "PredDecl", "MapDecl", "MapDecl", "MapDecl",
                     "Default", "Readonly", "Hide", "Perms", "ForceOwner", "ForceOwner", "Rule",
                     "Under", "Under", "Under", "TestBlock"]
    by_op = items[6]
    assert by_op.map_type == "array" and by_op.key_type == A.Type("int", 32)
    assert items[5].map_type == "hash" and items[4].key_type is None and items[4].max_entries == 1
    rule = items[13]
    assert [o.name for o in rule.ops] == ["lookup", "getattr"] and rule.phase == "pre"
    assert items[15].mode == "passthrough" and items[16].backing == "/srv/other"
    test = items[17]
    assert (test.op, test.phase, test.path) == ("lookup", "pre", "a/b")
    assert [a.target.path for a in test.setup] == [("name",), ("uid",)]
    assert test.expects[0].decision is not None and test.expects[1].check is not None


def test_statements_and_else_on_next_line() -> None:
    (rule,) = parse_ok('''on mkdir pre {
    let m = in.mode & 0o777
    if m == 0 {
        deny EPERM
    }
    else if m in {1,
                  2} { return BACKING }
    else { in.mode |= 0o700 }
    count c[uid] by 2
    log "m %d", m
}''')
    let, if_, count, log = rule.body
    assert isinstance(let, A.Let) and isinstance(if_, A.If)
    assert isinstance(if_.orelse[0], A.If) and isinstance(if_.orelse[0].orelse[0], A.Assign)
    assert if_.orelse[0].orelse[0].op == "|="
    assert count.key is not None and count.by is not None
    assert log.args and log.fmt == "m %d"


def test_continuation_after_operator_and_in_parentheses() -> None:
    (pred,) = parse_ok('predicate p(n) = n == "a" or\n    n == "b"')
    assert isinstance(pred.body, A.Binary) and pred.body.op == "or"
    (pred,) = parse_ok('predicate p(n) = (n == "a"\n    or n == "b")')
    assert pred.body.op == "or"


def test_drop_entries_and_spans() -> None:
    (rule,) = parse_ok('on readdir post { drop entries where name like "*.tmp" }')
    drop = rule.body[0]
    assert isinstance(drop, A.DropEntries)
    assert (drop.span.line, drop.span.col) == (1, 19)


def test_comments_and_semicolons() -> None:
    items = parse_ok("# header\nconst A = 1 # trailing\n;;\nconst B = 2; const C = 3\n# end")
    assert [i.name for i in items] == ["A", "B", "C"]


def test_syntax_error_reports_position_and_hint() -> None:
    _, _, diags = parse_source('on lookup pre {\n  if name = "x" { deny ENOENT }\n}')
    (d,) = diags
    assert (d.span.line, d.span.col) == (2, 11) and "==" in (d.hint or "")


def test_each_broken_item_is_reported() -> None:
    _, _, diags = parse_source("const A = \nconst B = )\non lookup pre { deny ENOENT }\nconst C = (")
    assert [d.span.line for d in diags] == [1, 2, 4]


def test_includes_each_file_once(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "common.fdsl").write_text('include "../main.fdsl"\nset s = {"a"}\n')
    (tmp_path / "main.fdsl").write_text('include "sub/common.fdsl"\ninclude "sub/common.fdsl"\nconst A = 1\n')
    policy, sources, diags = parse_file(str(tmp_path / "main.fdsl"))
    assert diags == []
    assert [type(i).__name__ for i in policy.items] == ["SetDecl", "ConstDecl"]
    assert len(policy.files) == 2 and len(sources.texts) == 2


def test_missing_include_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "a.fdsl").write_text('include "nope.fdsl"\n')
    _, _, diags = parse_file(str(tmp_path / "a.fdsl"))
    assert "cannot include" in diags[0].message
    _, _, diags = parse_file(str(tmp_path / "missing.fdsl"))
    assert "cannot read" in diags[0].message


def test_deep_nesting_is_a_diagnostic() -> None:
    _, _, diags = parse_source("const A = " + "-" * 5000 + "1")
    assert diags and "too deep" in diags[0].message
    _, _, diags = parse_source("const A = " + "(" * 5000 + "1" + ")" * 5000)
    assert not diags or diags[0].severity.value == "error"


def test_examples_parse() -> None:
    for path in sorted((ROOT / "examples").glob("*.fdsl")):
        _, _, diags = parse_file(str(path))
        assert diags == [], path


def test_lines_may_start_with_and_or() -> None:
    (rule,) = parse_ok('on lookup pre {\n    if name == "a"\n       or name == "b"\n       and uid == 0 {\n'
                       '        deny EIO\n    }\n}')
    cond = rule.body[0].cond
    assert isinstance(cond, A.Binary) and cond.op == "or" and cond.right.op == "and"


def test_what_follows_a_block_on_its_line_needs_no_semicolon() -> None:
    (rule, other) = parse_ok('on lookup pre { if name == "a" { deny EIO } allow } on mkdir pre { allow }')
    assert [type(s).__name__ for s in rule.body] == ["If", "Allow"]
    assert isinstance(other, A.Rule)
    (rule,) = parse_ok('on lookup pre { if uid == 0 { allow } else { deny EIO } }')
    assert rule.body[0].orelse
    # a set literal's } is not a block's: the expression goes on
    (rule,) = parse_ok('on lookup pre { if name in {"a"} and uid == 0 { deny EIO } }')
    assert rule.body[0].cond.op == "and"


def test_userspace_block_and_new_expectations() -> None:
    block, test = parse_ok('userspace { on lookup pre { allow } }\n'
                           'test "t" { mkdir post { error = 2 }\n expect error ENOENT\n expect log "x" }')
    assert isinstance(block, A.UserspaceBlock) and isinstance(block.items[0], A.Rule)
    assert isinstance(test.expects[0].error, A.Ident) and test.expects[1].log == "x"
