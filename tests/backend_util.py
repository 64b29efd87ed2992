"""Shared helpers for the back-end tests: compile policy text, read objects."""
from __future__ import annotations

import io
import re
import shutil
import subprocess

from fdsl.lang import parser
from fdsl.compile.driver import CompileResult, compile_policy

OBJDUMP = shutil.which("llvm-objdump")


def compile_text(text: str, filename: str = "t.fdsl", want_asm: bool = False) -> CompileResult:
    """Parse, check (the code generator reads what the checker binds) and compile."""
    from fdsl.lang.checker import check
    from fdsl.lang.diagnostics import Severity

    policy, sources, diags = parser.parse_source(text, filename)
    assert not diags, diags
    errors = [d.message for d in check(policy, sources) if d.severity is Severity.ERROR]
    assert not errors, errors
    return compile_policy(policy, sources, want_asm=want_asm)


def elf(obj: bytes):
    from elftools.elf.elffile import ELFFile

    return ELFFile(io.BytesIO(obj))


def objdump(obj: bytes, tmp_path, name: str = "p.bpf.o") -> str:
    path = tmp_path / name
    path.write_bytes(obj)
    proc = subprocess.run([OBJDUMP, "-d", "-r", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "error" not in proc.stderr.lower(), proc.stderr
    return proc.stdout


def insns(obj: bytes, section: str) -> list[tuple[int, int, int, int, int]]:
    """(opcode, dst, src, off, imm) per 8-byte slot of a program section."""
    data = elf(obj).get_section_by_name(section).data()
    out = []
    for i in range(0, len(data), 8):
        op, regs = data[i], data[i + 1]
        off = int.from_bytes(data[i + 2:i + 4], "little", signed=True)
        imm = int.from_bytes(data[i + 4:i + 8], "little", signed=True)
        out.append((op, regs & 0xF, regs >> 4, off, imm))
    return out


_LOAD = re.compile(r"([rw])(\d+) = \*\(u(\d+) \*\)\(r(\d+) ([+-]) (\d+)\)")
_STORE = re.compile(r"\*\(u(\d+) \*\)\(r(\d+) ([+-]) (\d+)\) = ")
_ASSIGN = re.compile(r"^\s*[rw](\d+) ")


def _parse(disasm: str) -> list[dict[int, str]]:
    """Per function: slot index -> instruction text (llvm-objdump -d output)."""
    functions: list[dict[int, str]] = []
    for line in disasm.splitlines():
        if line.strip().endswith(">:"):
            functions.append({})
            continue
        m = re.match(r"^\s*(\d+):\t(?:[0-9a-f]{2} ?){8}\t(.*)$", line)
        if m and functions:
            functions[-1][int(m[1])] = m[2].strip()
    return functions


def _successors(index: int, text: str, slots: dict[int, str]) -> list[int]:
    nxt = index + (2 if " ll" in text else 1)
    if text == "exit":
        return []
    m = re.search(r"goto ([+-]\d+)", text)
    if m:
        target = index + 1 + int(m[1])
        return [target] if text.startswith("goto") else [nxt, target]
    return [nxt]


def _transfer(text: str, regs: dict[int, tuple]) -> dict[int, tuple]:
    regs = dict(regs)
    m = _LOAD.search(text)
    if m and not _STORE.search(text):
        dst, bits, base, off = int(m[2]), int(m[3]), int(m[4]), int(m[6])
        regs[dst] = ("arg", off) if regs.get(base) == ("ctx",) and bits == 64 else None
        return regs
    if text.startswith("call"):
        for r in range(0, 6):
            regs[r] = None
        return regs
    m = re.match(r"^r(\d+) = r(\d+)$", text)
    if m:
        regs[int(m[1])] = regs.get(int(m[2]))
        return regs
    m = _ASSIGN.match(text)
    if m:
        regs[int(m[1])] = None
    return regs


def memory_accesses(disasm: str):
    """Classify loads/stores by what the base register holds (forward dataflow).

    Returns (ctx_loads, ctx_stores, arg_reads, arg_writes): ctx_* are
    (offset, bits); arg_* are (ctx offset of the slot's value pointer, bits, offset)."""
    ctx_loads, ctx_stores, reads, writes = set(), set(), set(), set()
    for slots in _parse(disasm):
        if not slots:
            continue
        start = min(slots)
        states: dict[int, dict[int, tuple]] = {start: {1: ("ctx",)}}
        work = [start]
        while work:
            index = work.pop()
            out = _transfer(slots[index], states[index])
            for succ in _successors(index, slots[index], slots):
                if succ not in slots:
                    continue
                old = states.get(succ)
                merged = out if old is None else {r: k for r, k in old.items() if out.get(r) == k}
                if merged != old:
                    states[succ] = merged
                    work.append(succ)
        for index, text in slots.items():
            regs = states.get(index, {})
            m = _STORE.search(text)
            if m:
                bits, base, sign, off = int(m[1]), int(m[2]), m[3], int(m[4])
                kind = regs.get(base)
                if kind == ("ctx",):
                    ctx_stores.add((-off if sign == "-" else off, bits))
                elif kind and kind[0] == "arg":
                    writes.add((kind[1], bits, off))
                continue
            m = _LOAD.search(text)
            if m:
                bits, base, off = int(m[3]), int(m[4]), int(m[6])
                kind = regs.get(base)
                if kind == ("ctx",):
                    ctx_loads.add((off, bits))
                elif kind and kind[0] == "arg":
                    reads.add((kind[1], bits, off))
    return ctx_loads, ctx_stores, reads, writes
