"""The daemon half of a fuse-bpf mount: userspace filter requests and lookup attachment.

In kernel mode the programs run in the kernel; what reaches the daemon is
(spec §6-§7, §14):

* `OP|PREFILTER` / `OP|POSTFILTER` requests, answered with the policy's
  userspace rules (the same `FilterPolicy` rules emulation runs);
* `LOOKUP|POSTFILTER`, whose reply carries the 32-byte `fuse_entry_bpf_out`
  that attaches `under` scopes (program REPLACE), detaches them
  (`passthrough`: REMOVE) or swaps the backing directory (`backing`:
  REPLACE with a directory fd), exactly as `FilterPolicy.child_attachment`
  decides for emulation; every other child KEEPs, i.e. inherits.

The daemon names the nodes it sees (`fuse_entry_out.nodeid`), so later
filter requests tell it which scope a node is in; a nodeid a BPF postfilter
already set is kept.  `handle(request)` is transport independent: request
bytes in, reply bytes out (None: no reply).  The directory fds `backing`
scopes put into replies are opened once and kept until `close()` (the
kernel takes its own references during the write, spec §3.2).

Security (the fd-in-reply confused deputy, spec §0/§13): the kernel resolves
the fds of a reply in the *writer's* fd table.  The daemon only ever puts
fds into a reply that it has just opened itself: program fds from its own
BPF_PROG_LOAD and directories it opened beneath the backing root (or the
directory a `backing` scope of the policy names), never an fd received from
anyone.
"""
from __future__ import annotations

import errno
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, cast

from fdsl import abi

from ..identity import Caller
from ..policy import FilterPolicy, NodeScope
from . import protocol
from .protocol import EntryBpfOut, FilterRequest

log = logging.getLogger("fdsl.runtime")

FORGET = abi.NON_BPF_OPCODES["forget"]
BATCH_FORGET = abi.NON_BPF_OPCODES["batch_forget"]
LOOKUP = abi.OPS["lookup"].number
READDIR = abi.OPS["readdir"].number


@dataclass
class KernelNode:
    """What the daemon knows of a kernel inode: its place in the scope trie and program."""

    nodeid: int
    scope: NodeScope
    program: str | None
    lookups: int = 0


class AttachError(OSError):
    pass


class FilterServer:
    def __init__(self, policy: FilterPolicy, prog_fd: Callable[[str], int | None],
                 backing_root: str) -> None:
        self.policy = policy
        self.prog_fd = prog_fd
        self.backing_root = os.path.realpath(backing_root)
        section, scope = policy.root_attachment()
        self.nodes: dict[int, KernelNode] = {abi.FUSE_ROOT_ID: KernelNode(
            abi.FUSE_ROOT_ID, scope, section, lookups=1 << 62)}
        self.by_name: dict[tuple[int, bytes], int] = {}
        self.next_id = abi.FUSE_ROOT_ID + 1
        self.lock = threading.Lock()
        self.backing_fds: dict[str, int] = {}

    def close(self) -> None:
        for fd in self.backing_fds.values():
            os.close(fd)
        self.backing_fds.clear()

    # ------------------------------------------------------------ dispatch

    def handle(self, request: bytes) -> bytes | None:
        """One request's reply bytes (None: the request takes no reply)."""
        header = protocol.parse_header(request)
        try:
            body = self.answer(header, request[protocol.IN_HEADER.size:])
        except OSError as err:
            return protocol.reply(header.unique, error=err.errno or errno.EIO)
        return None if body is None else protocol.reply(header.unique, body)

    def answer(self, header: protocol.InHeader, payload: bytes) -> bytes | None:
        """The reply body (None: no reply); an OSError is an error reply.  Transport
        independent: a /dev/fuse dispatcher calls this with the header it decoded."""
        if header.phase is None:
            return self._classic(header, payload)
        try:
            req = protocol.parse_filter(header, payload)
        except protocol.ProtocolError as err:
            log.error("malformed filter request %#x: %s", header.opcode, err)
            if header.opcode == READDIR | abi.POSTFILTER:   # data even now: end the listing
                offset = abi.FUSE_READ_IN.unpack(payload)["offset"]
                return bytes(abi.FUSE_READ_OUT.pack({"offset": offset, "again": 0}))
            raise OSError(errno.EIO, str(err)) from None
        if req.op.number == READDIR and req.phase == "post":
            return self._readdir_post(req)
        if req.op.number == LOOKUP and req.phase == "post":
            return self._lookup_post(req)
        return self._filter(req)

    def _classic(self, header: protocol.InHeader, payload: bytes) -> bytes | None:
        if header.opcode == FORGET:
            self.forget(header.nodeid, int.from_bytes(payload[:8], "little"))
            return None
        if header.opcode == BATCH_FORGET:
            count = int.from_bytes(payload[:4], "little")
            for i in range(count):
                at = 8 + 16 * i
                self.forget(int.from_bytes(payload[at:at + 8], "little"),
                            int.from_bytes(payload[at + 8:at + 16], "little"))
            return None
        # Classic requests reach the daemon only for nodes without backing or programs
        # returning 0 in PRE; fdsl's programs make neither (root_dir backs every node).
        raise OSError(errno.ENOSYS, "classic FUSE request in kernel mode")

    # ------------------------------------------------------------ nodes

    def node(self, nodeid: int) -> KernelNode:
        """The node a request names; one the daemon never named (nodeid 0, or an inode
        whose lookup no daemon postfilter saw) is in the root scope."""
        found = self.nodes.get(nodeid)
        return found if found is not None else self.nodes[abi.FUSE_ROOT_ID]

    def _name_child(self, parent: int, name: bytes, preset: int, scope: NodeScope,
                    program: str | None) -> int:
        with self.lock:
            nodeid = preset or self.by_name.get((parent, name)) or 0
            if not nodeid:
                nodeid = self.next_id
                self.next_id += 1
            self.by_name[(parent, name)] = nodeid
            node = self.nodes.get(nodeid)
            if node is None:
                node = self.nodes[nodeid] = KernelNode(nodeid, scope, program)
            node.lookups += 1
            return nodeid

    def forget(self, nodeid: int, count: int) -> None:
        with self.lock:
            node = self.nodes.get(nodeid)
            if node is None or nodeid == abi.FUSE_ROOT_ID:
                return
            node.lookups -= count
            if node.lookups <= 0:
                del self.nodes[nodeid]
                for key in [k for k, v in self.by_name.items() if v == nodeid]:
                    del self.by_name[key]

    # ------------------------------------------------------------ filters

    def _caller(self, req: FilterRequest) -> Caller:
        return Caller(req.header.uid, req.header.gid, req.header.pid)

    def _filter(self, req: FilterRequest) -> bytes:
        """Userspace PRE (inputs back) or POST (outputs back) rules of the node's scope."""
        node = self.node(req.header.nodeid)
        scope = node.scope.rules_scope
        ins = [_decode(a, raw) for a, raw in zip(req.op.inputs, req.inputs)]
        if req.phase == "pre":
            new = self.policy._user_pre(scope, req.op, ins, self._caller(req), req.header.nodeid)
            return protocol.filter_body(_encode_like(req.op.inputs, new, req.inputs))
        out_specs = req.output_specs
        outs = [_decode(a, raw) for a, raw in zip(out_specs, req.outputs)]
        new = self.policy._user_post(scope, req.op, ins, outs, self._caller(req),
                                     req.header.nodeid, req.error_in)
        return protocol.filter_body(_encode_like(out_specs, new, req.outputs))

    def _readdir_post(self, req: FilterRequest) -> bytes:
        """Always data (spec §7.2: an error reply would list hidden names and never end).
        A failing rule ends the listing rather than showing what it should hide."""
        read_out = abi.FUSE_READ_OUT.unpack(req.outputs[0])
        try:
            entries = protocol.parse_dirents(req.outputs[1])
            node = self.node(req.header.nodeid)
            dropped: set[int] = set()
            ins = [_decode(req.op.inputs[0], req.inputs[0])]
            self.policy._user_post(node.scope.rules_scope, req.op, ins, [read_out, b""],
                                   self._caller(req), req.header.nodeid, req.error_in,
                                   [(e.name, e.ino, e.type) for e in entries], dropped)
        except (OSError, protocol.ProtocolError) as err:
            log.warning("readdir postfilter on node %d failed (%s): listing ended",
                        req.header.nodeid, err)
            return protocol.filter_body([bytes(abi.FUSE_READ_OUT.pack(
                {"offset": read_out["offset"], "again": 0}))])
        kept = b"".join(e.pack() for i, e in enumerate(entries) if i not in dropped)
        # A page whose every name is hidden must not end the listing: ask the kernel to
        # read on from fuse_read_out.offset (allowed because the backing step found entries).
        again = 1 if entries and not kept else 0
        head = abi.FUSE_READ_OUT.pack({"offset": read_out["offset"], "again": again})
        return protocol.filter_body([bytes(head), kept])

    # ------------------------------------------------------------ lookup

    def _lookup_post(self, req: FilterRequest) -> bytes:
        """User rules, then the scope table's verdict in the reply's fuse_entry_bpf_out."""
        parent = self.node(req.header.nodeid)
        name = _decode(req.op.inputs[0], req.inputs[0])
        entry = abi.FUSE_ENTRY_OUT.unpack(req.outputs[0])
        block = (EntryBpfOut.unpack(req.outputs[1]) if len(req.outputs) > 1
                 and len(req.outputs[1]) == protocol.ENTRY_BPF_OUT_SIZE else EntryBpfOut())
        if self.policy.user_rules.get((parent.scope.rules_scope, "lookup", "post")):
            outs = self.policy._user_post(parent.scope.rules_scope, req.op, [name],
                                          [entry, block_dict(block)], self._caller(req),
                                          req.header.nodeid, req.error_in)
            entry = outs[0]
        if req.error_in:          # a negative dentry: nothing to attach
            return protocol.lookup_body(bytes(abi.FUSE_ENTRY_OUT.pack(entry)), block)
        block, scope, program = self.attachment(parent, name, block)
        entry["nodeid"] = self._name_child(parent.nodeid, name, entry.get("nodeid", 0),
                                           scope, program)
        return protocol.lookup_body(bytes(abi.FUSE_ENTRY_OUT.pack(entry)), block)

    def attachment(self, parent: KernelNode, name: bytes, block: EntryBpfOut
                   ) -> tuple[EntryBpfOut, NodeScope, str | None]:
        """(block, child scope, child program) for parent/name."""
        if block.backing_action == abi.ACTION_REPLACE or block.bpf_action == abi.ACTION_REPLACE:
            raise AttachError(errno.EINVAL, "a BPF postfilter cannot REPLACE (spec 3.2)")
        inherited = parent.program if block.bpf_action == abi.ACTION_KEEP else None
        decided = self.policy.child_attachment(cast(Any, parent), name)
        if decided is None:
            return block, NodeScope(None, parent.scope.rules_scope), inherited
        action, scope, program, backing_dir = decided
        if action == "inherit":
            return block, scope, inherited
        if action == "passthrough":
            return EntryBpfOut(block.backing_action, 0, abi.ACTION_REMOVE, 0), scope, None
        bpf_fd = self._program_fd(program) if program and program != parent.program else None
        bpf_action = abi.ACTION_REPLACE if bpf_fd is not None else block.bpf_action
        if action == "rules":
            return EntryBpfOut(block.backing_action, 0, bpf_action, bpf_fd or 0), scope, program
        if action == "backing" and backing_dir is not None:
            declared = scope.trie.backing if scope.trie and scope.trie.backing else backing_dir
            dir_fd = self.backing_fds.get(backing_dir)
            if dir_fd is None:
                dir_fd = self.backing_fds[backing_dir] = self.open_backing_dir(backing_dir, declared)
            return (EntryBpfOut(abi.ACTION_REPLACE, dir_fd, bpf_action, bpf_fd or 0), scope,
                    program or inherited)
        return block, scope, inherited

    def _program_fd(self, section: str) -> int:
        fd = self.prog_fd(section)
        if fd is None:
            raise AttachError(errno.EIO, f"program {section} is not loaded in the kernel")
        return fd

    def open_backing_dir(self, path: str, declared: str) -> int:
        """A directory fd for a `backing` scope: opened here (never received from
        anyone), a real open (the kernel refuses O_PATH), and for a target the policy
        wrote as a relative path, checked to stay beneath the backing root."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
        real = os.readlink(f"/proc/self/fd/{fd}")
        if not os.path.isabs(declared) and not (
                real == self.backing_root or real.startswith(self.backing_root + "/")):
            os.close(fd)
            raise AttachError(errno.EACCES, f"backing directory {declared!r} escapes the backing root")
        return fd


# ------------------------------------------------------------ argument codecs

def _decode(arg: abi.ArgSpec, raw: bytes) -> Any:
    if arg.kind == "struct":
        return arg.struct.unpack(raw) if arg.struct else {}
    if arg.kind == "string":
        return raw.split(b"\0", 1)[0]
    return raw


def _encode_like(specs: list[abi.ArgSpec] | tuple[abi.ArgSpec, ...], values: list,
                 originals: list[bytes]) -> list[bytes]:
    """Values back to bytes at the sizes the kernel sent (STATFS sends 8 of 80 bytes)."""
    out = []
    for arg, value, raw in zip(specs, values, originals):
        if arg.kind == "struct" and arg.struct is not None:
            out.append(bytes(arg.struct.pack(value))[:len(raw)])
        elif arg.kind == "string":
            out.append(bytes(value) + b"\0")
        else:
            out.append(bytes(value))
    return out


def block_dict(block: EntryBpfOut) -> dict[str, int]:
    return {"backing_action": block.backing_action, "backing_fd": block.backing_fd,
            "bpf_action": block.bpf_action, "bpf_fd": block.bpf_fd}
