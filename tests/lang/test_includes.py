"""`include` stays under the policy's directory (or `-I`), reads only regular policy files,
never blocks or reads unbounded, and never quotes a file that is not a policy (issue 11, 5 and 8)."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fdsl.files import MAX_POLICY_BYTES
from fdsl.lang.diagnostics import render_all
from fdsl.lang.parser import parse_file

ROOT = Path(__file__).resolve().parent.parent.parent
SECRET = "TOPSECRET-line-that-must-never-be-printed"


def fdsl(*args: str) -> subprocess.CompletedProcess:
    # The timeout only keeps a regression (a blocking open) from hanging the suite;
    # what is asserted is the outcome.
    proc = subprocess.run([sys.executable, "-m", "fdsl.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def errors_of(path: Path, include_dirs: tuple[str, ...] = ()) -> str:
    policy, sources, diags = parse_file(str(path), include_dirs)
    return render_all(diags, sources) if diags else ""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """tmp/policy/main.fdsl beside tmp/outside/ (a secret, and a policy library)."""
    (tmp_path / "policy").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "shadow").write_text(SECRET + ":x:0:0\n")
    (tmp_path / "outside" / "secret.fdsl").write_text(SECRET + "\n")
    (tmp_path / "outside" / "lib.fdsl").write_text('set shared = {"a"}\n')
    return tmp_path


def write_main(tree: Path, text: str) -> Path:
    main = tree / "policy" / "main.fdsl"
    main.write_text(text)
    return main


@pytest.mark.parametrize("target", ["../outside/shadow", "../outside/secret.fdsl",
                                    "../../../../../../../../etc/shadow", "../../../../../../etc/passwd"])
def test_include_outside_the_policy_directory_is_refused_without_quoting_it(tree, target):
    out = errors_of(write_main(tree, f'include "{target}"\n'))
    assert "cannot include" in out
    assert SECRET not in out and "root:" not in out


def test_symlink_escaping_the_policy_directory_is_refused(tree):
    (tree / "policy" / "evil.fdsl").symlink_to(tree / "outside" / "secret.fdsl")
    out = errors_of(write_main(tree, 'include "evil.fdsl"\n'))
    assert "outside the policy's directory" in out and SECRET not in out


def test_non_policy_file_inside_the_directory_is_not_read(tree):
    (tree / "policy" / "notes.txt").write_text(SECRET + "\n")
    out = errors_of(write_main(tree, 'include "notes.txt"\n'))
    assert "only .fdsl policy files can be included" in out and SECRET not in out


def test_include_dir_option_allows_another_directory(tree):
    main = write_main(tree, 'include "lib.fdsl"\ninclude "../outside/lib.fdsl"\nconst A = 1\n')
    assert "cannot include" in errors_of(main)
    policy, _, diags = parse_file(str(main), (str(tree / "outside"),))
    assert diags == []
    assert [type(i).__name__ for i in policy.items] == ["SetDecl", "ConstDecl"]  # read once


def test_include_dir_on_the_command_line(tree):
    main = write_main(tree, 'include "lib.fdsl"\nhide name in shared\n')
    assert fdsl("check", str(main)).returncode == 1
    for command in ("check", "explain"):
        proc = fdsl(command, "-I", str(tree / "outside"), str(main))
        assert proc.returncode == 0, proc.stderr


def test_include_of_a_fifo_fails_at_once(tree):
    os.mkfifo(tree / "policy" / "pipe.fdsl")
    main = write_main(tree, 'include "pipe.fdsl"\n')
    proc = fdsl("check", str(main))
    assert proc.returncode == 1
    assert "cannot include 'pipe.fdsl': a FIFO, not a regular file" in proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a device needs root")
def test_include_of_a_device_is_refused(tree):
    os.mknod(tree / "policy" / "zero.fdsl", stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero
    out = errors_of(write_main(tree, 'include "zero.fdsl"\n'))
    assert "cannot include 'zero.fdsl': a device, not a regular file" in out


def test_include_of_an_oversized_file_is_refused(tree):
    with open(tree / "policy" / "big.fdsl", "wb") as fh:
        fh.truncate(MAX_POLICY_BYTES + 1)   # sparse: no disk used
    out = errors_of(write_main(tree, 'include "big.fdsl"\n'))
    assert "too large" in out


@pytest.mark.parametrize("command", ["check", "compile", "explain", "test", "mount"])
def test_special_files_as_the_policy_itself(tree, command):
    fifo = tree / "policy" / "pipe.fdsl"
    os.mkfifo(fifo)
    (tree / "backing").mkdir()
    (tree / "mnt").mkdir()
    for path in (str(fifo), "/dev/zero"):
        args = [command, path] + ([str(tree / "backing"), str(tree / "mnt")] if command == "mount" else [])
        proc = fdsl(*args)
        assert proc.returncode in (1, 2)
        assert "not a regular file" in proc.stderr, proc.stderr


def test_object_reader_refuses_devices():
    proc = fdsl("run", "/dev/zero", "--op", "lookup", "--name", "x")
    assert proc.returncode == 2
    assert "a device, not a regular file" in proc.stderr
