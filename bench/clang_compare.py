"""BPF instruction counts: fdsl's output against hand-written C compiled by clang -O2.

Each bench/c/*.c names the policy it is equivalent to in its first comment,
`/* fdsl-equivalent: examples/NAME.fdsl ... */` (or a policy under
bench/policies/), and, written for RFC v1, `fdsl-abi: rfc-v1` (default ack).
Both sides are compiled to BPF objects for that ABI (clang -target bpf
-mcpu=v3 -O2 against the context headers in tests/c/, and the fdsl compiler
with `--abi`), and the 8-byte instruction slots of their program sections
(`fuse/...`) are counted (ld_imm64 counts two, as in llvm-objdump and verifier
messages).  Both objects must pass our verifier under that ABI's rules: a C
program the kernel would refuse (a variable buffer offset, say) is no
baseline.  Target: fdsl <= 1.5x.

    .venv/bin/python bench/clang_compare.py [--write]   # --write: bench/results/code_size.md
"""
from __future__ import annotations

import argparse
import io
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from elftools.elf.elffile import ELFFile

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fdsl import abi  # noqa: E402
from fdsl.compile.driver import compile_file  # noqa: E402
from fdsl.errors import FdslError  # noqa: E402
from fdsl.vm import loader, verifier  # noqa: E402

C_DIR = REPO / "bench" / "c"
HEADER_DIR = REPO / "tests" / "c"
RESULTS = REPO / "bench" / "results" / "code_size.md"
EQUIV = re.compile(r"fdsl-equivalent:\s*(\S+\.fdsl)")
ABI_MARK = re.compile(r"fdsl-abi:\s*(\S+)")
TARGET_RATIO = 1.5


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


def verdict(obj: bytes, abi_name: str | None = None) -> str:
    """"ok" or the first verifier rejection, under the metadata's ABI (else `abi_name`: C)."""
    try:
        loaded = loader.load_object(obj)
        record = loaded.abi(abi_name)
        for section, program in loaded.programs.items():
            verifier.verify(program, loaded.maps, section=section, abi_record=record)
    except FdslError as err:
        return f"rejected: {str(err).splitlines()[0]}"
    return "ok"


def _err(err: Exception) -> str:
    if isinstance(err, subprocess.CalledProcessError):
        text = (err.stderr or err.stdout or "").strip().splitlines()
        return " / ".join(text[:2]) or f"exit {err.returncode}"
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


def compare() -> list[dict[str, object]]:
    """One row per C file: policy, clang slots, fdsl slots, verifier verdicts."""
    rows = []
    for src in sorted(C_DIR.glob("*.c")):
        text = src.read_text()
        m = EQUIV.search(text)
        marked = ABI_MARK.search(text)
        record = abi.by_id(marked.group(1) if marked else "ack")
        policy = REPO / m.group(1) if m else None
        row: dict[str, object] = {"c": src.name, "policy": m.group(1) if m else "?",
                                  "abi": record.aliases[0] if record.aliases else record.id}
        try:
            obj = clang_object(src)
            row["clang"] = sum(program_slots(obj).values())
            row["clang_verdict"] = verdict(obj, str(row["abi"]))
        except (OSError, subprocess.CalledProcessError) as err:
            row["clang"] = f"n/a ({_err(err)})"
        if policy is None or not policy.exists():
            row["fdsl"] = "n/a (policy missing)"
        else:
            try:
                obj = compile_file(str(policy), want_asm=False, abi_record=record).obj
                row["fdsl"] = sum(program_slots(obj).values())
                row["fdsl_verdict"] = verdict(obj)
            except (OSError, FdslError) as err:
                row["fdsl"] = f"n/a ({_err(err)})"
        rows.append(row)
    return rows


def report() -> str:
    if shutil.which("clang") is None:
        return "n/a (clang not installed)"
    rows = compare()
    if not rows:
        return "n/a (no C files in bench/c/)"
    lines = ["| policy | ABI | C equivalent | fdsl insns | clang -O2 insns | fdsl / clang | verifier (fdsl / C) |",
             "|---|---|---|---:|---:|---:|---|"]
    for r in rows:
        c, f = r["clang"], r["fdsl"]
        ratio = f"{f / c:.2f}x" if isinstance(c, int) and isinstance(f, int) and c else "n/a"
        verdicts = f"{r.get('fdsl_verdict', '-')} / {r.get('clang_verdict', '-')}"
        lines.append(f"| {r['policy']} | {r['abi']} | bench/c/{r['c']} | {f} | {c} | {ratio} | {verdicts} |")
    lines.append("")
    lines.append("Instruction slots of all program sections (ld_imm64 = 2), clang -target bpf "
                 "-mcpu=v3 -O2 against tests/c/fuse_bpf.h (ack) or tests/c/fuse_bpf_rfc_v1.h "
                 f"(rfc-v1).  Target: fdsl / clang <= {TARGET_RATIO}x.")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"also write {RESULTS.relative_to(REPO)}")
    args = parser.parse_args()
    text = report()
    print(text)
    if args.write:
        RESULTS.write_text("# Code size: fdsl against clang -O2\n\n"
                           "`.venv/bin/python bench/clang_compare.py --write`\n\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
