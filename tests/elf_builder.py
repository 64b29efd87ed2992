"""Tiny ELF64 little-endian EM_BPF writer for tests: hand-made (and broken) objects."""
from __future__ import annotations

import struct

SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_REL = 1, 2, 3, 9
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 1, 2, 4
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_SECTION = 0, 1, 2, 3
STB_LOCAL, STB_GLOBAL = 0, 1
R_BPF_64_64, R_BPF_64_32 = 1, 10


class ElfBuilder:
    def __init__(self, machine: int = 247) -> None:
        self.machine = machine
        self.sections: list[dict] = []
        self.symbols: list[tuple[str, int, int, int, int]] = []
        self.rels: dict[int, list[tuple[int, int, int]]] = {}

    def section(self, name: str, data: bytes, *, type: int = SHT_PROGBITS, flags: int = 0) -> int:
        self.sections.append(dict(name=name, data=data, type=type, flags=flags, link=0, info=0,
                                  entsize=0))
        return len(self.sections)  # index 0 is the null section

    def program(self, name: str, code: bytes) -> int:
        return self.section(name, code, flags=SHF_ALLOC | SHF_EXECINSTR)

    def symbol(self, name: str, shndx: int, value: int = 0, type: int = STT_OBJECT,
               size: int = 0) -> int:
        self.symbols.append((name, shndx, value, type, size))
        return len(self.symbols)  # index 0 is the null symbol

    def rel(self, shndx: int, offset: int, sym: int, rtype: int = R_BPF_64_64) -> None:
        self.rels.setdefault(shndx, []).append((offset, sym, rtype))

    def build(self) -> bytes:
        secs = list(self.sections)
        strtab = bytearray(b"\0")
        syms = bytearray(24)
        for name, shndx, value, typ, size in self.symbols:
            off = len(strtab)
            strtab += name.encode() + b"\0"
            syms += struct.pack("<IBBHQQ", off, (STB_GLOBAL << 4) | typ, 0, shndx, value, size)
        symtab_index = len(secs) + 1
        secs.append(dict(name=".symtab", data=bytes(syms), type=SHT_SYMTAB, flags=0,
                         link=symtab_index + 1, info=1, entsize=24))
        secs.append(dict(name=".strtab", data=bytes(strtab), type=SHT_STRTAB, flags=0, link=0,
                         info=0, entsize=0))
        for target, entries in self.rels.items():
            data = b"".join(struct.pack("<QQ", off, (sym << 32) | rtype) for off, sym, rtype in entries)
            secs.append(dict(name=".rel" + self.sections[target - 1]["name"], data=data,
                             type=SHT_REL, flags=0, link=symtab_index, info=target, entsize=16))
        shstrtab = bytearray(b"\0")
        for s in secs:
            s["name_off"] = len(shstrtab)
            shstrtab += s["name"].encode() + b"\0"
        secs.append(dict(name=".shstrtab", data=bytes(shstrtab), type=SHT_STRTAB, flags=0, link=0,
                         info=0, entsize=0, name_off=len(shstrtab)))
        shstrtab += b".shstrtab\0"
        secs[-1]["data"] = bytes(shstrtab)
        body = bytearray()
        offset = 64
        for s in secs:
            pad = (-offset) % 8
            body += bytes(pad)
            offset += pad
            s["offset"] = offset
            body += s["data"]
            offset += len(s["data"])
        body += bytes((-len(body)) % 8)
        shoff = 64 + len(body)
        headers = bytes(64)
        for s in secs:
            headers += struct.pack("<IIQQQQIIQQ", s["name_off"], s["type"], s["flags"], 0,
                                   s["offset"], len(s["data"]), s["link"], s["info"], 8, s["entsize"])
        ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
        header = ident + struct.pack("<HHIQQQIHHHHHH", 1, self.machine, 1, 0, 0, shoff, 0, 64, 0, 0,
                                     64, len(secs) + 1, len(secs))
        return header + bytes(body) + headers
