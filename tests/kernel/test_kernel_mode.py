"""Feature detection and mode selection, on this (mainline) kernel and on sysfs trees
built the way an ACK kernel lays them out (spec §1)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fdsl.compile.driver import compile_source
from fdsl.errors import MountError, UsageError
from fdsl.runtime.kernel import features
from fdsl.runtime.kernel.mode import daemon_needed, select
from fdsl.vm.loader import load_object


def _sysfs(tmp_path, feature: str | None, prog_type: str | None) -> str:
    root = tmp_path / "fuse"
    (root / "features").mkdir(parents=True)
    if feature is not None:
        (root / "features" / "fuse_bpf").write_text(feature)
    if prog_type is not None:
        (root / "bpf_prog_type_fuse").write_text(prog_type)
    return str(root)


def test_this_kernel_has_no_fuse_bpf():
    support = features.detect()
    assert not support.supported
    assert "no fuse-bpf" in support.reason and "fuse_bpf" in support.reason


@pytest.mark.parametrize("prog_type", ["31\n", "32\n", "33\n"])
def test_the_type_number_is_read_never_assumed(tmp_path, prog_type):
    support = features.detect(_sysfs(tmp_path, "supported\n", prog_type))
    assert support.supported and support.prog_type == int(prog_type)


@pytest.mark.parametrize("feature, prog_type, reason", [
    (None, "32\n", "is missing"),
    ("unsupported\n", "32\n", "says 'unsupported'"),
    ("supported\n", None, "type number is unknown"),
    ("supported\n", "0x20\n", "not hold a decimal"),
])
def test_broken_or_missing_sysfs_means_unsupported(tmp_path, feature, prog_type, reason):
    support = features.detect(_sysfs(tmp_path, feature, prog_type))
    assert not support.supported and reason in support.reason


ACK = features.FuseBpfSupport(33)
MAINLINE = features.FuseBpfSupport(None, "this kernel has no fuse-bpf (test)")


def test_auto_is_kernel_where_supported_else_emulation():
    assert select("auto", None, ACK, None).kernel
    chosen = select("auto", None, MAINLINE, None)
    assert not chosen.kernel and chosen.name == "emulate"


def test_kernel_mode_is_refused_clearly_where_unsupported():
    with pytest.raises(MountError, match="mode=kernel: this kernel has no fuse-bpf.*mode=emulate"):
        select("kernel", None, MAINLINE, None)
    assert not select("emulate", None, ACK, None).kernel


def test_daemonless_when_nothing_needs_a_daemon():
    assert select("kernel", None, ACK, None).name == "kernel, no daemon"
    assert select("kernel", False, ACK, None).daemon            # no_daemon=0 keeps one
    assert select("kernel", None, ACK, "it has userspace rules").daemon
    with pytest.raises(MountError, match="no_daemon: this policy needs a daemon: it has"):
        select("kernel", True, ACK, "it has userspace rules (p.fdsl:1)")
    with pytest.raises(MountError, match="no_daemon needs fuse-bpf"):
        select("auto", True, MAINLINE, None)
    with pytest.raises(UsageError):
        select("fast", None, ACK, None)


def _meta(source: str):
    return load_object(compile_source(source, "p.fdsl", want_asm=False).obj).meta


def test_which_policies_need_a_daemon():
    assert daemon_needed(_meta('on lookup pre { if name == "x" { deny ENOENT } }\n')) is None
    assert "userspace rules" in daemon_needed(
        _meta('on readdir post { drop entries where name like "*.tmp" }\n'))
    assert "'private'" in daemon_needed(
        _meta('under "private" { on open pre { deny EACCES } }\n'))
    assert daemon_needed(None) is None


def _fdsl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fdsl.cli", *args], capture_output=True,
                          text=True)


def test_fdsl_load_on_mainline_says_so_and_exits_1(tmp_path):
    policy = tmp_path / "p.fdsl"
    policy.write_text('on lookup pre { if name == "x" { deny ENOENT } }\n')
    proc = _fdsl("load", str(policy))
    assert proc.returncode == 1
    assert proc.stderr.startswith("fdsl load: this kernel has no fuse-bpf")
    assert "Traceback" not in proc.stderr


def test_fdsl_load_refuses_an_rfc_v1_object_before_asking_the_kernel(tmp_path):
    obj = tmp_path / "p.v1.o"
    policy = tmp_path / "p.fdsl"
    policy.write_text('on lookup pre { if name == "x" { deny ENOENT } }\n')
    assert _fdsl("compile", "--abi", "rfc-v1", str(policy), "-o", str(obj)).returncode == 0
    proc = _fdsl("load", str(obj))
    assert proc.returncode == 1 and "RFC v1 fuse-bpf object: no fuse-bpf kernel" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_mount_mode_kernel_is_refused_before_anything_is_mounted(tmp_path):
    backing, mnt = tmp_path / "b", tmp_path / "m"
    backing.mkdir()
    mnt.mkdir()
    proc = _fdsl("mount", "-o", "mode=kernel", "", str(backing), str(mnt))
    assert proc.returncode == 1
    assert "mode=kernel: this kernel has no fuse-bpf" in proc.stderr
    assert os.path.realpath(mnt) not in open("/proc/self/mountinfo").read()
    bad = _fdsl("mount", "-o", "mode=fast", "", str(backing), str(mnt))
    assert bad.returncode == 2 and "mode is one of auto, kernel, emulate" in bad.stderr
