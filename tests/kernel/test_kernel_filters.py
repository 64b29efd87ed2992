"""The daemon half of kernel mode, fed request bytes a fuse-bpf kernel would send (spec §7):
userspace rules through the same FilterPolicy as emulation, scope attachment through the
lookup reply's fuse_entry_bpf_out (§3.2), READDIR|POSTFILTER always answered with data.

The program fds are numbers the reply carries (no kernel to resolve them here); directory
fds for `backing` scopes are real fds this daemon opened, checked through /proc."""
from __future__ import annotations

import errno
import os
import struct

import pytest

from fuse_requests import (FORGET, LOOKUP, PRE, READDIR, dirent, entry_out, lookup_post,
                           parse_dirents, parse_reply, read_in, readdir_post, request)

from fdsl import abi
from fdsl.compile.driver import compile_source
from fdsl.runtime.kernel.filters import FilterServer
from fdsl.runtime.policy import load_policy
from fdsl.vm.context import build_context
from fdsl.vm.filterset import FilterSet
from fdsl.vm.helpers import Caller

KEEP, REMOVE, REPLACE = 0, 1, 2
PROG_FDS = {"fuse/root": 100, "fuse/s1": 101, "fuse/s2": 102, "fuse/s3": 103}


def _server(source: str, backing: str) -> FilterServer:
    obj = compile_source(source, "p.fdsl", want_asm=False).obj
    return FilterServer(load_policy(obj, "interp", backing), PROG_FDS.get, backing)


def _lookup(server: FilterServer, name: bytes, parent: int = 1, **kw):
    _, error, _, body = parse_reply(server.handle(lookup_post(name, parent=parent, **kw)))
    assert error == 0 and len(body) == 128 + 32
    nodeid = struct.unpack_from("<Q", body)[0]
    return nodeid, struct.unpack("<QQQQ", body[128:])


SCOPES = '''
under "a" { on open pre { deny EACCES } }
under "a/open" passthrough
under "deep/er" { on open pre { deny EPERM } }
'''


def test_under_scope_attaches_inherits_and_detaches(tmp_path):
    server = _server(SCOPES, str(tmp_path))
    a, block = _lookup(server, b"a")
    assert block == (KEEP, 0, REPLACE, PROG_FDS["fuse/s1"])     # attach the scope's program
    x, block = _lookup(server, b"x", parent=a)
    assert block == (KEEP, 0, KEEP, 0)                          # inherit
    assert len({1, a, x}) == 3
    opened, block = _lookup(server, b"open", parent=a)
    assert block == (KEEP, 0, REMOVE, 0)                        # passthrough: no program
    plain, block = _lookup(server, b"other")
    assert block == (KEEP, 0, KEEP, 0)                          # the root's program stays


def test_nested_scope_path_through_an_intermediate_directory(tmp_path):
    server = _server(SCOPES, str(tmp_path))
    deep, block = _lookup(server, b"deep")
    assert block == (KEEP, 0, KEEP, 0)                          # not a scope itself
    _, block = _lookup(server, b"er", parent=deep)
    assert block == (KEEP, 0, REPLACE, PROG_FDS["fuse/s3"])
    _, block = _lookup(server, b"er")                        # "er" at the root: no scope
    assert block == (KEEP, 0, KEEP, 0)


def test_nodeids_are_stable_and_forgotten(tmp_path):
    server = _server(SCOPES, str(tmp_path))
    first, _ = _lookup(server, b"a")
    again, _ = _lookup(server, b"a")
    assert first == again and server.nodes[first].lookups == 2
    assert server.handle(request(FORGET, struct.pack("<Q", 2), nodeid=first)) is None
    assert first not in server.nodes


def test_a_nodeid_a_bpf_postfilter_set_is_kept(tmp_path):
    server = _server(SCOPES, str(tmp_path))
    nodeid, _ = _lookup(server, b"a", nodeid=4711)
    assert nodeid == 4711 and server.nodes[4711].program == "fuse/s1"


def test_negative_lookup_attaches_nothing(tmp_path):
    server = _server(SCOPES, str(tmp_path))
    nodeid, block = _lookup(server, b"a", error_in=-errno.ENOENT)
    assert nodeid == 0 and block == (KEEP, 0, KEEP, 0) and len(server.nodes) == 1


def test_backing_scope_replaces_the_backing_with_a_directory_we_opened(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    server = _server(f'under "remap" backing "{other}"\n', str(root))
    _, (action, fd, bpf_action, bpf_fd) = _lookup(server, b"remap")
    try:
        assert action == REPLACE and server.backing_fds == {str(other): fd}
        assert os.readlink(f"/proc/self/fd/{fd}") == str(other)
        flags = int(open(f"/proc/self/fdinfo/{fd}").read().split("flags:")[1].split()[0], 8)
        assert not flags & os.O_PATH                            # the kernel refuses O_PATH
        assert (bpf_action, bpf_fd) == (REPLACE, PROG_FDS["fuse/s1"])
        assert _lookup(server, b"remap")[1][1] == fd            # opened once, kept
    finally:
        server.close()
    assert not os.path.exists(f"/proc/self/fd/{fd}")


def test_relative_backing_may_not_escape_the_root(tmp_path):
    (tmp_path / "outside").mkdir()
    root = tmp_path / "root"
    root.mkdir()
    server = _server('under "r" backing "../outside"\n', str(root))
    _, error, _, body = parse_reply(server.handle(lookup_post(b"r")))
    assert error == -errno.EACCES and body == b""


def test_the_root_program_asks_for_the_lookups_scopes_need():
    """With scopes below it a program ends lookups with a userspace postfilter (B|PF, then U),
    so the kernel sends the daemon the LOOKUP|POSTFILTER it attaches with; leaf scopes don't."""
    obj = compile_source(SCOPES, "p.fdsl", want_asm=False).obj
    filters = FilterSet.load(obj, backend="interp")
    spec = abi.OPS["lookup"]

    def run(section: str, phase: str) -> int:
        outs = [bytes(128), bytes(32)] if phase == "post" else None
        ctx = build_context(spec, phase, [b"a\0"], outs, nodeid=1)
        return filters.run(section, ctx, Caller(0, 0, 1, 1))

    assert run("fuse/root", "pre") == abi.BACKING | abi.POST_FILTER
    assert run("fuse/root", "post") == abi.USER_FILTER
    assert run("fuse/s3", "pre") == abi.BACKING and run("fuse/s3", "post") == 0


# ------------------------------------------------------------ readdir

HIDE_TMP = 'on readdir post { drop entries where name like "*.tmp" }\n'


def _readdir(server: FilterServer, raw: bytes) -> tuple[int, int, list]:
    _, error, _, body = parse_reply(server.handle(raw))
    assert error == 0                                            # never an error (spec 7.2)
    offset, again, _ = struct.unpack_from("<QII", body)
    return offset, again, parse_dirents(body[16:])


def test_readdir_postfilter_drops_hidden_names(tmp_path):
    server = _server(HIDE_TMP, str(tmp_path))
    offset, again, entries = _readdir(server, readdir_post([b"a", b"b.tmp", b"c"]))
    assert [name for _, _, name in entries] == [b"a", b"c"]
    assert (offset, again) == (3, 0)
    assert entries[1] == (102, 3, b"c")                          # records kept as they were


def test_a_page_of_only_hidden_names_reads_on_and_an_empty_one_ends(tmp_path):
    server = _server(HIDE_TMP, str(tmp_path))
    offset, again, entries = _readdir(server, readdir_post([b"x.tmp", b"y.tmp"], offset=5))
    assert (offset, again, entries) == (7, 1, [])
    assert _readdir(server, readdir_post([], offset=7)) == (7, 0, [])


def test_a_broken_dirent_page_ends_the_listing_instead_of_failing(tmp_path):
    server = _server(HIDE_TMP, str(tmp_path))
    bad = dirent(1, 1, b"a")[:-8] + bytes(8)
    raw = request(READDIR | 0x20000, read_in() + struct.pack("<QII", 9, 0, 0) + bad
                  + struct.pack("<QQII", 2, 2, 0, 8))            # namelen 0: malformed
    assert _readdir(server, raw) == (9, 0, [])


# ------------------------------------------------------------ other filters

def test_userspace_prefilter_denies_and_echoes(tmp_path):
    server = _server('on lookup pre { if name matches "^sec.*t$" { deny EACCES } }\n',
                     str(tmp_path))
    _, error, _, _ = parse_reply(server.handle(request(LOOKUP | PRE, b"secret\0")))
    assert error == -errno.EACCES
    _, error, _, body = parse_reply(server.handle(request(LOOKUP | PRE, b"public\0")))
    assert (error, body) == (0, b"public\0")


def test_classic_requests_without_a_handler_are_enosys(tmp_path):
    server = _server(HIDE_TMP, str(tmp_path))
    _, error, _, _ = parse_reply(server.handle(request(3, bytes(16))))
    assert error == -errno.ENOSYS


def test_even_an_unparsable_readdir_postfilter_gets_data(tmp_path):
    server = _server(HIDE_TMP, str(tmp_path))
    raw = request(READDIR | 0x20000, read_in(offset=12) + bytes(4))   # read_out cut short
    assert _readdir(server, raw) == (12, 0, [])


def test_userspace_rules_of_a_scope_apply_to_the_nodes_below_it(tmp_path):
    """A scope with userspace rules has its lookups sent to the daemon too, so the nodes
    below it are named and their filter requests get that scope's rules."""
    source = 'under "a" { on readdir post { drop entries where name like "*.tmp" } }\n'
    obj = compile_source(source, "p.fdsl", want_asm=False).obj
    filters = FilterSet.load(obj, backend="interp")
    ctx = build_context(abi.OPS["lookup"], "post", [b"x\0"], [bytes(128), bytes(32)], nodeid=5)
    assert filters.run("fuse/s1", ctx, Caller(0, 0, 1, 1)) == abi.USER_FILTER
    server = _server(source, str(tmp_path))
    a, _ = _lookup(server, b"a")
    x, block = _lookup(server, b"x", parent=a)
    assert block == (KEEP, 0, KEEP, 0) and server.nodes[x].scope.rules_scope == "a"
    names = [b"keep", b"drop.tmp"]
    assert [n for _, _, n in _readdir(server, readdir_post(names, nodeid=x))[2]] == [b"keep"]
    assert [n for _, _, n in _readdir(server, readdir_post(names, nodeid=1))[2]] == names
