"""Handlers for open files and directories: open/create (with kernel
passthrough), read/write, flush/fsync/release, listings, and the operations
pyfuse3 never delivered: LSEEK (SEEK_DATA/SEEK_HOLE), FALLOCATE (every mode
the backing fs supports), COPY_FILE_RANGE and TMPFILE.

Every handler builds the engine's request record and calls `Engine.dispatch`;
READ and WRITE carry the caller of the request (the header has it), so their
rules see who reads or writes, not who opened the file.
"""
from __future__ import annotations

import errno
import os
from typing import Any

from fdsl import abi

from .. import requests as R
from .. import sysio
from ..engine import Attr, Engine, Entry, OpenFile
from ..identity import as_caller, thread_umask
from .passthrough import BackingFiles
from .protocol import (FOPEN_NOFLUSH, FOPEN_PASSTHROUGH, LSEEK_OUT, WRITE_OUT, Request, dirent,
                       direntplus, entry_out, open_out)

_OPEN_IN = abi.FUSE_OPEN_IN.codec
_CREATE_IN = abi.FUSE_CREATE_IN.codec
_READ_IN = abi.FUSE_READ_IN.codec
_WRITE_IN = abi.FUSE_WRITE_IN.codec
_RELEASE_IN = abi.FUSE_RELEASE_IN.codec
_FLUSH_IN = abi.FUSE_FLUSH_IN.codec
_FSYNC_IN = abi.FUSE_FSYNC_IN.codec
_LSEEK_IN = abi.FUSE_LSEEK_IN.codec
_FALLOCATE_IN = abi.FUSE_FALLOCATE_IN.codec
_COPY_IN = abi.FUSE_COPY_FILE_RANGE_IN.codec
FOPEN_DIRECT_IO = abi.FOPEN["FOPEN_DIRECT_IO"]
_DIRENT_ESTIMATE = 200          # bytes per READDIRPLUS record, to size engine batches


class FileOperations:
    def __init__(self, engine: Engine, backing: BackingFiles) -> None:
        self.engine = engine
        self.do = engine.dispatch
        self.backing = backing

    # -------------------------------------------------------- open files

    def _open_reply(self, fh: int) -> bytes:
        """fuse_open_out, with FOPEN_PASSTHROUGH where the kernel may do the I/O,
        FOPEN_DIRECT_IO where every read must reach the rules (`Engine.reads_uncached`),
        and FOPEN_NOFLUSH where a FLUSH would do nothing (passthrough.NO_FLUSH_FS)."""
        f = self.engine.files.get(fh)
        if not isinstance(f, OpenFile):
            return open_out(fh)
        policy = self.engine.policy
        st = os.fstat(f.fd)             # one fstat for both questions
        flags = FOPEN_NOFLUSH if self.backing.no_flush(
            f.fd, st, policy.runs_program(f.node, "flush")) else 0
        if self.backing.enabled:
            filtered = policy.runs_program(f.node, "read") or policy.runs_program(f.node, "write")
            if self.backing.eligible(st, filtered):
                backing_id = self.backing.attach(fh, f.node.nodeid, f.fd)
                if backing_id:
                    return open_out(fh, flags | FOPEN_PASSTHROUGH, backing_id)
        if self.engine.reads_uncached(f.node):
            flags |= FOPEN_DIRECT_IO
        return open_out(fh, flags)

    def open(self, req: Request) -> Any:
        flags, _ = req.struct(_OPEN_IN)
        return self._open_reply(self.do(R.Open(req.caller(), req.nodeid, flags)).fh)

    def create(self, req: Request) -> Any:
        flags, mode, umask, _ = req.struct(_CREATE_IN)
        (name,) = req.names(_CREATE_IN.size)
        opened = self.do(R.Create(req.caller(umask), req.nodeid, name, mode, flags, umask))
        return [entry_out(opened.entry), self._open_reply(opened.fh)]

    def read(self, req: Request) -> Any:
        fh, offset, size, *_ = req.struct(_READ_IN)
        data = self.engine.read_cached(fh, offset, size)
        return data if data is not None else self.do(R.Read(req.caller(), fh, offset, size))

    def write(self, req: Request) -> Any:
        fh, offset, size, *_ = req.struct(_WRITE_IN)
        data = req.body[_WRITE_IN.size:_WRITE_IN.size + size]
        if len(data) != size:
            raise OSError(errno.EIO, "short write payload")
        return WRITE_OUT.pack(self.do(R.Write(req.caller(), fh, offset, data)), 0)

    def flush(self, req: Request) -> Any:
        fh, *_ = req.struct(_FLUSH_IN)
        self.do(R.Flush(req.caller(), fh))

    def release(self, req: Request) -> Any:
        fh, *_ = req.struct(_RELEASE_IN)
        self.backing.detach(fh)
        self.do(R.Release(None, fh))        # the opener's: RELEASE comes from a kernel worker

    def fsync(self, req: Request) -> Any:
        fh, flags, _ = req.struct(_FSYNC_IN)
        self.do(R.Fsync(req.caller(), fh, bool(flags & abi.FUSE_FSYNC_FDATASYNC)))

    # -------------------------------------------------------- directories

    def opendir(self, req: Request) -> Any:
        return open_out(self.do(R.Opendir(req.caller(), req.nodeid)).fh)

    def readdir(self, req: Request) -> Any:
        return self._listing(req, plus=False)

    def readdirplus(self, req: Request) -> Any:
        return self._listing(req, plus=True)

    def _listing(self, req: Request, plus: bool) -> Any:
        """Records up to the kernel's buffer size.  Every entry the engine returns
        with attributes counts one kernel lookup: those a plain READDIR does not
        link, and those that do not fit, are forgotten again."""
        fh, offset, size, *_ = req.struct(_READ_IN)
        engine, caller = self.engine, req.caller()
        records: list[bytes] = []
        used = 0
        while used < size:
            batch = engine.dispatch(R.Readdir(caller, fh, offset,
                                              max(4, (size - used) // _DIRENT_ESTIMATE)))
            if not batch:
                break
            for i, item in enumerate(batch):
                if plus:
                    rec = direntplus(item.entry, item.ino, item.next_offset, item.dtype, item.name)
                elif item.entry is not None:
                    rec = dirent(item.entry.attr.ino, item.next_offset,
                                 (item.entry.attr.mode >> 12) & 0o17, item.name)
                else:
                    rec = dirent(item.ino, item.next_offset, item.dtype, item.name)
                if used + len(rec) > size:
                    for rest in batch[i:]:
                        if rest.entry is not None:
                            engine.forget(rest.entry.nodeid, 1)
                    return b"".join(records)
                if not plus and item.entry is not None:
                    engine.forget(item.entry.nodeid, 1)
                records.append(rec)
                used += len(rec)
                offset = item.next_offset
        return b"".join(records)

    def releasedir(self, req: Request) -> Any:
        fh, *_ = req.struct(_RELEASE_IN)
        self.do(R.Releasedir(None, fh))

    def fsyncdir(self, req: Request) -> Any:
        fh, flags, _ = req.struct(_FSYNC_IN)
        self.do(R.Fsyncdir(req.caller(), fh, bool(flags & abi.FUSE_FSYNC_FDATASYNC)))

    # ------------------------------------- operations pyfuse3 never delivered

    def lseek(self, req: Request) -> Any:
        fh, offset, whence, _ = req.struct(_LSEEK_IN)
        return LSEEK_OUT.pack(self.do(R.Lseek(req.caller(), fh, offset, whence)))

    def fallocate(self, req: Request) -> Any:
        fh, offset, length, mode, _ = req.struct(_FALLOCATE_IN)
        self.do(R.Fallocate(req.caller(), fh, offset, length, mode))

    def copy_file_range(self, req: Request) -> Any:
        fh_in, off_in, _nodeid_out, fh_out, off_out, length, flags = req.struct(_COPY_IN)
        copied = self.do(R.CopyFileRange(req.caller(), fh_in, off_in, fh_out, off_out, length,
                                         flags))
        return WRITE_OUT.pack(copied, 0)

    def tmpfile(self, req: Request) -> Any:
        """O_TMPFILE: an unnamed file in the directory, open, with the parent's
        program.  Refused (EOPNOTSUPP) where the directory has create rules,
        which could not see it."""
        with self.engine.nodes.operation():
            return self._tmpfile(req)

    def _tmpfile(self, req: Request) -> Any:
        flags, mode, umask, _ = req.struct(_CREATE_IN)
        engine = self.engine
        parent = engine.nodes.get(req.nodeid)
        if engine.policy.runs_program(parent, "create"):
            raise OSError(errno.EOPNOTSUPP, "O_TMPFILE in a filtered directory")
        caller = req.caller(umask)
        oflags = (flags | os.O_TMPFILE | os.O_CLOEXEC) & ~(os.O_CREAT | os.O_EXCL | os.O_NOCTTY)
        with as_caller(caller, engine.options.switch_identity):
            with thread_umask(umask):
                fd = os.open(".", oflags, mode & 0o7777, dir_fd=parent.fd)
        try:
            path_fd = os.open(sysio.proc_fd_path(fd), os.O_PATH | os.O_CLOEXEC)
            st = os.fstat(path_fd)
            node = engine.nodes.attach(path_fd, st, parent.program, parent.scope)
        except BaseException:
            os.close(fd)
            raise
        attr = Attr.from_stat(node.nodeid, st, engine.options.attr_timeout)
        entry = Entry(node.nodeid, attr, engine.options.entry_timeout)
        fh = engine._new_fh(OpenFile(fd, node, caller, flags))
        return [entry_out(entry), self._open_reply(fh)]
