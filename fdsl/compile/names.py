"""Name tests in BPF: constant strings compared with unrolled loads (spec 4.1, 14.4).

Equality and prefixes test the size first, then compare; suffixes, which
need constant offsets per possible name size, share one `switch` on the size
per name.  Every compare uses the fewest, possibly unaligned, loads of up to
4 bytes and exits at the first mismatch; nothing is read past the name's
size or past the constant.

Under a packet ABI (RFC v1) every compare is preceded by the bounds check of
the bytes it reads against the name's `end_offset` (`ScopeGen.guard`), and
suffixes are read through the pointer moved to the name's end instead of a
switch on the size (variable offsets are allowed there once proven in
bounds, as in the RFC selftests).
"""
from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from fdsl.abi import Abi
from fdsl.compile.irbase import I8, I64, INT_TYPES, MAX_NAME_SIZE, CodegenError, Field, c32, c64, opaque
from fdsl.compile.planner import simple_glob
from fdsl.compile.sharing import field_path
from fdsl.lang import ast


class NameTests:
    """Mixin of `codegen.ScopeGen`: the IR of name tests."""

    fn: ir.Function
    b: ir.IRBuilder
    abi: Abi

    def field(self, node: ast.Expr) -> Field:
        raise NotImplementedError

    def read_base(self, f: Field) -> ir.Value:
        raise NotImplementedError

    def read_size(self, f: Field) -> ir.Value:
        raise NotImplementedError

    def read_end(self, f: Field) -> ir.Value | None:
        raise NotImplementedError

    def guard(self, base: ir.Value, end: ir.Value | None, nbytes: int, f: ir.Block) -> None:
        raise NotImplementedError

    def string_any(self, subject: ast.Expr, tests: list[tuple[str, bytes]],
                   t: ir.Block, f: ir.Block) -> None:
        """Branch to `t` if the name matches any of the (kind, pattern) tests.

        kind: "eq", "prefix", "suffix" or "glob".  Tests without a suffix part
        run one after the other; tests with one share a single dispatch on the
        name's size per prefix (see `suffix_group`)."""
        path = field_path(subject)
        if path is None:
            raise CodegenError("string tests need a name field on the left", subject)
        fld = self.field(subject)
        loc = fld.loc
        if loc.ctype != "string":
            raise CodegenError(f"'{'.'.join(path)}' is not a name", subject)
        capacity = min(loc.size, MAX_NAME_SIZE)
        plain: list[_StrTest] = []
        groups: dict[tuple[bytes, bool], list[_StrTest]] = {}
        for kind, pattern in tests:
            test = _StrTest.parse(kind, pattern)
            if test.need > capacity:
                continue                       # longer than any name: never matches
            if test.suffix:
                groups.setdefault((test.prefix, test.wild), []).append(test)
            else:
                plain.append(test)
        for test in plain:
            nxt = self.fn.append_basic_block("str.next")
            size = self.read_size(fld)
            ok = self.fn.append_basic_block("str.size")
            pred = "==" if test.exact else ">="
            self.b.cbranch(self.b.icmp_unsigned(pred, size, c32(test.need)), ok, nxt)
            self.b.position_at_end(ok)
            base = self.read_base(fld)
            self.compare_bytes(base, 0, test.prefix, test.wild, nxt, self.read_end(fld))
            self.b.branch(t)
            self.b.position_at_end(nxt)
        for (prefix, wild), group in groups.items():
            nxt = self.fn.append_basic_block("str.next")
            if self.abi.packet:
                self.suffix_group_packet(fld, capacity, prefix, wild, group, t, nxt)
            else:
                self.suffix_group(fld, capacity, prefix, wild, group, t, nxt)
            self.b.position_at_end(nxt)
        self.b.branch(f)

    def suffix_group_packet(self, fld: Field, capacity: int, prefix: bytes, wild: bool,
                            group: list[_StrTest], t: ir.Block, f: ir.Block) -> None:
        """Suffix tests on a packet: per test, the pointer to where the suffix must start
        (value + size - 1 - len(suffix)), proven in bounds, then constant-offset compares.

        The size is checked against the smallest matching name and the buffer's
        capacity first (bounding the variable offset, as the kernel requires);
        the variable offset passes through an empty asm so LLVM cannot split it
        into base + size and a negative constant (packet offsets must not be
        negative)."""
        need = min(test.need for test in group)
        size = self.read_size(fld)
        fits = self.fn.append_basic_block("str.size")
        small = self.b.icmp_unsigned("<", size, c32(need))
        big = self.b.icmp_unsigned(">", size, c32(capacity))
        self.b.cbranch(self.b.or_(small, big), f, fits)
        self.b.position_at_end(fits)
        base = self.read_base(fld)
        end = self.read_end(fld)
        self.compare_bytes(base, 0, prefix, wild, f, end)
        for test in group:
            nxt = self.fn.append_basic_block("suffix.next")
            if test.need > need:
                ok = self.fn.append_basic_block("suffix.size")
                self.b.cbranch(self.b.icmp_unsigned(">=", size, c32(test.need)), ok, nxt)
                self.b.position_at_end(ok)
            start = opaque(self.b, self.b.sub(self.b.zext(size, I64), c64(1 + len(test.suffix))))
            moved = self.b.gep(base, [start], source_etype=I8)
            self.compare_bytes(moved, 0, test.suffix, test.wild, nxt, end)
            self.b.branch(t)
            self.b.position_at_end(nxt)
        self.b.branch(f)

    def suffix_group(self, fld: Field, capacity: int, prefix: bytes, wild: bool,
                     group: list[_StrTest], t: ir.Block, f: ir.Block) -> None:
        """Suffix tests sharing a prefix: one `switch` on the size, then every test per size.

        Buffer offsets must be constants (spec 4.1), so each possible size gets
        its own compares at offset size - 1 - len(suffix); the switch (no jump
        tables: the function attribute) becomes a balanced compare tree, and
        a size's leaf tries every suffix that fits, with the fewest loads."""
        need = min(test.need for test in group)
        size = self.read_size(fld)
        if prefix:
            ok = self.fn.append_basic_block("str.size")
            self.b.cbranch(self.b.icmp_unsigned(">=", size, c32(need)), ok, f)
            self.b.position_at_end(ok)
        base = self.read_base(fld)
        self.compare_bytes(base, 0, prefix, wild, f)
        switch = self.b.switch(size, f)
        loads = _load_plan(group[0].suffix, group[0].wild, True)
        if len(group) == 1 and len(loads) == 1:
            self.one_load_leaves(switch, base, group[0], loads[0], capacity, t, f)
            return
        for total in range(need, capacity + 1):
            leaf = self.fn.append_basic_block(f"suffix.{total}")
            switch.add_case(c32(total), leaf)
            self.b.position_at_end(leaf)
            for test in group:
                if test.need > total:
                    continue
                nxt = self.fn.append_basic_block("suffix.next")
                self.compare_bytes(base, total - 1 - len(test.suffix), test.suffix, test.wild, nxt)
                self.b.branch(t)
                self.b.position_at_end(nxt)
            self.b.branch(f)

    def one_load_leaves(self, switch: ir.SwitchInstr, base: ir.Value, test: _StrTest,
                        load: tuple[int, int], capacity: int, t: ir.Block, f: ir.Block) -> None:
        """A suffix read with one load: each size's leaf only loads (at its own
        constant offset) and one compare after the leaves tests the loaded word.

        The loaded value passes through an empty asm so that LLVM cannot merge
        the leaves' loads into one load through a moved pointer (the kernel
        would accept that, our verifier does not: see `fdsl.vm.verifier`)."""
        start, width = load
        ity = INT_TYPES[width]
        expected = int.from_bytes(test.suffix[start:start + width], "little")
        compare = self.fn.append_basic_block("suffix.cmp")
        incoming = []
        for total in range(test.need, capacity + 1):
            leaf = self.fn.append_basic_block(f"suffix.{total}")
            switch.add_case(c32(total), leaf)
            self.b.position_at_end(leaf)
            ptr = self.b.gep(base, [c64(total - 1 - len(test.suffix) + start)], source_etype=I8)
            incoming.append((opaque(self.b, self.b.load(ptr, typ=ity, align=width)), leaf))
            self.b.branch(compare)
        self.b.position_at_end(compare)
        word = self.b.phi(ity, "suffix")
        for value, leaf in incoming:
            word.add_incoming(value, leaf)
        self.b.cbranch(self.b.icmp_unsigned("==", word, ir.Constant(ity, expected)), t, f)

    def compare_bytes(self, base: ir.Value, offset: int, expected: bytes, wild: bool,
                      f: ir.Block, end: ir.Value | None = None) -> None:
        """Compare `expected` at base+offset; exit to `f` at the first mismatch
        (and, with a packet `end`, when the bytes are not all below it).

        Each run of literal bytes (globs skip '?') is read with the fewest
        loads of up to 4 bytes, the last one overlapping the previous one
        instead of a narrower load (7 bytes = two 4-byte loads); callers have
        checked the name's size, so every byte read is inside the name and is
        one of `expected`'s.  Wide loads are as unaligned as the name; the IR
        claims natural alignment because the BPF back end would otherwise
        split each one into byte loads, and the kernels fuse-bpf ships on
        (x86-64, arm64) load unaligned buffer words."""
        plan = _load_plan(expected, wild, True)
        if plan:
            self.guard(base, end, offset + max(start + width for start, width in plan), f)
        for start, width in plan:
            ity = INT_TYPES[width]
            value = int.from_bytes(expected[start:start + width], "little")
            ptr = self.b.gep(base, [c64(offset + start)], source_etype=I8)
            loaded = self.b.load(ptr, typ=ity, align=width)
            nxt = self.fn.append_basic_block("bytes")
            self.b.cbranch(self.b.icmp_unsigned("==", loaded, ir.Constant(ity, value)), nxt, f)
            self.b.position_at_end(nxt)


@dataclass(frozen=True)
class _StrTest:
    """One name test as prefix + suffix: eq ("a"), prefix ("a*"), suffix ("*a"), glob ("a*b")."""

    prefix: bytes
    suffix: bytes
    exact: bool        # size must equal `need` (no '*')
    wild: bool         # '?' matches any byte (globs)

    @property
    def need(self) -> int:
        """The smallest size (with the NUL) a matching name has."""
        return len(self.prefix) + len(self.suffix) + 1

    @classmethod
    def parse(cls, kind: str, pattern: bytes) -> "_StrTest":
        if kind == "eq":
            return cls(pattern, b"", True, False)
        if kind == "prefix":
            return cls(pattern, b"", False, False)
        if kind == "suffix":
            return cls(b"", pattern, False, False)
        if not simple_glob(pattern.decode("utf-8", "replace")):
            raise CodegenError("this glob cannot run in BPF")
        if b"*" not in pattern:
            return cls(pattern, b"", True, True)
        prefix, suffix = pattern.split(b"*", 1)
        return cls(prefix, suffix, False, True)


def _load_plan(expected: bytes, wild: bool, wide: bool) -> list[tuple[int, int]]:
    """(start, width) loads covering the literal bytes of `expected` ('?' skipped if wild)."""
    runs: list[tuple[int, int]] = []
    start = None
    for i, byte in enumerate(expected + b"?"):
        literal = i < len(expected) and not (wild and byte == ord("?"))
        if literal and start is None:
            start = i
        elif not literal and start is not None:
            runs.append((start, i - start))
            start = None
    plan: list[tuple[int, int]] = []
    for start, length in runs:
        if not wide:
            plan += [(start + k, 1) for k in range(length)]
        elif length in (1, 2, 4):
            plan.append((start, length))
        elif length == 3:
            plan += [(start, 2), (start + 2, 1)]
        else:   # 4-byte loads, the last one ending at the run's end (overlapping)
            plan += [(start + k, 4) for k in range(0, length - 4, 4)] + [(start + length - 4, 4)]
    return plan
