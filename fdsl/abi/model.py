"""The `Abi` object: the facts that differ between fuse-bpf ABIs, in one record.

Code that depends on the ABI receives an `Abi` (`fdsl.abi.ACK` or
`fdsl.abi.RFC_V1`, chosen per object by the id in its metadata) instead of
importing one flavour's constants directly, so a second ABI is one more
record, not a second copy of the compiler.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping


def slot_offsets(base: int, slot_size: int, count: int, kind: str) -> Callable[[int], int]:
    """The function giving the context offset of `kind[index]` (IndexError outside 0..count-1)."""
    def offset(index: int) -> int:
        if not 0 <= index < count:
            raise IndexError(f"{kind} index {index} out of range")
        return base + slot_size * index
    offset.__doc__ = f"Context offset of `{kind}[index]`."
    return offset


@dataclass(frozen=True)
class CtxField:
    """One scalar or pointer field of the context: where it is and how wide."""

    name: str
    offset: int
    size: int


@dataclass(frozen=True)
class Abi:
    """One fuse-bpf ABI: context layout, return codes, opcodes, helpers, limits.

    `slot_fields` gives each argument slot's fields ("value", "end_offset",
    "size", and RFC v1's "max_size") as (offset inside the slot, width).
    `buffer_access` says how argument buffers are read: "constant" (ACK:
    constant offsets, no bounds) or "packet" (RFC v1: every access proven below
    `end_offset` first).  `buffer_stores` says how a program writes an argument:
    "out_args" (ACK: stores through `out_args[i].value`) or "helpers" (RFC v1:
    only through the pointers `writable_helpers` return, after a NULL check).
    `return_style` is "bitmask" (`return_bits`) or "enumerated" (`return_codes`).
    `post_appends_outputs`: POST `in_args` are inputs followed by outputs (ACK)
    or the inputs only (RFC v1).  `from_ack_return(value, phase)` maps an ACK
    result to this ABI's code (None: this ABI cannot express it).
    """

    id: str                                  # recorded in `.fdsl.meta`
    name: str                                # for messages ("ACK fuse-bpf")
    ctx_size: int
    max_in_args: int
    max_out_args: int
    in_arg_offset: Callable[[int], int]
    out_arg_offset: Callable[[int], int]
    return_bits: Mapping[str, int]
    ops: Mapping[str, Any]                   # name -> OpSpec
    ops_by_number: Mapping[int, Any]
    helpers: Mapping[int, Any]               # id -> HelperSpec
    stack_size: int
    resolve_field: Callable[..., Any]
    limits: Mapping[str, int] = field(default_factory=dict)
    slot_size: int = 24
    slot_fields: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    header_fields: tuple[CtxField, ...] = ()
    strict_ctx_sizes: bool = False
    buffer_access: str = "constant"
    buffer_stores: str = "out_args"
    writable_helpers: Mapping[str, int] = field(default_factory=dict)   # "in"/"out" -> helper id
    return_style: str = "bitmask"
    return_codes: Mapping[str, int] = field(default_factory=dict)
    returns_by_phase: Mapping[str, frozenset[int]] = field(default_factory=dict)
    post_appends_outputs: bool = True
    from_ack_return: Callable[[int, str], int | None] = lambda value, phase: value
    aliases: tuple[str, ...] = ()            # short names `--abi` accepts ("ack", "rfc-v1")

    def ctx_fields(self) -> list[CtxField]:
        """Every field of the context, header and slots, in offset order."""
        found = list(self.header_fields)
        for kind, count, where in (("in_args", self.max_in_args, self.in_arg_offset),
                                   ("out_args", self.max_out_args, self.out_arg_offset)):
            for i in range(count):
                for name, (offset, size) in self.slot_fields.items():
                    found.append(CtxField(f"{kind}[{i}].{name}", where(i) + offset, size))
        return sorted(found, key=lambda f: f.offset)

    def ctx_field_at(self, offset: int) -> CtxField | None:
        """The context field that starts at `offset`, if any."""
        return next((f for f in self.ctx_fields() if f.offset == offset), None)

    def header_offset(self, name: str) -> int:
        """Context offset of a header field ("nodeid", "opcode", "error_in", ...)."""
        return next(f.offset for f in self.header_fields if f.name == name)

    def slot_offset(self, args: str, index: int, member: str) -> int:
        """Context offset of `in_args[index].member` (args "in") or `out_args[...]` ("out")."""
        base = self.in_arg_offset(index) if args == "in" else self.out_arg_offset(index)
        return base + self.slot_fields[member][0]

    def helper_id(self, name: str) -> int:
        """The id of the helper called `name` ("map_lookup_elem", "trace_printk", ...)."""
        return next(h.id for h in self.helpers.values() if h.name == name)

    @property
    def packet(self) -> bool:
        """Buffers are packets: every read is proven below `end_offset` first (RFC v1)."""
        return self.buffer_access == "packet"

    def return_text(self, value: int, phase: str) -> str:
        """How this ABI names the result an ACK bitmask `value` becomes in `phase`."""
        if value < 0:
            return str(value)
        if self.return_style != "enumerated":
            names = [n for n, bit in self.return_bits.items() if value & bit]
            return "|".join(names) if names else "0"
        code = self.from_ack_return(value, phase)
        if code is None:
            return "(none)"
        return next((n for n, v in self.return_codes.items() if v == code), str(code))

    def valid_returns(self, phase: str) -> frozenset[int] | None:
        """Non-negative results a program may return in `phase` (None: any bitmask)."""
        if self.return_style != "enumerated":
            return None
        return self.returns_by_phase.get(phase, frozenset(self.return_codes.values()))
