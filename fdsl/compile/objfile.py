"""LLVM IR -> BPF ELF object bytes (bpfel, cpu v3, O2 with the new pass manager).

The IR already carries the `maps`, `license` and `.fdsl.meta` sections as
globals, so LLVM writes the whole object (symbols and R_BPF_64_64
relocations included); this module only drives LLVM and checks the result.
"""
from __future__ import annotations

import functools
import io
import re
from dataclasses import dataclass

import llvmlite.binding as llvm

from fdsl.errors import FdslError

TRIPLE = "bpfel"
CPU = "v3"
OPT_LEVEL = 2

# BPF conditional jumps carry a signed 16-bit slot offset, so a program of at
# most this many slots can never need a longer branch.  LLVM aborts the whole
# process ("Branch target out of insn range") when emitting a longer one, so
# big programs are measured in assembly before the object is emitted.
MAX_PROGRAM_SLOTS = 32767
# Below this many IR instructions a program cannot reach MAX_PROGRAM_SLOTS,
# and the extra assembly pass is skipped.
IR_SIZE_WORTH_MEASURING = 6000


class ProgramTooLarge(FdslError):
    """A compiled program exceeds what BPF branches can span."""


@dataclass
class Artifacts:
    obj: bytes
    ir: str        # optimized IR
    asm: str       # BPF assembly


@functools.cache
def _target_machine() -> llvm.TargetMachine:
    """One BPF target machine per process (creation costs a few milliseconds)."""
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    target = llvm.Target.from_triple(TRIPLE)
    return target.create_target_machine(cpu=CPU, opt=OPT_LEVEL, reloc="static", codemodel="small")


def optimize(text: str) -> llvm.ModuleRef:
    """Parse, verify and run the O2 pipeline."""
    tm = _target_machine()
    module = llvm.parse_assembly(text)
    module.verify()
    tuning = llvm.PipelineTuningOptions(speed_level=OPT_LEVEL)
    builder = llvm.create_pass_builder(tm, tuning)
    builder.getModulePassManager().run(module, builder)
    return module


def build(text: str, want_asm: bool = True) -> Artifacts:
    """Object bytes plus the readable optimized IR and assembly.

    Raises ProgramTooLarge (instead of letting LLVM abort) for a program
    whose branches could not be encoded.
    """
    module = optimize(text)
    tm = _target_machine()
    ir = str(module)
    asm = ""
    if want_asm or _ir_instruction_count(module) >= IR_SIZE_WORTH_MEASURING:
        asm = tm.emit_assembly(module)
        for section, slots in program_slots_in_asm(asm).items():
            if slots > MAX_PROGRAM_SLOTS:
                raise ProgramTooLarge(
                    f"the program for {section} would be {slots} BPF instructions; BPF branches "
                    f"span at most {MAX_PROGRAM_SLOTS}: split the policy into `under` scopes or "
                    "use fewer or shorter name patterns")
    obj = tm.emit_object(module)
    return Artifacts(obj=obj, ir=ir, asm=asm if want_asm else "")


def _ir_instruction_count(module: llvm.ModuleRef) -> int:
    return sum(1 for fn in module.functions for block in fn.blocks for _ in block.instructions)


_SECTION = re.compile(r'^\s*\.section\s+"?([^",]+)"?')


def program_slots_in_asm(asm: str) -> dict[str, int]:
    """Instruction slots per program section, counted in BPF assembly text."""
    slots: dict[str, int] = {}
    section = None
    for line in asm.splitlines():
        match = _SECTION.match(line)
        if match:
            section = match.group(1) if match.group(1).startswith("fuse/") else None
            continue
        stripped = line.strip()
        if section is None or not line.startswith("\t") or not stripped or stripped[0] in ".#;":
            continue
        slots[section] = slots.get(section, 0) + (2 if stripped.endswith(" ll") else 1)
    return slots


# ------------------------------------------------------------------ inspection

def sections(obj: bytes) -> dict[str, bytes]:
    """Section name -> contents (pyelftools), for tests and the benchmark."""
    from elftools.elf.elffile import ELFFile

    elf = ELFFile(io.BytesIO(obj))
    return {s.name: s.data() for s in elf.iter_sections() if s.name}


def program_sections(obj: bytes) -> dict[str, bytes]:
    return {name: data for name, data in sections(obj).items() if name.startswith("fuse/")}


def instruction_count(obj: bytes) -> int:
    """8-byte instruction slots over all program sections (ld_imm64 counts as two)."""
    return sum(len(data) // 8 for data in program_sections(obj).values())
