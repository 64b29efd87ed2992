"""`drop entries where` reads each entry's type and inode, through a real mount."""
from __future__ import annotations

import os

import pytest

from mounting import mounter, needs_fuse  # noqa: F401

pytestmark = [pytest.mark.mount, needs_fuse]


def test_listing_filters_on_type_and_ino(mounter, tmp_path):
    b, mnt = mounter.dirs()
    (b / "sub").mkdir()
    (b / "file").write_text("x")
    (b / "other").write_text("y")
    os.symlink("file", b / "link")
    hidden_ino = os.stat(b / "other").st_ino
    policy = tmp_path / "p.fdsl"
    policy.write_text("on readdir post {\n"
                      "    drop entries where type == DT_DIR or type == DT_LNK\n"
                      f"    drop entries where ino == {hidden_ino}\n"
                      "}\n")
    mounter.mount(policy, b, mnt)
    assert sorted(os.listdir(mnt)) == ["file"]
    assert (mnt / "sub").is_dir() and (mnt / "other").read_text() == "y"   # listed no more, still there
