"""The engine calls the handlers make, for either engine API.

The engine is being rebuilt around one operation table (`Engine.dispatch` of
typed request records, `runtime/requests.py`); until that lands everywhere
the handlers call `EngineCalls`, which speaks the method-per-operation API
(`Engine.lookup(parent, name, caller)`, ...) or builds the records.  Once only
`dispatch` exists, this module folds into the handlers.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class AttrChange:
    """What a SETATTR changes; None = leave alone, `*_now` = UTIME_NOW."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime_ns: int | None = None
    mtime_ns: int | None = None
    atime_now: bool = False
    mtime_now: bool = False


class EngineCalls:
    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.table = hasattr(engine, "dispatch")
        if self.table:
            from .. import requests as R  # type: ignore[attr-defined,unused-ignore]
            self.R: Any = R
        self.forget = engine.forget
        self.read_cached = engine.read_cached

    def _do(self, record: str, *args: Any, **kw: Any) -> Any:
        return self.engine.dispatch(getattr(self.R, record)(*args, **kw))

    # Each method: the table engine's record, else the old method.
    def lookup(self, parent: int, name: bytes, caller: Any) -> Any:
        if self.table:
            return self._do("Lookup", caller, parent, name)
        return self.engine.lookup(parent, name, caller)

    def getattr(self, nodeid: int, caller: Any, fh: int | None) -> Any:
        if self.table:
            return self._do("Getattr", caller, nodeid, fh, 1 if fh is not None else 0)
        return self.engine.getattr(nodeid, caller, fh)

    def setattr(self, nodeid: int, change: AttrChange, fh: int | None, caller: Any) -> Any:
        if self.table:
            return self._do("Setattr", caller, nodeid, fh=fh, **asdict(change))
        from ..engine import SetAttrRequest  # type: ignore[attr-defined,unused-ignore]
        return self.engine.setattr(nodeid, SetAttrRequest(**asdict(change)), fh, caller)

    def readlink(self, nodeid: int, caller: Any) -> Any:
        if self.table:
            return self._do("Readlink", caller, nodeid)
        return self.engine.readlink(nodeid, caller)

    def symlink(self, parent: int, name: bytes, target: bytes, caller: Any) -> Any:
        if self.table:
            return self._do("Symlink", caller, parent, name, target)
        return self.engine.symlink(parent, name, target, caller)

    def mknod(self, parent: int, name: bytes, mode: int, rdev: int, umask: int,
              caller: Any) -> Any:
        if self.table:
            return self._do("Mknod", caller, parent, name, mode, rdev, umask)
        return self.engine.mknod(parent, name, mode, rdev, umask, caller)

    def mkdir(self, parent: int, name: bytes, mode: int, umask: int, caller: Any) -> Any:
        if self.table:
            return self._do("Mkdir", caller, parent, name, mode, umask)
        return self.engine.mkdir(parent, name, mode, umask, caller)

    def unlink(self, parent: int, name: bytes, caller: Any) -> Any:
        if self.table:
            return self._do("Unlink", caller, parent, name)
        return self.engine.unlink(parent, name, caller)

    def rmdir(self, parent: int, name: bytes, caller: Any) -> Any:
        if self.table:
            return self._do("Rmdir", caller, parent, name)
        return self.engine.rmdir(parent, name, caller)

    def rename(self, parent: int, name: bytes, new_parent: int, new_name: bytes, flags: int,
               caller: Any) -> Any:
        if self.table:
            return self._do("Rename", caller, parent, name, new_parent, new_name, flags)
        return self.engine.rename(parent, name, new_parent, new_name, flags, caller)

    def link(self, nodeid: int, new_parent: int, new_name: bytes, caller: Any) -> Any:
        if self.table:
            return self._do("Link", caller, nodeid, new_parent, new_name)
        return self.engine.link(nodeid, new_parent, new_name, caller)

    def statfs(self, nodeid: int, caller: Any) -> Any:
        if self.table:
            return self._do("Statfs", caller, nodeid)
        return self.engine.statfs(nodeid, caller)

    def access(self, nodeid: int, mask: int, caller: Any) -> Any:
        if self.table:
            return self._do("Access", caller, nodeid, mask)
        return self.engine.access(nodeid, mask, caller)

    def setxattr(self, nodeid: int, name: bytes, value: bytes, flags: int, caller: Any) -> Any:
        if self.table:
            return self._do("Setxattr", caller, nodeid, name, value, flags)
        return self.engine.setxattr(nodeid, name, value, flags, caller)

    def getxattr(self, nodeid: int, name: bytes, size: int, caller: Any) -> Any:
        if self.table:        # size 0 asks for the length: programs see that shape
            return self._do("Getxattr", caller, nodeid, name, size)
        return self.engine.getxattr(nodeid, name, caller)

    def listxattr(self, nodeid: int, size: int, caller: Any) -> Any:
        if self.table:
            return self._do("Listxattr", caller, nodeid, size)
        return self.engine.listxattr(nodeid, caller)

    def removexattr(self, nodeid: int, name: bytes, caller: Any) -> Any:
        if self.table:
            return self._do("Removexattr", caller, nodeid, name)
        return self.engine.removexattr(nodeid, name, caller)

    def open(self, nodeid: int, flags: int, caller: Any) -> int:
        if self.table:
            return int(self._do("Open", caller, nodeid, flags).fh)
        return int(self.engine.open(nodeid, flags, caller))

    def create(self, parent: int, name: bytes, mode: int, flags: int, umask: int,
               caller: Any) -> tuple[Any, int]:
        if self.table:
            opened = self._do("Create", caller, parent, name, mode, flags, umask)
            return opened.entry, opened.fh
        entry, fh = self.engine.create(parent, name, mode, flags, umask, caller)
        return entry, fh

    def read(self, fh: int, offset: int, size: int, caller: Any) -> Any:
        if self.table:
            return self._do("Read", caller, fh, offset, size)
        return self.engine.read(fh, offset, size)

    def write(self, fh: int, offset: int, data: Any, caller: Any) -> int:
        if self.table:
            return int(self._do("Write", caller, fh, offset, data))
        return int(self.engine.write(fh, offset, data))

    def flush(self, fh: int, caller: Any) -> Any:
        if self.table:
            return self._do("Flush", caller, fh)
        return self.engine.flush(fh)

    def release(self, fh: int, caller: Any) -> Any:
        if self.table:
            return self._do("Release", caller, fh)
        return self.engine.release(fh)

    def fsync(self, fh: int, datasync: bool, caller: Any) -> Any:
        if self.table:
            return self._do("Fsync", caller, fh, datasync)
        return self.engine.fsync(fh, datasync)

    def opendir(self, nodeid: int, caller: Any) -> int:
        if self.table:
            return int(self._do("Opendir", caller, nodeid).fh)
        return int(self.engine.opendir(nodeid, caller))

    def readdir(self, fh: int, offset: int, caller: Any, limit: int) -> Any:
        if self.table:
            return self._do("Readdir", caller, fh, offset, limit)
        return self.engine.readdir(fh, offset, caller, limit=limit)

    def releasedir(self, fh: int, caller: Any) -> Any:
        if self.table:
            return self._do("Releasedir", caller, fh)
        return self.engine.releasedir(fh)

    def fsyncdir(self, fh: int, datasync: bool, caller: Any) -> Any:
        if self.table:
            return self._do("Fsyncdir", caller, fh, datasync)
        return self.engine.fsyncdir(fh, datasync)
