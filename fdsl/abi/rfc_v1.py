"""The September 2022 fuse-bpf RFC (v1) ABI, summed up in the record `RFC_V1`.

What differs from ACK (spec §12.1): a packet-style context `struct
__bpf_fuse_args` (152 bytes, 3 in / 2 out slots, value@0 end_offset@8 size@16
max_size@20 per slot) whose fields the kernel rewrites, so accesses must have
their exact width; every buffer access proven below `end_offset` first; no
stores at all, arguments written only through helpers 208/209
(`bpf_fuse_get_writeable_in/out`); enumerated return codes (§12.2); POST
`in_args` are the inputs only, outputs stay in `out_args`.  The FUSE structs,
opcode numbers and phase bits are the shared ones (`fdsl.abi.fuse`, §5, §11);
the per-opcode argument lists are ACK's (§9) without Android's CANONICAL_PATH.
"""
from __future__ import annotations

from fdsl.abi.ack import (HELPERS as ACK_HELPERS, LIMITS as ACK_LIMITS, OPS as ACK_OPS,
                          BACKING, PHASE_BITS, POST_FILTER, USER_FILTER, FieldLoc, HelperSpec,
                          OpSpec, fields_for)
from fdsl.abi.model import Abi, CtxField, slot_offsets

ABI_ID = "rfc-v1"

# ------------------------------------------------- §12.2 struct __bpf_fuse_args

CTX_SIZE = 152
CTX_NODEID = 0          # u64
CTX_OPCODE = 8          # u32
CTX_ERROR_IN = 12       # u32 (compare as s32)
CTX_IN_NUMARGS = 16     # u32
CTX_OUT_NUMARGS = 20    # u32
CTX_FLAGS = 24          # u32
MAX_IN_ARGS = 3
MAX_OUT_ARGS = 2
ARG_SLOT_SIZE = 24
ARG_VALUE = 0           # u64 packet pointer
ARG_END_OFFSET = 8      # u64 packet end
ARG_SIZE = 16           # u32
ARG_MAX_SIZE = 20       # u32
IN_ARGS_BASE = 32
OUT_ARGS_BASE = 104

# Internal argument flags of the RFC kernel (§12.1), which helpers 208/209 obey.
ARG_IMMUTABLE = 1
ARG_VARIABLE_SIZE = 2
ARG_MUST_ALLOCATE = 4
ARG_MODIFIED = 8
ARG_ALLOCATED = 16


in_arg_offset = slot_offsets(IN_ARGS_BASE, ARG_SLOT_SIZE, MAX_IN_ARGS, "in_args")
out_arg_offset = slot_offsets(OUT_ARGS_BASE, ARG_SLOT_SIZE, MAX_OUT_ARGS, "out_args")


# ------------------------------------------------------- §12.2 return codes

CONTINUE = 0            # PRE: backing op, then finish; POST: finish
USER = 1                # PRE: classic FUSE request to the daemon
USER_PREFILTER = 2      # PRE: daemon prefilter; its reply's error is the next code
POSTFILTER = 3          # PRE: backing op, then this program in POST
USER_POSTFILTER = 4     # PRE: backing op, then daemon postfilter; POST: daemon postfilter
RETURN_CODES = {"CONTINUE": CONTINUE, "USER": USER, "USER_PREFILTER": USER_PREFILTER,
                "POSTFILTER": POSTFILTER, "USER_POSTFILTER": USER_POSTFILTER}
RETURNS_BY_PHASE = {"pre": frozenset(RETURN_CODES.values()),
                    "post": frozenset({CONTINUE, USER_POSTFILTER})}

# ACK bitmask (§6) -> RFC v1 code (§12.2), per phase.
_FROM_ACK = {
    "pre": {BACKING: CONTINUE, 0: USER, USER_FILTER | BACKING: USER_PREFILTER,
            BACKING | POST_FILTER: POSTFILTER},
    "post": {0: CONTINUE, USER_FILTER: USER_POSTFILTER},
}


def from_ack_return(value: int, phase: str) -> int | None:
    """The RFC v1 code for an ACK result (errnos pass through; None: no equivalent)."""
    if value < 0:
        return value
    if phase == "post":
        value &= USER_FILTER          # B and PF returned from POST are ignored (§6)
    return _FROM_ACK[phase].get(value)


# ------------------------------------------------------------- §8.2 helpers

WRITEABLE_IN = 208
WRITEABLE_OUT = 209

# Argument kinds beyond ACK's: "ctx" the context pointer, "arg_index" a constant
# slot index, "arg_value" that slot's packet pointer, "buf_size" a constant size;
# "writable_or_null" is a writable buffer of `buf_size` bytes, or NULL.
HELPERS: dict[int, HelperSpec] = {
    **ACK_HELPERS,
    WRITEABLE_IN: HelperSpec(WRITEABLE_IN, "fuse_get_writeable_in",
                             ("ctx", "arg_index", "arg_value", "buf_size", "scalar"),
                             "writable_or_null",
                             arg_names=("ctx", "index", "value", "size", "copy")),
    WRITEABLE_OUT: HelperSpec(WRITEABLE_OUT, "fuse_get_writeable_out",
                              ("ctx", "arg_index", "arg_value", "buf_size", "scalar"),
                              "writable_or_null",
                              arg_names=("ctx", "index", "value", "size", "copy")),
}

# ------------------------------------------------------------ opcodes, fields

OPS: dict[str, OpSpec] = {name: op for name, op in ACK_OPS.items() if name != "canonical_path"}
OPS_BY_NUMBER: dict[int, OpSpec] = {op.number: op for op in OPS.values()}


def fields_of(op: str, phase: str) -> list[FieldLoc]:
    """Every field a program for `op` in `phase` can name, in RFC v1 slots."""
    return fields_for(OPS[op], phase, post_appends_outputs=False)


def resolve_field(op: str, phase: str, path: tuple[str, ...] | str) -> FieldLoc | None:
    """Where `path` lives for `op` in `phase` under RFC v1 (None if nowhere)."""
    if op not in OPS or phase not in PHASE_BITS:
        return None
    dotted = path if isinstance(path, str) else ".".join(path)
    return next((loc for loc in fields_of(op, phase) if loc.path == dotted), None)


LIMITS = dict(ACK_LIMITS)

RFC_V1 = Abi(
    id=ABI_ID, name="RFC v1 fuse-bpf", ctx_size=CTX_SIZE,
    max_in_args=MAX_IN_ARGS, max_out_args=MAX_OUT_ARGS,
    in_arg_offset=in_arg_offset, out_arg_offset=out_arg_offset,
    return_bits={}, ops=OPS, ops_by_number=OPS_BY_NUMBER, helpers=HELPERS,
    stack_size=LIMITS["stack_size"], resolve_field=resolve_field, limits=LIMITS,
    slot_size=ARG_SLOT_SIZE,
    slot_fields={"value": (ARG_VALUE, 8), "end_offset": (ARG_END_OFFSET, 8),
                 "size": (ARG_SIZE, 4), "max_size": (ARG_MAX_SIZE, 4)},
    header_fields=(CtxField("nodeid", CTX_NODEID, 8), CtxField("opcode", CTX_OPCODE, 4),
                   CtxField("error_in", CTX_ERROR_IN, 4), CtxField("in_numargs", CTX_IN_NUMARGS, 4),
                   CtxField("out_numargs", CTX_OUT_NUMARGS, 4), CtxField("flags", CTX_FLAGS, 4)),
    strict_ctx_sizes=True, buffer_access="packet", buffer_stores="helpers",
    writable_helpers={"in": WRITEABLE_IN, "out": WRITEABLE_OUT},
    return_style="enumerated", return_codes=RETURN_CODES, returns_by_phase=RETURNS_BY_PHASE,
    post_appends_outputs=False, from_ack_return=from_ack_return, aliases=("rfc-v1",),
)
