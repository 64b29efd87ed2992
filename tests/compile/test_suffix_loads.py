"""Name-suffix tests compiled with wide, unaligned loads and one size dispatch.

`endswith`/glob suffixes are compared per possible name size at constant
offsets, with loads of up to 4 bytes at whatever alignment the suffix has
(fdsl/compile/codegen.py `compare_bytes`).  Checked here:

* the load plan covers exactly the literal bytes of every suffix length
  1..255, so nothing outside the suffix (never past the name's NUL) is read;
* the compiled programs give `name.endswith(...)` (resp. the glob) for every
  name length 1..255: the interpreter, run with the name's region cut down to
  its `size` bytes so that any read past the name faults, the JIT, and a
  Python reference agree;
* the verifier accepts unaligned buffer loads.
"""
from __future__ import annotations

import fnmatch

import pytest

from fdsl import abi
from fdsl.vm import isa
from fdsl.compile.names import _load_plan
from fdsl.vm.context import build_context
from fdsl.vm.filterset import FilterSet
from fdsl.vm.helpers import Caller
from fdsl.vm.interpreter import s32
from fdsl.vm.maps import Region

from backend_util import compile_text

DENY = -5      # EIO
ALLOW = abi.BACKING


@pytest.mark.parametrize("wild", [False, True])
def test_load_plan_covers_exactly_the_suffix(wild):
    for length in range(1, 256):
        pattern = b"".join(b"?" if wild and i % 5 == 3 else b"k" for i in range(length))
        literal = {i for i, c in enumerate(pattern) if not (wild and c == ord("?"))}
        plan = _load_plan(pattern, wild, wide=True)
        covered = set()
        for start, width in plan:
            assert width in (1, 2, 4)
            span = set(range(start, start + width))
            assert span <= literal, (length, start, width)   # only bytes of the pattern
            covered |= span
        assert covered == literal, length
        if not wild:
            assert len(plan) == (length + 3) // 4 + (length == 3)   # the fewest loads


def _suffixes(lengths: list[int]) -> list[bytes]:
    """Suffix-free patterns (none ends another): a distinct first byte, then 'x's."""
    marks = b"abcdefghijklmnopqrstuvwABCDEFGHIJKLMNOPQRSTUVW"
    return [bytes([marks[i]]) + b"x" * (n - 1) for i, n in enumerate(lengths)]


def _names(patterns: list[bytes]) -> list[bytes]:
    """For every length 1..255: a name ending with each pattern that fits, near misses, others."""
    names = []
    for n in range(1, 256):
        names.append(bytes((ord("a") + i % 23) for i in range(n)))
        names.append(b"x" * n)
        for p in patterns:
            if len(p) <= n:
                names.append(b"n" * (n - len(p)) + p)
                names.append(b"n" * (n - len(p)) + p[:-1] + b"y")      # last byte differs
                names.append(b"n" * (n - len(p)) + b"z" + p[1:])       # first byte differs
    return names


def _run_tight(interp: FilterSet, name: bytes) -> int:
    """Interpreter run whose name region ends at the name's NUL: reading beyond faults."""
    ctx = build_context("lookup", "pre", [name + b"\0"], nodeid=1)
    arg = ctx.in_args[0]
    regions = [Region(ctx.address, abi.CTX_SIZE, False, "ctx"), Region(arg.address, arg.size, True, "name")]
    return s32(interp.vm("fuse/root").execute(ctx.address, regions, Caller(1000, 100, 1, 1)))


def _check(policy: str, reference) -> None:
    obj = compile_text(policy).obj
    interp = FilterSet.load(obj, backend="interp")
    jit = FilterSet.load(obj, backend="jit")
    caller = Caller(1000, 100, 1, 1)
    for name in dict.fromkeys(reference.names):
        expected = DENY if reference(name) else ALLOW
        assert _run_tight(interp, name) == expected, name
        ctx = build_context("lookup", "pre", [name + b"\0"], nodeid=1)
        assert jit.run("fuse/root", ctx, caller) == expected, name


class _Reference:
    def __init__(self, patterns: list[bytes], names: list[bytes], match) -> None:
        self.patterns, self.names, self.match = patterns, names, match

    def __call__(self, name: bytes) -> bool:
        return any(self.match(name, p) for p in self.patterns)


# Suffix lengths, grouped per policy (one program must stay within BPF's 16-bit jump range).
LENGTHS = [list(range(1, 10)), list(range(10, 18)), [24, 31, 32, 33], [64], [100], [200, 254, 255]]


@pytest.mark.parametrize("lengths", LENGTHS, ids=lambda ls: f"{ls[0]}-{ls[-1]}")
def test_endswith_every_name_length(lengths):
    patterns = _suffixes(lengths)
    tests = " or ".join(f'name endswith "{p.decode()}"' for p in patterns)
    policy = f"on lookup pre {{\n  if {tests} {{ deny EIO }}\n}}\n"
    _check(policy, _Reference(patterns, _names(patterns), lambda n, p: n.endswith(p)))


def test_globs_with_wildcards_every_name_length():
    globs = [b"*.k?y", b"*?", b"ab*yz", b"*a??x", b"q*", b"*.tar.gz"]
    concrete = [b".key", b"a", b"abyz", b"a12x", b"q", b".tar.gz", b"ab.tar.gz"]
    tests = " or ".join(f'name like "{g.decode()}"' for g in globs)
    policy = f"on lookup pre {{\n  if {tests} {{ deny EIO }}\n}}\n"
    reference = _Reference(globs, _names(concrete),
                           lambda n, g: fnmatch.fnmatchcase(n.decode("latin-1"), g.decode("latin-1")))
    _check(policy, reference)


def test_verifier_accepts_unaligned_buffer_loads():
    from fdsl.vm.loader import load_object
    from fdsl.vm.verifier import verify

    obj = compile_text('on lookup pre { if name endswith ".key" { deny EIO } }\n').obj
    loaded = load_object(obj)
    verify(loaded.programs["fuse/root"], loaded.maps, section="fuse/root")
    words = [i for i in loaded.programs["fuse/root"].insns
             if i.cls == isa.BPF_LDX and i.size_bytes == 4 and i.off % 4]
    assert words, "expected unaligned 32-bit loads of the suffix"
