"""Wire bytes of kernel mode: filter requests parsed from bytes built per spec §7, the
LOOKUP reply with its exactly-32-byte block (§3.2), the mount option string (§3.1)."""
from __future__ import annotations

import struct

import pytest

from fuse_requests import (GETXATTR, LOOKUP, OPEN, POST, PRE, READDIR, STATFS, dirent,
                           entry_bpf_out, entry_out, lookup_post, parse_reply, read_in, request,
                           readdir_post)

from fdsl.runtime.kernel import protocol
from fdsl.runtime.kernel.mountopts import MountRequest, split_user_options


def test_lookup_reply_is_header_entry_out_and_exactly_32_bytes_of_block():
    block = protocol.EntryBpfOut(backing_action=2, backing_fd=11, bpf_action=2, bpf_fd=12)
    raw = protocol.reply(77, protocol.lookup_body(entry_out(nodeid=5), block))
    length, error, unique, body = parse_reply(raw)
    assert (length, error, unique) == (16 + 128 + 32, 0, 77)
    assert body[:128] == entry_out(nodeid=5)
    assert body[128:] == struct.pack("<QQQQ", 2, 11, 2, 12)


def test_lookup_reply_without_block_is_128_bytes():
    assert parse_reply(protocol.reply(1, protocol.lookup_body(entry_out(), None)))[0] == 16 + 128
    with pytest.raises(ValueError):
        protocol.lookup_body(b"short", None)


def test_error_reply_has_no_body_and_a_negative_errno():
    assert protocol.reply(9, b"ignored", error=13) == struct.pack("<IiQ", 16, -13, 9)


def test_lookup_postfilter_request_splits_name_entry_and_block():
    req = protocol.parse_filter_request(lookup_post(b"secret", parent=4, error_in=-2))
    assert (req.op.name, req.phase, req.header.nodeid, req.error_in) == ("lookup", "post", 4, -2)
    assert req.inputs == [b"secret\0"]
    assert req.outputs == [entry_out(), entry_bpf_out()]


def test_error_in_is_the_s32_at_header_offset_36():
    raw = bytearray(lookup_post(b"x"))
    struct.pack_into("<i", raw, 36, -5)
    assert protocol.parse_header(bytes(raw)).error_in == -5
    pre = protocol.parse_filter_request(request(LOOKUP | PRE, b"x\0", error_in=-5))
    assert pre.error_in == 0          # only POSTFILTER requests carry a backing result


def test_readdir_postfilter_request_has_read_in_read_out_and_records():
    raw = readdir_post([b"a", b"hidden.tmp", b"c"])
    req = protocol.parse_filter_request(raw)
    read_in_, read_out, records = req.inputs + req.outputs
    assert read_in_ == read_in() and len(read_out) == 16
    assert [d.name for d in protocol.parse_dirents(records)] == [b"a", b"hidden.tmp", b"c"]
    assert protocol.parse_dirents(records)[1].pack() == dirent(101, 2, b"hidden.tmp")


def test_open_postfilter_and_statfs_sizes():
    req = protocol.parse_filter_request(request(OPEN | POST, struct.pack("<II", 0, 0) + bytes(16)))
    assert [len(a) for a in req.inputs + req.outputs] == [8, 16]
    statfs = protocol.parse_filter_request(request(STATFS | POST, bytes(8)))
    assert [len(a) for a in statfs.outputs] == [8]     # the kernel says 8 for 80 bytes (§9)


def test_getxattr_size_query_returns_a_getxattr_out():
    query = struct.pack("<II", 0, 0) + b"user.a\0" + struct.pack("<II", 5, 0)
    req = protocol.parse_filter_request(request(GETXATTR | POST, query))
    assert req.output_specs[0].struct.name == "fuse_getxattr_out" and len(req.outputs[0]) == 8
    data = struct.pack("<II", 64, 0) + b"user.a\0" + b"value"
    req = protocol.parse_filter_request(request(GETXATTR | POST, data))
    assert req.outputs == [b"value"]


@pytest.mark.parametrize("raw, message", [
    (request(LOOKUP | PRE, b"no-nul"), "not NUL-terminated"),
    (request(OPEN | POST, bytes(8)), "needs 16 bytes"),
    (request(OPEN | PRE, bytes(12)), "4 bytes after the last argument"),
    (request(LOOKUP | PRE | POST, b"x\0"), "both phase bits"),
    (request(999 | PRE, b""), "unknown opcode 999"),
    (request(LOOKUP, b"x\0"), "not a filter request"),
])
def test_malformed_filter_requests_are_refused(raw, message):
    with pytest.raises(protocol.ProtocolError, match=message):
        protocol.parse_filter_request(raw)


def test_header_length_must_match_what_was_read():
    with pytest.raises(protocol.ProtocolError, match="len"):
        protocol.parse_header(request(LOOKUP, b"x\0") + b"extra")


def test_filter_reply_concatenates_arguments():
    req = protocol.parse_filter_request(request(READDIR | PRE, read_in()))
    assert protocol.filter_body([read_in(), b"xy"]) == read_in() + b"xy"


# ------------------------------------------------------------ mount options

def test_mount_option_string_is_the_selftests_plus_root_dir_and_root_bpf():
    req = MountRequest(dev_fd=3, root_dir_fd=5, root_bpf_fd=6, uid=1000, gid=100)
    assert req.data() == "fd=3,rootmode=40000,user_id=1000,group_id=100,root_dir=5,root_bpf=6"
    assert req.fstype == "fuse.fdsl"


def test_daemonless_mount_and_no_program():
    req = MountRequest(dev_fd=3, root_dir_fd=5, root_bpf_fd=None, no_daemon=True,
                       data_options=("allow_other",))
    assert req.data() == "fd=3,rootmode=40000,user_id=0,group_id=0,root_dir=5,no_daemon,allow_other"


def test_user_options_become_data_or_flags_and_unknown_ones_are_refused():
    from fdsl.errors import UsageError

    opts = split_user_options(["ro", "nosuid", "allow_other", "default_permissions",
                               "fsname=view", "nonempty"])
    assert opts.flags == 1 | 2 and opts.data == ["allow_other", "default_permissions"]
    assert opts.fsname == "view"
    with pytest.raises(UsageError, match="writeback_cache"):
        split_user_options(["writeback_cache"])
