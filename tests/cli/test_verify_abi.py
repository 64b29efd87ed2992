"""`fdsl verify --abi`: a clang-built RFC v1 object (no fdsl metadata) is checked under the
rules the flag names; an fdsl object's own ABI comes from its metadata."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
FDSL = [sys.executable, "-m", "fdsl.cli"]


def fdsl(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([*FDSL, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_rfc_v1_c_object_verifies_under_its_abi(bpf_c_object, tmp_path):
    obj = tmp_path / "rfc_v1.o"
    obj.write_bytes(bpf_c_object("rfc_v1_programs"))
    ok = fdsl("verify", "--abi", "rfc-v1", "-v", str(obj))
    assert ok.returncode == 0, ok.stderr
    assert "fuse/rfc_v1: ok" in ok.stdout and "RFC v1 fuse-bpf rules" in ok.stdout
    ack = fdsl("verify", str(obj))                     # no metadata, no flag: ACK rules
    assert ack.returncode == 1 and "helper 209 is not available" in ack.stderr
    unknown = fdsl("verify", "--abi", "v9", str(obj))
    assert unknown.returncode == 2 and "unknown ABI 'v9'" in unknown.stderr


def test_broken_rfc_v1_object_is_rejected(bpf_c_object, tmp_path):
    obj = tmp_path / "broken.o"
    obj.write_bytes(bpf_c_object("rfc_v1_programs", "-DNO_BOUNDS_CHECK"))
    proc = fdsl("verify", "--abi", "rfc-v1", str(obj))
    assert proc.returncode == 1 and "not proven below its end_offset" in proc.stderr


def test_fdsl_object_metadata_decides_and_a_contradicting_flag_is_refused(tmp_path):
    obj = tmp_path / "audit.o"
    assert fdsl("compile", str(ROOT / "examples" / "audit.fdsl"), "-o", str(obj)).returncode == 0
    assert fdsl("verify", str(obj)).returncode == 0
    assert fdsl("verify", "--abi", "ack", str(obj)).returncode == 0
    proc = fdsl("verify", "--abi", "rfc-v1", str(obj))
    assert proc.returncode == 2 and "contradicts its metadata" in proc.stderr
