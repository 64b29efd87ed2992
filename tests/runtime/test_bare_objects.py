"""Bare objects (no fdsl metadata): the root program is never dropped silently.

A clang-built object whose only program section is `fuse/hidden` attaches
that section to the root; several sections without `fuse/root` are refused
with the section names and the option that chooses one (issue 9).
"""
from __future__ import annotations

import pytest

from elf_builder import ElfBuilder
from fdsl.errors import MountError
from fdsl.runtime.policy import load_policy

BACKING_ONLY = bytes.fromhex("b700000002000000") + bytes.fromhex("9500000000000000")


def bare(*sections: str) -> bytes:
    elf = ElfBuilder()
    for name in sections:
        elf.program(name, BACKING_ONLY)
    elf.section("license", b"GPL\0")
    return elf.build()


def test_the_only_section_is_attached_to_the_root():
    assert load_policy(bare("fuse/hidden"), "interp", "/").root_section == "fuse/hidden"


def test_fuse_root_wins_among_several():
    assert load_policy(bare("fuse/a", "fuse/root"), "interp", "/").root_section == "fuse/root"


def test_several_sections_without_fuse_root_are_refused_with_their_names():
    with pytest.raises(MountError) as info:
        load_policy(bare("fuse/a", "fuse/b"), "interp", "/")
    assert "fuse/a, fuse/b" in str(info.value) and "root_section" in str(info.value)


def test_the_option_chooses_a_section_and_an_unknown_one_is_refused():
    assert load_policy(bare("fuse/a", "fuse/b"), "interp", "/",
                       root_section="fuse/b").root_section == "fuse/b"
    with pytest.raises(MountError) as info:
        load_policy(bare("fuse/a"), "interp", "/", root_section="fuse/c")
    assert "fuse/c" in str(info.value) and "fuse/a" in str(info.value)
