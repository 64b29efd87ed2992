"""pyfuse3 transport (`-o transport=pyfuse3`): pyfuse3 callbacks -> `Engine` calls.

The only module that imports pyfuse3.  The default transport is our own
(`runtime/transport`); this one stays as a second implementation the tests
compare against.  What libfuse through pyfuse3 cannot do: negotiate
FUSE_DONT_MASK, POSIX_ACL or HANDLE_KILLPRIV (pyfuse3 exposes no connection
info: the kernel applies the umask itself, so a parent's default ACL cannot
widen a new file's mode, and suid/sgid are cleared by a kernel-sent chmod,
see `Engine._is_kill_suid`), kernel passthrough, lseek, fallocate,
copy_file_range, setxattr flags and UTIME_NOW (approximated below).

Threads.  A trip through `trio.to_thread` costs ~100 µs, more than a cheap
metadata operation itself, so by default (`inline=True`) the cheap ones
(lookup, getattr, setattr, readlink, mknod/mkdir/symlink/link, unlink/rmdir,
rename, create, open/opendir, release/releasedir, readdir pages, xattrs,
statfs, access) run *inline* on the trio thread: the engine switches that
thread's fsuid/fsgid/groups to the caller's around each operation and back to
root afterwards (exceptions included; `identity.restore_after_each_op`).
Only data I/O that may block for long (read, write, flush, fsync, fsyncdir)
goes to worker threads, at most `max_threads` at a time.

Trade-off: an inline operation blocks the trio thread, so while one metadata
operation waits on a very slow backing filesystem (a hung NFS server, a
spun-down disk) no other request is served.  For such backing filesystems
mount with `-o inline=0`: every operation then runs in a worker thread as
before (slower per request, but one slow call stalls only itself).
"""
from __future__ import annotations

import ctypes
import errno
import logging
import stat
import time
from typing import Any

import pyfuse3
import trio

from . import identity
from . import requests as R
from .engine import Engine
from .identity import Caller
from .requests import Attr, Entry

log = logging.getLogger("fdsl.runtime")

# pyfuse3 turns FATTR_*TIME_NOW into the daemon's clock; a time that close to
# "now" is treated as UTIME_NOW so a non-owner with write access can touch(1).
_NOW_SLACK_NS = 50_000_000


def _caller(ctx: Any) -> Caller:
    return Caller(uid=ctx.uid, gid=ctx.gid, pid=ctx.pid, umask=ctx.umask)


def _entry_attrs(attr: Attr, entry_timeout: float | None = None) -> pyfuse3.EntryAttributes:
    e = pyfuse3.EntryAttributes()
    e.st_ino = attr.ino
    e.generation = 0
    e.entry_timeout = attr.timeout if entry_timeout is None else entry_timeout
    e.attr_timeout = attr.timeout
    e.st_mode = attr.mode
    e.st_nlink = attr.nlink
    e.st_uid = attr.uid
    e.st_gid = attr.gid
    e.st_rdev = attr.rdev
    e.st_size = attr.size
    e.st_blksize = attr.blksize
    e.st_blocks = attr.blocks
    e.st_atime_ns = attr.atime_ns
    e.st_mtime_ns = attr.mtime_ns
    e.st_ctime_ns = attr.ctime_ns
    return e


def _entry(entry: Entry) -> pyfuse3.EntryAttributes:
    return _entry_attrs(entry.attr, entry.entry_timeout)


def _probe_nodeid_offset() -> int | None:
    """Offset of `fuse_entry_param.ino` inside a pyfuse3.EntryAttributes object.

    pyfuse3's `st_ino` setter writes both the entry's node id and the dirent's
    inode number.  A READDIRPLUS entry without attributes needs node id 0 (the
    kernel then links nothing) but a non-zero inode number (glibc's readdir
    skips d_ino 0 entries, so the name would vanish from listings).  Found by
    writing marker values and checking the C layout
    {ino, generation, struct stat {st_dev, st_ino, ...}}; None if unexpected."""
    e = pyfuse3.EntryAttributes()
    ino_marker, gen_marker = 0x5A17_0DD5_1234_ABCD, 0x0BAD_CAFE_0042_1357
    e.st_ino = ino_marker
    e.generation = gen_marker
    base = id(e)
    for off in range(8, 64, 8):
        if (ctypes.c_uint64.from_address(base + off).value == ino_marker
                and ctypes.c_uint64.from_address(base + off + 8).value == gen_marker
                and ctypes.c_uint64.from_address(base + off + 24).value == ino_marker):
            ctypes.c_uint64.from_address(base + off).value = 0
            return off if e.st_ino == 0 else None
    return None


_NODEID_OFFSET = _probe_nodeid_offset()
_DTYPE_MODE = {1: stat.S_IFIFO, 2: stat.S_IFCHR, 4: stat.S_IFDIR, 6: stat.S_IFBLK,
               8: stat.S_IFREG, 10: stat.S_IFLNK, 12: stat.S_IFSOCK}


def _name_only(ino: int, dtype: int) -> pyfuse3.EntryAttributes:
    """A READDIRPLUS record that lists a name without looking it up (node id 0)."""
    e = pyfuse3.EntryAttributes()
    e.st_mode = _DTYPE_MODE.get(dtype, 0)
    if _NODEID_OFFSET is not None and ino:
        e.st_ino = ino
        ctypes.c_uint64.from_address(id(e) + _NODEID_OFFSET).value = 0
    else:
        e.st_ino = 0  # the kernel must never see a backing inode number as a node id
    return e


class FuseOperations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, engine: Engine, max_threads: int = 16, stats: Any = None,
                 inline: bool = True) -> None:
        super().__init__()
        self.engine = engine
        self.limiter = trio.CapacityLimiter(max_threads)
        self.stats = stats
        self.inline = inline
        # This object is built on the thread that runs trio (and so the inline
        # operations): credentials switched there go back to root after each op.
        identity.restore_after_each_op()

    def _count(self, name: str) -> None:
        if self.stats is not None:
            self.stats.ops[name] += 1

    def _failed(self, name: str, err: BaseException) -> pyfuse3.FUSEError:
        if isinstance(err, pyfuse3.FUSEError):
            return err
        if isinstance(err, OSError):
            if self.stats is not None:
                self.stats.errors[name] += 1
            return pyfuse3.FUSEError(err.errno or errno.EIO)
        log.error("internal error in %s", name, exc_info=err)
        return pyfuse3.FUSEError(errno.EIO)

    async def _run(self, req: Any) -> Any:
        """One request: inline on the trio thread unless it may block (or inline=0)."""
        if not self.inline or self.engine.may_block(req):
            return await self._blocking(req)
        name = type(req).__name__.lower()
        self._count(name)
        try:
            return self.engine.dispatch(req)
        except Exception as err:
            raise self._failed(name, err) from None

    async def _blocking(self, req: Any) -> Any:
        """Data I/O that may block for long: in a worker thread."""
        name = type(req).__name__.lower()
        self._count(name)
        try:
            return await trio.to_thread.run_sync(self.engine.dispatch, req, limiter=self.limiter)
        except Exception as err:
            raise self._failed(name, err) from None

    # ----------------------------------------------------------- entries

    async def lookup(self, parent_inode, name, ctx):
        return _entry(await self._run(R.Lookup(_caller(ctx), parent_inode, name)))

    async def forget(self, inode_list):
        for inode, count in inode_list:
            self.engine.forget(inode, count)

    async def getattr(self, inode, ctx):
        return _entry_attrs(await self._run(R.Getattr(_caller(ctx), inode)))

    async def setattr(self, inode, attr, fields, fh, ctx):
        now = time.time_ns()
        both_now = (fields.update_atime and fields.update_mtime
                    and abs(attr.st_atime_ns - now) < _NOW_SLACK_NS
                    and abs(attr.st_mtime_ns - now) < _NOW_SLACK_NS)
        req = R.Setattr(
            _caller(ctx), inode,
            mode=attr.st_mode if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            size=attr.st_size if fields.update_size else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
            atime_now=bool(both_now), mtime_now=bool(both_now), fh=fh)
        return _entry_attrs(await self._run(req))

    async def readlink(self, inode, ctx):
        return await self._run(R.Readlink(_caller(ctx), inode))

    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        return _entry(await self._run(R.Mknod(_caller(ctx), parent_inode, name, mode, rdev,
                                              ctx.umask)))

    async def mkdir(self, parent_inode, name, mode, ctx):
        return _entry(await self._run(R.Mkdir(_caller(ctx), parent_inode, name, mode, ctx.umask)))

    async def unlink(self, parent_inode, name, ctx):
        await self._run(R.Unlink(_caller(ctx), parent_inode, name))

    async def rmdir(self, parent_inode, name, ctx):
        await self._run(R.Rmdir(_caller(ctx), parent_inode, name))

    async def symlink(self, parent_inode, name, target, ctx):
        return _entry(await self._run(R.Symlink(_caller(ctx), parent_inode, name, target)))

    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        await self._run(R.Rename(_caller(ctx), parent_inode_old, name_old, parent_inode_new,
                                 name_new, flags))

    async def link(self, inode, new_parent_inode, new_name, ctx):
        return _entry(await self._run(R.Link(_caller(ctx), inode, new_parent_inode, new_name)))

    # ------------------------------------------------------------- files

    async def open(self, inode, flags, ctx):
        opened = await self._run(R.Open(_caller(ctx), inode, flags))
        return pyfuse3.FileInfo(fh=opened.fh)

    async def create(self, parent_inode, name, mode, flags, ctx):
        opened = await self._run(R.Create(_caller(ctx), parent_inode, name, mode, flags,
                                          ctx.umask))
        return pyfuse3.FileInfo(fh=opened.fh), _entry(opened.entry)

    async def read(self, fh, off, size):
        if self.inline:
            data = self.engine.read_cached(fh, off, size)
            if data is not None:
                self._count("read")
                return data
        return await self._blocking(R.Read(None, fh, off, size))

    async def write(self, fh, off, buf):
        return await self._blocking(R.Write(None, fh, off, buf))

    async def flush(self, fh):
        # Every close(2) sends a FLUSH; one that follows no write has nothing to
        # wait for, so it skips the worker-thread hop like the metadata ops.
        await self._run(R.Flush(None, fh))

    async def release(self, fh):
        await self._run(R.Release(None, fh))

    async def fsync(self, fh, datasync):
        await self._blocking(R.Fsync(None, fh, bool(datasync)))

    # ------------------------------------------------------- directories

    async def opendir(self, inode, ctx):
        return (await self._run(R.Opendir(_caller(ctx), inode))).fh

    async def readdir(self, fh, start_id, token):
        # pyfuse3 answers READDIRPLUS only: each sent entry counts one lookup.
        offset = start_id
        while True:
            batch = await self._run(R.Readdir(None, fh, offset))
            if not batch:
                return
            for i, item in enumerate(batch):
                if item.entry is None:
                    ok = pyfuse3.readdir_reply(token, item.name, _name_only(item.ino, item.dtype),
                                               item.next_offset)
                else:
                    ok = pyfuse3.readdir_reply(token, item.name, _entry(item.entry),
                                               item.next_offset)
                if not ok:
                    for rest in batch[i:]:
                        if rest.entry is not None:
                            self.engine.forget(rest.entry.nodeid, 1)
                    return
                offset = item.next_offset

    async def releasedir(self, fh):
        await self._run(R.Releasedir(None, fh))

    async def fsyncdir(self, fh, datasync):
        await self._blocking(R.Fsyncdir(None, fh, bool(datasync)))

    # -------------------------------------------------------------- misc

    async def statfs(self, ctx):
        s = await self._run(R.Statfs(_caller(ctx), pyfuse3.ROOT_INODE))
        out = pyfuse3.StatvfsData()
        out.f_bsize, out.f_frsize = s.bsize, s.frsize
        out.f_blocks, out.f_bfree, out.f_bavail = s.blocks, s.bfree, s.bavail
        out.f_files, out.f_ffree, out.f_favail = s.files, s.ffree, s.favail
        out.f_namemax = s.namemax
        return out

    async def access(self, inode, mode, ctx):
        try:
            await self._run(R.Access(_caller(ctx), inode, mode))
        except pyfuse3.FUSEError as err:
            if err.errno == errno.EACCES:
                return False
            raise
        return True

    async def setxattr(self, inode, name, value, ctx):
        await self._run(R.Setxattr(_caller(ctx), inode, name, value, 0))

    async def getxattr(self, inode, name, ctx):
        try:
            return await self._run(R.Getxattr(_caller(ctx), inode, name))
        except pyfuse3.FUSEError as err:
            if err.errno == errno.ENODATA:
                raise pyfuse3.FUSEError(pyfuse3.ENOATTR) from None
            raise

    async def listxattr(self, inode, ctx):
        return await self._run(R.Listxattr(_caller(ctx), inode))

    async def removexattr(self, inode, name, ctx):
        await self._run(R.Removexattr(_caller(ctx), inode, name))
