"""Policies from stdin (`-`) and the command line (`-e`); `fdsl test --json` and `--junit`."""
from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET

import pytest

from mounting import FDSL, ROOT

POLICY = 'hide name == ".env"\n'
TESTS = POLICY + '''
test "env is hidden" {
    lookup pre { name = ".env" }
    expect deny ENOENT
}
test "wrong on purpose" {
    lookup pre { name = "a" }
    expect deny EACCES
}
'''


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([*FDSL, *args], input=stdin, capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_check_reads_stdin_and_names_it():
    assert run("check", "-", stdin=POLICY).stdout.startswith("<stdin>: ok")
    proc = run("check", "-", stdin="hide nme == 1\n")
    assert proc.returncode == 1 and proc.stderr.startswith("<stdin>:1:6: error")


def test_compile_from_stdin_and_from_e_give_the_same_object(tmp_path):
    a, b = tmp_path / "a.bpf.o", tmp_path / "b.bpf.o"
    assert run("compile", "-", "-o", str(a), stdin=POLICY).returncode == 0
    assert run("compile", "-e", POLICY, "-o", str(b)).returncode == 0
    assert a.read_bytes()[:4] == b"\x7fELF"
    verify = run("verify", str(a))
    assert verify.returncode == 0, verify.stderr


def test_e_and_file_together_is_a_usage_error():
    proc = run("check", "examples/readonly.fdsl", "-e", "readonly")
    assert proc.returncode == 2 and "not both" in proc.stderr
    assert run("check").returncode == 2


def test_json_report():
    proc = run("test", "-", "--json", stdin=TESTS)
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert (report["passed"], report["failed"]) == (1, 1)
    names = {t["name"]: t for t in report["tests"]}
    assert names["env is hidden"]["passed"] and names["env is hidden"]["location"] == "<stdin>:3"
    assert not names["wrong on purpose"]["passed"] and names["wrong on purpose"]["failures"]


def test_junit_report(tmp_path):
    out = tmp_path / "report.xml"
    proc = run("test", "-e", TESTS, "--junit", str(out))
    assert proc.returncode == 1 and "1 passed, 1 failed" in proc.stdout
    suite = ET.parse(out).getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "2" and suite.get("failures") == "1"
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert cases["env is hidden"].find("failure") is None
    failure = cases["wrong on purpose"].find("failure")
    assert failure is not None and "EACCES" in failure.get("message", "")
    assert cases["wrong on purpose"].get("line") == "7"
