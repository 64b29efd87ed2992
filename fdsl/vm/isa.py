"""eBPF instruction set: decoding, encoding and named opcode constants.

One instruction slot is 8 bytes, little endian:

    byte 0      opcode      = class (bits 0-2) | size/mode or op/source bits
    byte 1      registers   = dst (low nibble) | src (high nibble)
    bytes 2-3   off         signed 16 bit
    bytes 4-7   imm         signed 32 bit

`ld_imm64` (opcode 0x18) takes two slots; the second slot carries the upper
32 bits of the constant in its imm field.  `decode` keeps the slot numbering
that llvm-objdump and the kernel verifier use: the `ld_imm64` is one `Insn`
at slot i with `imm64` set (unsigned 64-bit value), and slot i+1 holds the
raw second half as an `Insn` with opcode 0 (jumping to it is a verifier
error).  `encode` writes every slot from its own fields, so
`encode(decode(b)) == b` for every input whose length is a multiple of 8.

Decoding is total: unknown opcodes and non-zero reserved fields decode as
raw `Insn`s; `encoding_error(insn)` says what is wrong with one, so that the
verifier can reject it with a precise message.  A trailing fragment shorter
than 8 bytes is zero padded (opcode 0 is invalid, so the verifier rejects it).

Covered: everything LLVM emits for -mcpu=v1..v4 (ALU/ALU64 incl. signed
div/mod and movsx, le/be/bswap; JMP/JMP32 incl. gotol, call, exit; ld_imm64;
LDX/ST/STX of all widths, LDX MEMSX; atomics add/and/or/xor [fetch], xchg,
cmpxchg) plus the legacy LD ABS/IND packet loads (decoded, never emitted).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, replace

# --- instruction classes (opcode & 0x07) ---
BPF_LD = 0x00
BPF_LDX = 0x01
BPF_ST = 0x02
BPF_STX = 0x03
BPF_ALU = 0x04
BPF_JMP = 0x05
BPF_JMP32 = 0x06
BPF_ALU64 = 0x07

# --- load/store size (opcode & 0x18) ---
BPF_W = 0x00
BPF_H = 0x08
BPF_B = 0x10
BPF_DW = 0x18
SIZE_BYTES = {BPF_W: 4, BPF_H: 2, BPF_B: 1, BPF_DW: 8}

# --- load/store mode (opcode & 0xe0) ---
BPF_IMM = 0x00
BPF_ABS = 0x20
BPF_IND = 0x40
BPF_MEM = 0x60
BPF_MEMSX = 0x80  # v4 sign-extending load (LDX only)
BPF_ATOMIC = 0xC0

# --- source (opcode & 0x08) for ALU/JMP ---
BPF_K = 0x00
BPF_X = 0x08

# --- ALU operations (opcode & 0xf0) ---
BPF_ADD = 0x00
BPF_SUB = 0x10
BPF_MUL = 0x20
BPF_DIV = 0x30  # off=1: signed (v4 sdiv)
BPF_OR = 0x40
BPF_AND = 0x50
BPF_LSH = 0x60
BPF_RSH = 0x70
BPF_NEG = 0x80
BPF_MOD = 0x90  # off=1: signed (v4 smod)
BPF_XOR = 0xA0
BPF_MOV = 0xB0  # off=8/16/32: sign-extending move (v4 movsx)
BPF_ARSH = 0xC0
BPF_END = 0xD0  # ALU: source K = to little endian, X = to big endian; ALU64|K = bswap (v4)
BPF_TO_LE = BPF_K
BPF_TO_BE = BPF_X

# --- JMP operations (opcode & 0xf0) ---
BPF_JA = 0x00  # JMP32|JA = gotol (v4): target in imm
BPF_JEQ = 0x10
BPF_JGT = 0x20
BPF_JGE = 0x30
BPF_JSET = 0x40
BPF_JNE = 0x50
BPF_JSGT = 0x60
BPF_JSGE = 0x70
BPF_CALL = 0x80
BPF_EXIT = 0x90
BPF_JLT = 0xA0
BPF_JLE = 0xB0
BPF_JSLT = 0xC0
BPF_JSLE = 0xD0

# --- atomic operations (imm of STX|ATOMIC) ---
BPF_FETCH = 0x01
BPF_ATOMIC_ADD = BPF_ADD
BPF_ATOMIC_OR = BPF_OR
BPF_ATOMIC_AND = BPF_AND
BPF_ATOMIC_XOR = BPF_XOR
BPF_XCHG = 0xE0 | BPF_FETCH
BPF_CMPXCHG = 0xF0 | BPF_FETCH
ATOMIC_OPS = frozenset(
    {op | f for op in (BPF_ADD, BPF_OR, BPF_AND, BPF_XOR) for f in (0, BPF_FETCH)}
    | {BPF_XCHG, BPF_CMPXCHG}
)

# --- src_reg values of special instructions ---
BPF_PSEUDO_MAP_FD = 1  # ld_imm64: imm is a map fd (here: index in BpfObject.maps)
BPF_PSEUDO_MAP_VALUE = 2
BPF_PSEUDO_CALL = 1  # call: bpf-to-bpf call (unsupported by fuse-bpf)
BPF_PSEUDO_KFUNC_CALL = 2

# --- frequently used full opcodes ---
LD_IMM64 = BPF_LD | BPF_DW | BPF_IMM  # 0x18
CALL = BPF_JMP | BPF_CALL  # 0x85
EXIT = BPF_JMP | BPF_EXIT  # 0x95
JA = BPF_JMP | BPF_JA  # 0x05
JA32 = BPF_JMP32 | BPF_JA  # 0x06, gotol

REG_COUNT = 11  # r0..r10; r10 is the read-only frame pointer
FP = 10
INSN_SIZE = 8

ALU_OPS = (BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_OR, BPF_AND, BPF_LSH, BPF_RSH,
           BPF_NEG, BPF_MOD, BPF_XOR, BPF_MOV, BPF_ARSH, BPF_END)
COND_JMP_OPS = (BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET, BPF_JNE, BPF_JSGT, BPF_JSGE,
                BPF_JLT, BPF_JLE, BPF_JSLT, BPF_JSLE)

_SLOT = struct.Struct("<BBhi")


def _s32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


@dataclass(frozen=True, slots=True)
class Insn:
    """One 8-byte slot.  `imm64` is set only on the first slot of a ld_imm64."""

    opcode: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0
    imm64: int | None = None

    # field views of the opcode byte
    @property
    def cls(self) -> int:
        return self.opcode & 0x07

    @property
    def size(self) -> int:
        """BPF_W/H/B/DW bits (load/store classes)."""
        return self.opcode & 0x18

    @property
    def size_bytes(self) -> int:
        return SIZE_BYTES[self.opcode & 0x18]

    @property
    def mode(self) -> int:
        """BPF_IMM/ABS/IND/MEM/MEMSX/ATOMIC bits (load/store classes)."""
        return self.opcode & 0xE0

    @property
    def op(self) -> int:
        """Operation bits (ALU/JMP classes)."""
        return self.opcode & 0xF0

    @property
    def source(self) -> int:
        """BPF_K (immediate) or BPF_X (register) (ALU/JMP classes)."""
        return self.opcode & 0x08

    # classification
    @property
    def is_alu(self) -> bool:
        return self.cls in (BPF_ALU, BPF_ALU64)

    @property
    def is_jmp_class(self) -> bool:
        return self.cls in (BPF_JMP, BPF_JMP32)

    @property
    def is_ld_imm64(self) -> bool:
        return self.opcode == LD_IMM64

    @property
    def is_call(self) -> bool:
        return self.opcode == CALL

    @property
    def is_exit(self) -> bool:
        return self.opcode == EXIT

    @property
    def is_branch(self) -> bool:
        """A jump with a target (goto, gotol, conditional), not call/exit."""
        return self.is_jmp_class and self.op not in (BPF_CALL, BPF_EXIT)

    @property
    def is_cond_jump(self) -> bool:
        return self.is_jmp_class and self.op in COND_JMP_OPS

    @property
    def jump_offset(self) -> int:
        """Relative target in slots (gotol keeps it in imm)."""
        return self.imm if self.opcode == JA32 else self.off

    def jump_target(self, pc: int) -> int:
        """Absolute slot index this branch at slot `pc` jumps to."""
        return pc + 1 + self.jump_offset

    @property
    def slots(self) -> int:
        return 2 if self.is_ld_imm64 and self.imm64 is not None else 1

    def encode(self) -> bytes:
        """The 8 bytes of this slot (only the first half of a ld_imm64)."""
        return _SLOT.pack(self.opcode & 0xFF, (self.dst & 0xF) | ((self.src & 0xF) << 4),
                          _s16(self.off), _s32(self.imm))

    def with_imm64(self, value: int, next_slot: "Insn | None" = None) -> tuple["Insn", "Insn"]:
        """Both slots of this ld_imm64 carrying `value` (used to patch relocations)."""
        value &= 0xFFFFFFFFFFFFFFFF
        second = next_slot if next_slot is not None else Insn(0)
        return (replace(self, imm=_s32(value), imm64=value),
                replace(second, imm=_s32(value >> 32)))


def _s16(value: int) -> int:
    value &= 0xFFFF
    return value - (1 << 16) if value & 0x8000 else value


def ld_imm64(dst: int, value: int, src: int = 0) -> tuple[Insn, Insn]:
    """Build the two slots of `dst = value ll`."""
    return Insn(LD_IMM64, dst, src).with_imm64(value)


def decode(data: bytes) -> list[Insn]:
    """Decode bytes into one Insn per 8-byte slot; never raises."""
    data = bytes(data)
    if len(data) % INSN_SIZE:
        data += bytes(INSN_SIZE - len(data) % INSN_SIZE)
    raw = [Insn(op, regs & 0xF, regs >> 4, off, imm) for op, regs, off, imm in _SLOT.iter_unpack(data)]
    out: list[Insn] = []
    i = 0
    while i < len(raw):
        insn = raw[i]
        if insn.opcode == LD_IMM64 and i + 1 < len(raw):
            second = raw[i + 1]
            value = (insn.imm & 0xFFFFFFFF) | ((second.imm & 0xFFFFFFFF) << 32)
            out.append(replace(insn, imm64=value))
            out.append(second)
            i += 2
        else:
            out.append(insn)
            i += 1
    return out


def encode(insns: list[Insn]) -> bytes:
    """Inverse of `decode`: every slot written from its own fields."""
    return b"".join(insn.encode() for insn in insns)


# --- encoding validity (what the kernel's check_* functions test before typing) ---

def encoding_error(insn: Insn, *, cpu: int = 4) -> str | None:
    """Why this slot is not a valid instruction (None when it is).

    Checks opcode and reserved fields only (no register types, no targets).
    `cpu` limits the accepted extensions: v2 adds jlt/jle/jslt/jsle,
    v3 adds JMP32 and atomics beyond add, v4 adds sdiv/smod, movsx, bswap,
    ldsx and gotol.
    """
    cls, code = insn.cls, insn.opcode
    if insn.dst >= REG_COUNT or insn.src >= REG_COUNT:
        return f"invalid register (dst r{insn.dst}, src r{insn.src})"
    if cls in (BPF_ALU, BPF_ALU64):
        return _alu_error(insn, cpu)
    if cls in (BPF_JMP, BPF_JMP32):
        return _jmp_error(insn, cpu)
    if cls == BPF_LD:
        if code == LD_IMM64:
            if insn.off != 0:
                return "ld_imm64 with non-zero off"
            if insn.src > BPF_PSEUDO_MAP_VALUE and insn.src not in (3, 4, 5, 6):
                return f"ld_imm64 with invalid src_reg {insn.src}"
            return None
        if insn.mode in (BPF_ABS, BPF_IND) and insn.size != BPF_DW:
            return "legacy packet access (ld_abs/ld_ind) is not allowed"
        return f"unknown opcode {code:#04x}"
    if cls == BPF_LDX:
        if insn.mode == BPF_MEM:
            return None if insn.imm == 0 else "ldx with non-zero imm"
        if insn.mode == BPF_MEMSX and insn.size != BPF_DW:
            if cpu < 4:
                return "sign-extending load needs cpu v4"
            return None if insn.imm == 0 else "ldsx with non-zero imm"
        return f"unknown opcode {code:#04x}"
    if cls == BPF_ST:
        if insn.mode == BPF_MEM:
            return None if insn.src == 0 else "st with non-zero src_reg"
        return f"unknown opcode {code:#04x}"
    if cls == BPF_STX:
        if insn.mode == BPF_MEM:
            return None if insn.imm == 0 else "stx with non-zero imm"
        if insn.mode == BPF_ATOMIC and insn.size in (BPF_W, BPF_DW):
            if insn.imm not in ATOMIC_OPS:
                return f"unknown atomic op {insn.imm:#x}"
            if cpu < 3 and insn.imm != BPF_ADD:
                return "atomic fetch/xchg/cmpxchg needs cpu v3"
            return None
        return f"unknown opcode {code:#04x}"
    return f"unknown opcode {code:#04x}"  # unreachable: 8 classes


def _alu_error(insn: Insn, cpu: int) -> str | None:
    op, is64 = insn.op, insn.cls == BPF_ALU64
    if op not in ALU_OPS:
        return f"unknown opcode {insn.opcode:#04x}"
    if op == BPF_END:
        if is64 and insn.source == BPF_X:
            return f"unknown opcode {insn.opcode:#04x}"
        if is64 and cpu < 4:
            return "bswap needs cpu v4"
        if insn.src or insn.off or insn.imm not in (16, 32, 64):
            return "invalid byte swap (reserved fields or width)"
        return None
    if op == BPF_NEG:
        if insn.source == BPF_X or insn.src or insn.off or insn.imm:
            return "neg with reserved fields set"
        return None
    if insn.source == BPF_K and insn.src:
        return "alu with immediate and non-zero src_reg"
    if insn.source == BPF_X and insn.imm:
        return "alu with register source and non-zero imm"
    if op in (BPF_DIV, BPF_MOD):
        if insn.off not in (0, 1):
            return "invalid off in div/mod"
        if insn.off == 1 and cpu < 4:
            return "signed div/mod needs cpu v4"
        return None
    if op == BPF_MOV:
        if insn.off == 0:
            return None
        allowed = (8, 16, 32) if is64 else (8, 16)
        if insn.source == BPF_K or insn.off not in allowed:
            return "invalid sign-extending mov"
        return None if cpu >= 4 else "movsx needs cpu v4"
    if insn.off:
        return "alu with non-zero off"
    return None


def _jmp_error(insn: Insn, cpu: int) -> str | None:
    op, is32 = insn.op, insn.cls == BPF_JMP32
    if is32 and cpu < 3 and not (op == BPF_JA):
        return "jmp32 needs cpu v3"
    if op == BPF_JA:
        if insn.source or insn.src or insn.dst:
            return "ja with reserved fields set"
        if is32:
            if cpu < 4:
                return "gotol needs cpu v4"
            return None if insn.off == 0 else "gotol with non-zero off"
        return None if insn.imm == 0 else "ja with non-zero imm"
    if op == BPF_CALL:
        if is32 or insn.source or insn.dst or insn.off:
            return "call with reserved fields set"
        if insn.src not in (0, BPF_PSEUDO_CALL, BPF_PSEUDO_KFUNC_CALL):
            return f"call with invalid src_reg {insn.src}"
        return None
    if op == BPF_EXIT:
        if is32 or insn.source or insn.src or insn.dst or insn.off or insn.imm:
            return "exit with reserved fields set"
        return None
    if op not in COND_JMP_OPS:
        return f"unknown opcode {insn.opcode:#04x}"
    if cpu < 2 and op in (BPF_JLT, BPF_JLE, BPF_JSLT, BPF_JSLE):
        return "jlt/jle/jslt/jsle need cpu v2"
    if insn.source == BPF_K and insn.src:
        return "conditional jump with immediate and non-zero src_reg"
    if insn.source == BPF_X and insn.imm:
        return "conditional jump with register source and non-zero imm"
    return None


def second_half_error(insn: Insn) -> str | None:
    """Why the slot after a ld_imm64 is not a valid second half (None if it is)."""
    if insn.opcode or insn.dst or insn.src or insn.off:
        return "invalid second half of ld_imm64"
    return None


