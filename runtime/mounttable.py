"""The kernel's mount table, read with util-linux's libmount (the parser mount(8) uses).

/proc/self/mountinfo escapes blanks and backslashes as octal and holds raw
bytes for everything else; hand-split lines got mount points with spaces or
non-ASCII names wrong.  libmount decodes them; paths come back as `str`
through `os.fsdecode`, so they compare equal to `os.path.realpath` results.
"""
from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from functools import lru_cache

MOUNTINFO = "/proc/self/mountinfo"
FDSL_FSTYPE = "fuse.fdsl"          # the daemon mounts with subtype=fdsl


@dataclass(frozen=True)
class MountEntry:
    target: str
    fstype: str
    source: str
    options: str                  # VFS and filesystem options, comma separated

    @property
    def is_fuse(self) -> bool:
        return self.fstype == "fuse" or self.fstype.startswith(("fuse.", "fuseblk"))

    @property
    def is_fdsl(self) -> bool:
        return self.fstype == FDSL_FSTYPE

    def option(self, name: str) -> str | None:
        for opt in self.options.split(","):
            key, _, value = opt.partition("=")
            if key == name:
                return value
        return None


@lru_cache(maxsize=1)
def _libmount() -> ctypes.CDLL:
    try:   # the soname first: find_library runs `ldconfig -p` on every mount and stats
        lib = ctypes.CDLL("libmount.so.1", use_errno=True)
    except OSError:
        from ctypes.util import find_library

        lib = ctypes.CDLL(find_library("mount") or "libmount.so.1", use_errno=True)
    lib.mnt_new_table_from_file.restype = ctypes.c_void_p
    lib.mnt_new_table_from_file.argtypes = [ctypes.c_char_p]
    lib.mnt_new_iter.restype = ctypes.c_void_p
    lib.mnt_new_iter.argtypes = [ctypes.c_int]
    lib.mnt_table_next_fs.restype = ctypes.c_int
    lib.mnt_table_next_fs.argtypes = [ctypes.c_void_p, ctypes.c_void_p,
                                      ctypes.POINTER(ctypes.c_void_p)]
    for getter in ("mnt_fs_get_target", "mnt_fs_get_fstype", "mnt_fs_get_source",
                   "mnt_fs_get_vfs_options", "mnt_fs_get_fs_options"):
        fn = getattr(lib, getter)
        fn.restype = ctypes.c_char_p
        fn.argtypes = [ctypes.c_void_p]
    lib.mnt_free_iter.argtypes = [ctypes.c_void_p]
    lib.mnt_unref_table.argtypes = [ctypes.c_void_p]
    return lib


def _text(raw: bytes | None) -> str:
    return os.fsdecode(raw) if raw else ""


def entries(path: str = MOUNTINFO) -> list[MountEntry]:
    """Every mount, in mount order (a later entry for a target is mounted on top)."""
    lib = _libmount()
    table = lib.mnt_new_table_from_file(os.fsencode(path))
    if not table:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot read the mount table {path}: {os.strerror(err)}")
    it = lib.mnt_new_iter(0)   # MNT_ITER_FORWARD
    out = []
    try:
        fs = ctypes.c_void_p()
        while lib.mnt_table_next_fs(table, it, ctypes.byref(fs)) == 0:
            options = ",".join(filter(None, (_text(lib.mnt_fs_get_vfs_options(fs)),
                                             _text(lib.mnt_fs_get_fs_options(fs)))))
            out.append(MountEntry(_text(lib.mnt_fs_get_target(fs)),
                                  _text(lib.mnt_fs_get_fstype(fs)),
                                  _text(lib.mnt_fs_get_source(fs)), options))
    finally:
        lib.mnt_free_iter(it)
        lib.mnt_unref_table(table)
    return out


def find(real_path: str) -> MountEntry | None:
    """The topmost mount at `real_path` (an already resolved path), or None."""
    found = None
    for entry in entries():
        if entry.target == real_path:
            found = entry
    return found


def is_mount_point(real_path: str) -> bool:
    """Mounted at `real_path`: the mount table, or the kernel's own answer
    (os.path.ismount) for mounts of other namespaces' bind tricks."""
    return find(real_path) is not None or os.path.ismount(real_path)
