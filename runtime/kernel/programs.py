"""Put an fdsl object into the kernel: maps, relocations with real fds, programs (spec §2).

The loader (`fdsl.vm.loader`) has already parsed the object and marked every
map reference (`src_reg = BPF_PSEUDO_MAP_FD`, `imm` = map index).  Here each
`maps` record becomes a kernel map (BPF_MAP_CREATE), each reference gets that
map's fd, and each `fuse/*` section is loaded with the fuse program type read
from sysfs, license from the object (GPL), and a verifier log on rejection.
All fds belong to the returned `KernelObject`; `close()` releases them (the
kernel keeps whatever a mount still references).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from fdsl import abi
from fdsl.errors import FdslError
from fdsl.vm import isa
from fdsl.vm.loader import BpfObject, MapSpec, Program

from . import bpf


class KernelLoadError(FdslError):
    """The kernel refused part of an object; the message names the section and ends with
    the verifier log's tail."""

    exit_code = 1


@dataclass
class KernelMap:
    """A map in the kernel, with the interface of `fdsl.vm.maps` maps that userspace
    rules (`userspace.TableMaps`) and stats use, so both reach the kernel's entries."""

    spec: MapSpec
    fd: int

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def key_size(self) -> int:
        return self.spec.key_size

    @property
    def value_size(self) -> int:
        return self.spec.value_size

    def lookup_value(self, key: bytes) -> bytes | None:
        return bpf.map_lookup(self.fd, key, self.spec.value_size)

    def update(self, key: bytes, value: bytes, flags: int = abi.BPF_ANY) -> int:
        try:
            bpf.map_update(self.fd, key, value, flags)
        except bpf.BpfError as err:
            return -err.errno
        return 0

    def items(self, limit: int = 4096) -> list[tuple[bytes, bytes]]:
        return bpf.map_items(self.fd, self.spec.key_size, self.spec.value_size, limit)


@dataclass
class KernelProgram:
    section: str
    fd: int
    insn_count: int


@dataclass
class KernelObject:
    prog_type: int
    maps: list[KernelMap] = field(default_factory=list)
    programs: dict[str, KernelProgram] = field(default_factory=dict)
    rejected: dict[str, bpf.ProgLoadError] = field(default_factory=dict)

    def by_name(self, name: str) -> KernelMap | None:
        return next((m for m in self.maps if m.spec.name == name), None)

    def prog_fd(self, section: str | None) -> int | None:
        prog = self.programs.get(section) if section else None
        return prog.fd if prog else None

    def close(self) -> None:
        for fd in [p.fd for p in self.programs.values()] + [m.fd for m in self.maps]:
            try:
                os.close(fd)
            except OSError:
                pass
        self.programs.clear()
        self.maps.clear()

    def __enter__(self) -> "KernelObject":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def program_sections(obj: BpfObject) -> list[str]:
    """The sections a fuse-bpf loader loads: every `fuse/...` program (Android bpfloader rule)."""
    return [s for s in obj.programs if s.startswith(abi.PROGRAM_SECTION_PREFIX)]


def relocated(program: Program, map_fds: list[int]) -> bytes:
    """The program's instruction bytes with every map reference holding the map's real fd."""
    insns = list(program.insns)
    for rel in program.relocations:
        first, second = insns[rel.slot].with_imm64(map_fds[rel.map_index], insns[rel.slot + 1])
        if first.src != abi.BPF_PSEUDO_MAP_FD:
            raise KernelLoadError(f"section {program.section!r}: insn {rel.slot} is a map "
                                  "reference without BPF_PSEUDO_MAP_FD (loader bug)")
        insns[rel.slot], insns[rel.slot + 1] = first, second
    return isa.encode(insns)


def create_maps(obj: BpfObject) -> list[KernelMap]:
    made: list[KernelMap] = []
    try:
        for spec in obj.maps:
            try:
                fd = bpf.map_create(spec.type, spec.key_size, spec.value_size, spec.max_entries,
                                    spec.name)
            except bpf.BpfError as err:
                raise KernelLoadError(f"cannot create map {spec.name!r} (type {spec.type}, key "
                                      f"{spec.key_size}, value {spec.value_size}, "
                                      f"{spec.max_entries} entries): {err}") from None
            made.append(KernelMap(spec, fd))
    except BaseException:
        for m in made:
            os.close(m.fd)
        raise
    return made


def load(obj: BpfObject, prog_type: int, keep_going: bool = False) -> KernelObject:
    """Maps + every `fuse/*` program of `obj` in the kernel.

    A rejected program raises KernelLoadError (everything closed again) unless
    `keep_going`, which records it in `rejected` and loads the rest (`fdsl load`)."""
    license = obj.license or abi.LICENSE
    kobj = KernelObject(prog_type)
    try:
        kobj.maps = create_maps(obj)
        fds = [m.fd for m in kobj.maps]
        for section in program_sections(obj):
            program = obj.programs[section]
            code = relocated(program, fds)
            try:
                fd = bpf.prog_load(prog_type, code, license, program.name or section)
            except bpf.ProgLoadError as err:
                if not keep_going:
                    raise KernelLoadError(rejection_message(section, err)) from None
                kobj.rejected[section] = err
                continue
            kobj.programs[section] = KernelProgram(section, fd, len(code) // isa.INSN_SIZE)
    except BaseException:
        kobj.close()
        raise
    return kobj


def rejection_message(section: str, err: bpf.ProgLoadError, lines: int = 20) -> str:
    tail = err.log_tail(lines)
    head = f"the kernel rejected section {section}: {os.strerror(err.errno)}"
    return head + (":\n" + "\n".join("    " + line for line in tail.splitlines()) if tail
                   else " (the verifier wrote no log)")
