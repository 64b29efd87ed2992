"""The transport-independent filesystem engine: one driver for every operation.

A transport calls `Engine.dispatch(request)` with a typed record from
`runtime/requests.py` and gets a typed result back (errors as OSError with the
errno of the FUSE reply); nothing here knows pyfuse3 or /dev/fuse.  The API is
described in docs/architecture.md ("Engine API").

The driver does, for every row of the operation table (`runtime/optable.py`):
node and handle lookup, name checks, the VFS's own lookup of a name an
operation brings into existence, the credential switch, the spec §6
sequence on an argument frame (`fdsl.vm.sequence`, only when the node's
program runs for that opcode: programs whose outcome is statically BACKING are
skipped), finalize, and fd cleanup when a step fails.

Caching: every reply carries the timeouts the kernel may cache it for, chosen
per node by the policy (`attr_timeout`, `entry_timeout`): the configured
ones where the rules involved are deterministic given the backing state, 0
where they depend on the caller or count/log.
"""
from __future__ import annotations

import errno
import functools
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

from fdsl import abi
from fdsl.vm import frame as frames
from fdsl.vm import sequence

from . import backing as B
from . import requests as R
from . import sysio
from .identity import Caller, as_caller
from .nodes import ROOT_ID, Node, NodeTable
from .optable import TABLE, Row, row_for
from .requests import Attr, DirEntry, Entry, Opened

OPATH_FLAGS = B.OPATH_FLAGS
# Rows the driver treats specially (all others: credentials as the row says, one sequence).
_KIND = {"release": "release", "releasedir": "release", "readdir": "readdir",
         "lookup": "lookup", **{op: "create" for op in abi.requests.NEW_NAME_FIELD}}
_VERDICTS = 1024          # remembered LOOKUP verdicts (see `_name_visible`)
_ASK = object()           # `Engine._attachment`: ask the policy


@dataclass
class OpenFile:
    fd: int
    node: Node
    caller: Caller           # who opened it: READ/WRITE requests carry no caller in pyfuse3
    flags: int
    written: bool = False    # a write since the last flush: flushing may wait for I/O
    bpf_fh: int = 0          # out.fh an OPEN postfilter set: what later programs see as in.fh


@dataclass
class OpenDir:
    fd: int
    node: Node
    caller: Caller
    names: list[tuple[bytes, int, int]] | None = None  # (name, d_ino, d_type) snapshot
    lock: threading.Lock = field(default_factory=threading.Lock)
    # pages served and not yet sent in full: (offset, page as the programs left it)
    pages: "list[tuple[int, B.Page]]" = field(default_factory=list)
    flags: int = 0
    bpf_fh: int = 0


@dataclass
class EngineOptions:
    entry_timeout: float = 1.0
    attr_timeout: float = 1.0
    switch_identity: bool = True   # run backing ops with the caller's fsuid/fsgid/groups


class Call:
    """One request on its way through the driver (what the table's steps receive)."""

    __slots__ = ("engine", "req", "node", "caller", "handle", "other", "other_handle",
                 "page_offset")

    def __init__(self, engine: "Engine", req: Any, node: Node, caller: Caller,
                 handle: Any = None, other: Node | None = None,
                 other_handle: "OpenFile | None" = None) -> None:
        self.engine = engine
        self.req = req
        self.node = node
        self.caller = caller
        self.handle = handle
        self.other = other
        self.other_handle = other_handle     # COPY_FILE_RANGE: the destination
        self.page_offset = 0


class PassthroughPolicy:
    """No program anywhere: every operation is its backing step (spec 3: 'no program
    behaves like a program that always returns BACKING')."""

    abi = abi.ACK

    def attr_timeout(self, node: Node, default: float) -> float:
        return default

    def entry_timeout(self, parent: Node, default: float) -> float:
        return default

    def has_rules(self, node: Node, op: str) -> bool:
        return False

    def root_attachment(self) -> tuple[str | None, object]:
        return None, None

    def child_attachment(self, parent: Node, name: bytes) -> tuple[str, Any, Any, Any] | None:
        return None

    def runs_program(self, node: Node, op: str) -> bool:
        return False

    def cacheable(self, section: str | None, op: str) -> bool:
        return True

    def program(self, section: str | None) -> sequence.Program:
        raise LookupError("no programs")

    def user_half(self, node: Node, caller: Caller, op: str) -> Any:
        return None


class Engine:
    def __init__(self, backing_root: str | os.PathLike | int, policy: Any = None,
                 options: EngineOptions | None = None) -> None:
        self.options = options or EngineOptions()
        self.policy = policy or PassthroughPolicy()
        # the layout of the programs' contexts and the meaning of their results (ACK or
        # RFC v1, from the object): frames are laid out for it, `sequence` decodes by it
        self.abi: abi.Abi = getattr(self.policy, "abi", abi.ACK)
        self.nodes = NodeTable()
        self.files: dict[int, OpenFile | OpenDir] = {}
        self._next_fh = 1
        self._fh_lock = threading.Lock()
        self._verdicts: OrderedDict[tuple[int, bytes, int], bool] = OrderedDict()
        if isinstance(backing_root, int):
            root_fd = os.open(sysio.proc_fd_path(backing_root), OPATH_FLAGS & ~os.O_NOFOLLOW)
        else:
            root_fd = os.open(os.fspath(backing_root), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        program, scope = self.policy.root_attachment()
        self.root = self.nodes.add_root(root_fd, program, scope)

    # ------------------------------------------------------------ the driver

    def dispatch(self, req: Any) -> Any:
        """Serve one request record; the typed result, or OSError(errno)."""
        kind_of = type(req)
        if kind_of is R.Getattr:   # the most frequent request: straight to fstat without a program
            node = self.nodes.get(req.nodeid)
            if not self.policy.runs_program(node, "getattr"):
                return Attr.from_stat(node.nodeid, os.fstat(node.fd), self.attr_timeout(node, True))
        else:
            plain = _PLAIN.get(kind_of)
            if plain is not None:   # a name in a directory whose program has no rule on it
                parent = self.nodes.get(req.parent)
                policy = self.policy
                if not (policy.runs_program(parent, plain[0])
                        or policy.runs_program(parent, plain[1])):
                    B.check_name(req.name)
                    with as_caller(req.caller if req.caller is not None else Caller(),
                                   self.options.switch_identity):
                        return plain[2](self, parent, req)
        row = row_for(req)
        call = self._call(row, req)
        for attr in row.names:
            B.check_name(getattr(req, attr))
        kind = _KIND.get(row.op)
        if kind is None:
            if not row.as_caller:
                return self._serve(row, call)
            with as_caller(call.caller, self.options.switch_identity):
                return self._serve(row, call)
        if kind == "release":
            return self._release(row, call)
        if kind == "create":
            self._name_visible(call)
        with as_caller(call.caller, self.options.switch_identity):
            if kind == "readdir":
                return self._readdir(row, call)
            if kind == "lookup":
                return self._lookup(row, call)
            return self._serve(row, call)

    def _call(self, row: Row, req: Any) -> Call:
        target, handle, other = row.target, None, None
        other_handle: OpenFile | None = None
        if target == "node":
            node = self.nodes.get(req.nodeid)
        elif target == "parent":
            if row.op == "link":
                node, other = self.nodes.get(req.new_parent), self.nodes.get(req.nodeid)
            else:
                node = self.nodes.get(req.parent)
                if row.op in ("rename", "rename2"):
                    other = self.nodes.get(req.new_parent)
                    if other.key[0] != node.key[0]:
                        raise OSError(errno.EXDEV, "cross-device rename")
        else:
            handle = self.files.get(req.fh)
            kind = OpenFile if target.startswith("file") else OpenDir
            if not isinstance(handle, kind):
                if target.endswith("_release"):
                    handle = None
                else:
                    raise OSError(errno.EBADF, "bad file handle")
            node = handle.node if handle is not None else self.root
            if type(req) is R.CopyFileRange:
                out = self.files.get(req.fh_out)
                if not isinstance(out, OpenFile):
                    raise OSError(errno.EBADF, "bad file handle")
                other_handle = out
        caller = req.caller if req.caller is not None else (
            handle.caller if handle is not None else Caller())
        return Call(self, req, node, caller, handle, other, other_handle)

    def _serve(self, row: Row, call: Call) -> Any:
        """One §6 sequence for `call` (or just the backing step where no program runs)."""
        node = call.node
        if not self.policy.runs_program(node, row.op):
            return row.finalize(call, row.backing(call, None), None)
        size0 = row.op in abi.requests.XATTR_SIZE_OPS and call.req.size == 0
        frame = frames.acquire(row.spec, size0, self.abi)
        try:
            nodeid = 0 if row.ctx_nodeid_zero else node.ctx_nodeid
            frame.begin(nodeid)
            row.inputs(call, frame)
            value, posted = sequence.run(
                self.policy.program(node.program), frame, call.caller, row.op,
                backing=row.backing, subject=call, fill_outputs=row.outputs or _no_outputs,
                user=self.policy.user_half(node, call.caller, row.op), cleanup=row.cleanup)
            return row.finalize(call, value, frame if posted else None)
        finally:
            frames.release(frame)

    # ------------------------------------------------------------- lookups

    def _lookup(self, row: Row, call: Call) -> Entry:
        """LOOKUP, remembering whether PRE refused the name (for `_name_visible`)."""
        parent = call.node
        if not self.policy.runs_program(parent, "lookup"):
            return self._serve(row, call)
        key = (parent.nodeid, call.req.name, call.caller.pid)
        denied = False
        try:
            return self._serve(row, call)
        except sequence.Denied as err:
            denied = err.phase == "pre"
            raise
        finally:
            self._verdicts[key] = denied
            while len(self._verdicts) > _VERDICTS:
                self._verdicts.popitem(last=False)

    def _name_visible(self, call: Call) -> None:
        """The VFS looks a new name up before creating it (§6): a LOOKUP the parent's
        program refuses in PRE makes the create fail with ENOENT.

        In a mount the kernel has just sent that LOOKUP: its verdict is
        remembered and reused (the program does not run twice); otherwise
        (`fdsl test`, a kernel that cached the negative entry) PRE runs here."""
        req = call.req
        directory = call.other if isinstance(req, R.Rename) else call.node
        name = req.new_name if isinstance(req, (R.Rename, R.Link)) else req.name
        if directory is None or not self.policy.runs_program(directory, "lookup"):
            return
        denied = self._verdicts.pop((directory.nodeid, name, call.caller.pid), None)
        if denied is None:
            denied = self._lookup_denied(directory, name, call.caller)
        if denied:
            raise OSError(errno.ENOENT, "the name is hidden by a lookup rule")

    def _lookup_denied(self, directory: Node, name: bytes, caller: Caller) -> bool:
        frame = frames.acquire(abi.OPS["lookup"], record=self.abi)
        try:
            frame.begin(directory.ctx_nodeid)
            frame.set_input(0, name + b"\0")
            sequence.pre(self.policy.program(directory.program), frame, caller, "lookup",
                         self.policy.user_half(directory, caller, "lookup"))
            return False
        except sequence.Denied:
            return True
        finally:
            frames.release(frame)

    def attach_found(self, call: Call, found: B.Found, bpf_nodeid: int, backing_action: int,
                     bpf_action: int) -> Entry:
        """LOOKUP's finalize: program and backing of the child (spec 3.2), the node."""
        parent, fd, st = call.node, found.fd, found.st
        try:
            if abi.ACTION_REPLACE in (backing_action, bpf_action):
                raise OSError(errno.EINVAL, "a BPF postfilter cannot REPLACE (spec 3.2)")
            if backing_action == abi.ACTION_REMOVE:
                raise OSError(errno.EIO, "backing REMOVE: no classic FUSE server behind this node")
            program = parent.program if bpf_action == abi.ACTION_KEEP else None
            program, scope, fd, st = self._attachment(parent, call.req.name, fd, st, program)
        except BaseException:
            os.close(fd)
            raise
        node = self.nodes.attach(fd, st, program, scope, bpf_nodeid=bpf_nodeid)
        # Spec 3.2: the new inode's attributes come from the backing inode; a lookup
        # postfilter's out.attr writes are ignored (rewrites belong in getattr post).
        return self._entry(node, st, parent)

    def _plain_create(self, parent: Node, req: R.Create) -> Opened:
        """CREATE without a create or lookup program: `_serve`'s backing step and
        finalize, without the row, the frame and the verdict check."""
        call = Call(self, req, parent, req.caller if req.caller is not None else Caller())
        return self.created_open(call, B.create(call, req.name, req.flags, req.mode), 0)

    def _plain_remove(self, parent: Node, req: R.Unlink | R.Rmdir) -> None:
        (os.unlink if type(req) is R.Unlink else os.rmdir)(req.name, dir_fd=parent.fd)

    def _plain_lookup(self, parent: Node, name: bytes, ino: int = -1) -> Entry:
        """LOOKUP where the parent runs no lookup program: what `_serve` does then
        (`B.lookup`, `lookup_finalize`), with one fstatat instead of open + fstat +
        close for an inode that already has a node holding its fd.

        `ino`: the inode number a listing gave for the name; where no node is
        known by it, the stat is skipped (a new inode needs its fd anyway)."""
        decided = self.policy.child_attachment(parent, name)
        if (ino < 0 or (parent.key[0], ino) in self.nodes.by_key) and \
                (decided is None or decided[0] != "backing"):
            st = os.stat(name, dir_fd=parent.fd, follow_symlinks=False)
            node = self.nodes.attach_known(st, parent.program if decided is None else decided[2])
            if node is not None:
                return self._entry(node, st, parent)
        return self._new_child(parent, name, decided)

    def _attachment(self, parent: Node, name: bytes, fd: int, st: os.stat_result,
                    program: str | None, decided: Any = _ASK
                    ) -> tuple[str | None, Any, int, os.stat_result]:
        """The policy's scope table acts as the daemon's own lookup postfilter would:
        an `under` scope REPLACEs the program, `passthrough` REMOVEs it, `backing`
        REPLACEs the backing dir (and the program with the scope's).  `decided`:
        the policy's `child_attachment` answer, if the caller has it already."""
        scope = None
        if decided is _ASK:
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

    def created(self, call: Call, name: bytes) -> Entry:
        """Entry of a just-created child: found like a lookup (scope attach included)."""
        return self._new_child(call.node, name)

    def _new_child(self, parent: Node, name: bytes, decided: Any = _ASK) -> Entry:
        """Open `name` in `parent`, attach its node (program and scope as a lookup
        without a program gives them), its entry."""
        fd = os.open(name, OPATH_FLAGS, dir_fd=parent.fd)
        try:
            st = os.fstat(fd)
            program, scope, fd, st = self._attachment(parent, name, fd, st, parent.program,
                                                      decided)
        except BaseException:
            os.close(fd)
            raise
        node = self.nodes.attach(fd, st, program, scope)
        return self._entry(node, st, parent)

    def linked(self, call: Call) -> Entry:
        node = call.other
        assert node is not None
        st = os.fstat(node.fd)
        with self.nodes.lock:
            node.lookups += 1
        return self._entry(node, st, call.node)

    def forget(self, nodeid: int, count: int) -> None:
        self.nodes.forget(nodeid, count)

    # ------------------------------------------------------------ handles

    def _new_fh(self, obj: OpenFile | OpenDir) -> int:
        with self._fh_lock:
            if len(self.files) >= self.nodes.budget.max_handles:
                os.close(obj.fd)  # the rest of the fd table is the daemon's reserve
                raise OSError(errno.ENFILE, "too many open files in this mount")
            fh = self._next_fh
            self._next_fh += 1
            self.files[fh] = obj
            return fh

    def opened(self, call: Call, fd: int, bpf_fh: int) -> Opened:
        return Opened(self._new_fh(OpenFile(fd, call.node, call.caller, call.req.flags,
                                            bpf_fh=bpf_fh)))

    def opened_dir(self, call: Call, fd: int) -> Opened:
        return Opened(self._new_fh(OpenDir(fd, call.node, call.caller, flags=call.req.flags)))

    def created_open(self, call: Call, made: B.Made, bpf_nodeid: int) -> Opened:
        try:
            entry = self.created(call, made.name)
        except BaseException:
            os.close(made.fd)
            raise
        node = self.nodes.get(entry.nodeid)
        if bpf_nodeid:
            node.bpf_nodeid = bpf_nodeid
        try:
            fh = self._new_fh(OpenFile(made.fd, node, call.caller, call.req.flags))
        except OSError:
            self.nodes.forget(entry.nodeid, 1)  # the kernel gets no entry: no FORGET either
            raise
        return Opened(fh, entry)

    def _release(self, row: Row, call: Call) -> None:
        """RELEASE/RELEASEDIR: the backing file is dropped before the program runs (§9),
        whatever it returns."""
        with self._fh_lock:
            handle = self.files.pop(call.req.fh, None)
        if handle is None:
            return
        os.close(handle.fd)
        call.handle, call.node = handle, handle.node
        try:
            self._serve(row, call)
        except OSError:
            pass

    def may_block(self, req: Any) -> bool:
        """May this request wait on the backing filesystem for long?  (Data I/O, and a
        flush that follows writes; everything else is cheap metadata work.)"""
        if isinstance(req, R.Flush):
            return self.flush_may_block(req.fh)
        return row_for(req).may_block

    def flush_may_block(self, fh: int) -> bool:
        """A FLUSH waits for I/O only after writes through the daemon (kernel
        passthrough writes never reach it, and their flush is a close(2) of a dup)."""
        return bool(getattr(self.files.get(fh), "written", True))

    def reads_uncached(self, node: Node) -> bool:
        """Must every read of this file reach its rules?  Yes where read rules depend on
        the caller or count, log or use maps: served from the kernel's page cache, a
        read one caller was refused could be answered with what another one read (a
        transport opens such files with FOPEN_DIRECT_IO, as fuse-bpf runs the program
        for every read)."""
        policy = self.policy
        return policy.runs_program(node, "read") and not policy.cacheable(node.program, "read")

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

    def mark_written(self, fh: int, written: bool) -> None:
        f = self.files.get(fh)
        if isinstance(f, OpenFile):
            f.written = written

    def backing_fd(self, nodeid: int) -> int:
        """A new opened (not O_PATH) fd of a node's backing file or directory, for a
        kernel passthrough reply (fuse_entry_bpf_out.backing_fd, FUSE_PASSTHROUGH);
        the caller closes it once the reply is written."""
        node = self.nodes.get(nodeid)
        flags = os.O_RDONLY | os.O_CLOEXEC | (os.O_DIRECTORY if node.is_dir else 0)
        return os.open(sysio.proc_fd_path(node.fd), flags)

    def read_ioctl(self, fh: int, cmd: int, size: int) -> bytes:
        """The attribute flags ioctls (`backing.READ_ONLY_IOCTLS`: what lsattr reads) on
        an open file or directory; every other ioctl is ENOTTY."""
        handle = self.files.get(fh)
        if handle is None:
            raise OSError(errno.EBADF, "bad file handle")
        return B.read_ioctl(handle.fd, cmd, size)

    def btime(self, nodeid: int) -> tuple[int, int] | None:
        """The backing inode's birth time (s, ns) for a STATX reply; None: not recorded."""
        return sysio.statx_btime(self.nodes.get(nodeid).fd)

    def program_of(self, nodeid: int) -> str | None:
        return self.nodes.get(nodeid).program

    # -------------------------------------------------- fuse-bpf filter requests

    def user_filter(self, op: str | int, phase: str, nodeid: int, caller: Caller,
                    payload: bytes, error_in: int = 0) -> bytes:
        """Serve a fuse-bpf kernel's userspace filter request (`OP | 0x10000` with the
        inputs, `OP | 0x20000` with inputs + outputs, spec §7): the reply payload
        (the replacement inputs, or the outputs).  OSError = an error reply;
        READDIR|POSTFILTER is always answered with data."""
        spec = abi.OPS[op] if isinstance(op, str) else abi.OPS_BY_NUMBER[op & abi.OPCODE_MASK]
        node = self.nodes.nodes.get(nodeid, self.root)
        frame = frames.acquire(spec)
        try:
            frame.begin(nodeid)
            rest = _split_args(frame, spec.inputs, payload, "in")
            if phase == "post":
                _split_args(frame, frame.shape.outputs, rest, "out")
                frame.to_post(error_in)
            user = self.policy.user_half(node, caller, spec.name)
            if user is not None:
                user(phase, frame, error_in)
            if phase == "pre":
                return b"".join(frame.input_bytes(i) for i in range(len(spec.inputs))
                                if frame.in_off[i])
            return b"".join(frame.output_bytes(j) for j in range(len(frame.shape.outputs)))
        finally:
            frames.release(frame)

    # ------------------------------------------------------------ readdir

    def _readdir(self, row: Row, call: Call) -> list[DirEntry]:
        """Up to `limit` entries after `offset`, one READDIR sequence per dirent page.

        Each entry is looked up (READDIRPLUS: every returned `Entry` counts one
        kernel lookup; the transport must `forget` the ones it could not send).
        Only readdir rules filter the listing (as on ACK): a name whose lookup
        fails is listed without attributes."""
        req, d = call.req, call.handle
        out: list[DirEntry] = []
        offset = req.offset
        if offset == 0:
            out.append(DirEntry(b".", None, 1, d.node.nodeid, abi.DT_DIR))
            d.pages = []                     # a new listing: every page runs again
        else:                                # drop the pages sent in full
            d.pages = [p for p in d.pages if p[1].next_offset > offset]
        if offset <= 1:
            out.append(DirEntry(b"..", None, 2, ROOT_ID, abi.DT_DIR))
        offset = max(offset, 2)
        lookup_row = TABLE["lookup"]
        directory = d.node
        plain = not self.policy.runs_program(directory, "lookup")
        check_name = B.check_name
        while len(out) < req.limit:
            page = self._readdir_page(row, call, offset)
            for name, ino, next_offset, dtype in page.records:
                if next_offset <= offset:
                    continue                 # sent from this page by an earlier request
                if len(out) >= req.limit:
                    return out
                entry: Entry | None
                try:
                    check_name(name)
                    if plain:
                        entry = self._plain_lookup(directory, name, ino)
                    else:
                        entry = self._lookup(lookup_row, Call(
                            self, R.Lookup(call.caller, directory.nodeid, name), directory,
                            call.caller))
                except OSError:
                    entry = None   # hidden by a lookup rule, vanished, or no search permission
                out.append(DirEntry(name, entry, next_offset, ino, dtype))
            if not page.records and not page.again:
                break
            if page.next_offset <= offset and not page.records:
                break
            offset = page.next_offset
        return out

    def _readdir_page(self, row: Row, call: Call, offset: int) -> B.Page:
        """The READDIR page holding `offset`: one sequence per page of the listing.

        A request that continues inside a page already served (the previous
        one stopped at its batch limit or the kernel's buffer, perhaps pages
        earlier) gets that page as its programs left it, so PRE and POST
        (counters, logs, dropped entries) run once per page, as for a fuse-bpf
        kernel's READDIR."""
        d = call.handle
        for start, page in d.pages:
            if start <= offset < page.next_offset:
                return page
        call.page_offset = offset
        page = self._serve(row, call)
        d.pages.append((offset, page))
        return page

    # ---------------------------------------------------------- attributes

    def attr_timeout(self, node: Node, filtered: bool) -> float:
        """How long the kernel may cache a node's attributes.

        `filtered`: they went through the node's getattr rules (a GETATTR reply),
        cacheable unless those rules must see every stat.  Unfiltered backing
        attributes (the replies to lookup, setattr, create, ...) are cacheable
        only where no getattr rule could rewrite them: otherwise timeout 0, so
        the next stat asks GETATTR, as a fuse-bpf kernel runs the program."""
        if node.program is None:    # no rules at all: the configured timeout
            return self.options.attr_timeout
        if filtered or not self.policy.has_rules(node, "getattr"):
            return self.policy.attr_timeout(node, self.options.attr_timeout)
        return 0.0

    def attr_of(self, node: Node, st: os.stat_result) -> Attr:
        return Attr.from_stat(node.nodeid, st, self.attr_timeout(node, False))

    def _entry(self, node: Node, st: os.stat_result, parent: Node) -> Entry:
        """Entry of `node` found in `parent`: the parent's lookup rules decide whether
        the name may be cached (and so the attributes the lookup reply carries)."""
        attr = Attr.from_stat(node.nodeid, st, self.attr_timeout(node, False))
        entry_timeout = self.options.entry_timeout if parent.program is None else \
            self.policy.entry_timeout(parent, self.options.entry_timeout)
        if entry_timeout == 0:
            attr.timeout = 0.0
        return Entry(node.nodeid, attr, entry_timeout)

    def close(self) -> None:
        for fh in list(self.files):
            obj = self.files.pop(fh, None)
            if obj is not None:
                try:
                    os.close(obj.fd)
                except OSError:
                    pass
        self.nodes.close_all()


# Requests on a name in a directory `dispatch` serves directly where the directory's
# program runs for neither opcode: (opcode, the other opcode, server).
_PLAIN: dict[type, tuple[str, str, Callable[..., Any]]] = {
    R.Lookup: ("lookup", "lookup", lambda e, parent, req: e._plain_lookup(parent, req.name)),
    R.Create: ("create", "lookup", Engine._plain_create),     # lookup: `_name_visible`
    R.Unlink: ("unlink", "unlink", Engine._plain_remove),
    R.Rmdir: ("rmdir", "rmdir", Engine._plain_remove),
}


def _no_outputs(frame: frames.Frame, value: Any) -> None:
    return None


def _in_node_operation(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a transport entry point as one node-table operation: the node fds it takes
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


for _name in ("dispatch", "forget", "read_cached", "backing_fd", "btime", "program_of",
              "user_filter"):
    setattr(Engine, _name, _in_node_operation(getattr(Engine, _name)))


def _split_args(frame: frames.Frame, args: tuple[abi.ArgSpec, ...], payload: bytes,
                direction: str) -> bytes:
    """Place concatenated arguments (spec §7: no padding, each with its current size)
    into the frame; returns what is left.  Structs take their size field's bytes,
    names run to their NUL, a buffer takes the rest."""
    view = memoryview(payload)
    for i, arg in enumerate(args):
        if arg.null_value:
            continue
        if arg.kind == "struct":
            n = arg.size_field if arg.size_field is not None else arg.layout.size
        elif arg.kind == "string":
            cut = payload.find(b"\0", len(payload) - len(view))
            n = (cut - (len(payload) - len(view)) + 1) if cut >= 0 else len(view)
        else:
            n = len(view)
        chunk = view[:n]
        if direction == "in":
            frame.set_input(i, chunk)
        else:
            frame.set_output(i, chunk)
        view = view[n:]
    return bytes(view)
