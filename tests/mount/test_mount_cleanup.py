"""The mount fixture's own cleanup: a mount a test did not register (a CLI call that was
expected to fail but mounted) is found under the fixture's base and unmounted too."""
from __future__ import annotations

import pytest

from mounting import _mounter_for, fdsl, is_mounted, mounts_below, needs_fuse

pytestmark = [pytest.mark.mount, needs_fuse]


def test_an_unregistered_mount_is_unmounted_by_the_fixture():
    fixture = _mounter_for("dev")
    mounter = next(fixture)
    try:
        backing, mnt = mounter.dirs()
        other, _ = mounter.dirs()
        nested = backing / "deeper dir é"
        nested.mkdir()
        fdsl("mount", "", backing, mnt, check=True)         # neither is in mounter.mounts
        fdsl("mount", "", other, nested, check=True)        # seen through mnt too
        assert mounts_below(mounter.base) == [nested, mnt]  # deepest first, names decoded
    finally:
        fixture.close()                                     # the fixture's teardown
    assert not is_mounted(mnt) and not is_mounted(nested)
    assert not mounter.base.exists()
