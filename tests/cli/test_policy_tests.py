"""`fdsl test`: policy test blocks run through the compiled object on both backends."""
from __future__ import annotations

from pathlib import Path

import pytest

from fdsl import abi, testing
from fdsl.cli import main
from fdsl.compile.driver import compile_source

ROOT = Path(__file__).parent.parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.fdsl"))
BACKENDS = ("jit", "interp")

# unlink, not lookup: a refused LOOKUP always reaches the caller as ENOENT, and the
# errnos are what tells the scopes' programs apart here.
SCOPED = """
on unlink pre { if name == "g" { deny EIO } }
under "private" {
    on unlink pre { if uid != 1000 { deny EACCES } }
    under "deep" { on unlink pre { if name == "d" { deny EPERM } } }
}
under "private/open" passthrough

test "root" { unlink pre { name = "x"; uid = 1 }; expect allow }
test "scope" { unlink pre at "private/x" { name = "x"; uid = 1 }; expect deny EACCES }
test "scope itself" { unlink pre at "private" { name = "x"; uid = 1 }; expect deny EACCES }
test "prefix is not a parent" { unlink pre at "privateer/x" { name = "x"; uid = 1 }; expect allow }
test "nested" { unlink pre at "private/deep/y" { name = "d"; uid = 1000 }; expect deny EPERM }
test "nested falls back" { unlink pre at "private/deep" { name = "x"; uid = 1 }; expect deny EACCES }
test "global rule inside" { unlink pre at "private/deep" { name = "g"; uid = 1000 }; expect deny EIO }
test "passthrough" { unlink pre at "private/open/z" { name = "g"; uid = 1 }; expect allow }
"""


def write(tmp_path: Path, text: str, name: str = "p.fdsl") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["test", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def results_of(text: str, backend: str = "interp") -> dict[str, testing.TestResult]:
    compiled = compile_source(text, "t.fdsl")
    runner = testing.Runner(compiled.obj, backend=backend)
    tests = testing.policy_tests(compiled.plan.policy)
    return {r.name: r for r in testing.run_tests(tests, runner, compiled.sources)}


@pytest.mark.parametrize("abi_name", ("ack", "rfc-v1"))
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_blocks_pass(capsys, example: Path, backend: str, abi_name: str) -> None:
    """Every example's test blocks pass under both ABIs: `fdsl test --abi` compiles for
    it and the runner takes the ABI from the object (RFC v1 codes in -v's lines)."""
    code, out, _ = run_cli(capsys, example, "--backend", backend, "--abi", abi_name, "-v")
    assert code == 0, out
    assert "FAIL" not in out
    assert out.rstrip().endswith(" passed, 0 failed")
    codes = set(abi.RFC_V1.return_codes)
    named = {word for line in out.splitlines() if line.strip().startswith("bpf:")
             for word in line.replace("|", " ").split()}
    assert bool(named & codes) == (abi_name == "rfc-v1"), out


def test_failing_expectation_is_reported(tmp_path, capsys) -> None:
    path = write(tmp_path, 'readonly\ntest "wrong" {\n    mkdir pre { name = "d"; in.mode = 0o755 }\n'
                           '    expect allow\n}\ntest "right" { open pre { in.flags = O_RDONLY }; '
                           'expect allow }\n')
    code, out, _ = run_cli(capsys, path, "--backend", "interp")
    assert code == 1
    assert f"FAIL {path}:2: wrong: expected allow, got deny EROFS" in out
    assert f"ok   {path}:6: right" in out
    assert out.rstrip().endswith("1 passed, 1 failed")


def test_failing_field_check_shows_the_value(tmp_path, capsys) -> None:
    path = write(tmp_path, 'perms "a-w"\ntest "mode" {\n    getattr post { out.attr.mode = 0o100666 }\n'
                           '    expect out.attr.mode == 0o100666\n}\n')
    code, out, _ = run_cli(capsys, path)
    assert code == 1
    assert "expected out.attr.mode == 0o100666, got out.attr.mode = 0o100444" in out


def test_policy_without_tests(tmp_path, capsys) -> None:
    code, out, _ = run_cli(capsys, write(tmp_path, "readonly\n"))
    assert code == 1
    assert "no tests" in out


def test_keyword_filter(capsys) -> None:
    code, out, _ = run_cli(capsys, ROOT / "examples" / "readonly.fdsl", "-k", "mkdir", "-v")
    assert code == 0
    assert out.count("ok ") == 1 and "mkdir is refused" in out
    assert "result: -30 = deny EROFS" in out
    code, out, _ = run_cli(capsys, ROOT / "examples" / "readonly.fdsl", "-k", "no such test")
    assert code == 1 and "no tests match" in out


def test_policy_error_is_a_clean_diagnostic(tmp_path, capsys) -> None:
    code, out, err = run_cli(capsys, write(tmp_path, "on lookup pre { deny ENOENTT }\n"))
    assert code == 1
    assert "unknown errno 'ENOENTT'" in err and "Traceback" not in err + out


@pytest.mark.parametrize("backend", BACKENDS)
def test_scoped_tests_pick_the_right_program(backend: str) -> None:
    results = results_of(SCOPED, backend)
    assert all(r.passed for r in results.values()), {n: r.failures for n, r in results.items()}
    section = {name: r.outcome.section for name, r in results.items()}
    compiled = compile_source(SCOPED, "t.fdsl")
    by_path = {s.path: s.section for s in compiled.metadata.scopes}
    assert section["root"] == section["prefix is not a parent"] == by_path[""]
    assert section["scope"] == section["scope itself"] == by_path["private"]
    assert section["nested"] == section["global rule inside"] == by_path["private/deep"]
    assert section["passthrough"] is None   # no program: BACKING


def test_scope_for_picks_the_innermost_scope() -> None:
    meta = compile_source(SCOPED, "t.fdsl").metadata
    assert testing.scope_for(meta, None).path == ""
    assert testing.scope_for(meta, "private/deep/a/b").path == "private/deep"
    assert testing.scope_for(meta, "private/open").kind == "passthrough"
    assert testing.scope_for(meta, "private-x").path == ""


USERSPACE = """
set secrets = {".env", "id_rsa"}
hide name in secrets or name matches "\\\\.pem$"
on lookup post { if name matches "^node" { out.nodeid = 0x1234 } }

test "listing" {
    readdir post { dirents = {"a", ".env", "b.pem", "c", "id_rsa"} }
    expect allow
    expect dirents == {"a", "c"}
}
test "empty listing" { readdir post { }; expect dirents == {} }
test "regex lookup" { lookup pre { name = "x.pem" }; expect deny ENOENT }
test "set lookup" { lookup pre { name = "id_rsa" }; expect deny ENOENT }
test "visible" { lookup pre { name = "x.txt" }; expect allow }
test "userspace post write" {
    lookup post { name = "node7"; out.nodeid = 7 }
    expect allow
    expect out.nodeid == 0x1234
}
test "wrong listing" { readdir post { dirents = {"a", ".env"} }; expect dirents == {"a", ".env"} }
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_userspace_rules_run_when_the_program_asks(backend: str) -> None:
    results = results_of(USERSPACE, backend)
    wrong = results.pop("wrong listing")
    assert all(r.passed for r in results.values()), {n: r.failures for n, r in results.items()}
    assert results["regex lookup"].outcome.bpf_ret & abi.USER_FILTER
    assert results["regex lookup"].outcome.user.decision == "deny"
    assert wrong.failures == ['expected dirents == {"a", ".env"}, got dirents = {"a"}']


def test_dirents_syntax_is_checked(tmp_path, capsys) -> None:
    path = write(tmp_path, 'test "t" {\n    readdir post { dirents = "a" }\n    expect dirents == 3\n}\n'
                           'test "u" {\n    readdir pre { dirents = {"a"} }\n    expect allow\n}\n')
    code, _, err = run_cli(capsys, path)
    assert code == 1
    assert err.count("'dirents' needs a set of entry names") == 2
    assert "field 'dirents' is not available for readdir pre" in err


def test_request_errors_fail_the_test_not_the_run(tmp_path, capsys) -> None:
    long_name = "x" * 300
    path = write(tmp_path, f'test "long" {{ lookup pre {{ name = "{long_name}" }}; expect allow }}\n'
                           'test "fine" { lookup pre { name = "a" }; expect allow }\n')
    code, out, _ = run_cli(capsys, path)
    assert code == 1
    assert "FAIL" in out and "cannot build the request" in out
    assert "1 passed, 1 failed" in out


def test_op_builtin_in_userspace_rules() -> None:
    results = results_of('on mkdir, rmdir pre { if op == "mkdir" and name matches "^tmp" { deny EBUSY } }\n'
                         'test "t" { mkdir pre { name = "tmpx"; in.mode = 0o755 }; expect deny EBUSY }\n')
    assert results["t"].passed, results["t"].failures
