"""Userspace rules and BPF code share one set of maps in the daemon.

A regex rule runs in the daemon; its `count` and map store must land in the
same maps the BPF programs use, visible through `fdsl stats`.
"""
from __future__ import annotations

import os

import pytest

from mounting import mounter, needs_fuse  # noqa: F401

pytestmark = [pytest.mark.mount, needs_fuse]

POLICY = """
counter bpf_lookups[u32] max 64
counter regex_hits[u32] max 64
map last_uid[u32] -> u32 max 64
on lookup pre { count bpf_lookups[uid] }
on lookup pre { if name matches "^tmp[0-9]+$" { count regex_hits[uid]; last_uid[7] = uid + 1 } }
"""


def _entries(stats: dict, name: str) -> dict:
    for m in stats["maps"]:
        if m["name"] == name:
            return {str(key): value for key, value in m["entries"]}
    raise AssertionError(f"no map {name} in {stats['maps']}")


def test_userspace_rules_count_and_store_into_the_shared_maps(mounter, tmp_path):
    policy = tmp_path / "maps.fdsl"
    policy.write_text(POLICY)
    backing, mnt = mounter.dirs()
    for name in ("tmp1", "tmp22", "other"):
        (backing / name).write_text("x")
    m = mounter.mount(policy, backing, mnt, options="attr_timeout=0,entry_timeout=0")
    for name in ("tmp1", "tmp22", "other"):
        os.stat(mnt / name)
    stats = m.stats()
    assert sum(_entries(stats, "regex_hits").values()) == 2
    assert sum(_entries(stats, "bpf_lookups").values()) >= 3
    assert list(_entries(stats, "last_uid").values()) == [1]
