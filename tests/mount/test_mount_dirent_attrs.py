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


def test_each_page_is_filtered_once_in_a_listing_of_many_pages(mounter, tmp_path):
    """A listing many READDIR pages long, read by requests that stop inside a page
    (the batch limit, the kernel's 4 KiB buffer): every entry passes the readdir
    programs once, so a counter of the dirent bytes POST saw equals the listing's
    size, and dropped entries stay dropped across the cuts."""
    b, mnt = mounter.dirs()
    names = [f"f{i:04d}" for i in range(1500)]     # 24 + 5 bytes: one 32-byte record each
    for name in names:
        (b / name).write_bytes(b"")
    policy = tmp_path / "pages.fdsl"
    policy.write_text("counter seen\n"
                      "on readdir post {\n"
                      "    count seen by sizeof(dirents)\n"
                      '    drop entries where name endswith "7"\n'
                      "}\n")
    m = mounter.mount(policy, b, mnt)
    listed = os.listdir(mnt)
    assert sorted(listed) == [n for n in names if not n.endswith("7")]
    assert m.counters("seen") == {"total": 32 * len(names)}
