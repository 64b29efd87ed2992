"""The operation table against the ABI: every row's opcode, fields and codecs.

A misspelt field or a row for the wrong opcode must fail here, not in a
mounted request (issue 9).  The oracle is `fdsl.abi` (spec §9).
"""
from __future__ import annotations

import pytest

from fdsl import abi
from fdsl.runtime import optable, requests as R
from fdsl.vm.frame import FieldCodec


def test_every_abi_opcode_has_a_row_or_is_listed_as_not_served():
    for name in abi.OPS:
        assert (name in optable.TABLE) != (name in optable.NOT_SERVED), name
    for name, why in optable.NOT_SERVED.items():
        assert name in abi.OPS and why


@pytest.mark.parametrize("op", sorted(optable.TABLE))
def test_row_fields_resolve_in_the_abi(op):
    row = optable.TABLE[op]
    assert row.op == op and row.spec is abi.OPS[op]
    for path in row.fields:
        assert (abi.resolve_field(op, "pre", path) or abi.resolve_field(op, "post", path)), \
            f"{op}: no field {path}"


@pytest.mark.parametrize("op", sorted(optable.TABLE))
def test_rows_run_where_the_kernel_dispatches(op):
    """§3.3: namespace operations run on the parent directory, the rest on the inode."""
    row = optable.TABLE[op]
    assert (row.target == "parent") == abi.OPS[op].namespace, op


def test_every_request_record_has_one_row():
    records = {v for v in vars(R).values() if isinstance(v, type) and v in R.Request.__args__}
    assert records == set(optable.BY_RECORD), records ^ set(optable.BY_RECORD)


def test_codecs_are_checked_against_the_abi_layouts():
    for name, codec in vars(optable).items():
        if isinstance(codec, FieldCodec):
            for field_name in codec.names:
                assert codec.struct.field(field_name) is not None, (name, field_name)
    with pytest.raises(KeyError):
        FieldCodec(abi.FUSE_GETATTR_IN, "getattr_flag")     # misspelt
    with pytest.raises(ValueError):
        FieldCodec(abi.FUSE_GETATTR_IN, "fh", "getattr_flags")   # out of offset order


def test_codec_offsets_match_the_structs():
    frame = bytearray(64)
    optable.READ_IN.pack_into(frame, 0, 7, 8, 9)
    assert abi.FUSE_READ_IN.unpack(frame[:40]) | {} == {
        **abi.FUSE_READ_IN.unpack(bytes(40)), "fh": 7, "offset": 8, "size": 9}


def test_request_defaults_are_consistent():
    assert abi.requests.check_tables() == []
    assert abi.requests.INPUT_DEFAULTS["getattr"]["in.fh"] == (1 << 64) - 1
    assert abi.requests.caller_errno("lookup", 13) == 2
    assert abi.requests.caller_errno("getattr", 13) == 5
    assert abi.requests.caller_errno("open", 13) == 13
