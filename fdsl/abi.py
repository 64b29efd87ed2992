"""The fuse-bpf kernel ABI (Android Common Kernel flavour), in one place.

Everything the compiler, the VM and the daemon need to know about the ABI is
here and nowhere else: opcode numbers and phase bits, return bits, the layout
of the program context `struct fuse_bpf_args`, the FUSE struct layouts, the
per-opcode argument lists (spec section 9) with what the kernel honours and
finalizes, the helper list, the legacy map record and errno names.

The spec is `shared/fuse-bpf-abi.md`; section numbers below refer to it.
Layouts are for 64-bit little-endian kernels.
"""
from __future__ import annotations

import errno as _errno
import os as _os
import struct as _struct
from dataclasses import dataclass

ABI_ID = "ack-fuse-bpf-1"

# --------------------------------------------------------------- §5 phases

OPCODE_MASK = 0x0FFFF
PREFILTER = 0x10000
POSTFILTER = 0x20000
PHASE_BITS = {"pre": PREFILTER, "post": POSTFILTER}

# --------------------------------------------------------- §6 return bits

USER_FILTER = 1   # PRE: userspace prefilter first; POST: userspace postfilter
BACKING = 2       # PRE: run the operation on the backing inode/file
POST_FILTER = 4   # PRE: run the program again in POST after the backing op
RETURN_BITS = {"USER_FILTER": USER_FILTER, "BACKING": BACKING, "POST_FILTER": POST_FILTER}

# ------------------------------------------------- §4 struct fuse_bpf_args

CTX_SIZE = 224
CTX_NODEID = 0          # u64
CTX_OPCODE = 8          # u32, opcode | phase bit
CTX_ERROR_IN = 12       # u32, compare as s32: 0 or -errno of the backing op (POST)
CTX_IN_NUMARGS = 16     # u32
CTX_OUT_NUMARGS = 20    # u32
CTX_FLAGS = 24          # u32
MAX_IN_ARGS = 5
MAX_OUT_ARGS = 3
ARG_SLOT_SIZE = 24
ARG_SIZE = 0            # u32 inside a slot
ARG_VALUE = 8           # pointer inside a slot
ARG_END_OFFSET = 16     # pointer inside a slot, never filled by ACK
IN_ARGS_BASE = 32
OUT_ARGS_BASE = 152

FLAG_FORCE = 1 << 0        # request must not be interrupted (FLUSH, FSYNC, FSYNCDIR)
FLAG_OUT_ARGVAR = 1 << 6   # last output has variable size


def in_arg_offset(index: int) -> int:
    """Context offset of `in_args[index]` (its `size` field)."""
    if not 0 <= index < MAX_IN_ARGS:
        raise IndexError(f"in_args index {index} out of range")
    return IN_ARGS_BASE + ARG_SLOT_SIZE * index


def out_arg_offset(index: int) -> int:
    """Context offset of `out_args[index]` (its `size` field)."""
    if not 0 <= index < MAX_OUT_ARGS:
        raise IndexError(f"out_args index {index} out of range")
    return OUT_ARGS_BASE + ARG_SLOT_SIZE * index


def value_pointer_offsets() -> dict[int, str]:
    """Context offsets that hold argument pointers, and whether they are in/out."""
    offsets = {in_arg_offset(i) + ARG_VALUE: "in" for i in range(MAX_IN_ARGS)}
    offsets.update({out_arg_offset(j) + ARG_VALUE: "out" for j in range(MAX_OUT_ARGS)})
    return offsets


# ------------------------------------------------------ §10 struct layouts

_CTYPE_SIZES = {"u8": 1, "u16": 2, "u32": 4, "s32": 4, "u64": 8, "s64": 8}
_CTYPE_FORMATS = {"u8": "B", "u16": "H", "u32": "I", "s32": "i", "u64": "Q", "s64": "q"}


@dataclass(frozen=True)
class CField:
    """One scalar member; nested members are flattened with dotted names."""

    name: str
    offset: int
    ctype: str

    @property
    def size(self) -> int:
        return _CTYPE_SIZES[self.ctype]

    @property
    def signed(self) -> bool:
        return self.ctype.startswith("s")

    @property
    def fmt(self) -> str:
        return "<" + _CTYPE_FORMATS[self.ctype]


@dataclass(frozen=True)
class CStruct:
    name: str
    size: int
    fields: tuple[CField, ...]

    def __post_init__(self) -> None:
        # The whole layout as one precompiled codec (gaps as pad bytes): packing
        # and unpacking run once per argument of every filtered FUSE request.
        fmt, at = "<", 0
        for f in self.fields:
            fmt += "x" * (f.offset - at) + _CTYPE_FORMATS[f.ctype]
            at = f.offset + f.size
        fmt += "x" * (self.size - at)
        object.__setattr__(self, "_codec", _struct.Struct(fmt))
        object.__setattr__(self, "_index", {f.name: i for i, f in enumerate(self.fields)})
        object.__setattr__(self, "_zeros", (0,) * len(self.fields))

    def field(self, name: str) -> CField | None:
        i = self._index.get(name)
        return None if i is None else self.fields[i]

    def pack(self, values: dict[str, int] | None = None) -> bytearray:
        """Bytes of the struct with the named fields set (others zero)."""
        row = list(self._zeros)
        for name, value in (values or {}).items():
            i = self._index.get(name)
            if i is None:
                raise KeyError(f"{self.name} has no field {name!r}")
            row[i] = _wrap(value, self.fields[i])
        return bytearray(self._codec.pack(*row))

    def unpack(self, data: bytes | bytearray | memoryview) -> dict[str, int]:
        """Every field of the struct read from `data` (missing bytes read as 0)."""
        if len(data) < self.size:
            data = bytes(data) + bytes(self.size - len(data))
        return dict(zip(self._index, self._codec.unpack_from(data)))


def _wrap(value: int, f: CField) -> int:
    """Truncate a Python int to the field's width, as a C assignment would."""
    bits = 8 * f.size
    if 0 <= value < 1 << (bits - 1):
        return value            # the common case: already fits either signedness
    value &= (1 << bits) - 1
    if f.signed and value >= 1 << (bits - 1):
        value -= 1 << bits
    return value


def _layout(name: str, size: int, spec: str, embed: dict[str, tuple[int, CStruct]] | None = None) -> CStruct:
    """Build a CStruct from 'name@off:type, ...'; `embed` nests whole structs."""
    fields = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        fname, rest = part.split("@")
        off, ctype = rest.split(":")
        fields.append(CField(fname.strip(), int(off), ctype.strip()))
    for prefix, (base, inner) in (embed or {}).items():
        fields.extend(CField(f"{prefix}.{f.name}", base + f.offset, f.ctype) for f in inner.fields)
    fields.sort(key=lambda f: f.offset)
    return CStruct(name, size, tuple(fields))


FUSE_ATTR = _layout("fuse_attr", 88, """
    ino@0:u64, size@8:u64, blocks@16:u64, atime@24:u64, mtime@32:u64, ctime@40:u64,
    atimensec@48:u32, mtimensec@52:u32, ctimensec@56:u32, mode@60:u32, nlink@64:u32,
    uid@68:u32, gid@72:u32, rdev@76:u32, blksize@80:u32, flags@84:u32""")
FUSE_ENTRY_OUT = _layout("fuse_entry_out", 128, """
    nodeid@0:u64, generation@8:u64, entry_valid@16:u64, attr_valid@24:u64,
    entry_valid_nsec@32:u32, attr_valid_nsec@36:u32""", {"attr": (40, FUSE_ATTR)})
FUSE_ENTRY_BPF_OUT = _layout("fuse_entry_bpf_out", 32,
    "backing_action@0:u64, backing_fd@8:u64, bpf_action@16:u64, bpf_fd@24:u64")
FUSE_ATTR_OUT = _layout("fuse_attr_out", 104,
    "attr_valid@0:u64, attr_valid_nsec@8:u32, dummy@12:u32", {"attr": (16, FUSE_ATTR)})
FUSE_GETATTR_IN = _layout("fuse_getattr_in", 16, "getattr_flags@0:u32, dummy@4:u32, fh@8:u64")
FUSE_SETATTR_IN = _layout("fuse_setattr_in", 88, """
    valid@0:u32, padding@4:u32, fh@8:u64, size@16:u64, lock_owner@24:u64, atime@32:u64,
    mtime@40:u64, ctime@48:u64, atimensec@56:u32, mtimensec@60:u32, ctimensec@64:u32,
    mode@68:u32, unused4@72:u32, uid@76:u32, gid@80:u32, unused5@84:u32""")
FUSE_OPEN_IN = _layout("fuse_open_in", 8, "flags@0:u32, open_flags@4:u32")
FUSE_OPEN_OUT = _layout("fuse_open_out", 16, "fh@0:u64, open_flags@8:u32, backing_id@12:s32")
FUSE_CREATE_IN = _layout("fuse_create_in", 16, "flags@0:u32, mode@4:u32, umask@8:u32, open_flags@12:u32")
FUSE_RELEASE_IN = _layout("fuse_release_in", 24,
    "fh@0:u64, flags@8:u32, release_flags@12:u32, lock_owner@16:u64")
FUSE_FLUSH_IN = _layout("fuse_flush_in", 24, "fh@0:u64, unused@8:u32, padding@12:u32, lock_owner@16:u64")
FUSE_FSYNC_IN = _layout("fuse_fsync_in", 16, "fh@0:u64, fsync_flags@8:u32, padding@12:u32")
FUSE_READ_IN = _layout("fuse_read_in", 40, """
    fh@0:u64, offset@8:u64, size@16:u32, read_flags@20:u32, lock_owner@24:u64,
    flags@32:u32, padding@36:u32""")
FUSE_WRITE_IN = _layout("fuse_write_in", 40, """
    fh@0:u64, offset@8:u64, size@16:u32, write_flags@20:u32, lock_owner@24:u64,
    flags@32:u32, padding@36:u32""")
FUSE_WRITE_OUT = _layout("fuse_write_out", 8, "size@0:u32, padding@4:u32")
FUSE_READ_OUT = _layout("fuse_read_out", 16, "offset@0:u64, again@8:u32, padding@12:u32")
RW_RESULT = _layout("fuse_bpf_rw_result", 8, "ret@0:s64")   # kernel-internal READ/WRITE output
FUSE_MKNOD_IN = _layout("fuse_mknod_in", 16, "mode@0:u32, rdev@4:u32, umask@8:u32, padding@12:u32")
FUSE_MKDIR_IN = _layout("fuse_mkdir_in", 8, "mode@0:u32, umask@4:u32")
FUSE_RENAME_IN = _layout("fuse_rename_in", 8, "newdir@0:u64")
FUSE_RENAME2_IN = _layout("fuse_rename2_in", 16, "newdir@0:u64, flags@8:u32, padding@12:u32")
FUSE_LINK_IN = _layout("fuse_link_in", 8, "oldnodeid@0:u64")
FUSE_SETXATTR_IN = _layout("fuse_setxattr_in", 16,
    "size@0:u32, flags@4:u32, setxattr_flags@8:u32, padding@12:u32")
FUSE_GETXATTR_IN = _layout("fuse_getxattr_in", 8, "size@0:u32, padding@4:u32")
FUSE_GETXATTR_OUT = _layout("fuse_getxattr_out", 8, "size@0:u32, padding@4:u32")
FUSE_ACCESS_IN = _layout("fuse_access_in", 8, "mask@0:u32, padding@4:u32")
FUSE_LSEEK_IN = _layout("fuse_lseek_in", 24, "fh@0:u64, offset@8:u64, whence@16:u32, padding@20:u32")
FUSE_LSEEK_OUT = _layout("fuse_lseek_out", 8, "offset@0:u64")
FUSE_FALLOCATE_IN = _layout("fuse_fallocate_in", 32,
    "fh@0:u64, offset@8:u64, length@16:u64, mode@24:u32, padding@28:u32")
FUSE_COPY_FILE_RANGE_IN = _layout("fuse_copy_file_range_in", 56, """
    fh_in@0:u64, off_in@8:u64, nodeid_out@16:u64, fh_out@24:u64, off_out@32:u64,
    len@40:u64, flags@48:u64""")
FUSE_STATFS_OUT = _layout("fuse_statfs_out", 80, """
    blocks@0:u64, bfree@8:u64, bavail@16:u64, files@24:u64, ffree@32:u64, bsize@40:u32,
    namelen@44:u32, frsize@48:u32, padding@52:u32""")
# Userspace filter protocol and daemon-side structs (§7, §10).
FUSE_IN_HEADER = _layout("fuse_in_header", 40, """
    len@0:u32, opcode@4:u32, unique@8:u64, nodeid@16:u64, uid@24:u32, gid@28:u32,
    pid@32:u32, error_in@36:s32""")
FUSE_OUT_HEADER = _layout("fuse_out_header", 16, "len@0:u32, error@4:s32, unique@8:u64")
FUSE_DIRENT = _layout("fuse_dirent", 24, "ino@0:u64, off@8:u64, namelen@16:u32, type@20:u32")
# Legacy map record of the selftest loader (§2.2).
MAP_RECORD = _layout("bpf_map_def_legacy", 32,
    "map_type@0:u32, key_size@8:u64, value_size@16:u64, max_entries@24:u32")

STRUCTS: dict[str, CStruct] = {
    s.name: s for s in (
        FUSE_ATTR, FUSE_ENTRY_OUT, FUSE_ENTRY_BPF_OUT, FUSE_ATTR_OUT, FUSE_GETATTR_IN,
        FUSE_SETATTR_IN, FUSE_OPEN_IN, FUSE_OPEN_OUT, FUSE_CREATE_IN, FUSE_RELEASE_IN,
        FUSE_FLUSH_IN, FUSE_FSYNC_IN, FUSE_READ_IN, FUSE_WRITE_IN, FUSE_WRITE_OUT,
        FUSE_READ_OUT, RW_RESULT, FUSE_MKNOD_IN, FUSE_MKDIR_IN, FUSE_RENAME_IN,
        FUSE_RENAME2_IN, FUSE_LINK_IN, FUSE_SETXATTR_IN, FUSE_GETXATTR_IN, FUSE_GETXATTR_OUT,
        FUSE_ACCESS_IN, FUSE_LSEEK_IN, FUSE_LSEEK_OUT, FUSE_FALLOCATE_IN,
        FUSE_COPY_FILE_RANGE_IN, FUSE_STATFS_OUT, FUSE_IN_HEADER, FUSE_OUT_HEADER,
        FUSE_DIRENT, MAP_RECORD)
}

# -------------------------------------------- §9 per-opcode argument lists

NAME_MAX = 255
PATH_MAX = 4096
XATTR_NAME_MAX = 255
XATTR_SIZE_MAX = 65536
DIRENT_BUFFER = 4096     # READDIR's dirent buffer capacity (PAGE_SIZE)


@dataclass(frozen=True)
class ArgSpec:
    """One argument of an opcode.

    `alias` is the language name: "in" / "out" for structs (fields are
    `in.flags`, `out.attr.mode`), or the name of a string/buffer argument
    ("name", "newname", "target", "value", "data", "dirents", "list").
    `capacity` is the storage size; `size_field` is what the context's `size`
    says when it differs from the valid length (STATFS says 8 for 80 bytes).
    """

    alias: str
    kind: str                      # "struct" | "string" | "buffer"
    struct: CStruct | None = None
    capacity: int = 0
    variable: bool = False         # FUSE_BPF_OUT_ARGVAR / variable-size input
    size_field: int | None = None
    null_value: bool = False       # the kernel passes a NULL pointer (WRITE's data)

    @property
    def size(self) -> int:
        return self.struct.size if self.struct else self.capacity


def _s(alias: str, struct: CStruct, **kw) -> ArgSpec:
    return ArgSpec(alias, "struct", struct, struct.size, **kw)


def _name(alias: str = "name", capacity: int = NAME_MAX + 1) -> ArgSpec:
    return ArgSpec(alias, "string", None, capacity, variable=True)


def _buf(alias: str, capacity: int, **kw) -> ArgSpec:
    return ArgSpec(alias, "buffer", None, capacity, **kw)


@dataclass(frozen=True)
class OpSpec:
    """What the kernel passes for one opcode, and what it does with changes.

    `honoured`: language paths (or prefixes) of inputs whose PRE modification
    the backing operation uses.  `finalized`: output paths (or prefixes)
    whose POST value becomes the VFS result.  Writes elsewhere are legal but
    have no effect in the kernel, which the checker warns about.
    """

    name: str
    number: int
    inputs: tuple[ArgSpec, ...]
    outputs: tuple[ArgSpec, ...]
    nodeid: str
    honoured: frozenset[str] = frozenset()
    finalized: frozenset[str] = frozenset()
    flags: int = 0
    mutating: bool = False
    namespace: bool = False        # runs on the parent directory (§3.3)
    notes: str = ""

    @property
    def kernel_name(self) -> str:
        return "FUSE_" + self.name.upper()


_SETATTR_VALUES = frozenset(f"in.{f}" for f in (
    "mode", "uid", "gid", "size", "atime", "mtime", "ctime", "atimensec", "mtimensec", "ctimensec"))

_OPS: tuple[OpSpec, ...] = (
    OpSpec("lookup", 1, (_name(),),
           (_s("out", FUSE_ENTRY_OUT), _s("out", FUSE_ENTRY_BPF_OUT, variable=True)),
           "parent dir",
           finalized=frozenset({"out.nodeid", "out.backing_action", "out.bpf_action"}),
           flags=FLAG_OUT_ARGVAR, namespace=True,
           notes="backing lookup uses the original name; attrs come from the backing inode; "
                 "a missing entry sets error_in = -ENOENT"),
    OpSpec("getattr", 3, (_s("in", FUSE_GETATTR_IN),), (_s("out", FUSE_ATTR_OUT),), "inode",
           finalized=frozenset({"out"})),
    OpSpec("setattr", 4, (_s("in", FUSE_SETATTR_IN),), (_s("out", FUSE_ATTR_OUT),), "inode",
           honoured=_SETATTR_VALUES, mutating=True,
           notes="the set of attributes changed comes from the original request, not in.valid; "
                 "the output is never filled"),
    OpSpec("readlink", 5, (_name(),), (), "the symlink inode",
           notes="name is the symlink's own dentry name, not its target"),
    OpSpec("symlink", 6, (_name(), _name("target", PATH_MAX)), (), "parent dir",
           mutating=True, namespace=True),
    OpSpec("mknod", 8, (_s("in", FUSE_MKNOD_IN), _name()), (), "parent dir",
           honoured=frozenset({"in.mode", "in.rdev", "in.umask"}), mutating=True, namespace=True),
    OpSpec("mkdir", 9, (_s("in", FUSE_MKDIR_IN), _name()), (), "parent dir",
           honoured=frozenset({"in.mode", "in.umask"}), mutating=True, namespace=True),
    OpSpec("unlink", 10, (_name(),), (), "parent dir", mutating=True, namespace=True),
    OpSpec("rmdir", 11, (_name(),), (), "parent dir", mutating=True, namespace=True),
    OpSpec("rename", 12, (_s("in", FUSE_RENAME_IN), _name(), _name("newname")), (),
           "old parent dir", mutating=True, namespace=True),
    OpSpec("link", 13, (_s("in", FUSE_LINK_IN), _name()), (), "not set (0)",
           mutating=True, namespace=True, notes="name is the new link's name"),
    OpSpec("open", 14, (_s("in", FUSE_OPEN_IN),), (_s("out", FUSE_OPEN_OUT),), "inode",
           honoured=frozenset({"in.flags"}), finalized=frozenset({"out.fh"})),
    OpSpec("read", 15, (_s("in", FUSE_READ_IN),), (_s("out", RW_RESULT),),
           "the file's nodeid at open", finalized=frozenset({"out.ret"}),
           notes="file data is never visible to the program"),
    OpSpec("write", 16, (_s("in", FUSE_WRITE_IN), _buf("data", 0, null_value=True)),
           (_s("out", RW_RESULT),), "the file's nodeid at open",
           finalized=frozenset({"out.ret"}), mutating=True,
           notes="the data pointer is NULL for ordinary write(2)"),
    OpSpec("statfs", 17, (), (_s("out", FUSE_STATFS_OUT, size_field=8),),
           "inode of the queried dentry", finalized=frozenset({"out"}),
           notes="out size field says 8 (a pointer's size) for 80 bytes of storage"),
    OpSpec("release", 18, (_s("in", FUSE_RELEASE_IN),), (), "inode",
           notes="the backing file is released whatever the program returns"),
    OpSpec("fsync", 20, (_s("in", FUSE_FSYNC_IN),), (), "inode",
           honoured=frozenset({"in.fsync_flags"}), flags=FLAG_FORCE),
    OpSpec("setxattr", 21, (_s("in", FUSE_SETXATTR_IN), _name("name", XATTR_NAME_MAX + 1),
                            _buf("value", XATTR_SIZE_MAX, variable=True)), (), "inode",
           mutating=True, notes="original name/value/flags are used"),
    OpSpec("getxattr", 22, (_s("in", FUSE_GETXATTR_IN), _name("name", XATTR_NAME_MAX + 1)),
           (_buf("value", XATTR_SIZE_MAX, variable=True),), "inode",
           honoured=frozenset({"name"}), finalized=frozenset({"value"}), flags=FLAG_OUT_ARGVAR,
           notes="with in.size == 0 the output is a fuse_getxattr_out instead"),
    OpSpec("listxattr", 23, (_s("in", FUSE_GETXATTR_IN),),
           (_buf("list", XATTR_SIZE_MAX, variable=True),), "inode",
           finalized=frozenset({"list"}), flags=FLAG_OUT_ARGVAR),
    OpSpec("removexattr", 24, (_name("name", XATTR_NAME_MAX + 1),), (), "inode", mutating=True),
    OpSpec("flush", 25, (_s("in", FUSE_FLUSH_IN),), (), "inode", flags=FLAG_FORCE),
    OpSpec("opendir", 27, (_s("in", FUSE_OPEN_IN),), (_s("out", FUSE_OPEN_OUT),), "inode",
           honoured=frozenset({"in.flags"}), finalized=frozenset({"out.fh"})),
    OpSpec("readdir", 28, (_s("in", FUSE_READ_IN),),
           (_s("out", FUSE_READ_OUT), _buf("dirents", DIRENT_BUFFER, variable=True)),
           "the dir file's nodeid", finalized=frozenset({"out.offset", "out.again", "dirents"}),
           flags=FLAG_OUT_ARGVAR,
           notes="dirents cannot be walked in BPF: listing filters run in userspace"),
    OpSpec("releasedir", 29, (_s("in", FUSE_RELEASE_IN),), (), "inode"),
    OpSpec("fsyncdir", 30, (_s("in", FUSE_FSYNC_IN),), (), "inode",
           honoured=frozenset({"in.fsync_flags"}), flags=FLAG_FORCE),
    OpSpec("access", 34, (_s("in", FUSE_ACCESS_IN),), (), "inode",
           honoured=frozenset({"in.mask"})),
    OpSpec("create", 35, (_s("in", FUSE_CREATE_IN), _name()),
           (_s("out", FUSE_ENTRY_OUT), _s("out", FUSE_OPEN_OUT)), "parent dir",
           honoured=frozenset({"in.mode", "name"}), finalized=frozenset({"out.nodeid", "out.fh"}),
           mutating=True, namespace=True,
           notes="EIO if the backing name already exists"),
    OpSpec("fallocate", 43, (_s("in", FUSE_FALLOCATE_IN),), (), "the file's nodeid at open",
           honoured=frozenset({"in.mode", "in.offset", "in.length"}), mutating=True),
    OpSpec("rename2", 45, (_s("in", FUSE_RENAME2_IN), _name(), _name("newname")), (),
           "old parent dir", honoured=frozenset({"in.flags"}), mutating=True, namespace=True),
    OpSpec("lseek", 46, (_s("in", FUSE_LSEEK_IN),), (_s("out", FUSE_LSEEK_OUT),), "inode",
           honoured=frozenset({"in.offset", "in.whence"}), finalized=frozenset({"out.offset"})),
    OpSpec("copy_file_range", 47, (_s("in", FUSE_COPY_FILE_RANGE_IN),),
           (_s("out", FUSE_WRITE_OUT),), "source file inode",
           honoured=frozenset({"in.off_in", "in.off_out", "in.len", "in.flags"}), mutating=True,
           notes="the output is never filled"),
    OpSpec("canonical_path", 2016, (), (), "not set (0)",
           notes="Android only; the backing path of the dentry is returned"),
)

OPS: dict[str, OpSpec] = {op.name: op for op in _OPS}
OPS_BY_NUMBER: dict[int, OpSpec] = {op.number: op for op in _OPS}

# FUSE opcodes the daemon sees that never reach a fuse-bpf program (§9, §11).
NON_BPF_OPCODES = {
    "forget": 2, "init": 26, "getlk": 31, "setlk": 32, "setlkw": 33, "interrupt": 36,
    "bmap": 37, "destroy": 38, "ioctl": 39, "poll": 40, "notify_reply": 41,
    "batch_forget": 42, "readdirplus": 44, "setupmapping": 48, "removemapping": 49,
    "syncfs": 50, "tmpfile": 51, "statx": 52,
}

GROUPS: dict[str, frozenset[str]] = {
    "all": frozenset(OPS),
    "mutating": frozenset(op.name for op in _OPS if op.mutating),
    "namespace": frozenset(op.name for op in _OPS if op.namespace),
    "creating": frozenset({"create", "mknod", "mkdir", "symlink", "link", "rename", "rename2"}),
    "reading": frozenset({"lookup", "getattr", "readlink", "open", "read", "statfs",
                          "getxattr", "listxattr", "opendir", "readdir", "access", "lseek"}),
    "xattr": frozenset({"setxattr", "getxattr", "listxattr", "removexattr"}),
    "dir": frozenset({"opendir", "readdir", "releasedir", "fsyncdir", "mkdir", "rmdir"}),
    "file": frozenset({"open", "read", "write", "release", "flush", "fsync", "fallocate",
                       "lseek", "copy_file_range", "create"}),
}


def opcode_name(number: int) -> str:
    """'lookup', 'lookup|pre', ... for a plain or phase-tagged opcode."""
    plain = number & OPCODE_MASK
    op = OPS_BY_NUMBER.get(plain)
    base = op.name if op else next((n for n, v in NON_BPF_OPCODES.items() if v == plain), str(plain))
    phase = {PREFILTER: "|pre", POSTFILTER: "|post"}.get(number & ~OPCODE_MASK, "")
    return base + phase


# -------------------------------------------------------- field resolution

@dataclass(frozen=True)
class FieldLoc:
    """Where a language field lives for one opcode and phase.

    Read it from `in_args[read_slot]` at `offset`; write it (if `write_slot`
    is not None) through `out_args[write_slot]` at the same offset.  In PRE
    the out slot aliases the input (§6 step 2); in POST outputs are read from
    `in_args[n_inputs + j]` and written through `out_args[j]` (§6 step 9).
    `effective` says whether the kernel uses a write (honoured in PRE,
    finalized in POST); a write that is not effective is legal but ignored.
    """

    path: str
    op: str
    phase: str
    arg: ArgSpec
    direction: str             # "in" | "out"
    arg_index: int             # index in the op's inputs or outputs
    read_slot: int
    write_slot: int | None
    offset: int
    ctype: str                 # u32/u64/s32/s64... or "string" / "buffer"
    size: int                  # bytes of the scalar, or capacity of a string/buffer
    effective: bool

    @property
    def is_string(self) -> bool:
        return self.ctype == "string"

    @property
    def writable(self) -> bool:
        return self.write_slot is not None


def _matches(path: str, prefixes: frozenset[str]) -> bool:
    return any(path == p or path.startswith(p + ".") for p in prefixes)


def _arg_fields(arg: ArgSpec) -> list[tuple[str, int, str, int]]:
    """(path, offset, ctype, size) for every language field of one argument."""
    if arg.kind == "struct":
        return [(f"{arg.alias}.{f.name}", f.offset, f.ctype, f.size)
                for f in arg.struct.fields if not f.name.startswith(("padding", "unused", "dummy"))]
    return [(arg.alias, 0, arg.kind, arg.capacity)]


def fields_of(op: str, phase: str) -> list[FieldLoc]:
    """Every field a program for `op` in `phase` ("pre"/"post") can name."""
    spec = OPS[op]
    n_in = len(spec.inputs)
    found: list[FieldLoc] = []
    seen: set[str] = set()
    for i, arg in enumerate(spec.inputs):
        for path, offset, ctype, size in _arg_fields(arg):
            if path in seen:
                continue
            seen.add(path)
            writable = phase == "pre" and ctype not in ("string", "buffer")
            found.append(FieldLoc(path, op, phase, arg, "in", i, i, i if writable else None,
                                  offset, ctype, size,
                                  effective=writable and _matches(path, spec.honoured)))
    if phase == "post":
        for j, arg in enumerate(spec.outputs):
            for path, offset, ctype, size in _arg_fields(arg):
                if path in seen:
                    continue
                seen.add(path)
                writable = ctype not in ("string", "buffer")
                found.append(FieldLoc(path, op, phase, arg, "out", j, n_in + j,
                                      j if writable else None, offset, ctype, size,
                                      effective=writable and _matches(path, spec.finalized)))
    return found


def resolve_field(op: str, phase: str, path: tuple[str, ...] | str) -> FieldLoc | None:
    """The location of `path` (e.g. ("out","attr","mode")) for `op` in `phase`."""
    if op not in OPS or phase not in PHASE_BITS:
        return None
    dotted = path if isinstance(path, str) else ".".join(path)
    for loc in fields_of(op, phase):
        if loc.path == dotted:
            return loc
    return None


# ------------------------------------------------------------ §8 helpers

@dataclass(frozen=True)
class HelperSpec:
    """A helper the fuse program type may call.

    Argument kinds: "map" (ld_imm64 map pointer), "key"/"value" (pointer to
    initialised memory of the map's key/value size), "fmt" (pointer to
    initialised memory of `fmt_size` bytes), "size" (scalar constant),
    "scalar", "any" (scalar or pointer).  `min_args` < len(args) means
    trailing arguments are optional (trace_printk takes 0-3 values).
    """

    id: int
    name: str
    args: tuple[str, ...]
    returns: str                   # "scalar" | "map_value_or_null"
    min_args: int | None = None
    gpl_only: bool = False


HELPERS: dict[int, HelperSpec] = {h.id: h for h in (
    HelperSpec(1, "map_lookup_elem", ("map", "key"), "map_value_or_null"),
    HelperSpec(2, "map_update_elem", ("map", "key", "value", "scalar"), "scalar"),
    HelperSpec(6, "trace_printk", ("fmt", "size", "any", "any", "any"), "scalar",
               min_args=2, gpl_only=True),
    HelperSpec(14, "get_current_pid_tgid", (), "scalar"),
    HelperSpec(15, "get_current_uid_gid", (), "scalar"),
)}
HELPER_IDS = {h.name: h.id for h in HELPERS.values()}

# ------------------------------------------------------ maps and loading

BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
MAP_TYPES = {"hash": BPF_MAP_TYPE_HASH, "array": BPF_MAP_TYPE_ARRAY}
BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2
BPF_PSEUDO_MAP_FD = 1
MAPS_SECTION = "maps"
LICENSE_SECTION = "license"
LICENSE = "GPL"
PROGRAM_SECTION_PREFIX = "fuse/"
METADATA_SECTION = ".fdsl.meta"
STACK_SIZE = 512

# ------------------------------------------------- §3.2 lookup extension

ACTION_KEEP = 0
ACTION_REMOVE = 1
ACTION_REPLACE = 2

# ---------------------------------------------------------- §10 constants

FUSE_ROOT_ID = 1
FUSE_SUPER_MAGIC = 0x65735546
FATTR = {
    "FATTR_MODE": 1, "FATTR_UID": 2, "FATTR_GID": 4, "FATTR_SIZE": 8, "FATTR_ATIME": 16,
    "FATTR_MTIME": 32, "FATTR_FH": 64, "FATTR_ATIME_NOW": 128, "FATTR_MTIME_NOW": 256,
    "FATTR_LOCKOWNER": 512, "FATTR_CTIME": 1024, "FATTR_KILL_SUIDGID": 2048,
}
FOPEN = {
    "FOPEN_DIRECT_IO": 1, "FOPEN_KEEP_CACHE": 2, "FOPEN_NONSEEKABLE": 4, "FOPEN_CACHE_DIR": 8,
    "FOPEN_STREAM": 16, "FOPEN_NOFLUSH": 32, "FOPEN_PARALLEL_DIRECT_WRITES": 64,
    "FOPEN_PASSTHROUGH": 128,
}
FUSE_FSYNC_FDATASYNC = 1
FUSE_GETATTR_FH = 1

# Open flags and mode bits as the kernel of this machine's architecture
# passes them (O_DIRECTORY etc. differ between x86-64 and arm64).
OPEN_FLAGS = {name: getattr(_os, name) for name in (
    "O_RDONLY", "O_WRONLY", "O_RDWR", "O_ACCMODE", "O_CREAT", "O_EXCL", "O_NOCTTY",
    "O_TRUNC", "O_APPEND", "O_NONBLOCK", "O_DSYNC", "O_SYNC", "O_DIRECTORY", "O_NOFOLLOW",
    "O_CLOEXEC", "O_NOATIME", "O_PATH", "O_TMPFILE", "O_DIRECT", "O_LARGEFILE")
    if hasattr(_os, name)}
MODE_BITS = {
    "S_IFMT": 0o170000, "S_IFSOCK": 0o140000, "S_IFLNK": 0o120000, "S_IFREG": 0o100000,
    "S_IFBLK": 0o060000, "S_IFDIR": 0o040000, "S_IFCHR": 0o020000, "S_IFIFO": 0o010000,
    "S_ISUID": 0o4000, "S_ISGID": 0o2000, "S_ISVTX": 0o1000,
    "S_IRWXU": 0o700, "S_IRUSR": 0o400, "S_IWUSR": 0o200, "S_IXUSR": 0o100,
    "S_IRWXG": 0o070, "S_IRGRP": 0o040, "S_IWGRP": 0o020, "S_IXGRP": 0o010,
    "S_IRWXO": 0o007, "S_IROTH": 0o004, "S_IWOTH": 0o002, "S_IXOTH": 0o001,
}
ACCESS_MASK = {"F_OK": 0, "R_OK": 4, "W_OK": 2, "X_OK": 1}
RENAME_FLAGS = {"RENAME_NOREPLACE": 1, "RENAME_EXCHANGE": 2, "RENAME_WHITEOUT": 4}

# Linux errno names -> numbers (Python's errno module is the Linux table here).
ERRNOS: dict[str, int] = {name: getattr(_errno, name) for name in dir(_errno)
                          if name.startswith("E") and isinstance(getattr(_errno, name), int)}


def errno_name(number: int) -> str:
    """Symbolic name of a positive errno ('ENOENT'), or the number as text."""
    return _errno.errorcode.get(number, str(number))


# Every named integer constant a policy may use, in one table.
NAMED_CONSTANTS: dict[str, int] = {
    **RETURN_BITS, **FATTR, **FOPEN, **OPEN_FLAGS, **MODE_BITS, **ACCESS_MASK, **RENAME_FLAGS,
    "FUSE_FSYNC_FDATASYNC": FUSE_FSYNC_FDATASYNC, "FUSE_GETATTR_FH": FUSE_GETATTR_FH,
    "FUSE_ROOT_ID": FUSE_ROOT_ID, "ACTION_KEEP": ACTION_KEEP,
    "ACTION_REMOVE": ACTION_REMOVE, "ACTION_REPLACE": ACTION_REPLACE,
}
