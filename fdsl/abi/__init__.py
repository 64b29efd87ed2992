"""The fuse-bpf ABI: every kernel fact the compiler, the VMs and the daemon use.

- `fuse`: what all fuse-bpf flavours share (FUSE struct layouts, limits, constants);
- `ack`: the Android Common Kernel ABI (context, return bits, per-opcode
  arguments, helpers), summed up in the record `ACK`;
- `model.Abi`: the shape of such a record.

`from fdsl import abi` gives the ACK names directly (`abi.OPS`, `abi.CTX_SIZE`),
the primary target; code that must work for more than one ABI takes an `Abi`.
The spec is `shared/fuse-bpf-abi.md`.
"""
from fdsl.abi.fuse import *  # noqa: F401,F403
from fdsl.abi.ack import *  # noqa: F401,F403
from fdsl.abi.ack import ACK
from fdsl.abi.model import Abi

ABIS: dict[str, Abi] = {ACK.id: ACK}


def by_id(abi_id: str) -> Abi:
    """The ABI record an object's metadata names (KeyError for an unknown one)."""
    return ABIS[abi_id]
