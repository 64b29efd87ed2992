"""Real mounts: backing-step fidelity the engine owes the kernel (issues 9 and 11).

* a chown the backing fs refuses (EPERM) leaves the setuid/setgid bits alone
  (issue 11 item 4);
* a shared mmap write to a file opened with O_APPEND lands in place, at the
  offset the kernel sends (issue 11 item 6);
* a bare clang-built object whose only program section is `fuse/hide` is
  attached to the root, not mounted silently without a program (issue 9).
"""
from __future__ import annotations

import mmap
import os
import stat

import pytest

from mounting import errno_as, mounter, needs_fuse  # noqa: F401

pytestmark = [pytest.mark.mount, needs_fuse]


def test_a_refused_chown_keeps_the_setuid_and_setgid_bits(mounter):
    b, mnt = mounter.dirs()
    os.chmod(b, 0o777)
    f = b / "tool"
    f.write_text("#!/bin/sh\n")
    os.chown(f, 1000, 1000)
    os.chmod(f, 0o6755)
    mounter.mount("", b, mnt, options="allow_other")
    target = str(mnt / "tool")
    assert errno_as(1000, 1000, f"r = os.chown({target!r}, 1001, -1)") == "EPERM"
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o6755
    assert os.stat(f).st_uid == 1000


def test_a_shared_mmap_write_to_an_append_file_lands_in_place(mounter):
    b, mnt = mounter.dirs()
    (b / "log").write_bytes(b"a" * 8192)
    mounter.mount("", b, mnt)
    fd = os.open(mnt / "log", os.O_RDWR | os.O_APPEND)
    try:
        with mmap.mmap(fd, 8192, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as m:
            m[100:105] = b"HELLO"
            m.flush()
        os.write(fd, b"tail")                    # an append still appends
        os.fsync(fd)
    finally:
        os.close(fd)
    data = (b / "log").read_bytes()
    assert len(data) == 8196 and data[100:105] == b"HELLO" and data.endswith(b"tail")


def test_a_bare_objects_only_section_is_attached_to_the_root(mounter, bpf_c_object, tmp_path):
    obj = tmp_path / "hide_name.o"
    obj.write_bytes(bpf_c_object("hide_name"))
    b, mnt = mounter.dirs()
    (b / "secret").write_text("s")
    (b / "public").write_text("p")
    mounter.mount(obj, b, mnt)
    assert (mnt / "public").read_text() == "p"
    with pytest.raises(FileNotFoundError):
        (mnt / "secret").read_text()
