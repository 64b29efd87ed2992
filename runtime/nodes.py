"""The node table: FUSE node ids -> backing inodes (O_PATH fds) and attachments.

Like libfuse's passthrough_hp, each node holds an O_PATH|O_NOFOLLOW fd of its
backing inode, so every later operation is an *at() call relative to a fd
(never a path string that could be redirected through symlinks, '..' or a
concurrent rename, and never longer than one component).  Nodes are keyed by
(st_dev, st_ino) so hard links share one node, as in the kernel.
"""
from __future__ import annotations

import errno
import os
import threading
from dataclasses import dataclass, field

ROOT_ID = 1


@dataclass
class Node:
    nodeid: int
    fd: int                      # O_PATH|O_NOFOLLOW fd of the backing inode
    key: tuple[int, int]         # (st_dev, st_ino) of the backing inode
    mode: int                    # file type bits (st_mode & S_IFMT) at lookup
    program: str | None = None   # attached program section, None = always BACKING
    scope: object = None         # position in the policy's scope trie (policy-defined)
    bpf_nodeid: int = 0          # what programs see as ctx.nodeid (a lookup post may set it)
    lookups: int = 0             # kernel lookup count (FORGET decrements)

    @property
    def is_dir(self) -> bool:
        return (self.mode & 0o170000) == 0o040000

    @property
    def ctx_nodeid(self) -> int:
        return self.bpf_nodeid or self.nodeid


@dataclass
class NodeTable:
    """Thread-safe map of node ids; worker threads look nodes up concurrently."""

    nodes: dict[int, Node] = field(default_factory=dict)
    by_key: dict[tuple[int, int], int] = field(default_factory=dict)
    next_id: int = ROOT_ID + 1
    lock: threading.RLock = field(default_factory=threading.RLock)

    def add_root(self, fd: int, program: str | None, scope: object) -> Node:
        st = os.fstat(fd)
        node = Node(ROOT_ID, fd, (st.st_dev, st.st_ino), st.st_mode & 0o170000,
                    program, scope, lookups=1 << 62)
        with self.lock:
            self.nodes[ROOT_ID] = node
            self.by_key[node.key] = ROOT_ID
        return node

    def get(self, nodeid: int) -> Node:
        try:
            return self.nodes[nodeid]
        except KeyError:
            raise OSError(errno.ESTALE, "unknown node id") from None

    def find_key(self, key: tuple[int, int]) -> Node | None:
        with self.lock:
            nodeid = self.by_key.get(key)
            return self.nodes.get(nodeid) if nodeid is not None else None

    def attach(self, fd: int, st: os.stat_result, program: str | None, scope: object,
               bpf_nodeid: int = 0) -> Node:
        """Find or create the node of a looked-up inode and count one kernel lookup.

        Takes ownership of `fd` (closed if the node already exists).  An existing
        node keeps its program; a different one is refused with EINVAL, as the
        fuse-bpf kernel does (spec 3.2).
        """
        key = (st.st_dev, st.st_ino)
        with self.lock:
            nodeid = self.by_key.get(key)
            node = self.nodes.get(nodeid) if nodeid is not None else None
            if node is not None:
                os.close(fd)
                if node.program != program and node.nodeid != ROOT_ID:
                    raise OSError(errno.EINVAL, "inode already has a different program")
                if bpf_nodeid:
                    node.bpf_nodeid = bpf_nodeid
                node.lookups += 1
                return node
            node = Node(self.next_id, fd, key, st.st_mode & 0o170000, program, scope,
                        bpf_nodeid, lookups=1)
            self.next_id += 1
            self.nodes[node.nodeid] = node
            self.by_key[key] = node.nodeid
            return node

    def forget(self, nodeid: int, count: int) -> None:
        with self.lock:
            node = self.nodes.get(nodeid)
            if node is None or nodeid == ROOT_ID:
                return
            node.lookups -= count
            if node.lookups <= 0:
                del self.nodes[nodeid]
                if self.by_key.get(node.key) == nodeid:
                    del self.by_key[node.key]
                os.close(node.fd)

    def close_all(self) -> None:
        with self.lock:
            for node in self.nodes.values():
                try:
                    os.close(node.fd)
                except OSError:
                    pass
            self.nodes.clear()
            self.by_key.clear()

    def __len__(self) -> int:
        return len(self.nodes)
