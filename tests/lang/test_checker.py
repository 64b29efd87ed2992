"""Checker: name resolution, types, per-opcode fields, desugaring, userspace marking."""
from __future__ import annotations

from pathlib import Path

import pytest

from fdsl import abi
from fdsl.lang import ast as A
from fdsl.lang.checker import check, fields_table
from fdsl.lang.passes.desugar import parse_perms
from fdsl.lang.diagnostics import Span
from fdsl.errors import PolicyError
from fdsl.lang.frontend import load_policy
from fdsl.lang.parser import parse_source

ROOT = Path(__file__).resolve().parent.parent.parent


def checked(text: str) -> tuple[A.Policy, list]:
    policy, sources, diags = parse_source(text)
    assert diags == [], [d.message for d in diags]
    return policy, check(policy, sources)


def errors(text: str) -> list[str]:
    return [d.message for d in checked(text)[1] if d.severity.value == "error"]


def warnings(text: str) -> list[str]:
    return [d.message for d in checked(text)[1] if d.severity.value == "warning"]


def rules(policy: A.Policy) -> list[A.Rule]:
    return [i for i in policy.items if isinstance(i, A.Rule)]


def test_groups_expand_in_opcode_order() -> None:
    policy, diags = checked("on mutating pre { deny EROFS }")
    assert diags == []
    (rule,) = rules(policy)
    assert rule.resolved_ops == sorted(abi.GROUPS["mutating"], key=lambda n: abi.OPS[n].number)


def test_names_resolve_and_types_are_filled() -> None:
    policy, diags = checked('''
const LIMIT = 4K
set secrets = {".env"}
predicate secret(n) = n in secrets
on write pre {
    let big = in.size > LIMIT
    if big and uid != 0 { deny EFBIG }
}
on lookup pre { if secret(name) { deny ENOENT } }
''')
    assert diags == []
    write, lookup = rules(policy)
    let, if_ = write.body
    assert let.value.ty == A.BOOL and isinstance(let.value.right.ref, A.ConstRef)
    assert let.value.right.const_value == 4096
    assert isinstance(if_.cond.left.ref, A.LetRef) and if_.cond.left.ref.decl is let
    assert if_.cond.right.left.ref == A.BuiltinRef("uid")
    assert if_.then[0].errno.ref == A.ErrnoRef(abi.ERRNOS["EFBIG"])
    call = lookup.body[0].cond
    assert isinstance(call.ref, A.PredDecl) and isinstance(call.args[0], A.FieldRef)
    assert call.args[0].path == ("name",) and call.args[0].ty == A.STRING


def test_constant_folding_and_abi_constants() -> None:
    policy, diags = checked("const A = (1 << 4) | 0o3\non open pre { if in.flags & O_ACCMODE != O_RDONLY { deny EACCES } }")
    assert diags == []
    assert policy.items[0].value.const_value == 19
    cond = rules(policy)[0].body[0].cond
    assert cond.right.const_value == abi.NAMED_CONSTANTS["O_RDONLY"]
    assert cond.left.right.ref == A.AbiConstRef(abi.NAMED_CONSTANTS["O_ACCMODE"])


def test_op_compares_with_opcode_names() -> None:
    policy, diags = checked('counter by_op[u32]\non all pre { count by_op[op]; if op == "mkdir" { deny EPERM } }')
    assert diags == []
    cond = rules(policy)[0].body[1].cond
    assert isinstance(cond.right, A.IntLit) and cond.right.value == abi.OPS["mkdir"].number


def test_multi_op_rule_must_typecheck_for_every_op() -> None:
    (msg,) = errors("on getattr, mkdir post { if out.attr.uid == 0 { deny EPERM } }")
    assert "mkdir" in msg and "getattr" not in msg


def test_writes_pre_in_post_out_and_ignored_warnings() -> None:
    assert errors("on mkdir pre { in.mode = 0o700 }") == []
    assert warnings("on mkdir pre { in.mode = 0o700 }") == []
    assert any("ignores" in w for w in warnings("on open pre { in.open_flags = 1 }"))
    assert errors("on open post { in.flags = 0 }")
    assert errors("on lookup pre { name = \"x\" }")
    assert errors("on lookup pre { out.nodeid = 1 }")
    assert errors("on lookup post { uid = 1 }")


def test_all_errors_are_collected() -> None:
    msgs = errors("on lookup pre { deny ENOPE }\non getattr post { out.attr.mdoe = 1 }\n"
                  "on mkdir pre { count nothing }\non bogus pre { allow }")
    assert len(msgs) == 4


def test_error_hints() -> None:
    policy, sources, _ = parse_source("on lookup pre { deny ENOENTT }")
    (d,) = check(policy, sources)
    assert d.hint == "did you mean 'ENOENT'?"


def test_log_checks() -> None:
    assert errors('on lookup pre { log "%d %s", uid, name }') == []
    assert errors('on lookup pre { log "%d", uid, gid }')
    assert errors('on lookup pre { log "%d %d %d %d", uid, gid, pid, tgid }')
    assert errors('on lookup pre { log "%q", uid }')


def test_readonly_desugars() -> None:
    policy, diags = checked("readonly")
    assert diags == []
    rs = rules(policy)
    assert all(r.origin == "readonly" for r in rs)
    assert set(rs[0].resolved_ops) == set(abi.GROUPS["mutating"])
    assert rs[1].resolved_ops == ["open"]


def test_hide_desugars_to_lookup_readdir_and_create_rules() -> None:
    policy, diags = checked('hide name in {".env"} or name like "*.key"')
    assert diags == []
    rs = rules(policy)
    assert [r.origin for r in rs] == ["hide"] * len(rs)
    lookup, readdir, create, rename = rs
    assert lookup.resolved_ops == ["lookup"] and lookup.phase == "pre" and not lookup.userspace
    assert readdir.resolved_ops == ["readdir"] and readdir.userspace
    assert isinstance(readdir.body[0], A.DropEntries)
    assert "create" in create.resolved_ops and "mkdir" in create.resolved_ops
    assert set(rename.resolved_ops) == {"rename", "rename2"}
    cond = rename.body[0].cond
    assert cond.left.subject.path == ("newname",)


def test_userspace_marking() -> None:
    policy, _ = checked('on lookup pre { if name matches "^core\\.[0-9]+$" { deny ENOENT } }\n'
                        'on lookup pre { if name like "a*b*" { deny ENOENT } }\n'
                        'on lookup pre { if name like "*.tmp" { deny ENOENT } }\n'
                        'on lookup pre { if name like "[ab].c" { deny ENOENT } }\n')
    assert [r.userspace for r in rules(policy)] == [True, True, False, True]
    assert rules(policy)[0].userspace_reasons


@pytest.mark.parametrize("spec, file_masks, dir_masks", [
    ("a-w", (0o7555, 0), (0o7555, 0)),
    ("a-w,u+w", (0o7555, 0o200), (0o7555, 0o200)),
    ("0644", (0, 0o644), (0, 0o644)),
    ("og-rwx", (0o7700, 0), (0o7700, 0)),
    ("a+X", (0o7777, 0), (0o7777, 0o111)),
    ("u=rw", (0o3077, 0o600), (0o3077, 0o600)),
    ("D+x,F-x", (0o7666, 0), (0o7777, 0o111)),
])
def test_perms_masks(spec: str, file_masks: tuple, dir_masks: tuple) -> None:
    item = A.Perms(Span.unknown(), spec)
    assert parse_perms(item) is None
    assert (item.and_mask, item.or_mask) == file_masks
    assert (item.dir_and_mask, item.dir_or_mask) == dir_masks


def test_perms_and_force_owner_desugar_to_getattr_post() -> None:
    policy, diags = checked('perms "a+X"\nforce_user 1000\nforce_group 100')
    assert diags == []
    rs = rules(policy)
    assert [r.origin for r in rs] == ["perms", "force_user", "force_group"]
    assert all(r.resolved_ops == ["getattr"] and r.phase == "post" for r in rs)
    assert isinstance(rs[0].body[0], A.If)   # directories and files differ


def test_under_scopes_and_paths() -> None:
    policy, diags = checked('under "a" { readonly\n under "b" { on all pre { allow } } }')
    assert diags == []
    outer = policy.items[0]
    assert all(isinstance(i, (A.Rule, A.Under)) for i in outer.items)
    assert errors('under "a/./b" passthrough')
    assert errors('under "x" passthrough\nunder "x" passthrough')


def test_unreachable_warning_once() -> None:
    assert warnings("on lookup pre { deny ENOENT; allow; allow }") == ["unreachable statement"]
    assert warnings("on lookup pre { if uid == 0 { allow } else { deny EPERM }\n count x }")


def test_test_blocks_are_checked() -> None:
    assert errors('test "t" { lookup pre { name = 1 }\n expect allow }')
    assert errors('test "t" { lookup pre { bogus = 1 }\n expect allow }')
    assert errors('test "t" { lookup post { name = "x"; out.nodeid = 2; error = ENOENT }\n'
                  ' expect out.nodeid == 2 }') == []


def test_load_policy_raises_policy_error() -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(text="on lookup pre { deny ENOPE }", filename="x.fdsl")
    assert "x.fdsl:1:22" in str(info.value) and info.value.diagnostics
    policy, sources, warns = load_policy(text="on lookup pre { deny ENOENT; allow }")
    assert len(warns) == 1 and rules(policy)


def test_examples_check_cleanly() -> None:
    paths = sorted((ROOT / "examples").glob("*.fdsl")) + [ROOT / "tests/fixtures/handwritten_equivalent.fdsl"]
    assert len(paths) >= 6
    for path in paths:
        policy, _, warns = load_policy(path)
        assert warns == [], path
        tests = [i for i in policy.items if isinstance(i, A.TestBlock)]
        assert len(tests) >= 2, path


def test_fields_table_mentions_every_opcode() -> None:
    table = fields_table()
    for name in abi.OPS:
        assert f"| {name} | pre |" in table


def test_denies_whose_errno_the_kernel_replaces_are_warned() -> None:
    """A PRE deny of LOOKUP reaches the caller as ENOENT, of GETATTR as EIO (spec §6)."""
    assert warnings("on lookup pre { if name == \"x\" { deny ENOENT } }") == []
    assert warnings("on open pre { deny EACCES }") == []
    lookup = warnings("on lookup pre { if name == \"x\" { deny EACCES } }")
    assert len(lookup) == 1 and "lookup as ENOENT" in lookup[0]
    getattr = warnings("on getattr pre { if uid == 5 { deny EIO } }")
    assert len(getattr) == 1 and "getattr as EIO" in getattr[0]
    assert warnings("on getattr post { if uid == 5 { deny EPERM } }") == []
    assert warnings("on all pre { if uid == 5 { deny EACCES } }") == []   # groups: explain says
