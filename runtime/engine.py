"""The transport-independent filesystem engine.

Takes plain values (node ids, name bytes, a `Caller`, flags) and returns
plain results (`Entry`, `Attr`, bytes); errors are raised as `OSError` with
the errno the FUSE reply should carry.  Nothing here knows pyfuse3, so a
later /dev/fuse transport (kernel FUSE_PASSTHROUGH, fuse-bpf kernels) can
drive the same engine.

Every operation is expressed the way spec section 9 describes it: a list of
input arguments and a list of outputs (struct arguments as dicts of field
values, strings and buffers as bytes), and a *backing step* that consumes the
(possibly modified) inputs and produces the outputs.  `Policy.run` (see
`policy.py`) wraps the backing step in the pre -> user prefilter -> backing ->
post -> user postfilter sequence of section 6; finalization (section 9's
"finalize" column) happens here, after the sequence.

Methods are blocking and thread-safe.  Each runs its backing step under the
caller's credentials (`identity.as_caller`) where the backing filesystem
checks permissions; the adapter decides which thread runs it (see
`fuse_adapter`).  Operations whose backing step checks nothing (getattr on
an O_PATH fd, readlink, statfs, release) skip the credential switch.

Caching: every reply carries the timeouts the kernel may cache it for, chosen
per node by the policy (`attr_timeout`, `entry_timeout`): the configured
ones where the rules involved are deterministic given the backing state, 0
where they depend on the caller or count/log.
"""
from __future__ import annotations

import errno
import functools
import os
import stat
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from . import scopes, sysio
from .identity import ROOT, Caller, as_caller, thread_umask
from .nodes import ROOT_ID, Node, NodeTable

OPATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
ACTION_KEEP, ACTION_REMOVE, ACTION_REPLACE = 0, 1, 2


@dataclass
class Attr:
    """Attributes of a node as FUSE reports them (`ino` = our node id)."""

    ino: int
    mode: int
    nlink: int
    uid: int
    gid: int
    rdev: int
    size: int
    blocks: int
    blksize: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    timeout: float = 1.0

    @classmethod
    def from_stat(cls, nodeid: int, st: os.stat_result, timeout: float) -> "Attr":
        return cls(nodeid, st.st_mode, st.st_nlink, st.st_uid, st.st_gid, st.st_rdev,
                   st.st_size, st.st_blocks, st.st_blksize, st.st_atime_ns, st.st_mtime_ns,
                   st.st_ctime_ns, timeout)

    def to_fuse(self) -> dict[str, int]:
        """fuse_attr field values (section 10)."""
        return {
            "ino": self.ino, "size": self.size, "blocks": self.blocks,
            "atime": self.atime_ns // 10**9, "mtime": self.mtime_ns // 10**9,
            "ctime": self.ctime_ns // 10**9, "atimensec": self.atime_ns % 10**9,
            "mtimensec": self.mtime_ns % 10**9, "ctimensec": self.ctime_ns % 10**9,
            "mode": self.mode, "nlink": self.nlink, "uid": self.uid, "gid": self.gid,
            "rdev": self.rdev & 0xFFFFFFFF, "blksize": self.blksize, "flags": 0,
        }

    def update_from_fuse(self, values: dict[str, int], prefix: str = "") -> None:
        """Apply post-filtered fuse_attr fields (finalize of getattr/lookup)."""
        g = lambda name: values.get(prefix + name)  # noqa: E731
        for name in ("size", "blocks", "mode", "nlink", "uid", "gid", "rdev", "blksize"):
            v = g(name)
            if v is not None:
                setattr(self, name, v)
        for t in ("atime", "mtime", "ctime"):
            sec, nsec = g(t), g(t + "nsec")
            if sec is not None and nsec is not None:
                setattr(self, t + "_ns", sec * 10**9 + nsec)


@dataclass
class Entry:
    """Reply to lookup/create/mkdir/...: node id, attributes, cache timeouts."""

    nodeid: int
    attr: Attr
    entry_timeout: float
    generation: int = 0


@dataclass
class DirEntry:
    name: bytes
    entry: Entry | None      # None: no attributes ("." / "..", or a lookup that failed)
    next_offset: int
    ino: int = 0             # inode number reported when `entry` is None
    dtype: int = 0           # DT_* type reported when `entry` is None (0 = unknown)


@dataclass
class OpenFile:
    fd: int
    node: Node
    caller: Caller           # who opened it: READ/WRITE requests carry no caller in pyfuse3
    flags: int
    written: bool = False    # a write since the last flush: flushing may wait for I/O


@dataclass
class OpenDir:
    fd: int
    node: Node
    caller: Caller
    names: list[tuple[bytes, int, int]] | None = None  # (name, d_ino, d_type) snapshot
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class StatFs:
    bsize: int
    frsize: int
    blocks: int
    bfree: int
    bavail: int
    files: int
    ffree: int
    favail: int
    namemax: int


@dataclass
class SetAttrRequest:
    """What to change; None = leave alone.  `*_now` = UTIME_NOW."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime_ns: int | None = None
    mtime_ns: int | None = None
    atime_now: bool = False
    mtime_now: bool = False


@dataclass
class EngineOptions:
    entry_timeout: float = 1.0
    attr_timeout: float = 1.0
    switch_identity: bool = True   # run backing ops with the caller's fsuid/fsgid/groups


class PassthroughPolicy:
    """No program anywhere: every operation is its backing step (spec 3: 'no program
    behaves like a program that always returns BACKING')."""

    readdir_filtered = False

    def attr_timeout(self, node: Node, default: float) -> float:
        return default

    def entry_timeout(self, parent: Node, default: float) -> float:
        return default

    def has_rules(self, node: Node, op: str) -> bool:
        return False

    def root_attachment(self) -> tuple[str | None, object]:
        return None, None

    def child_attachment(self, parent: Node, name: bytes) -> tuple[str, Any] | None:
        return None

    def run(self, node: Node, op: str, ins: list, outs: list,
            backing: Callable[[list], list], caller: Caller, ctx_nodeid: int | None = None) -> list:
        return backing(ins)

    def filter_dirents(self, node: Node, listing: list[bytes] | list[tuple[bytes, int, int]],
                       offset: int, caller: Caller) -> list[bytes]:
        return [e[0] if isinstance(e, tuple) else e for e in listing]

    def has_program(self, node: Node) -> bool:
        return False

    def runs_program(self, node: Node, op: str) -> bool:
        return False


class Engine:
    def __init__(self, backing_root: str | os.PathLike | int, policy: Any = None,
                 options: EngineOptions | None = None) -> None:
        self.options = options or EngineOptions()
        self.policy = policy or PassthroughPolicy()
        self.nodes = NodeTable()
        self.files: dict[int, OpenFile | OpenDir] = {}
        self._next_fh = 1
        self._fh_lock = threading.Lock()
        if isinstance(backing_root, int):
            root_fd = os.open(sysio.proc_fd_path(backing_root), OPATH_FLAGS & ~os.O_NOFOLLOW)
        else:
            root_fd = os.open(os.fspath(backing_root), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        program, scope = self.policy.root_attachment()
        self.root = self.nodes.add_root(root_fd, program, scope)

    # ------------------------------------------------------------ helpers

    def _attr(self, node: Node, st: os.stat_result, filtered: bool = False) -> Attr:
        """Attributes for a reply, with how long the kernel may cache them.

        `filtered`: they went through the node's getattr rules (a GETATTR reply),
        cacheable unless those rules must see every stat.  Unfiltered backing
        attributes (the replies to lookup, setattr, create, ...) are cacheable
        only where no getattr rule could rewrite them: otherwise timeout 0, so
        the next stat asks GETATTR, as a fuse-bpf kernel runs the program."""
        if filtered or not self.policy.has_rules(node, "getattr"):
            timeout = self.policy.attr_timeout(node, self.options.attr_timeout)
        else:
            timeout = 0.0
        return Attr.from_stat(node.nodeid, st, timeout)

    def _entry(self, node: Node, st: os.stat_result, parent: Node) -> Entry:
        """Entry of `node` found in `parent`: the parent's lookup rules decide whether
        the name may be cached (and so the attributes the lookup reply carries)."""
        attr = self._attr(node, st)
        entry_timeout = self.policy.entry_timeout(parent, self.options.entry_timeout)
        if entry_timeout == 0:
            attr.timeout = 0.0
        return Entry(node.nodeid, attr, entry_timeout)

    def _new_fh(self, obj: OpenFile | OpenDir) -> int:
        with self._fh_lock:
            if len(self.files) >= self.nodes.budget.max_handles:
                os.close(obj.fd)  # the rest of the fd table is the daemon's reserve
                raise OSError(errno.ENFILE, "too many open files in this mount")
            fh = self._next_fh
            self._next_fh += 1
            self.files[fh] = obj
            return fh

    def _file(self, fh: int) -> OpenFile:
        obj = self.files.get(fh)
        if not isinstance(obj, OpenFile):
            raise OSError(errno.EBADF, "bad file handle")
        return obj

    def _dir(self, fh: int) -> OpenDir:
        obj = self.files.get(fh)
        if not isinstance(obj, OpenDir):
            raise OSError(errno.EBADF, "bad directory handle")
        return obj

    def _caller_scope(self, caller: Caller) -> as_caller:
        return as_caller(caller, self.options.switch_identity)

    @staticmethod
    def _check_name(name: bytes) -> None:
        if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
            raise OSError(errno.EINVAL if name in (b".", b"..") else errno.ENOENT, "bad name")
        if len(name) > 255:
            raise OSError(errno.ENAMETOOLONG, "name too long")

    # ------------------------------------------------------------- lookup

    def lookup(self, parent_id: int, name: bytes, caller: Caller) -> Entry:
        """LOOKUP on the parent (spec 3.2/9): backing lookup, filters, attach."""
        parent = self.nodes.get(parent_id)
        self._check_name(name)
        with self._caller_scope(caller):
            return self._lookup(parent, name, caller)

    def _lookup(self, parent: Node, name: bytes, caller: Caller) -> Entry:
        found: dict[str, Any] = {}

        def backing(ins: list) -> list:
            # The backing lookup uses the original name (LOOKUP honours no input).
            fd = os.open(name, OPATH_FLAGS, dir_fd=parent.fd)
            try:
                st = os.fstat(fd)
            except OSError:
                os.close(fd)
                raise
            found["fd"], found["st"] = fd, st
            if not self.policy.runs_program(parent, "lookup"):
                return [{}, {}]  # no program will read the outputs: skip building them
            existing = self.nodes.find_key((st.st_dev, st.st_ino))
            nodeid = existing.ctx_nodeid if existing else 0
            attr = Attr.from_stat(nodeid, st, self.options.attr_timeout)
            entry_out = {"nodeid": nodeid, "generation": 0,
                         **{f"attr.{k}": v for k, v in attr.to_fuse().items()}}
            return [entry_out, {"backing_action": ACTION_KEEP, "backing_fd": 0,
                                "bpf_action": ACTION_KEEP, "bpf_fd": 0}]

        try:
            outs = self.policy.run(parent, "lookup", [name], [{}, {}], backing, caller)
        except BaseException:
            if "fd" in found:
                os.close(found["fd"])
            raise
        fd, st = found["fd"], found["st"]
        entry_out, bpf_out = outs[0], outs[1]
        try:
            program, scope, fd, st = self._attachment(parent, name, fd, st, bpf_out)
        except BaseException:
            os.close(fd)
            raise
        node = self.nodes.attach(fd, st, program, scope, bpf_nodeid=entry_out.get("nodeid", 0))
        # Spec 3.2: the new inode's attributes come from the backing inode; a lookup
        # postfilter's out.attr writes are ignored (rewrites belong in getattr post).
        entry = self._entry(node, st, parent)
        entry.attr.ino = node.nodeid
        return entry

    def _attachment(self, parent: Node, name: bytes, fd: int, st: os.stat_result,
                    bpf_out: dict[str, int]) -> tuple[str | None, Any, int, os.stat_result]:
        """Program and backing of a new child (spec 3.2 KEEP/REMOVE/REPLACE).

        The lookup's fuse_entry_bpf_out decides first (a BPF postfilter can
        only KEEP or REMOVE); then the policy's scope table acts as the
        daemon's own lookup postfilter would: an `under` scope REPLACEs the
        program, `passthrough` REMOVEs it, `backing` REPLACEs the backing dir.
        """
        if bpf_out.get("backing_action") == ACTION_REPLACE or bpf_out.get("bpf_action") == ACTION_REPLACE:
            raise OSError(errno.EINVAL, "a BPF postfilter cannot REPLACE (spec 3.2)")
        if bpf_out.get("backing_action") == ACTION_REMOVE:
            raise OSError(errno.EIO, "backing REMOVE: no classic FUSE server behind this node")
        program = parent.program if bpf_out.get("bpf_action", ACTION_KEEP) == ACTION_KEEP else None
        scope = None
        decided = self.policy.child_attachment(parent, name)
        if decided is not None:
            action, scope, new_program, backing_dir = decided
            if action in ("rules", "passthrough"):
                program = new_program
            if action == "backing" and backing_dir is not None:
                new_fd = os.open(backing_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                os.close(fd)
                fd, st = new_fd, os.fstat(new_fd)
                program = new_program
        return program, scope, fd, st

    def forget(self, nodeid: int, count: int) -> None:
        self.nodes.forget(nodeid, count)

    # ------------------------------------------------------------ getattr

    def getattr(self, nodeid: int, caller: Caller, fh: int | None = None) -> Attr:
        # fstat of an O_PATH fd checks no permission: no credential switch needed
        # (the programs get the caller's ids from `caller` itself).
        node = self.nodes.get(nodeid)
        if not self.policy.runs_program(node, "getattr"):  # passthrough: no argument dicts
            return self._attr(node, os.fstat(node.fd), filtered=True)
        holder: dict[str, os.stat_result] = {}

        def backing(ins: list) -> list:
            st = os.fstat(node.fd)
            holder["st"] = st
            attr = Attr.from_stat(node.ctx_nodeid, st, self.options.attr_timeout)
            return [{"attr_valid": 1, "attr_valid_nsec": 0,
                     **{f"attr.{k}": v for k, v in attr.to_fuse().items()}}]

        outs = self.policy.run(node, "getattr", [{"getattr_flags": 0, "fh": 2**64 - 1}],
                               [{}], backing, caller)
        attr = self._attr(node, holder["st"], filtered=True)
        attr.update_from_fuse(outs[0], "attr.")
        attr.ino = node.nodeid
        return attr

    def setattr(self, nodeid: int, req: SetAttrRequest, fh: int | None, caller: Caller) -> Attr:
        node = self.nodes.get(nodeid)
        valid = 0
        values: dict[str, int] = {}
        if req.mode is not None:
            valid |= 1
            values["mode"] = req.mode
        if req.uid is not None:
            valid |= 2
            values["uid"] = req.uid
        if req.gid is not None:
            valid |= 4
            values["gid"] = req.gid
        if req.size is not None:
            valid |= 8
            values["size"] = req.size
        if req.atime_ns is not None or req.atime_now:
            valid |= 128 if req.atime_now else 16
            ns = req.atime_ns or 0
            values.update(atime=ns // 10**9, atimensec=ns % 10**9)
        if req.mtime_ns is not None or req.mtime_now:
            valid |= 256 if req.mtime_now else 32
            ns = req.mtime_ns or 0
            values.update(mtime=ns // 10**9, mtimensec=ns % 10**9)
        if fh is not None:
            valid |= 64
            values["fh"] = fh
        values["valid"] = valid
        open_file = self.files.get(fh) if fh is not None else None

        def backing(ins: list) -> list:
            # Honoured: the values; which attributes change comes from the request.
            v = ins[0]
            if req.mode is not None:
                if stat.S_ISLNK(node.mode):
                    raise OSError(errno.EOPNOTSUPP, "chmod of a symlink")
                if self._is_kill_suid(node, req, v["mode"], caller):
                    # With a size, the truncate below (as the caller) clears the
                    # bits on the backing fs; alone, it precedes the caller's write.
                    if req.size is None:
                        with as_caller(ROOT, self.options.switch_identity):
                            os.chmod(sysio.proc_fd_path(node.fd), v["mode"] & 0o7777)
                else:
                    os.chmod(sysio.proc_fd_path(node.fd), v["mode"] & 0o7777)
            if req.uid is not None or req.gid is not None:
                sysio.fchown_fd(node.fd, v["uid"] if req.uid is not None else -1,
                                v["gid"] if req.gid is not None else -1)
            if req.size is not None:
                if isinstance(open_file, OpenFile):
                    os.ftruncate(open_file.fd, v["size"])
                else:
                    os.truncate(sysio.proc_fd_path(node.fd), v["size"])
            if req.atime_ns is not None or req.mtime_ns is not None or req.atime_now or req.mtime_now:
                a = None if (req.atime_ns is None or req.atime_now) else v["atime"] * 10**9 + v["atimensec"]
                m = None if (req.mtime_ns is None or req.mtime_now) else v["mtime"] * 10**9 + v["mtimensec"]
                sysio.utimens_fd(node.fd, a, m, req.atime_now, req.mtime_now)
            return [{}]

        with self._caller_scope(caller):
            self.policy.run(node, "setattr", [values], [{}], backing, caller)
            st = os.fstat(node.fd)
        return self._attr(node, st)

    def _is_kill_suid(self, node: Node, req: SetAttrRequest, mode: int, caller: Caller) -> bool:
        """A SETATTR whose mode change only clears S_ISUID/S_ISGID, from a non-owner who
        may write the file: the kernel's suid/sgid kill before a write or truncate
        (it sends one unless FUSE_HANDLE_KILLPRIV was negotiated, which libfuse 3.14
        does not pass on; see `fuseconn`).  The backing fs clears the bits itself
        when the caller writes, so clearing them with privilege grants nothing the
        caller could not get by writing; run as the caller, the chmod is EPERM."""
        if req.uid is not None or req.gid is not None or not self.options.switch_identity:
            return False  # (a truncate comes as mode + size: the size part runs as the caller)
        st = os.fstat(node.fd)
        if caller.uid in (0, st.st_uid) or not stat.S_ISREG(st.st_mode):
            return False
        current = st.st_mode & 0o7777
        kill = current & ~(mode & 0o7777)
        if not kill or kill & ~(stat.S_ISUID | stat.S_ISGID) or mode & 0o7777 & ~current:
            return False
        return os.access(sysio.proc_fd_path(node.fd), os.W_OK, effective_ids=True)

    # ----------------------------------------------------------- symlinks

    def readlink(self, nodeid: int, caller: Caller) -> bytes:
        node = self.nodes.get(nodeid)
        result: dict[str, bytes] = {}

        def backing(ins: list) -> list:
            result["target"] = os.readlink(b"", dir_fd=node.fd)
            return []

        # readlinkat(fd, "") on an O_PATH fd checks no permission.
        self.policy.run(node, "readlink", [b""], [], backing, caller)
        return result["target"]

    # ---------------------------------------------------- namespace: create

    def _created(self, parent: Node, name: bytes, caller: Caller) -> Entry:
        """Entry of a just-created child: found like a lookup (scope attach included)."""
        fd = os.open(name, OPATH_FLAGS, dir_fd=parent.fd)
        st = os.fstat(fd)
        try:
            program, scope, fd, st = self._attachment(parent, name, fd, st, {})
        except BaseException:
            os.close(fd)
            raise
        node = self.nodes.attach(fd, st, program, scope)
        return self._entry(node, st, parent)

    def mknod(self, parent_id: int, name: bytes, mode: int, rdev: int, umask: int,
              caller: Caller) -> Entry:
        parent = self.nodes.get(parent_id)
        self._check_name(name)

        def backing(ins: list) -> list:
            v = ins[0]
            with thread_umask(v["umask"]):
                os.mknod(name, v["mode"], v["rdev"], dir_fd=parent.fd)
            return []

        with self._caller_scope(caller):
            self.policy.run(parent, "mknod", [{"mode": mode, "rdev": rdev, "umask": umask}, name],
                            [], backing, caller)
            return self._created(parent, name, caller)

    def mkdir(self, parent_id: int, name: bytes, mode: int, umask: int, caller: Caller) -> Entry:
        parent = self.nodes.get(parent_id)
        self._check_name(name)

        def backing(ins: list) -> list:
            v = ins[0]
            with thread_umask(v["umask"]):
                os.mkdir(name, v["mode"] & 0o7777, dir_fd=parent.fd)
            return []

        with self._caller_scope(caller):
            self.policy.run(parent, "mkdir", [{"mode": mode, "umask": umask}, name],
                            [], backing, caller)
            return self._created(parent, name, caller)

    def symlink(self, parent_id: int, name: bytes, target: bytes, caller: Caller) -> Entry:
        parent = self.nodes.get(parent_id)
        self._check_name(name)

        def backing(ins: list) -> list:
            os.symlink(target, name, dir_fd=parent.fd)
            return []

        with self._caller_scope(caller):
            self.policy.run(parent, "symlink", [name, target], [], backing, caller)
            return self._created(parent, name, caller)

    def link(self, nodeid: int, new_parent_id: int, new_name: bytes, caller: Caller) -> Entry:
        node = self.nodes.get(nodeid)
        parent = self.nodes.get(new_parent_id)
        self._check_name(new_name)

        def backing(ins: list) -> list:
            # linkat(fd, "", ..., AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH; the
            # /proc magic link with AT_SYMLINK_FOLLOW works for any caller.
            if scopes.link_crosses(self.policy, node, parent, new_name):
                raise OSError(errno.EXDEV, "hard link across a scope boundary")
            if stat.S_ISLNK(node.mode):
                _linkat_empty(node.fd, parent.fd, new_name)
            else:
                os.link(sysio.proc_fd_path(node.fd), new_name, dst_dir_fd=parent.fd,
                        follow_symlinks=True)
            return []

        with self._caller_scope(caller):
            self.policy.run(parent, "link", [{"oldnodeid": node.ctx_nodeid}, new_name], [],
                            backing, caller, ctx_nodeid=0)
            st = os.fstat(node.fd)
            with self.nodes.lock:
                node.lookups += 1
            return self._entry(node, st, parent)

    def create(self, parent_id: int, name: bytes, mode: int, flags: int, umask: int,
               caller: Caller) -> tuple[Entry, int]:
        parent = self.nodes.get(parent_id)
        self._check_name(name)
        made: dict[str, Any] = {}

        def backing(ins: list) -> list:
            v, real_name = ins[0], ins[1]  # CREATE honours mode and the name
            self._check_name(real_name)
            oflags = (v["flags"] | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC) & ~os.O_NOCTTY
            with thread_umask(umask):
                fd = os.open(real_name, oflags, v["mode"] & 0o7777, dir_fd=parent.fd)
            made["fd"], made["name"] = fd, real_name
            return [{"nodeid": 0}, {"fh": 0, "open_flags": 0}]

        with self._caller_scope(caller):
            try:
                outs = self.policy.run(parent, "create",
                                       [{"flags": flags, "mode": mode, "umask": umask}, name],
                                       [{}, {}], backing, caller)
                entry = self._created(parent, made["name"], caller)
            except BaseException:
                if "fd" in made:
                    os.close(made["fd"])
                raise
        node = self.nodes.get(entry.nodeid)
        if outs and outs[0].get("nodeid"):
            node.bpf_nodeid = outs[0]["nodeid"]
        try:
            fh = self._new_fh(OpenFile(made["fd"], node, caller, flags))
        except OSError:
            self.nodes.forget(entry.nodeid, 1)  # the kernel gets no entry: no FORGET either
            raise
        return entry, fh

    # --------------------------------------------------- namespace: remove

    def unlink(self, parent_id: int, name: bytes, caller: Caller) -> None:
        parent = self.nodes.get(parent_id)
        self._check_name(name)

        def backing(ins: list) -> list:
            os.unlink(name, dir_fd=parent.fd)
            return []

        with self._caller_scope(caller):
            self.policy.run(parent, "unlink", [name], [], backing, caller)

    def rmdir(self, parent_id: int, name: bytes, caller: Caller) -> None:
        parent = self.nodes.get(parent_id)
        self._check_name(name)

        def backing(ins: list) -> list:
            os.rmdir(name, dir_fd=parent.fd)
            return []

        with self._caller_scope(caller):
            self.policy.run(parent, "rmdir", [name], [], backing, caller)

    def rename(self, parent_id: int, name: bytes, new_parent_id: int, new_name: bytes,
               flags: int, caller: Caller) -> None:
        parent = self.nodes.get(parent_id)
        new_parent = self.nodes.get(new_parent_id)
        self._check_name(name)
        self._check_name(new_name)
        if new_parent.key[0] != parent.key[0]:
            raise OSError(errno.EXDEV, "cross-device rename")

        def backing(ins: list) -> list:
            if scopes.rename_crosses(self.policy, parent, name, new_parent, new_name):
                raise OSError(errno.EXDEV, "rename across a scope boundary")
            real_flags = ins[0].get("flags", 0) if flags else 0
            sysio.renameat2(parent.fd, name, new_parent.fd, new_name, real_flags)
            return []

        op = "rename2" if flags else "rename"
        first = {"newdir": new_parent.ctx_nodeid}
        if flags:
            first["flags"] = flags
        with self._caller_scope(caller):
            self.policy.run(parent, op, [first, name, new_name], [], backing, caller)

    # ---------------------------------------------------------- open files

    def open(self, nodeid: int, flags: int, caller: Caller) -> int:
        node = self.nodes.get(nodeid)
        opened: dict[str, int] = {}

        def backing(ins: list) -> list:
            # The kernel resolved the path (O_NOFOLLOW on a symlink already gave
            # ELOOP there); reopening through the /proc magic link must follow it.
            oflags = (ins[0]["flags"] & ~(os.O_CREAT | os.O_EXCL | os.O_NOCTTY | os.O_NOFOLLOW)
                      ) | os.O_CLOEXEC
            opened["fd"] = os.open(sysio.proc_fd_path(node.fd), oflags)
            return [{"fh": 0, "open_flags": 0}]

        with self._caller_scope(caller):
            try:
                self.policy.run(node, "open", [{"flags": flags, "open_flags": 0}], [{}],
                                backing, caller)
            except BaseException:
                if "fd" in opened:
                    os.close(opened["fd"])
                raise
        return self._new_fh(OpenFile(opened["fd"], node, caller, flags))

    def read_cached(self, fh: int, offset: int, size: int) -> bytes | None:
        """The data, if no filter runs for this read and the page cache holds all of it.

        Lets the transport answer inline instead of paying a worker-thread hop;
        None means "take the normal path" (it may block, or a program must run).
        A short read is only returned at end of file: FUSE takes it as EOF.
        """
        f = self.files.get(fh)
        if not isinstance(f, OpenFile) or self.policy.runs_program(f.node, "read"):
            return None
        buf = bytearray(size)
        try:
            n = os.preadv(f.fd, [buf], offset, os.RWF_NOWAIT)
            if n < size and offset + n < os.fstat(f.fd).st_size:
                return None
        except OSError:          # EAGAIN (not cached) or a real error: the normal path decides
            return None
        return bytes(memoryview(buf)[:n])

    def read(self, fh: int, offset: int, size: int) -> bytes:
        f = self._file(fh)
        data: dict[str, bytes] = {}

        def backing(ins: list) -> list:
            data["buf"] = os.pread(f.fd, size, offset)
            return [{"ret": len(data["buf"])}]

        outs = self.policy.run(f.node, "read", [{"fh": fh, "offset": offset, "size": size}],
                               [{"ret": size}], backing, f.caller)
        buf = data.get("buf", b"")
        ret = outs[0].get("ret", len(buf)) if outs else len(buf)
        if ret < 0:
            raise OSError(-ret, "read failed")
        return buf[:ret]

    def write(self, fh: int, offset: int, buf: bytes) -> int:
        f = self._file(fh)
        f.written = True
        written: dict[str, int] = {}

        def backing(ins: list) -> list:
            written["n"] = os.pwrite(f.fd, buf, offset)
            return [{"ret": written["n"]}]

        # As the opener: a non-owner's write clears S_ISUID/S_ISGID on the backing
        # fs (FUSE_HANDLE_KILLPRIV leaves that to us), a privileged one does not.
        with self._caller_scope(f.caller):
            outs = self.policy.run(f.node, "write",
                                   # data: NULL pointer, size = byte count (spec 9)
                                   [{"fh": fh, "offset": offset, "size": len(buf)}, len(buf)],
                                   [{"ret": len(buf)}], backing, f.caller)
        ret = outs[0].get("ret", written.get("n", 0)) if outs else written.get("n", 0)
        if ret < 0:
            raise OSError(-ret, "write failed")
        return ret

    def flush_may_block(self, fh: int) -> bool:
        """Only a flush after writes can wait for the backing fs (dirty data, NFS)."""
        f = self.files.get(fh)
        return bool(getattr(f, "written", True))

    def flush(self, fh: int) -> None:
        f = self._file(fh)
        f.written = False

        def backing(ins: list) -> list:
            # close(dup(fd)) so the backing fs sees close(2) semantics (NFS, locks).
            os.close(os.dup(f.fd))
            return []

        self.policy.run(f.node, "flush", [{"fh": fh}], [], backing, f.caller)

    def release(self, fh: int) -> None:
        with self._fh_lock:
            f = self.files.pop(fh, None)
        if not isinstance(f, OpenFile):
            return
        os.close(f.fd)  # the backing file is dropped before the program runs (spec 9)
        try:
            self.policy.run(f.node, "release", [{"fh": fh, "flags": f.flags}], [],
                            lambda ins: [], f.caller)
        except OSError:
            pass

    def fsync(self, fh: int, datasync: bool) -> None:
        f = self._file(fh)

        def backing(ins: list) -> list:
            (os.fdatasync if ins[0]["fsync_flags"] & 1 else os.fsync)(f.fd)
            return []

        self.policy.run(f.node, "fsync", [{"fh": fh, "fsync_flags": int(datasync)}], [],
                        backing, f.caller)

    # ---------------------------------------------------------- directories

    def opendir(self, nodeid: int, caller: Caller) -> int:
        node = self.nodes.get(nodeid)
        opened: dict[str, int] = {}

        def backing(ins: list) -> list:
            opened["fd"] = os.open(sysio.proc_fd_path(node.fd),
                                   os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            return [{"fh": 0, "open_flags": 0}]

        with self._caller_scope(caller):
            try:
                self.policy.run(node, "opendir", [{"flags": os.O_RDONLY | os.O_DIRECTORY,
                                                   "open_flags": 0}], [{}], backing, caller)
            except BaseException:
                if "fd" in opened:
                    os.close(opened["fd"])
                raise
        return self._new_fh(OpenDir(opened["fd"], node, caller))

    def _snapshot(self, d: OpenDir) -> list[tuple[bytes, int, int]]:
        os.lseek(d.fd, 0, os.SEEK_SET)
        names = []
        with os.scandir(d.fd) as it:
            for e in it:
                try:
                    dtype = 4 if e.is_dir(follow_symlinks=False) else 10 if e.is_symlink() else 8
                except OSError:
                    dtype = 0
                names.append((os.fsencode(e.name), e.inode(), dtype))
        return names

    def readdir(self, fh: int, offset: int, caller: Caller, limit: int = 32) -> list[DirEntry]:
        """Up to `limit` entries after `offset`, each already looked up (readdirplus:
        every returned entry with an Entry counts one kernel lookup; the transport
        must `forget` the ones it could not send)."""
        d = self._dir(fh)
        with self._caller_scope(caller):
            with d.lock:
                if d.names is None or offset == 0:
                    d.names = self._snapshot(d)
                names = d.names
            out: list[DirEntry] = []
            # "." and ".." first (offsets 1, 2); the kernel takes no lookup count for them.
            if offset == 0:
                out.append(DirEntry(b".", None, 1, d.node.nodeid, 4))
            if offset <= 1:
                out.append(DirEntry(b"..", None, 2, ROOT_ID, 4))
            offset = max(offset, 2)
            index = offset - 2
            while index < len(names) and len(out) < limit:
                chunk = names[index:index + limit]
                visible = set(self.policy.filter_dirents(d.node, chunk, index, caller))
                for name, ino, dtype in chunk:
                    index += 1
                    if name not in visible:
                        continue
                    try:
                        entry = self._lookup(d.node, name, caller)
                    except OSError as err:
                        if err.errno in (errno.ENOENT, errno.ESTALE):
                            continue  # vanished since the snapshot, or hidden by a lookup rule
                        # e.g. EACCES in a directory without search permission: the
                        # name is still listed (as on the backing fs), without attributes.
                        entry = None
                    out.append(DirEntry(name, entry, index + 2, ino, dtype))
                    if len(out) >= limit:
                        break
            return out

    def releasedir(self, fh: int) -> None:
        with self._fh_lock:
            d = self.files.pop(fh, None)
        if isinstance(d, OpenDir):
            os.close(d.fd)
            try:
                self.policy.run(d.node, "releasedir", [{"fh": fh}], [], lambda ins: [], d.caller)
            except OSError:
                pass

    def fsyncdir(self, fh: int, datasync: bool) -> None:
        d = self._dir(fh)

        def backing(ins: list) -> list:
            (os.fdatasync if ins[0]["fsync_flags"] & 1 else os.fsync)(d.fd)
            return []

        self.policy.run(d.node, "fsyncdir", [{"fh": fh, "fsync_flags": int(datasync)}], [],
                        backing, d.caller)

    # --------------------------------------------------------------- misc

    def statfs(self, nodeid: int, caller: Caller) -> StatFs:
        node = self.nodes.get(nodeid)
        holder: dict[str, os.statvfs_result] = {}

        def backing(ins: list) -> list:
            s = os.statvfs(node.fd)
            holder["s"] = s
            return [{"blocks": s.f_blocks, "bfree": s.f_bfree, "bavail": s.f_bavail,
                     "files": s.f_files, "ffree": s.f_ffree, "bsize": s.f_bsize,
                     "namelen": s.f_namemax, "frsize": s.f_frsize}]

        # fstatvfs on an O_PATH fd checks no permission.
        outs = self.policy.run(node, "statfs", [], [{}], backing, caller)
        s, o = holder["s"], outs[0]
        return StatFs(o.get("bsize", s.f_bsize), o.get("frsize", s.f_frsize),
                      o.get("blocks", s.f_blocks), o.get("bfree", s.f_bfree),
                      o.get("bavail", s.f_bavail), o.get("files", s.f_files),
                      o.get("ffree", s.f_ffree), s.f_favail, o.get("namelen", s.f_namemax))

    def access(self, nodeid: int, mask: int, caller: Caller) -> None:
        node = self.nodes.get(nodeid)

        def backing(ins: list) -> list:
            m = ins[0]["mask"]
            if not os.access(sysio.proc_fd_path(node.fd), m, effective_ids=True):
                raise OSError(errno.EACCES, "access denied")
            return []

        with self._caller_scope(caller):
            self.policy.run(node, "access", [{"mask": mask}], [], backing, caller)

    def _xattr_path(self, node: Node) -> str:
        return sysio.proc_fd_path(node.fd)

    def setxattr(self, nodeid: int, name: bytes, value: bytes, flags: int,
                 caller: Caller) -> None:
        node = self.nodes.get(nodeid)

        def backing(ins: list) -> list:
            os.setxattr(self._xattr_path(node), name, value, flags)
            return []

        with self._caller_scope(caller):
            self.policy.run(node, "setxattr", [{"size": len(value), "flags": flags}, name, value],
                            [], backing, caller)

    def getxattr(self, nodeid: int, name: bytes, caller: Caller) -> bytes:
        node = self.nodes.get(nodeid)
        holder: dict[str, bytes] = {}

        def backing(ins: list) -> list:
            holder["v"] = os.getxattr(self._xattr_path(node), ins[1])
            return [holder["v"]]

        with self._caller_scope(caller):
            outs = self.policy.run(node, "getxattr", [{"size": 65536}, name], [b""],
                                   backing, caller)
        return outs[0] if outs and isinstance(outs[0], (bytes, bytearray)) else holder["v"]

    def listxattr(self, nodeid: int, caller: Caller) -> list[bytes]:
        node = self.nodes.get(nodeid)

        def backing(ins: list) -> list:
            names = os.listxattr(self._xattr_path(node))
            return [b"".join(os.fsencode(n) + b"\0" for n in names)]

        with self._caller_scope(caller):
            outs = self.policy.run(node, "listxattr", [{"size": 65536}], [b""], backing, caller)
        return [n for n in bytes(outs[0]).split(b"\0") if n]

    def removexattr(self, nodeid: int, name: bytes, caller: Caller) -> None:
        node = self.nodes.get(nodeid)

        def backing(ins: list) -> list:
            os.removexattr(self._xattr_path(node), name)
            return []

        with self._caller_scope(caller):
            self.policy.run(node, "removexattr", [name], [], backing, caller)

    def close(self) -> None:
        for fh in list(self.files):
            obj = self.files.pop(fh, None)
            if obj is not None:
                try:
                    os.close(obj.fd)
                except OSError:
                    pass
        self.nodes.close_all()


def _in_node_operation(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run an engine entry point as one node-table operation: the node fds it takes
    stay open until it returns (nodes.NodeTable.operation)."""
    @functools.wraps(method)
    def entry_point(self: "Engine", *args: Any, **kwargs: Any) -> Any:
        state = self.nodes.thread_state()
        state.depth += 1
        try:
            return method(self, *args, **kwargs)
        finally:
            state.depth -= 1
            if not state.depth:
                self.nodes.end_operation(state)
    return entry_point


for _name, _method in list(vars(Engine).items()):
    if not _name.startswith("_") and callable(_method) and _name != "close":
        setattr(Engine, _name, _in_node_operation(_method))


def _linkat_empty(src_fd: int, dst_dir_fd: int, new_name: bytes) -> None:
    """Hard link to a symlink node through its O_PATH fd (needs CAP_DAC_READ_SEARCH)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.linkat(src_fd, b"", dst_dir_fd, new_name, sysio.AT_EMPTY_PATH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
