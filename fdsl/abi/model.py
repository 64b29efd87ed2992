"""The `Abi` object: the facts that differ between fuse-bpf ABIs, in one record.

Code that depends on the ABI receives an `Abi` (today `fdsl.abi.ACK`; RFC v1
joins it later) instead of importing one flavour's constants directly, so a
second ABI is one more record, not a second copy of the compiler.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping


@dataclass(frozen=True)
class Abi:
    """One fuse-bpf ABI: context layout, return codes, opcodes, helpers, limits."""

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
