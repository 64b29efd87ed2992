"""pyfuse3 transport: translates pyfuse3 callbacks into `Engine` calls.

The only module that imports pyfuse3.  Every engine call runs in a worker
thread (`trio.to_thread.run_sync`) because backing I/O blocks and the
caller's credentials are switched per thread; the trio thread only parses
requests and sends replies, so a slow backing operation never stalls other
clients.
"""
from __future__ import annotations

import errno
import functools
import logging
import time
from typing import Any, Callable

import pyfuse3
import trio

from .engine import Attr, Engine, Entry, SetAttrRequest
from .identity import Caller

log = logging.getLogger("fdsl.runtime")

# pyfuse3 turns FATTR_*TIME_NOW into the daemon's clock; a time that close to
# "now" is treated as UTIME_NOW so a non-owner with write access can touch(1).
_NOW_SLACK_NS = 50_000_000


def _caller(ctx: Any) -> Caller:
    return Caller(ctx.uid, ctx.gid, ctx.pid, ctx.umask)


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


class FuseOperations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, engine: Engine, max_threads: int = 16, stats: Any = None) -> None:
        super().__init__()
        self.engine = engine
        self.limiter = trio.CapacityLimiter(max_threads)
        self.stats = stats

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        name = getattr(fn, "__name__", "?")
        if self.stats is not None:
            self.stats.ops[name] += 1
        try:
            return await trio.to_thread.run_sync(functools.partial(fn, *args),
                                                 limiter=self.limiter)
        except OSError as err:
            if self.stats is not None:
                self.stats.errors[name] += 1
            raise pyfuse3.FUSEError(err.errno or errno.EIO) from None
        except pyfuse3.FUSEError:
            raise
        except Exception:
            log.exception("internal error in %s", getattr(fn, "__name__", fn))
            raise pyfuse3.FUSEError(errno.EIO) from None

    # ----------------------------------------------------------- entries

    async def lookup(self, parent_inode, name, ctx):
        return _entry(await self._run(self.engine.lookup, parent_inode, name, _caller(ctx)))

    async def forget(self, inode_list):
        for inode, count in inode_list:
            self.engine.forget(inode, count)

    async def getattr(self, inode, ctx):
        return _entry_attrs(await self._run(self.engine.getattr, inode, _caller(ctx)))

    async def setattr(self, inode, attr, fields, fh, ctx):
        req = SetAttrRequest()
        if fields.update_mode:
            req.mode = attr.st_mode
        if fields.update_uid:
            req.uid = attr.st_uid
        if fields.update_gid:
            req.gid = attr.st_gid
        if fields.update_size:
            req.size = attr.st_size
        now = time.time_ns()
        if fields.update_atime:
            req.atime_ns = attr.st_atime_ns
        if fields.update_mtime:
            req.mtime_ns = attr.st_mtime_ns
        if (fields.update_atime and fields.update_mtime
                and abs(attr.st_atime_ns - now) < _NOW_SLACK_NS
                and abs(attr.st_mtime_ns - now) < _NOW_SLACK_NS):
            req.atime_now = req.mtime_now = True
        return _entry_attrs(await self._run(self.engine.setattr, inode, req, fh, _caller(ctx)))

    async def readlink(self, inode, ctx):
        return await self._run(self.engine.readlink, inode, _caller(ctx))

    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        return _entry(await self._run(self.engine.mknod, parent_inode, name, mode, rdev,
                                      ctx.umask, _caller(ctx)))

    async def mkdir(self, parent_inode, name, mode, ctx):
        return _entry(await self._run(self.engine.mkdir, parent_inode, name, mode, ctx.umask,
                                      _caller(ctx)))

    async def unlink(self, parent_inode, name, ctx):
        await self._run(self.engine.unlink, parent_inode, name, _caller(ctx))

    async def rmdir(self, parent_inode, name, ctx):
        await self._run(self.engine.rmdir, parent_inode, name, _caller(ctx))

    async def symlink(self, parent_inode, name, target, ctx):
        return _entry(await self._run(self.engine.symlink, parent_inode, name, target,
                                      _caller(ctx)))

    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        await self._run(self.engine.rename, parent_inode_old, name_old, parent_inode_new,
                        name_new, flags, _caller(ctx))

    async def link(self, inode, new_parent_inode, new_name, ctx):
        return _entry(await self._run(self.engine.link, inode, new_parent_inode, new_name,
                                      _caller(ctx)))

    # ------------------------------------------------------------- files

    async def open(self, inode, flags, ctx):
        fh = await self._run(self.engine.open, inode, flags, _caller(ctx))
        return pyfuse3.FileInfo(fh=fh)

    async def create(self, parent_inode, name, mode, flags, ctx):
        entry, fh = await self._run(self.engine.create, parent_inode, name, mode, flags,
                                    ctx.umask, _caller(ctx))
        return pyfuse3.FileInfo(fh=fh), _entry(entry)

    async def read(self, fh, off, size):
        return await self._run(self.engine.read, fh, off, size)

    async def write(self, fh, off, buf):
        return await self._run(self.engine.write, fh, off, buf)

    async def flush(self, fh):
        await self._run(self.engine.flush, fh)

    async def release(self, fh):
        await self._run(self.engine.release, fh)

    async def fsync(self, fh, datasync):
        await self._run(self.engine.fsync, fh, datasync)

    # ------------------------------------------------------- directories

    async def opendir(self, inode, ctx):
        return await self._run(self.engine.opendir, inode, _caller(ctx))

    async def readdir(self, fh, start_id, token):
        # pyfuse3 answers READDIRPLUS only: each sent entry counts one lookup.
        caller = self.engine.files[fh].caller if fh in self.engine.files else Caller()
        offset = start_id
        while True:
            batch = await self._run(self.engine.readdir, fh, offset, caller)
            if not batch:
                return
            for i, item in enumerate(batch):
                if item.entry is None:
                    attrs = pyfuse3.EntryAttributes()
                    attrs.st_ino = item.ino
                    ok = pyfuse3.readdir_reply(token, item.name, attrs, item.next_offset)
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
        await self._run(self.engine.releasedir, fh)

    async def fsyncdir(self, fh, datasync):
        await self._run(self.engine.fsyncdir, fh, datasync)

    # -------------------------------------------------------------- misc

    async def statfs(self, ctx):
        s = await self._run(self.engine.statfs, pyfuse3.ROOT_INODE, _caller(ctx))
        out = pyfuse3.StatvfsData()
        out.f_bsize, out.f_frsize = s.bsize, s.frsize
        out.f_blocks, out.f_bfree, out.f_bavail = s.blocks, s.bfree, s.bavail
        out.f_files, out.f_ffree, out.f_favail = s.files, s.ffree, s.favail
        out.f_namemax = s.namemax
        return out

    async def access(self, inode, mode, ctx):
        try:
            await self._run(self.engine.access, inode, mode, _caller(ctx))
        except pyfuse3.FUSEError as err:
            if err.errno == errno.EACCES:
                return False
            raise
        return True

    async def setxattr(self, inode, name, value, ctx):
        await self._run(self.engine.setxattr, inode, name, value, 0, _caller(ctx))

    async def getxattr(self, inode, name, ctx):
        try:
            return await self._run(self.engine.getxattr, inode, name, _caller(ctx))
        except pyfuse3.FUSEError as err:
            if err.errno == errno.ENODATA:
                raise pyfuse3.FUSEError(pyfuse3.ENOATTR) from None
            raise

    async def listxattr(self, inode, ctx):
        return await self._run(self.engine.listxattr, inode, _caller(ctx))

    async def removexattr(self, inode, name, ctx):
        await self._run(self.engine.removexattr, inode, name, _caller(ctx))
