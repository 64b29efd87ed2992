"""IR building blocks shared by the code generator's modules: types, constants,
the errors it raises and the small records of shared code (nodes, parameters,
fields seen by several opcodes)."""
from __future__ import annotations

from dataclasses import dataclass, field

from llvmlite import ir

from fdsl import abi
from fdsl.lang import ast

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
PTR = ir.PointerType()
MAP_RECORD_TYPE = ir.LiteralStructType([I32, I32, I64, I64, I32, I32])  # 32-byte legacy record
MAX_NAME_SIZE = abi.NAME_MAX + 1
FN_ATTRS = 'nounwind "no-jump-tables"="true"'
BARRIER_ATTRS = "nounwind willreturn memory(none)"

INT_TYPES = {1: I8, 2: ir.IntType(16), 4: I32, 8: I64}


class CodegenError(Exception):
    """A construct the BPF back end cannot lower; carries the AST node for the span."""

    def __init__(self, message: str, node: ast.Node | None = None) -> None:
        super().__init__(message)
        self.node = node


def c64(value: int) -> ir.Constant:
    return ir.Constant(I64, value & ((1 << 64) - 1))


def c32(value: int) -> ir.Constant:
    return ir.Constant(I32, value & 0xFFFFFFFF)


class Barrier(ir.Instruction):
    """`call T asm "", "=r,0"(T value)`: `value` itself, through an empty asm
    statement (see `codegen.ScopeGen.ctx_load`)."""

    def __init__(self, parent: ir.Block, value: ir.Value) -> None:
        super().__init__(parent, value.type, "call", [value])

    def descr(self, buf: list[str]) -> None:
        [value] = self.operands
        buf.append(f'call {value.type} asm "", "=r,0"({value.type} {value.get_reference()}) #1\n')


def opaque(builder: ir.IRBuilder, value: ir.Value) -> ir.Value:
    """`value` through an empty asm statement: no instruction, but LLVM can no
    longer merge the instruction that computed it with a similar one elsewhere."""
    barrier = Barrier(builder.block, value)
    builder._insert(barrier)
    return barrier


@dataclass
class Param:
    """A value of a shared node that differs between its members (a phi)."""

    key: tuple
    specs: list[tuple]          # per member: ("const", int) | ("ctx", offset)
    phi: ir.PhiInstr


@dataclass
class Node:
    """Code shared by several dispatch entries: its first block and parameters."""

    block: ir.Block
    params: list[Param] = field(default_factory=list)


@dataclass
class Field:
    """A request field as every member of a node sees it: the same offset and
    type, possibly in different argument slots (`name` of lookup and mkdir)."""

    loc: abi.FieldLoc           # the first member's
    locs: list[abi.FieldLoc]


__all__ = ["I1", "I8", "I32", "I64", "PTR", "MAP_RECORD_TYPE", "MAX_NAME_SIZE", "FN_ATTRS",
           "BARRIER_ATTRS", "INT_TYPES", "CodegenError", "c32", "c64", "Barrier", "opaque", "Param", "Node",
           "Field"]
