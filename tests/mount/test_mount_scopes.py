"""Scope attachment at lookup (spec 3.2): set, inherit, remove (passthrough), backing remap."""
from __future__ import annotations

import os

import pytest

from mounting import mounter, needs_fuse  # noqa: F401

pytestmark = [pytest.mark.mount, needs_fuse]


def test_scopes_set_inherit_remove_and_remap(mounter, tmp_path):
    other = mounter.base / "other"
    other.mkdir()
    (other / "from_other").write_text("remapped")
    (other / "blocked").write_text("other blocked")
    policy = tmp_path / "scopes.fdsl"
    policy.write_text(f'''
under "a" {{
    on lookup pre {{ if name == "blocked" {{ deny ENOENT }} }}
}}
under "a/open" passthrough
under "a/open/again" {{
    on lookup pre {{ if name == "blocked" {{ deny EACCES }} }}
}}
under "remap" backing "{other}"
''')
    b, mnt = mounter.dirs()
    for d in ("a/x/y", "a/open/inner", "a/open/again", "remap"):
        (b / d).mkdir(parents=True)
    for d in ("", "a", "a/x", "a/x/y", "a/open", "a/open/inner", "a/open/again"):
        (b / d / "blocked").write_text(d)
    (b / "remap" / "hidden_by_remap").write_text("backing original")
    m = mounter.mount(policy, b, mnt)

    # root scope has no such rule
    assert (mnt / "blocked").read_text() == ""
    # set: the scope's program is attached when "a" is looked up
    assert not os.path.exists(mnt / "a" / "blocked")
    # only readdir rules filter listings (as on ACK): a name the lookup rule
    # refuses is still listed, it just cannot be looked up
    assert sorted(os.listdir(mnt / "a")) == ["blocked", "open", "x"]
    # inherit: descendants keep the program
    assert not os.path.exists(mnt / "a" / "x" / "blocked")
    assert not os.path.exists(mnt / "a" / "x" / "y" / "blocked")
    # remove: passthrough drops the program for the whole subtree
    assert (mnt / "a" / "open" / "blocked").read_text() == "a/open"
    assert (mnt / "a" / "open" / "inner" / "blocked").read_text() == "a/open/inner"
    # a nested scope below a passthrough one sets a program again (its EACCES
    # reaches the caller as ENOENT, as every refused LOOKUP does: spec §6)
    with pytest.raises(FileNotFoundError):
        (mnt / "a" / "open" / "again" / "blocked").read_text()
    # backing remap: the subtree shows (and writes to) the other directory
    assert sorted(os.listdir(mnt / "remap")) == ["blocked", "from_other"]
    assert (mnt / "remap" / "from_other").read_text() == "remapped"
    (mnt / "remap" / "written").write_text("w")
    assert (other / "written").read_text() == "w"
    assert not (b / "remap" / "written").exists()
    assert m.alive()
