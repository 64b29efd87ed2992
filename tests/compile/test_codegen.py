"""Code generation semantics: return bits, name tests, writes, userspace split.

Programs are run through the project's own VM (interpreter backend) with
field-level requests from fdsl.vm.simulate, so the tests check behaviour, not
instruction sequences.
"""
from __future__ import annotations

import pytest

from fdsl import abi
from fdsl.vm.userspace import Request, evaluate

from backend_util import compile_text

B, PF, U = abi.BACKING, abi.POST_FILTER, abi.USER_FILTER


def run(result, op, phase, section="fuse/root", **fields):
    from fdsl.vm.filterset import FilterSet
    from fdsl.vm.simulate import prepare

    fs = FilterSet.load(result.obj, backend="interp")
    p = prepare(op, phase, fields)
    ret = fs.run(section, p.context, p.caller)
    return ret, p


NAMES = """
on lookup pre {
  if name == "secret" { deny EACCES }
  if name startswith "tmp" { deny ENOENT }
  if name endswith ".key" { deny EPERM }
  if name like "a?c*.log" { deny EIO }
  if name in {"x", "yy"} { return 7 }
}
"""


@pytest.fixture(scope="module")
def names():
    return compile_text(NAMES)


@pytest.mark.parametrize("name,expected", [
    ("secret", -13), ("secrets", B), ("secre", B), ("", B),
    ("tmp", -2), ("tmpfile", -2), ("tm", B),
    (".key", -1), ("a.key", -1), ("key", B), ("a.kez", B), ("x" * 250 + ".key", -1),
    ("abc.log", -5), ("aXcdef.log", -5), ("ab.log", B), ("abcdlog", B),
    ("x", 7), ("yy", 7), ("y", B),
])
def test_name_tests(names, name, expected):
    ret, _ = run(names, "lookup", "pre", name=name)
    assert ret == expected


def test_return_bits():
    r = compile_text("""
on lookup post { if error == 2 { deny EACCES } }
on lookup pre { if name matches "^x[0-9]$" { deny EPERM } }
on readdir post { drop entries where name startswith "." }
on getattr pre { allow }
""")
    assert run(r, "lookup", "pre", name="a")[0] == B | PF | U
    assert run(r, "readdir", "pre")[0] == B | PF
    assert run(r, "readdir", "post")[0] == U
    assert run(r, "getattr", "pre")[0] == B
    assert run(r, "lookup", "post", name="a", error="ENOENT")[0] == -13
    assert run(r, "lookup", "post", name="a")[0] == 0
    assert run(r, "open", "pre")[0] == B            # unmatched op: default allow
    assert run(r, "open", "post")[0] == 0


def test_default_deny_and_scopes():
    r = compile_text("""
default deny EPERM
on lookup, getattr pre { allow }
under "priv" {
  on lookup pre { if uid != 1000 { deny EACCES } }
}
under "pt" passthrough
""")
    # scopes lie below the root: its lookups end with a userspace postfilter (the
    # daemon attaches the scopes there in a fuse-bpf kernel, spec 3.2)
    assert run(r, "lookup", "pre", name="a")[0] == B | abi.POST_FILTER
    assert run(r, "lookup", "post", name="a")[0] == abi.USER_FILTER
    assert run(r, "open", "pre")[0] == -1
    assert run(r, "lookup", "pre", "fuse/s1", name="a", uid=5)[0] == -13
    assert run(r, "lookup", "pre", "fuse/s1", name="a", uid=1000)[0] == B
    assert run(r, "getattr", "pre", "fuse/s1")[0] == B     # enclosing scope's rule
    assert run(r, "open", "pre", "fuse/s2")[0] == B        # passthrough


def test_post_write_and_pre_write():
    r = compile_text("""
on getattr post { out.attr.mode &= 0o7555; out.attr.uid = 42 }
on mkdir pre { in.mode = 0o700 }
""")
    ret, p = run(r, "getattr", "post", **{"out.attr.mode": 0o100644, "out.attr.uid": 7})
    assert ret == 0
    fields = p.read_fields()
    assert fields["out.attr.mode"] == 0o100644 & 0o7555
    assert fields["out.attr.uid"] == 42
    ret, p = run(r, "mkdir", "pre", name="d", **{"in.mode": 0o777})
    assert ret == B
    assert p.read_fields()["in.mode"] == 0o700


def test_counters_and_log():
    r = compile_text("""
counter ops
counter by_uid[u32] hash max 16
on lookup pre { count ops; count by_uid[uid] by 2; log "lookup %s by %d", name, uid }
""")
    from fdsl.vm.filterset import FilterSet
    from fdsl.vm.simulate import prepare

    fs = FilterSet.load(r.obj, backend="interp")
    for _ in range(3):
        p = prepare("lookup", "pre", {"name": "f", "uid": 7})
        assert fs.run("fuse/root", p.context, p.caller) == B
    assert r.metadata.logs[0].fmt == "lookup %s by %d"


def test_userspace_evaluator_round_trip():
    r = compile_text("""
set hidden = {".git", ".env"}
on readdir post { drop entries where name in hidden or name matches "\\\\.bak$" }
on lookup pre { if name matches "^x" and uid != 0 { deny EACCES } }
""")
    meta = r.metadata
    rules = meta.rules_for("", "readdir", "post")
    out = evaluate(rules, Request("readdir", "post", entries=[".git", "a", "b.bak", ".env"]))
    assert out.dropped == [0, 2, 3]
    rules = meta.rules_for("", "lookup", "pre")
    assert evaluate(rules, Request("lookup", "pre", {"name": "xy"}, uid=5)).decision == "deny"
    assert evaluate(rules, Request("lookup", "pre", {"name": "xy"}, uid=0)).decision is None


def test_codegen_error_is_policy_error():
    from fdsl.errors import PolicyError

    from fdsl.compile.driver import compile_policy
    from fdsl.lang.parser import parse_source

    # The checker rejects this first; the code generator's own guard must still
    # give a PolicyError (with position), not a traceback, for an unchecked tree.
    policy, sources, _ = parse_source('on lookup pre { log "a %d %d %d %d", 1, 2, 3, 4 }', "t.fdsl")
    with pytest.raises(PolicyError) as info:
        compile_policy(policy, sources)
    assert "at most 3" in str(info.value)


def test_ir_and_asm_are_readable():
    r = compile_text('on lookup pre { if name == "a" { deny EACCES } }', want_asm=True)
    assert 'section "fuse/root"' in r.ir
    assert "no-jump-tables" in r.ir
    assert "exit" in r.asm and "fdsl_root:" in r.asm
