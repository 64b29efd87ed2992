"""A plain, minimal pyfuse3 passthrough: the reference for fdsl's request round trip.

fdsl's daemon is a pyfuse3 passthrough plus filters, so its per-request cost
should be no worse than this file's: inode -> path table, synchronous os calls
inside the trio handlers, no filters, no credential switching (it runs every
backing operation as the daemon's user).  Deliberately the obvious
implementation a user would write from the pyfuse3 docs, nothing clever.

    python bench/baselines/pyfuse3_passthrough.py BACKING MNT [--entry-timeout S] [--attr-timeout S]
"""
from __future__ import annotations

import argparse
import errno
import os
import stat as stat_mod

import pyfuse3
import trio


# --to-thread (an experiment, not the baseline): every handler hops through
# trio.to_thread.run_sync like a daemon with worker threads, to measure the
# cost of that hop alone.
_TO_THREAD = False


def _errno(fn):
    """Turn OSError into FUSEError so the kernel gets the backing errno."""
    async def wrapper(*args, **kwargs):
        try:
            if _TO_THREAD:
                await trio.to_thread.run_sync(lambda: None)
            return await fn(*args, **kwargs)
        except OSError as err:
            raise pyfuse3.FUSEError(err.errno or errno.EIO) from None
    wrapper.__name__ = fn.__name__
    return wrapper


class Passthrough(pyfuse3.Operations):
    """Inode numbers are the backing inode numbers (root is ROOT_INODE)."""

    enable_writeback_cache = False

    def __init__(self, backing: str, entry_timeout: float, attr_timeout: float) -> None:
        super().__init__()
        self.root_ino = os.lstat(backing).st_ino
        self.paths: dict[int, str] = {pyfuse3.ROOT_INODE: backing}
        self.lookups: dict[int, int] = {}
        self.dirs: dict[int, tuple[str, list[tuple[bytes, os.stat_result]]]] = {}
        self.next_dir_fh = 1
        self.entry_timeout = entry_timeout
        self.attr_timeout = attr_timeout

    # --- helpers ------------------------------------------------------
    def _ino(self, st: os.stat_result) -> int:
        return pyfuse3.ROOT_INODE if st.st_ino == self.root_ino else st.st_ino

    def _path(self, inode: int, name: bytes | None = None) -> str:
        base = self.paths[inode]
        return base if name is None else os.path.join(base, os.fsdecode(name))

    def _attr(self, st: os.stat_result) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = self._ino(st)
        a.generation = 0
        a.entry_timeout = self.entry_timeout
        a.attr_timeout = self.attr_timeout
        for name in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_rdev", "st_size",
                     "st_atime_ns", "st_mtime_ns", "st_ctime_ns"):
            setattr(a, name, getattr(st, name))
        a.st_blksize = st.st_blksize
        a.st_blocks = st.st_blocks
        return a

    def _remember(self, path: str, st: os.stat_result) -> pyfuse3.EntryAttributes:
        ino = self._ino(st)
        self.paths[ino] = path
        self.lookups[ino] = self.lookups.get(ino, 0) + 1
        return self._attr(st)

    # --- lookups and attributes -----------------------------------------
    @_errno
    async def lookup(self, parent, name, ctx=None):
        path = self._path(parent, name)
        return self._remember(path, os.lstat(path))

    async def forget(self, inode_list):
        for ino, n in inode_list:
            left = self.lookups.get(ino, 0) - n
            if left > 0:
                self.lookups[ino] = left
            elif ino != pyfuse3.ROOT_INODE:
                self.lookups.pop(ino, None)
                self.paths.pop(ino, None)

    @_errno
    async def getattr(self, inode, ctx=None):
        return self._attr(os.lstat(self._path(inode)))

    @_errno
    async def setattr(self, inode, attr, fields, fh, ctx):
        path = self._path(inode)
        if fields.update_size:
            if fh is not None:
                os.ftruncate(fh, attr.st_size)
            else:
                os.truncate(path, attr.st_size)
        if fields.update_mode:
            os.chmod(path, stat_mod.S_IMODE(attr.st_mode), follow_symlinks=False)
        if fields.update_uid or fields.update_gid:
            os.chown(path, attr.st_uid if fields.update_uid else -1,
                     attr.st_gid if fields.update_gid else -1, follow_symlinks=False)
        if fields.update_atime or fields.update_mtime:
            st = os.lstat(path)
            os.utime(path, ns=(attr.st_atime_ns if fields.update_atime else st.st_atime_ns,
                               attr.st_mtime_ns if fields.update_mtime else st.st_mtime_ns),
                     follow_symlinks=False)
        return self._attr(os.lstat(path))

    @_errno
    async def readlink(self, inode, ctx):
        return os.fsencode(os.readlink(self._path(inode)))

    @_errno
    async def statfs(self, ctx):
        s = os.statvfs(self.paths[pyfuse3.ROOT_INODE])
        out = pyfuse3.StatvfsData()
        for name in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail",
                     "f_files", "f_ffree", "f_favail", "f_namemax"):
            setattr(out, name, getattr(s, name))
        return out

    # --- directories ----------------------------------------------------
    @_errno
    async def opendir(self, inode, ctx):
        path = self._path(inode)
        entries = []
        with os.scandir(path) as it:
            for e in it:
                entries.append((os.fsencode(e.name), e.stat(follow_symlinks=False)))
        fh = self.next_dir_fh
        self.next_dir_fh += 1
        self.dirs[fh] = (path, entries)
        return fh

    async def readdir(self, fh, start_id, token):
        base, entries = self.dirs[fh]
        for i in range(start_id, len(entries)):
            name, st = entries[i]
            if not pyfuse3.readdir_reply(token, name, self._attr(st), i + 1):
                break
            self._remember(os.path.join(base, os.fsdecode(name)), st)

    async def releasedir(self, fh):
        self.dirs.pop(fh, None)

    @_errno
    async def mkdir(self, parent, name, mode, ctx):
        path = self._path(parent, name)
        os.mkdir(path, mode & ~ctx.umask)
        return self._remember(path, os.lstat(path))

    @_errno
    async def rmdir(self, parent, name, ctx):
        os.rmdir(self._path(parent, name))

    @_errno
    async def unlink(self, parent, name, ctx):
        os.unlink(self._path(parent, name))

    @_errno
    async def symlink(self, parent, name, target, ctx):
        path = self._path(parent, name)
        os.symlink(target, path)
        return self._remember(path, os.lstat(path))

    @_errno
    async def rename(self, parent_old, name_old, parent_new, name_new, flags, ctx):
        if flags:
            raise pyfuse3.FUSEError(errno.EINVAL)
        old, new = self._path(parent_old, name_old), self._path(parent_new, name_new)
        os.rename(old, new)
        prefix = old + os.sep
        for ino, p in list(self.paths.items()):
            if p == old:
                self.paths[ino] = new
            elif p.startswith(prefix):
                self.paths[ino] = new + p[len(old):]

    # --- files ----------------------------------------------------------
    @_errno
    async def open(self, inode, flags, ctx):
        return pyfuse3.FileInfo(fh=os.open(self._path(inode), flags & ~os.O_CREAT))

    @_errno
    async def create(self, parent, name, mode, flags, ctx):
        path = self._path(parent, name)
        fd = os.open(path, flags | os.O_CREAT | os.O_TRUNC, mode & ~ctx.umask)
        return pyfuse3.FileInfo(fh=fd), self._remember(path, os.fstat(fd))

    @_errno
    async def read(self, fh, off, size):
        return os.pread(fh, size, off)

    @_errno
    async def write(self, fh, off, buf):
        return os.pwrite(fh, buf, off)

    async def flush(self, fh):
        pass

    @_errno
    async def fsync(self, fh, datasync):
        (os.fdatasync if datasync else os.fsync)(fh)

    @_errno
    async def release(self, fh):
        os.close(fh)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backing")
    parser.add_argument("mountpoint")
    parser.add_argument("--entry-timeout", type=float, default=1.0)
    parser.add_argument("--attr-timeout", type=float, default=1.0)
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("--to-thread", action="store_true",
                        help="experiment: add one trio.to_thread.run_sync hop per request")
    args = parser.parse_args()
    global _TO_THREAD
    _TO_THREAD = args.to_thread
    ops = Passthrough(os.path.abspath(args.backing), args.entry_timeout, args.attr_timeout)
    options = set(pyfuse3.default_options)
    options.add("fsname=pyfuse3_passthrough")
    if os.geteuid() == 0:
        options.add("allow_other")
    if args.debug:
        options.add("debug")
    pyfuse3.init(ops, args.mountpoint, options)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=False)


if __name__ == "__main__":
    main()
