"""Language pieces of issue 15, compiled and run through the real VMs with `fdsl test` blocks.

Every policy below carries its own test blocks; they run through the compiled
object (BPF on both backends, then the userspace rules), so a feature that
parses but compiles or runs wrongly fails here.
"""
from __future__ import annotations

import pytest

from fdsl import testing
from fdsl.compile.driver import compile_source
from fdsl.compile.explain import explain
from fdsl.lang import ast as A

BACKENDS = ("jit", "interp")


def run_blocks(text: str, backend: str) -> dict[str, list[str]]:
    """Test name -> failures (empty = passed)."""
    compiled = compile_source(text, "t.fdsl")
    runner = testing.Runner(compiled.obj, backend=backend)
    tests = testing.policy_tests(compiled.plan.policy)
    assert tests, "the policy has no test blocks"
    return {r.name: r.failures for r in testing.run_tests(tests, runner, compiled.sources)}


def placed(rules: str, side: str) -> str:
    """The rules as written (BPF), or inside a `userspace` block (the daemon's evaluator)."""
    return rules if side == "bpf" else f"userspace {{\n{rules}\n}}\n"


def assert_all_pass(text: str, backend: str) -> None:
    failures = {name: f for name, f in run_blocks(text, backend).items() if f}
    assert failures == {}


# unlink, not lookup: a refused LOOKUP always reaches the caller as ENOENT
LAYOUT = '''
on unlink pre { if name == "a" { deny EIO } if name == "b" { deny EPERM } }
on mkdir pre {
    if name startswith "tmp"
       and uid != 0
       or name == "x" { deny EACCES }
}
test "same line" { unlink pre { name = "b" } expect deny EPERM }
test "continued and" { mkdir pre { name = "tmp1"; uid = 5 } expect deny EACCES }
test "continued and, root" { mkdir pre { name = "tmp1"; uid = 0 } expect allow }
test "continued or" { mkdir pre { name = "x"; uid = 0 } expect deny EACCES }
'''


@pytest.mark.parametrize("backend", BACKENDS)
def test_continuation_lines_and_blocks_without_semicolons(backend: str) -> None:
    assert_all_pass(LAYOUT, backend)


USERSPACE = '''
userspace {
    on unlink pre { if name == "daemon" { deny EACCES } }
    hide name == "hidden"
}
on unlink pre { if name == "kernel" { deny EPERM } }
test "daemon rule" { unlink pre { name = "daemon" } expect deny EACCES }
test "hidden by the daemon" { lookup pre { name = "hidden" } expect deny ENOENT }
test "kernel rule" { unlink pre { name = "kernel" } expect deny EPERM }
test "listing" { readdir post { dirents = {"a", "hidden"} } expect dirents == {"a"} }
'''


@pytest.mark.parametrize("backend", BACKENDS)
def test_userspace_block_places_rules_in_the_daemon(backend: str) -> None:
    assert_all_pass(USERSPACE, backend)
    compiled = compile_source(USERSPACE, "t.fdsl")
    rules = [i for i in compiled.plan.policy.items if isinstance(i, A.Rule)]
    placed = [(r.origin, r.userspace) for r in rules if r.resolved_ops[0] in ("unlink", "lookup")]
    assert placed == [(None, True), ("hide", True), (None, False)]
    report = explain(compiled.plan)
    assert report.count("runs in the daemon: placed in userspace by the policy ('userspace { }')") >= 2
    assert 'bpf: if name == "kernel"' in report


EXPECTATIONS = '''
on mkdir post { if error == EEXIST { deny EPERM } }
on lookup pre { log "lookup by %d", uid }
userspace { on getattr pre { log "daemon saw %d", uid } }
test "backing error kept" { mkdir post { name = "d"; error = ENOENT } expect error ENOENT }
test "backing error replaced" { mkdir post { name = "d"; error = EEXIST } expect error EPERM }
test "success has no error" { mkdir post { name = "d" } expect allow }
test "bpf log line" { lookup pre { name = "x"; uid = 1000 } expect log "lookup by 1000" }
test "daemon log line" { getattr pre { uid = 7 } expect log "daemon saw 7" }
'''


@pytest.mark.parametrize("backend", BACKENDS)
def test_expect_error_and_expect_log(backend: str) -> None:
    assert_all_pass(EXPECTATIONS, backend)


def test_expect_error_and_log_report_what_happened() -> None:
    text = ('on lookup pre { log "n %d", nodeid }\n'
            'test "e" { mkdir post { name = "d"; error = ENOENT } expect error EEXIST }\n'
            'test "ok" { mkdir post { name = "d" } expect error ENOENT }\n'
            'test "l" { lookup pre { name = "x"; nodeid = 3 } expect log "n 4" }\n')
    assert run_blocks(text, "interp") == {
        "e": ["expected error EEXIST, got error ENOENT"],
        "ok": ["expected error ENOENT, got no error"],
        "l": ['expected log "n 4", got "n 3"'],
    }



MAP_MEMBERSHIP = '''
on unlink pre {
    if nodeid in seen { deny EEXIST }
    if nodeid not in seen { seen[nodeid] = 0 }
}
'''

MEMBERSHIP_TESTS = '''
test "stored zero is an entry" { unlink pre { name = "a"; nodeid = 5; seen[5] = 0 } expect deny EEXIST }
test "missing key is not" { unlink pre { name = "a"; nodeid = 6; seen[5] = 0 } expect allow }
test "the store made one" { unlink pre { name = "a"; nodeid = 6 } expect seen[6] == 0 }
'''


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("side", ["bpf", "userspace"])
def test_map_membership_tells_missing_from_zero(backend: str, side: str) -> None:
    assert_all_pass("map seen[u64] -> u32\n" + placed(MAP_MEMBERSHIP, side) + MEMBERSHIP_TESTS, backend)


SIZES = '''
on setxattr pre { if sizeof(value) > 8 { deny E2BIG } }
on lookup pre { log "name %s has %d bytes", name, sizeof(name) }
'''
SIZE_TESTS = '''
test "big value" { setxattr pre { name = "user.a"; value = "123456789"; in.size = 9 } expect deny E2BIG }
test "small value" { setxattr pre { name = "user.a"; value = "12345678"; in.size = 8 } expect allow }
test "name size counts the NUL" { lookup pre { name = "abc" } expect log "name abc has 4 bytes" }
'''


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("side", ["bpf", "userspace"])
def test_sizeof_of_an_argument(backend: str, side: str) -> None:
    assert_all_pass(placed(SIZES, side) + SIZE_TESTS, backend)


OPCODES = '''
on lookup, mkdir pre { log "pre %x", opcode }
on mkdir post { log "post %x", opcode }
'''
OPCODE_TESTS = '''
test "pre lookup" { lookup pre { name = "a" } expect log "pre 10001" }
test "pre mkdir" { mkdir pre { name = "a" } expect log "pre 10009" }
test "post mkdir" { mkdir post { name = "a" } expect log "post 20009" }
'''


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("side", ["bpf", "userspace"])
def test_opcode_has_the_phase_bits(backend: str, side: str) -> None:
    assert_all_pass(placed(OPCODES, side) + OPCODE_TESTS, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_log_prints_names_with_percent_s(backend: str) -> None:
    assert_all_pass('''
on rename pre { log "%s -> %s by %d", name, newname, uid }
test "r" { rename pre { name = "a"; newname = "bb"; uid = 7 } expect log "a -> bb by 7" }
''', backend)


def test_explain_shows_membership_and_sizes() -> None:
    report = explain(compile_source("map seen[u64] -> u32\n"
                                    "on setxattr pre { if nodeid not in seen and sizeof(value) > 4 "
                                    "{ deny E2BIG } }", "t.fdsl").plan)
    assert "if nodeid not in seen and sizeof(value) > 4 { deny E2BIG }" in report


def test_opcode_and_sizeof_print_what_the_c_program_prints(bpf_c_object) -> None:
    """tests/c/xattr_size.c (clang) and its fdsl equivalent log the same line."""
    from fdsl.vm import simulate
    from fdsl.vm.filterset import FilterSet

    fdsl_obj = compile_source('on setxattr pre { log "op %x size %u", opcode, sizeof(value) }',
                              "t.fdsl").obj
    lines = {}
    for name, obj in (("c", bpf_c_object("xattr_size")), ("fdsl", fdsl_obj)):
        seen: list[str] = []
        filters = FilterSet.load(obj, backend="interp", log_callback=seen.append)
        prepared = simulate.prepare("setxattr", "pre", {"name": "user.k", "value": b"12345",
                                                        "in.size": 5})
        filters.run("fuse/root", prepared.context, prepared.caller)
        lines[name] = seen
    assert lines["c"] == lines["fdsl"] == ["op 10015 size 5"]


def test_drop_entries_reads_type_and_ino() -> None:
    """The serialized rule filters Dirent records the daemon passes (name, ino, d_type)."""
    from fdsl.vm import userspace

    compiled = compile_source('on readdir post { drop entries where type == DT_DIR or ino == 7 '
                              'or name == "x" }', "t.fdsl")
    rules = compiled.plan.policy.items[0]
    assert isinstance(rules, A.Rule) and rules.userspace
    body = compiled.metadata.rules_for("", "readdir", "post")
    request = userspace.Request("readdir", "post", entries=[
        userspace.Dirent("d", 5, 4), userspace.Dirent("f", 6, 8), userspace.Dirent("g", 7, 8),
        "x", "plain"])
    assert userspace.evaluate(body, request).dropped == [0, 2, 3]
