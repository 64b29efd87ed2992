"""The node table: FUSE node ids -> backing inodes and attachments.

Like libfuse's passthrough_hp, every operation on a node is an *at() call
relative to an O_PATH|O_NOFOLLOW fd of its backing inode (never a path
string that could be redirected through symlinks, '..' or a concurrent
rename, and never longer than one component).  Nodes are keyed by
(st_dev, st_ino) so hard links share one node, as in the kernel.

Bounded fds (issue 11, item 2).  The kernel may know any number of inodes
(an ordinary user creating files makes it know more); one fd each would run
the daemon out of RLIMIT_NOFILE and every user would get EMFILE.  So, as
virtiofsd does with --inode-file-handles, a node keeps its inode as a *file
handle* (name_to_handle_at) and its O_PATH fd only in a bounded LRU cache;
an evicted node is reopened with open_by_handle_at (which needs
CAP_DAC_READ_SEARCH: fsuid 0 around the call).  Known inodes are then
limited by memory.  Nodes on filesystems that export no handles, the root,
and every node of a daemon without CAP_DAC_READ_SEARCH (mounted by an
ordinary user) keep their fd for good, as before.

Eviction never closes a fd an operation is using: `Node.fd` pins the node
for the calling thread's current operation (`NodeTable.operation()`,
around every Engine entry point), and only unpinned nodes are evicted; a
FORGET of a pinned node closes its fd when no operation uses it any more.

The fd budget (`FdBudget`, from RLIMIT_NOFILE at start) splits the fd table
into the node cache, open files and directories (`max_handles`), and a
reserve for everything else (/dev/fuse, the control socket and its clients,
logs, JIT files), so `fdsl stats` and lookups keep working when users open
many files.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import os
import resource
import threading
from dataclasses import dataclass, field
from typing import Iterator

from . import sysio

ROOT_ID = 1
_REOPEN_FLAGS = os.O_PATH | os.O_CLOEXEC     # a handle names the inode: nothing to follow
FD_RESERVE_MAX = 256                         # fds kept free for the daemon's own use
FD_CACHE_MAX = 16384                         # O_PATH fds of nodes kept open at most
_HANDLE_LATER = b""                          # Node.handle: evictable, handle taken on eviction


@dataclass(frozen=True)
class FdBudget:
    """How the daemon's RLIMIT_NOFILE is shared out (see the module docstring)."""

    limit: int
    reserve: int
    node_cache: int
    max_handles: int

    @classmethod
    def for_limit(cls, limit: int) -> "FdBudget":
        reserve = min(FD_RESERVE_MAX, limit // 4)
        cache = max(16, min(FD_CACHE_MAX, (limit - reserve) // 2))
        return cls(limit, reserve, cache, max(16, limit - reserve - cache))

    @classmethod
    def current(cls) -> "FdBudget":
        """From the soft RLIMIT_NOFILE; $FDSL_NODE_FD_CACHE (if set) sizes the node cache
        instead (tests run whole mounts with a cache of 1 to exercise reopening)."""
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        budget = cls.for_limit(1 << 20 if soft == resource.RLIM_INFINITY else soft)
        override = os.environ.get("FDSL_NODE_FD_CACHE", "")
        if override.isdigit() and int(override) > 0:
            budget = dataclasses.replace(budget, node_cache=min(int(override), budget.node_cache))
        return budget


@dataclass(eq=False)
class Node:
    nodeid: int
    key: tuple[int, int]         # (st_dev, st_ino) of the backing inode
    mode: int                    # file type bits (st_mode & S_IFMT) at lookup
    program: str | None = None   # attached program section, None = always BACKING
    scope: object = None         # position in the policy's scope trie (policy-defined)
    bpf_nodeid: int = 0          # what programs see as ctx.nodeid (a lookup post may set it)
    lookups: int = 0             # kernel lookup count (FORGET decrements)
    handle: bytes | None = None  # struct file_handle; None = the fd is kept for good
    mount_id: int = 0
    table: "NodeTable | None" = field(default=None, repr=False)
    _fd: int = -1                # O_PATH fd while cached, -1 when evicted
    forgotten: bool = False

    @property
    def fd(self) -> int:
        """O_PATH|O_NOFOLLOW fd of the backing inode, valid until the current operation ends."""
        if self.table is None:
            return self._fd
        return self.table.fd_of(self)

    @property
    def is_dir(self) -> bool:
        return (self.mode & 0o170000) == 0o040000

    @property
    def ctx_nodeid(self) -> int:
        return self.bpf_nodeid or self.nodeid


class _ThreadState(threading.local):
    depth = 0
    pinned: list[Node]
    registered = False

    def __init__(self) -> None:
        self.pinned = []


@dataclass
class NodeTable:
    """Thread-safe map of node ids; worker threads look nodes up concurrently."""

    budget: FdBudget = field(default_factory=FdBudget.current)
    nodes: dict[int, Node] = field(default_factory=dict)
    by_key: dict[tuple[int, int], int] = field(default_factory=dict)
    next_id: int = ROOT_ID + 1
    lock: threading.RLock = field(default_factory=threading.RLock)
    cached: collections.OrderedDict[int, Node] = field(default_factory=collections.OrderedDict)
    mount_fds: dict[int, int] = field(default_factory=dict)   # mount id -> O_RDONLY dir fd
    reopened: int = 0
    handles: bool = True                 # reopening by file handle works (set by add_root)
    _thread: _ThreadState = field(default_factory=_ThreadState)
    _pin_lists: list[list[Node]] = field(default_factory=list)  # every thread's `pinned`
    _forgotten: list[Node] = field(default_factory=list)        # closed once unpinned

    # ---------------------------------------------------------- operations
    # A node is pinned while it is in the `pinned` list of a thread inside an
    # operation.  Pins are added under the lock (fd_of) and dropped without it
    # (clearing the list when the operation ends): an evictor that still sees
    # a pin only keeps a fd open a little longer.

    @contextlib.contextmanager
    def operation(self) -> Iterator[None]:
        """One engine operation: the fds it takes stay open until it ends.  (Engine entry
        points do the same inline: `thread_state().depth += 1` ... `end_operation`.)"""
        state = self._thread
        state.depth += 1
        try:
            yield
        finally:
            state.depth -= 1
            if not state.depth:
                self.end_operation(state)

    def thread_state(self) -> _ThreadState:
        return self._thread

    def end_operation(self, state: _ThreadState) -> None:
        """The calling thread's outermost operation ended: drop its pins."""
        if state.pinned:
            state.pinned.clear()
            if self._forgotten or len(self.cached) > self.budget.node_cache:
                self._sweep()

    def _sweep(self) -> None:
        with self.lock:
            self._evict()

    def fd_of(self, node: Node) -> int:
        if node.handle is None:                 # kept for good (root, no file handles)
            return node._fd
        state = self._thread
        if node in state.pinned and node._fd >= 0:  # pinned by us: nobody closes it
            return node._fd
        with self.lock:
            if node._fd < 0:
                if node.forgotten:
                    raise OSError(errno.ESTALE, "node already forgotten")
                node._fd = self._reopen(node)
                self.reopened += 1
                self.cached[node.nodeid] = node
                reopened = True
            else:
                if node.nodeid in self.cached:
                    self.cached.move_to_end(node.nodeid)
                reopened = False
            if state.depth and node not in state.pinned:
                if not state.registered:
                    self._pin_lists.append(state.pinned)
                    state.registered = True
                state.pinned.append(node)
            if reopened:
                self._evict()
            return node._fd

    def _pinned(self) -> set[int]:
        return {id(n) for pins in self._pin_lists for n in list(pins)}

    def _reopen(self, node: Node) -> int:
        mount_fd = self.mount_fds.get(node.mount_id)
        if mount_fd is None or node.handle is None:
            raise OSError(errno.ESTALE, "no mount fd for the node's file handle")
        previous = sysio.swap_fsuid(0)          # CAP_DAC_READ_SEARCH back for one call
        try:
            return sysio.open_by_handle(mount_fd, node.handle, _REOPEN_FLAGS)
        finally:
            if previous != 0:
                sysio.swap_fsuid(previous)

    def _evict(self) -> None:
        """Close the least recently used unpinned fds beyond the cache size, and the fds
        of forgotten nodes nobody uses any more.  Called with the lock held."""
        excess = len(self.cached) - self.budget.node_cache
        if excess <= 0 and not self._forgotten:
            return
        pinned = self._pinned()
        for node in self._forgotten:
            if id(node) not in pinned:
                self._close(node)
        self._forgotten = [n for n in self._forgotten if n._fd >= 0]
        excess = len(self.cached) - self.budget.node_cache
        if excess <= 0:
            return
        # Oldest first, and only as far as needed: once the cache is full every
        # new node evicts one, so copying the whole key list here made each
        # lookup cost O(cache size).
        victims = []
        for node in self.cached.values():
            if id(node) not in pinned:
                victims.append(node)
                if len(victims) == excess:
                    break
        for node in victims:
            del self.cached[node.nodeid]
            if node.handle == _HANDLE_LATER and not self._take_handle(node):
                continue                        # no handle: it keeps its fd for good
            os.close(node._fd)
            node._fd = -1

    # ------------------------------------------------------------- handles

    def _adopt(self, node: Node, fd: int) -> None:
        """Give a new node its fd; with a file handle, the fd joins the evictable cache.

        Directories get their handle at once (the first one of a mount opens
        the mount fd reopening needs); other nodes only when they are evicted
        (`_HANDLE_LATER`): most never are, and name_to_handle_at through ctypes
        was the largest single cost of a READDIRPLUS entry."""
        node._fd = fd
        node.table = self
        if not self.handles:
            return
        if not node.is_dir:
            node.handle = _HANDLE_LATER
            self.cached[node.nodeid] = node
            return
        if self._take_handle(node):
            self.cached[node.nodeid] = node

    def _take_handle(self, node: Node) -> bool:
        """Give `node` its file handle; False (and handle None: the fd is kept for
        good) where the filesystem has none or its mount cannot be reopened."""
        try:
            node.handle, node.mount_id = sysio.name_to_handle(node._fd)
        except OSError:
            node.handle = None
            return False
        if node.mount_id not in self.mount_fds and not self._add_mount_fd(node):
            node.handle = None
            return False
        return True

    def _probe(self, node: Node) -> bool:
        """Can this daemon reopen by handle?  Not without CAP_DAC_READ_SEARCH (a daemon
        mounted by an ordinary user): then every node keeps its fd, as before."""
        try:
            os.close(self._reopen(node))
            return True
        except OSError:
            return False

    def _add_mount_fd(self, node: Node) -> bool:
        """open_by_handle_at wants a non-O_PATH fd on the mount: open a directory of it."""
        if not node.is_dir:
            return False
        previous = sysio.swap_fsuid(0)
        try:
            fd = os.open(sysio.proc_fd_path(node._fd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return False
        finally:
            if previous != 0:
                sysio.swap_fsuid(previous)
        self.mount_fds[node.mount_id] = fd
        return True

    # ---------------------------------------------------------------- nodes

    def add_root(self, fd: int, program: str | None, scope: object) -> Node:
        st = os.fstat(fd)
        node = Node(ROOT_ID, (st.st_dev, st.st_ino), st.st_mode & 0o170000, program, scope,
                    lookups=1 << 62)
        with self.lock:
            self._adopt(node, fd)
            self.cached.pop(ROOT_ID, None)      # the root keeps its fd for good
            if node.handle is not None:
                self.handles = self._probe(node)
            node.handle = None
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
            if node is not None and self._reused(node, fd):
                del self.by_key[key]            # the old node stays until its FORGET
                node = None
            if node is not None:
                os.close(fd)
                if node.program != program and node.nodeid != ROOT_ID:
                    raise OSError(errno.EINVAL, "inode already has a different program")
                if bpf_nodeid:
                    node.bpf_nodeid = bpf_nodeid
                node.lookups += 1
                return node
            node = Node(self.next_id, key, st.st_mode & 0o170000, program, scope,
                        bpf_nodeid, lookups=1)
            self.next_id += 1
            self._adopt(node, fd)
            self.nodes[node.nodeid] = node
            self.by_key[key] = node.nodeid
            self._evict()
            return node

    def attach_known(self, st: os.stat_result, program: str | None) -> Node | None:
        """`attach` without a fd: the known node of a looked-up inode (one more kernel
        lookup), if it holds its fd open; None = open one and `attach`.

        A node's open fd keeps its inode, and so its number, alive: a stat of
        the name with that (st_dev, st_ino) is that very inode (no reuse check,
        no second fd to open and close)."""
        key = (st.st_dev, st.st_ino)
        with self.lock:
            nodeid = self.by_key.get(key)
            node = self.nodes.get(nodeid) if nodeid is not None else None
            if node is None or node._fd < 0:
                return None
            if node.program != program and node.nodeid != ROOT_ID:
                raise OSError(errno.EINVAL, "inode already has a different program")
            node.lookups += 1
            return node

    def _reused(self, node: Node, fd: int) -> bool:
        """Is `fd` a new inode that got the inode number of a deleted one we know?

        While a node's fd is open it keeps its inode (and so its number) alive;
        an evicted node does not, and the backing fs may give its number to a
        new file: same (st_dev, st_ino), another file handle (generation)."""
        if node._fd >= 0 or node.handle is None:
            return False
        try:
            return sysio.name_to_handle(fd)[0] != node.handle
        except OSError:
            return False

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
                node.forgotten = True
                if id(node) in self._pinned():
                    self._forgotten.append(node)    # closed by a later _evict
                else:
                    self._close(node)

    def _close(self, node: Node) -> None:
        self.cached.pop(node.nodeid, None)
        if node._fd >= 0:
            os.close(node._fd)
            node._fd = -1

    def open_fds(self) -> int:
        """O_PATH fds the table holds now (cached, kept for good, mount fds)."""
        with self.lock:
            return sum(1 for n in self.nodes.values() if n._fd >= 0) + len(self.mount_fds)

    def close_all(self) -> None:
        with self.lock:
            for fd in [n._fd for n in self.nodes.values() if n._fd >= 0] + list(self.mount_fds.values()):
                try:
                    os.close(fd)
                except OSError:
                    pass
            for node in self.nodes.values():
                node._fd = -1
            self.nodes.clear()
            self.by_key.clear()
            self.cached.clear()
            self.mount_fds.clear()

    def __len__(self) -> int:
        return len(self.nodes)
