"""The daemon skips running a program only where its outcome is statically BACKING.

Skipped: opcodes with no rule at all in the program's scope (own or
inherited) under `default allow`.  Never skipped: opcodes with any rule,
policies with another default, objects without fdsl's per-opcode traits.
"""
from __future__ import annotations

from fdsl.compile.driver import compile_source
from fdsl.runtime.policy import load_policy


def _skipped(source: str) -> frozenset[tuple[str, str]]:
    obj = compile_source(source, "p.fdsl", want_asm=False).obj
    return load_policy(obj, "interp", "/")._statically_backing


def test_ops_without_rules_skip_the_program():
    skipped = _skipped('counter c\non lookup pre { count c }\n'
                       'under "a" { on getattr post { out.attr.mode &= ~0o222 } }\n')
    assert ("fuse/root", "getattr") in skipped and ("fuse/root", "read") in skipped
    assert ("fuse/root", "lookup") not in skipped          # counts: must run
    assert ("fuse/s1", "getattr") not in skipped            # the scope's own rule
    assert ("fuse/s1", "lookup") not in skipped             # inherited from the root


def test_userspace_only_rules_are_not_skipped():
    skipped = _skipped('on readdir post { drop entries where name like "*.tmp" }\n')
    assert ("fuse/root", "readdir") not in skipped
    assert ("fuse/root", "lookup") in skipped


def test_a_non_allow_default_runs_every_program():
    assert _skipped('default deny EPERM\non lookup pre { allow }\n') == frozenset()


def test_objects_without_fdsl_traits_always_run():
    from elf_builder import ElfBuilder

    elf = ElfBuilder()
    elf.program("fuse/root", bytes.fromhex("b700000002000000") + bytes.fromhex("9500000000000000"))
    elf.section("license", b"GPL\0")
    assert load_policy(elf.build(), "interp", "/")._statically_backing == frozenset()


def test_daemon_raises_its_open_file_limit_to_the_hard_limit():
    """Each known inode holds an O_PATH fd: the daemon must not stop at the soft limit."""
    import subprocess
    import sys

    code = ("import resource\n"
            "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))\n"
            "from fdsl.runtime.daemon import _raise_fd_limit\n"
            "_raise_fd_limit()\n"
            "print(resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
