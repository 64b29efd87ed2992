"""scripts/setup.sh as root links the mount helper `mount -t fuse.fdsl` needs (fdsl on
root's standard PATH), only where nothing or a link of ours is, says so in its one line,
and stays quick and quiet on a re-run; the man pages are linked into the venv.
FDSL_HELPER_DIR points it at a scratch dir."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
OURS = Path(sys.executable).with_name("fdsl")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="not applicable here: the helper "
                                "is linked only by root")


def _setup(helper_dir: Path) -> list[str]:
    proc = subprocess.run(["bash", "scripts/setup.sh"], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, FDSL_HELPER_DIR=str(helper_dir)), timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines() + proc.stderr.splitlines()


@pytest.fixture
def ours_is_this_venv():
    if (ROOT / ".venv" / "bin" / "fdsl").resolve() != OURS.resolve():
        pytest.skip("not applicable here: the tests run outside this checkout's .venv")


def test_links_the_helper_when_absent_and_is_quiet_after(tmp_path, ours_is_this_venv):
    helper = tmp_path / "sbin" / "fdsl"
    [line] = _setup(tmp_path / "sbin")
    assert os.readlink(helper) == str(ROOT / ".venv" / "bin" / "fdsl")
    assert "mount helper" in line and "->" in line
    [again] = _setup(tmp_path / "sbin")
    assert again.startswith("setup: ready") and "->" not in again
    assert os.readlink(helper) == str(ROOT / ".venv" / "bin" / "fdsl")
    # and the man pages where man(1) looks for them beside .venv/bin
    for page in ("man1/fdsl.1", "man7/fdsl-language.7"):
        assert (ROOT / ".venv" / "share" / "man" / page).resolve() == \
            (ROOT / "man" / Path(page).name).resolve()


def test_replaces_only_a_dangling_link_of_a_removed_venv(tmp_path, ours_is_this_venv):
    helper = tmp_path / "fdsl"
    helper.symlink_to("/removed/checkout/.venv/bin/fdsl")
    _setup(tmp_path)
    assert os.readlink(helper) == str(ROOT / ".venv" / "bin" / "fdsl")


def test_leaves_someone_elses_helper_alone(tmp_path, ours_is_this_venv):
    other = tmp_path / "fdsl"
    other.write_text("#!/bin/sh\n")
    [line] = _setup(tmp_path)
    assert other.read_text() == "#!/bin/sh\n" and "left as it is" in line
