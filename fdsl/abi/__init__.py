"""The fuse-bpf ABI: every kernel fact the compiler, the VMs and the daemon use.

- `fuse`: what all fuse-bpf flavours share (FUSE struct layouts, limits, constants);
- `ack`: the Android Common Kernel ABI (context, return bits, per-opcode
  arguments, helpers), summed up in the record `ACK`;
- `rfc_v1`: the September 2022 RFC's ABI (packet-style context, helpers
  208/209, enumerated return codes), summed up in the record `RFC_V1`;
- `model.Abi`: the shape of such a record.

`from fdsl import abi` gives the ACK names directly (`abi.OPS`, `abi.CTX_SIZE`),
the primary target; code that must work for more than one ABI takes an `Abi`,
chosen per object with `choose` (the id in the object's metadata, else `--abi`).
The spec is `shared/fuse-bpf-abi.md`.
"""
from fdsl.abi.fuse import *  # noqa: F401,F403
from fdsl.abi.ack import *  # noqa: F401,F403
from fdsl.abi.ack import ACK
from fdsl.abi.model import Abi, CtxField
from fdsl.abi.rfc_v1 import RFC_V1
from fdsl.abi import requests  # noqa: F401  (request defaults: abi.requests.*)

ABIS: dict[str, Abi] = {ACK.id: ACK, RFC_V1.id: RFC_V1}
DEFAULT = ACK


class AbiChoiceError(ValueError):
    """An unknown ABI name, or a `--abi` that contradicts the object's metadata."""


def by_id(abi_id: str) -> Abi:
    """The ABI record an id or a short name ("ack", "rfc-v1") names (KeyError if none)."""
    if abi_id in ABIS:
        return ABIS[abi_id]
    for record in ABIS.values():
        if abi_id in record.aliases:
            return record
    raise KeyError(abi_id)


def names() -> list[str]:
    """Every name `--abi` accepts."""
    return sorted({n for r in ABIS.values() for n in (r.id, *r.aliases)})


def named(name: str) -> Abi:
    """`by_id` for a name the user typed: an unknown one is an `AbiChoiceError` listing
    every known name (the one wording `choose`, the CLI and the daemon give)."""
    try:
        return by_id(name)
    except KeyError:
        raise AbiChoiceError(f"unknown ABI {name!r} (known: {', '.join(names())})") from None


def choose(recorded: str | None, requested: str | None = None) -> Abi:
    """The ABI a loaded object uses: its metadata's id decides; `--abi` only for objects without.

    A `requested` name that contradicts the recorded one is an error rather than
    silently ignored, so a user never runs an object under the wrong rules.
    """
    wanted = named(requested) if requested is not None else None
    if recorded is None:
        return wanted or DEFAULT
    try:
        record = by_id(recorded)
    except KeyError:
        raise AbiChoiceError(f"the object's metadata names an unknown ABI {recorded!r}") from None
    if wanted is not None and wanted is not record:
        raise AbiChoiceError(f"the object was compiled for {record.name} ({record.id}); "
                             f"--abi {requested} contradicts its metadata")
    return record
