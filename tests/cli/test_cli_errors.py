"""User mistakes and hostile environments get one clear message and the right exit code.

Exit codes: 0 success, 1 policy/object/verification/I-O error or failed test,
2 usage error; never a Python traceback.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
FDSL = [sys.executable, "-m", "fdsl.cli"]
EXAMPLE = ROOT / "examples" / "audit.fdsl"


def fdsl(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([*FDSL, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("obj") / "audit.bpf.o"
    assert fdsl("compile", str(EXAMPLE), "-o", str(out)).returncode == 0
    return out


@pytest.mark.parametrize("command", ["check", "explain", "test"])
def test_an_object_given_as_policy_is_named_as_such(command, compiled):
    proc = fdsl(command, str(compiled))
    assert proc.returncode == 1
    assert "compiled object (ELF), not a policy source" in proc.stderr


def test_binary_garbage_given_as_policy(tmp_path):
    junk = tmp_path / "junk.fdsl"
    junk.write_bytes(b"on lookup pre {\0\xff\xfe")
    proc = fdsl("check", str(junk))
    assert proc.returncode == 1 and "binary data" in proc.stderr
    assert "\0" not in proc.stderr


def test_a_policy_given_as_object(tmp_path):
    proc = fdsl("verify", str(EXAMPLE))
    assert proc.returncode == 1 and "ELF" in proc.stderr


@pytest.mark.parametrize("value", ["-5", "99999999999", "abc"])
def test_run_refuses_ids_out_of_range(value, compiled):
    proc = fdsl("run", str(compiled), "--op", "lookup", "--name", "x", "--uid", value)
    assert proc.returncode == 2 and "--uid" in proc.stderr


def test_compile_to_a_directory_is_an_error(tmp_path):
    proc = fdsl("compile", str(EXAMPLE), "-o", str(tmp_path))
    assert proc.returncode == 1 and "cannot write" in proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_full_disk_keeps_the_previous_object(tmp_path):
    disk = tmp_path / "tiny"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(disk)], check=True)
    try:
        previous = disk / "audit.bpf.o"
        previous.write_bytes(b"previous object")
        (disk / "fill").write_bytes(b"\0" * 12 * 1024)
        proc = fdsl("compile", str(EXAMPLE), "-o", str(previous))
        assert proc.returncode == 1 and "No space left on device" in proc.stderr
        assert previous.read_bytes() == b"previous object"
        assert sorted(p.name for p in disk.iterdir()) == ["audit.bpf.o", "fill"]
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_missing_policy_file_is_a_clear_error(tmp_path):
    proc = fdsl("check", str(tmp_path / "nope.fdsl"))
    assert proc.returncode in (1, 2) and "nope.fdsl" in proc.stderr


def test_no_command_prints_help_and_usage_exit():
    proc = fdsl()
    assert proc.returncode == 2 and "COMMAND" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--op", "lookup", "--field", "in.bogus=1"], "no field 'in.bogus'\n"),
    (["--op", "nosuchop"], "unknown opcode 'nosuchop'\n"),
])
def test_run_errors_keep_their_quotes(args, message, compiled):
    proc = fdsl("run", str(compiled), *args)
    assert proc.returncode == 2 and proc.stderr.endswith(message), proc.stderr


def test_python_dash_m_fdsl_is_the_command():
    proc = subprocess.run([sys.executable, "-m", "fdsl", "--version"], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("fdsl ")
