"""LLVM IR -> BPF ELF object bytes (bpfel, cpu v3, O2 with the new pass manager).

The IR already carries the `maps`, `license` and `.fdsl.meta` sections as
globals, so LLVM writes the whole object (symbols and R_BPF_64_64
relocations included); this module only drives LLVM and checks the result.
"""
from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import llvmlite.binding as llvm

TRIPLE = "bpfel"
CPU = "v3"
OPT_LEVEL = 2


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
    """Object bytes plus the readable optimized IR and assembly."""
    module = optimize(text)
    tm = _target_machine()
    obj = tm.emit_object(module)
    asm = tm.emit_assembly(module) if want_asm else ""
    return Artifacts(obj=obj, ir=str(module), asm=asm)


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
