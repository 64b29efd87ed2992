"""ELF loader for fuse-bpf objects (the selftest loader's rules, spec §2).

Reads an ELF64 little-endian EM_BPF relocatable object and returns its
program sections (every non-empty executable section: `fuse/...` or any
other name, as the selftest loader allows), the legacy `maps` records, the
`license` string and the `.fdsl.meta` JSON.  Map relocations are applied
the way the loaders do it: the `ld_imm64` gets `src_reg = BPF_PSEUDO_MAP_FD`
and `imm` = the map's index in `BpfObject.maps` (our map "fd").

Everything that is not such an object (truncated, fuzzed, wrong endianness,
global data, bpf-to-bpf calls, relocations to unknown symbols) raises
`LoadError` with a message naming the problem; no other exception escapes.
"""
from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fdsl import abi
from fdsl.vm import isa
from fdsl.errors import LoadError
from fdsl.vm.isa import Insn
from fdsl.vm.maps import MapLimitError, check_budget

EM_BPF = 247
ET_REL = 1
R_BPF_NONE = 0
R_BPF_64_64 = 1
R_BPF_64_32 = 10
SHF_EXECINSTR = 0x4
MAP_RECORD_SIZE = abi.MAP_RECORD.size  # 32

# Bounds a sane object stays within; they keep fuzzed inputs from allocating
# gigabytes (the kernel has similar limits).
MAX_KEY_SIZE = abi.STACK_SIZE          # keys are passed from the stack
MAX_VALUE_SIZE = 1 << 20
# Map memory (per map, in total, number of maps) is bounded by fdsl.vm.maps.check_budget.
MAX_INSNS = 1_000_000


@dataclass(frozen=True)
class MapSpec:
    """One legacy map record; `index` is its "fd" in relocated code."""

    index: int
    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int


@dataclass(frozen=True)
class Relocation:
    slot: int          # instruction slot of the ld_imm64
    symbol: str
    map_index: int


@dataclass
class Program:
    """One program section: relocated instructions and the section's raw bytes."""

    section: str
    insns: list[Insn]
    raw: bytes
    name: str = ""                                 # function symbol, if any
    relocations: list[Relocation] = field(default_factory=list)


@dataclass
class BpfObject:
    programs: dict[str, Program]
    maps: list[MapSpec]
    license: str
    metadata: dict[str, Any] | None
    meta: Any = None      # fdsl.compile.metadata.Metadata when the section is present

    def map_by_name(self, name: str) -> MapSpec | None:
        return next((m for m in self.maps if m.name == name), None)

    def abi(self, requested: str | None = None) -> abi.Abi:
        """The ABI this object runs under: its metadata's id, else `requested` (`--abi`), else ACK.

        Raises `abi.AbiChoiceError` for an unknown name or a contradicting `--abi`.
        """
        recorded = self.metadata.get("abi") if self.metadata else None
        return abi.choose(recorded if isinstance(recorded, str) else None, requested)


def load_file(path: str | Path) -> BpfObject:
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise LoadError(f"{path}: {err.strerror or err}") from None
    try:
        return load_object(data)
    except LoadError as err:
        raise LoadError(f"{path}: {err}") from None


def load_object(data: bytes) -> BpfObject:
    """Parse and relocate a BPF object; any defect raises `LoadError`."""
    data = bytes(data)
    _check_header(data)
    try:
        return _Loader(data).load()
    except LoadError:
        raise
    except RecursionError:
        raise LoadError("malformed ELF object (recursive structure)") from None
    except Exception as err:  # pyelftools reports corruption with many exception types
        raise LoadError(f"malformed ELF object: {type(err).__name__}: {err}") from None


def _check_header(data: bytes) -> None:
    if len(data) < 64:
        raise LoadError("not an ELF object: file too short")
    if data[:4] != b"\x7fELF":
        raise LoadError("not an ELF object: bad magic")
    if data[4] != 2:
        raise LoadError("not a 64-bit ELF object (BPF objects are ELF64)")
    if data[5] != 1:
        raise LoadError("not a little-endian ELF object (wrong endianness for bpfel)")
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    if e_machine != EM_BPF:
        raise LoadError(f"not a BPF object: e_machine is {e_machine}, expected {EM_BPF} (EM_BPF)")
    if e_type != ET_REL:
        raise LoadError(f"not a relocatable object: e_type is {e_type}")
    shoff, = struct.unpack_from("<Q", data, 40)
    shentsize, shnum = struct.unpack_from("<HH", data, 58)
    if shnum == 0:
        raise LoadError("ELF object has no section headers")
    if shentsize != 64 or shoff + shnum * shentsize > len(data):
        raise LoadError("truncated ELF object: section header table out of bounds")


class _Loader:
    def __init__(self, data: bytes) -> None:
        from elftools.elf.elffile import ELFFile

        self.data = data
        self.elf = ELFFile(io.BytesIO(data))
        self.sections = list(self.elf.iter_sections())

    def section_bytes(self, index: int) -> bytes:
        sec = self.sections[index]
        if sec["sh_type"] == "SHT_NOBITS":
            return b""
        start, size = sec["sh_offset"], sec["sh_size"]
        if start + size > len(self.data):
            raise LoadError(f"truncated ELF object: section {sec.name!r} extends past the end of the file")
        return self.data[start:start + size]

    def load(self) -> BpfObject:
        names = [s.name for s in self.sections]
        for i, name in enumerate(names):
            self.section_bytes(i)  # bounds check every section once
        symbols = self._symbols()
        maps_index = names.index(abi.MAPS_SECTION) if abi.MAPS_SECTION in names else None
        maps = self._maps(maps_index, symbols)
        programs: dict[str, Program] = {}
        for i, sec in enumerate(self.sections):
            if sec["sh_type"] != "SHT_PROGBITS" or not sec["sh_flags"] & SHF_EXECINSTR:
                continue
            raw = self.section_bytes(i)
            if not raw:
                continue
            if sec.name in programs:
                raise LoadError(f"duplicate program section {sec.name!r}")
            programs[sec.name] = self._program(i, raw, symbols, maps_index, maps)
        if not programs:
            raise LoadError("object contains no program section")
        license = self._string_section(names, abi.LICENSE_SECTION)
        metadata, meta = self._metadata(names)
        return BpfObject(programs, maps, license, metadata, meta)

    # ---- symbols and maps

    def _symbols(self) -> list[tuple[str, int, int, str]]:
        """(name, section index or -1, value, type) per symbol-table entry."""
        from elftools.elf.sections import SymbolTableSection

        tables = [s for s in self.sections if isinstance(s, SymbolTableSection)]
        if not tables:
            return []
        out = []
        for sym in tables[0].iter_symbols():
            shndx = sym["st_shndx"]
            out.append((sym.name, shndx if isinstance(shndx, int) else -1,
                        sym["st_value"], sym["st_info"]["type"]))
        return out

    def _maps(self, maps_index: int | None, symbols) -> list[MapSpec]:
        if maps_index is None:
            return []
        raw = self.section_bytes(maps_index)
        if len(raw) % MAP_RECORD_SIZE:
            raise LoadError(f"maps section size {len(raw)} is not a multiple of {MAP_RECORD_SIZE}")
        names: dict[int, str] = {}
        for name, shndx, value, typ in symbols:
            if shndx == maps_index and name and typ != "STT_SECTION":
                if value % MAP_RECORD_SIZE or value >= len(raw):
                    raise LoadError(f"map symbol {name!r} at offset {value} is not on a map record")
                names.setdefault(value // MAP_RECORD_SIZE, name)
        maps = []
        for index in range(len(raw) // MAP_RECORD_SIZE):
            rec = abi.MAP_RECORD.unpack(raw[index * MAP_RECORD_SIZE:(index + 1) * MAP_RECORD_SIZE])
            spec = MapSpec(index, names.get(index, f"map{index}"), rec["map_type"], rec["key_size"],
                           rec["value_size"], rec["max_entries"])
            _check_map(spec)
            maps.append(spec)
        try:
            check_budget(maps)
        except MapLimitError as err:
            raise LoadError(str(err)) from None
        return maps

    # ---- programs

    def _program(self, index: int, raw: bytes, symbols, maps_index, maps) -> Program:
        section = self.sections[index].name
        if len(raw) % isa.INSN_SIZE:
            raise LoadError(f"section {section!r}: size {len(raw)} is not a multiple of 8")
        if len(raw) // isa.INSN_SIZE > MAX_INSNS:
            raise LoadError(f"section {section!r}: too many instructions")
        insns = isa.decode(raw)
        relocs: list[Relocation] = []
        for rel in self._relocations_for(index):
            offset, sym_index, rtype = rel
            if sym_index >= len(symbols):
                raise LoadError(f"section {section!r}: relocation to unknown symbol #{sym_index}")
            name, shndx, value, typ = symbols[sym_index]
            label = name or (self.sections[shndx].name if 0 <= shndx < len(self.sections) else "?")
            if rtype == R_BPF_NONE:
                continue
            if rtype == R_BPF_64_32:
                raise LoadError(f"section {section!r}: bpf-to-bpf call to {label!r} at offset {offset}: "
                                "fuse-bpf programs must be a single function (inline helpers)")
            if rtype != R_BPF_64_64:
                raise LoadError(f"section {section!r}: unsupported relocation type {rtype} against {label!r}")
            if offset % isa.INSN_SIZE or offset // isa.INSN_SIZE >= len(insns):
                raise LoadError(f"section {section!r}: relocation offset {offset} is not an instruction")
            slot = offset // isa.INSN_SIZE
            insn = insns[slot]
            if not insn.is_ld_imm64 or insn.imm64 is None:
                raise LoadError(f"section {section!r}: relocation against {label!r} at insn {slot} "
                                "which is not a ld_imm64")
            if shndx != maps_index or maps_index is None:
                where = self.sections[shndx].name if 0 <= shndx < len(self.sections) else "undefined"
                raise LoadError(f"section {section!r}: insn {slot} references symbol {label!r} in "
                                f"{where!r}; only maps are supported (no global data)")
            map_offset = value + (insn.imm & 0xFFFFFFFF)
            if map_offset % MAP_RECORD_SIZE or map_offset // MAP_RECORD_SIZE >= len(maps):
                raise LoadError(f"section {section!r}: insn {slot} references {label!r} at offset "
                                f"{map_offset}, which is not a map record")
            map_index = map_offset // MAP_RECORD_SIZE
            first, second = insn.with_imm64(map_index, insns[slot + 1])
            insns[slot] = Insn(first.opcode, first.dst, abi.BPF_PSEUDO_MAP_FD, first.off,
                               first.imm, first.imm64)
            insns[slot + 1] = second
            relocs.append(Relocation(slot, maps[map_index].name, map_index))
        for slot, insn in enumerate(insns):
            if insn.is_call and insn.src == isa.BPF_PSEUDO_CALL:
                raise LoadError(f"section {section!r}: insn {slot} is a bpf-to-bpf call; "
                                "fuse-bpf programs must be a single function")
        name = next((n for n, shndx, value, typ in symbols
                     if shndx == index and typ == "STT_FUNC" and value == 0 and n), "")
        return Program(section, insns, raw, name, relocs)

    def _relocations_for(self, index: int) -> list[tuple[int, int, int]]:
        from elftools.elf.relocation import RelocationSection

        out = []
        for sec in self.sections:
            if isinstance(sec, RelocationSection) and sec["sh_info"] == index:
                if sec["sh_entsize"] not in (16, 24):
                    raise LoadError(f"relocation section {sec.name!r} has a bad entry size")
                for rel in sec.iter_relocations():
                    out.append((rel["r_offset"], rel["r_info_sym"], rel["r_info_type"]))
        return out

    # ---- license and metadata

    def _string_section(self, names: list[str], name: str) -> str:
        if name not in names:
            return ""
        raw = self.section_bytes(names.index(name)).split(b"\0", 1)[0]
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise LoadError(f"section {name!r} is not an ASCII string") from None

    def _metadata(self, names: list[str]):
        if abi.METADATA_SECTION not in names:
            return None, None
        raw = self.section_bytes(names.index(abi.METADATA_SECTION)).rstrip(b"\0")
        try:
            value = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            raise LoadError(f"section {abi.METADATA_SECTION!r} is not UTF-8 JSON: {err}") from None
        if not isinstance(value, dict):
            raise LoadError(f"section {abi.METADATA_SECTION!r} is not a JSON object")
        return value, _decode_meta(raw)


def _decode_meta(raw: bytes):
    """Decode with the metadata schema (`fdsl.compile.metadata`)."""
    from fdsl.compile import metadata as schema   # lazily: the VM does not need the compiler's imports

    try:
        return schema.Metadata.from_json(raw)
    except Exception as err:  # schema mismatch: missing keys, wrong types
        raise LoadError(f"section {abi.METADATA_SECTION!r} does not match the metadata schema: "
                        f"{type(err).__name__}: {err}") from None


def _check_map(m: MapSpec) -> None:
    what = f"map {m.name!r}"
    if m.type not in (abi.BPF_MAP_TYPE_HASH, abi.BPF_MAP_TYPE_ARRAY):
        raise LoadError(f"{what}: unsupported map type {m.type} (only hash and array)")
    if not 0 < m.key_size <= MAX_KEY_SIZE:
        raise LoadError(f"{what}: key_size {m.key_size} out of range")
    if m.type == abi.BPF_MAP_TYPE_ARRAY and m.key_size != 4:
        raise LoadError(f"{what}: array maps need key_size 4, not {m.key_size}")
    if not 0 < m.value_size <= MAX_VALUE_SIZE:
        raise LoadError(f"{what}: value_size {m.value_size} out of range")
    if m.max_entries <= 0:
        raise LoadError(f"{what}: max_entries {m.max_entries} out of range")
