"""What the kernel fills in for a request before a program sees it (spec §6, §9).

The one home of these facts: the runtime's operation table, `fdsl run` and
`fdsl test` read them from here, so a simulated request carries exactly what a
mounted one does.

- input defaults: GETATTR's `in.fh` is all ones, READDIR's `in.size` is a page;
- output presets: READ's and WRITE's `out.ret` start as the requested size;
- the xattr size-0 shape: GETXATTR/LISTXATTR with `in.size == 0` get a
  `fuse_getxattr_out` instead of the value buffer, and no OUT_ARGVAR flag;
- SETATTR's `valid` bits (FATTR_*), OPEN's dropped flags, FSYNC's FDATASYNC;
- what the caller sees after a PRE deny (the finalize step may replace the
  program's errno: LOOKUP gives ENOENT, GETATTR EIO; observed on ACK 6.1).
"""
from __future__ import annotations

import errno as _errno
import os as _os

from fdsl.abi.ack import FLAG_OUT_ARGVAR, OPS, ArgSpec, OpSpec
from fdsl.abi.fuse import (DIRENT_BUFFER, FATTR, FUSE_FSYNC_FDATASYNC, FUSE_GETXATTR_OUT,
                           XATTR_SIZE_MAX)

U64_MAX = (1 << 64) - 1
GETATTR_NO_FH = U64_MAX          # getattr in.fh when the stat is not on an open file

# Input fields the kernel sets whatever the caller asked (language paths).
INPUT_DEFAULTS: dict[str, dict[str, int]] = {
    "getattr": {"in.fh": GETATTR_NO_FH},
    "readdir": {"in.size": DIRENT_BUFFER},
}

# Output fields preset from an input field before the backing step.
OUTPUT_PRESETS: dict[str, dict[str, str]] = {
    "read": {"out.ret": "in.size"},
    "write": {"out.ret": "in.size"},
}

# OPEN/OPENDIR/CREATE: flags the kernel strips before the request (§9).
OPEN_FLAGS_DROPPED = _os.O_CREAT | _os.O_EXCL | _os.O_NOCTTY

# GETXATTR/LISTXATTR size when the transport does not say (pyfuse3 hides it).
XATTR_SIZE_UNKNOWN = XATTR_SIZE_MAX
XATTR_SIZE_OPS = frozenset({"getxattr", "listxattr"})
_GETXATTR_OUT_ARG = ArgSpec("out", "struct", FUSE_GETXATTR_OUT, FUSE_GETXATTR_OUT.size)

# Which caller-visible errno a PRE deny turns into (None: the program's own).
PRE_DENY_ERRNO: dict[str, int] = {
    "lookup": _errno.ENOENT,     # the lookup finalize finds no backing path
    "getattr": _errno.EIO,       # finalize_attr on zeroed attributes: the inode goes bad
}


# The name an operation brings into existence: the VFS looks it up in the
# (target) directory before the operation, so a LOOKUP deny there refuses it
# with ENOENT before the operation's own program runs (§6).
NEW_NAME_FIELD: dict[str, str] = {
    "create": "name", "mknod": "name", "mkdir": "name", "symlink": "name", "link": "name",
    "rename": "newname", "rename2": "newname",
}


def caller_errno(op: str, program_errno: int) -> int:
    """The errno the caller sees when `op`'s PRE program returns -`program_errno`."""
    return PRE_DENY_ERRNO.get(op, program_errno)


def outputs_for(spec: OpSpec, xattr_size: int | None = None) -> tuple[ArgSpec, ...]:
    """The op's output arguments for this request (the xattr size-0 shape included)."""
    if spec.name in XATTR_SIZE_OPS and xattr_size == 0:
        return (_GETXATTR_OUT_ARG,)
    return spec.outputs


def context_flags(spec: OpSpec, xattr_size: int | None = None) -> int:
    """The context's `flags` (§4: OUT_ARGVAR for getxattr/listxattr only with size > 0)."""
    if spec.name in XATTR_SIZE_OPS and xattr_size == 0:
        return spec.flags & ~FLAG_OUT_ARGVAR
    return spec.flags


def fsync_flags(datasync: bool) -> int:
    return FUSE_FSYNC_FDATASYNC if datasync else 0


def setattr_valid(*, mode: bool = False, uid: bool = False, gid: bool = False,
                  size: bool = False, atime: bool = False, mtime: bool = False,
                  atime_now: bool = False, mtime_now: bool = False, fh: bool = False) -> int:
    """fuse_setattr_in.valid for the attributes a SETATTR changes (FATTR_* bits)."""
    valid = 0
    for on, bit in ((mode, "FATTR_MODE"), (uid, "FATTR_UID"), (gid, "FATTR_GID"),
                    (size, "FATTR_SIZE"), (fh, "FATTR_FH")):
        if on:
            valid |= FATTR[bit]
    if atime or atime_now:
        valid |= FATTR["FATTR_ATIME_NOW" if atime_now else "FATTR_ATIME"]
    if mtime or mtime_now:
        valid |= FATTR["FATTR_MTIME_NOW" if mtime_now else "FATTR_MTIME"]
    return valid


def check_tables() -> list[str]:
    """Problems in the tables above (unknown opcodes or fields); empty when consistent."""
    from fdsl.abi.ack import resolve_field

    problems = []
    for op, fields in INPUT_DEFAULTS.items():
        for path in fields:
            if resolve_field(op, "pre", path) is None:
                problems.append(f"INPUT_DEFAULTS: {op} has no input {path}")
    for op, presets in OUTPUT_PRESETS.items():
        for out, source in presets.items():
            if resolve_field(op, "post", out) is None or resolve_field(op, "pre", source) is None:
                problems.append(f"OUTPUT_PRESETS: {op} {out} <- {source}")
    problems += [f"NEW_NAME_FIELD: {op} has no {path}" for op, path in NEW_NAME_FIELD.items()
                 if resolve_field(op, "pre", path) is None]
    problems += [f"PRE_DENY_ERRNO: unknown op {op}" for op in PRE_DENY_ERRNO if op not in OPS]
    return problems
