"""BPF instruction counts: fdsl's output against hand-written C compiled by clang -O2.

Each bench/c/*.c names the example it is equivalent to in a first-line
comment `/* fdsl-equivalent: examples/NAME.fdsl ... */`.  Both sides are
compiled to BPF objects (clang -target bpf -mcpu=v3 -O2 against the ACK
context header in tests/c/, and `fdsl compile`), and the 8-byte instruction
slots of their program sections (`fuse/...`) are counted (ld_imm64 counts two,
as in llvm-objdump and verifier messages).
"""
from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from elftools.elf.elffile import ELFFile

REPO = Path(__file__).resolve().parent.parent
C_DIR = REPO / "bench" / "c"
HEADER_DIR = REPO / "tests" / "c"
EQUIV = re.compile(r"fdsl-equivalent:\s*(\S+\.fdsl)")


def program_slots(obj: bytes) -> dict[str, int]:
    """Instruction slots per program section (sections named fuse/*, or any SHF_EXECINSTR)."""
    elf = ELFFile(io.BytesIO(obj))
    out = {}
    for sec in elf.iter_sections():
        executable = sec["sh_type"] == "SHT_PROGBITS" and sec["sh_flags"] & 0x4
        if executable and sec.data_size:
            out[sec.name] = sec.data_size // 8
    return out


def clang_object(src: Path) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        obj = Path(tmp) / "out.o"
        subprocess.run(["clang", "-target", "bpf", "-mcpu=v3", "-O2", "-c", "-I", str(HEADER_DIR),
                        "-o", str(obj), str(src)], check=True, capture_output=True, text=True)
        return obj.read_bytes()


def fdsl_object(policy: Path) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        obj = Path(tmp) / "out.bpf.o"
        subprocess.run([sys.executable, "-m", "fdsl.cli", "compile", str(policy), "-o", str(obj)],
                       check=True, capture_output=True, text=True, cwd=REPO)
        return obj.read_bytes()


def _err(err: Exception) -> str:
    if isinstance(err, subprocess.CalledProcessError):
        text = (err.stderr or err.stdout or "").strip().splitlines()
        return " / ".join(text[:2]) or f"exit {err.returncode}"
    return f"{type(err).__name__}: {err}"


def compare() -> list[dict[str, object]]:
    """One row per C file: example, clang slots, fdsl slots (or the reason one is missing)."""
    rows = []
    for src in sorted(C_DIR.glob("*.c")):
        m = EQUIV.search(src.read_text())
        example = REPO / m.group(1) if m else None
        row: dict[str, object] = {"c": src.name, "example": m.group(1) if m else "?"}
        try:
            row["clang"] = sum(program_slots(clang_object(src)).values())
        except (OSError, subprocess.CalledProcessError) as err:
            row["clang"] = f"n/a ({_err(err)})"
        if example is None or not example.exists():
            row["fdsl"] = "n/a (example not written yet)"
        else:
            try:
                row["fdsl"] = sum(program_slots(fdsl_object(example)).values())
            except (OSError, subprocess.CalledProcessError) as err:
                row["fdsl"] = f"n/a ({_err(err)})"
        rows.append(row)
    return rows


def report() -> str:
    if shutil.which("clang") is None:
        return "n/a (clang not installed)"
    rows = compare()
    if not rows:
        return "n/a (no C files in bench/c/)"
    lines = ["| example | C equivalent | clang -O2 insns | fdsl insns | fdsl / clang |",
             "|---|---|---:|---:|---:|"]
    for r in rows:
        c, f = r["clang"], r["fdsl"]
        ratio = f"{f / c:.2f}x" if isinstance(c, int) and isinstance(f, int) and c else "n/a"
        lines.append(f"| {r['example']} | bench/c/{r['c']} | {c} | {f} | {ratio} |")
    lines.append("")
    lines.append("Instruction slots of all program sections (ld_imm64 = 2), clang -target bpf "
                 "-mcpu=v3 -O2 against tests/c/fuse_bpf.h.")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
