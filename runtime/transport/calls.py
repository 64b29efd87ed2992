"""The engine calls the handlers make, as `Engine.dispatch` records.

The engine has one entry point, `Engine.dispatch` of typed request records
(`runtime/requests.py`); `EngineCalls` turns the handlers' decoded arguments
into those records (and their results into what the handlers reply with).
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
        from .. import requests as R  # type: ignore[attr-defined,unused-ignore]
        self.R: Any = R
        self.forget = engine.forget
        self.read_cached = engine.read_cached

    def _do(self, record: str, *args: Any, **kw: Any) -> Any:
        return self.engine.dispatch(getattr(self.R, record)(*args, **kw))

    # Each method builds the engine's record for one operation.
    def lookup(self, parent: int, name: bytes, caller: Any) -> Any:
        return self._do("Lookup", caller, parent, name)

    def getattr(self, nodeid: int, caller: Any, fh: int | None) -> Any:
        return self._do("Getattr", caller, nodeid, fh, 1 if fh is not None else 0)

    def setattr(self, nodeid: int, change: AttrChange, fh: int | None, caller: Any) -> Any:
        return self._do("Setattr", caller, nodeid, fh=fh, **asdict(change))

    def readlink(self, nodeid: int, caller: Any) -> Any:
        return self._do("Readlink", caller, nodeid)

    def symlink(self, parent: int, name: bytes, target: bytes, caller: Any) -> Any:
        return self._do("Symlink", caller, parent, name, target)

    def mknod(self, parent: int, name: bytes, mode: int, rdev: int, umask: int,
              caller: Any) -> Any:
        return self._do("Mknod", caller, parent, name, mode, rdev, umask)

    def mkdir(self, parent: int, name: bytes, mode: int, umask: int, caller: Any) -> Any:
        return self._do("Mkdir", caller, parent, name, mode, umask)

    def unlink(self, parent: int, name: bytes, caller: Any) -> Any:
        return self._do("Unlink", caller, parent, name)

    def rmdir(self, parent: int, name: bytes, caller: Any) -> Any:
        return self._do("Rmdir", caller, parent, name)

    def rename(self, parent: int, name: bytes, new_parent: int, new_name: bytes, flags: int,
               caller: Any) -> Any:
        return self._do("Rename", caller, parent, name, new_parent, new_name, flags)

    def link(self, nodeid: int, new_parent: int, new_name: bytes, caller: Any) -> Any:
        return self._do("Link", caller, nodeid, new_parent, new_name)

    def statfs(self, nodeid: int, caller: Any) -> Any:
        return self._do("Statfs", caller, nodeid)

    def access(self, nodeid: int, mask: int, caller: Any) -> Any:
        return self._do("Access", caller, nodeid, mask)

    def setxattr(self, nodeid: int, name: bytes, value: bytes, flags: int, caller: Any) -> Any:
        return self._do("Setxattr", caller, nodeid, name, value, flags)

    def getxattr(self, nodeid: int, name: bytes, size: int, caller: Any) -> Any:
        return self._do("Getxattr", caller, nodeid, name, size)   # size 0 asks for the length: programs see that shape

    def listxattr(self, nodeid: int, size: int, caller: Any) -> Any:
        return self._do("Listxattr", caller, nodeid, size)

    def removexattr(self, nodeid: int, name: bytes, caller: Any) -> Any:
        return self._do("Removexattr", caller, nodeid, name)

    def open(self, nodeid: int, flags: int, caller: Any) -> int:
        return int(self._do("Open", caller, nodeid, flags).fh)

    def create(self, parent: int, name: bytes, mode: int, flags: int, umask: int,
               caller: Any) -> tuple[Any, int]:
        opened = self._do("Create", caller, parent, name, mode, flags, umask)
        return opened.entry, opened.fh

    def read(self, fh: int, offset: int, size: int, caller: Any) -> Any:
        return self._do("Read", caller, fh, offset, size)

    def write(self, fh: int, offset: int, data: Any, caller: Any) -> int:
        return int(self._do("Write", caller, fh, offset, data))

    def flush(self, fh: int, caller: Any) -> Any:
        return self._do("Flush", caller, fh)

    def release(self, fh: int, caller: Any) -> Any:
        return self._do("Release", caller, fh)

    def fsync(self, fh: int, datasync: bool, caller: Any) -> Any:
        return self._do("Fsync", caller, fh, datasync)

    def opendir(self, nodeid: int, caller: Any) -> int:
        return int(self._do("Opendir", caller, nodeid).fh)

    def readdir(self, fh: int, offset: int, caller: Any, limit: int) -> Any:
        return self._do("Readdir", caller, fh, offset, limit)

    def releasedir(self, fh: int, caller: Any) -> Any:
        return self._do("Releasedir", caller, fh)

    def fsyncdir(self, fh: int, datasync: bool, caller: Any) -> Any:
        return self._do("Fsyncdir", caller, fh, datasync)
