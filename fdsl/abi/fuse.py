"""FUSE protocol facts every fuse-bpf ABI shares: struct layouts (spec §10),
name and buffer limits, map records, FUSE constants and errno names.

ABI-specific facts (the program context, return codes, per-opcode argument
lists, helpers) live in the ABI's own module (`ack.py`).
"""
from __future__ import annotations

import errno as _errno
import os as _os
import struct as _struct
from dataclasses import dataclass, field

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
    _codec: _struct.Struct = field(init=False, repr=False, compare=False)
    _index: dict[str, int] = field(init=False, repr=False, compare=False)
    _zeros: tuple[int, ...] = field(init=False, repr=False, compare=False)

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

    @property
    def codec(self) -> _struct.Struct:
        """The precompiled codec: a tuple of every field in offset order (for
        transports that decode each request without building a dict)."""
        return self._codec  # type: ignore[attr-defined,no-any-return]

    def field(self, name: str) -> CField | None:
        i = self._index.get(name)
        return None if i is None else self.fields[i]

    def member(self, name: str) -> CField:
        """The field `name`, which must exist (KeyError naming the struct otherwise)."""
        f = self.field(name)
        if f is None:
            raise KeyError(f"{self.name} has no field {name!r}")
        return f

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
FUSE_DIRENTPLUS = _layout("fuse_direntplus", 152, "", {
    "entry": (0, FUSE_ENTRY_OUT), "dirent": (128, FUSE_DIRENT)})
# The transport's own messages (mainline include/uapi/linux/fuse.h, 7.41).
FUSE_INIT_IN = _layout("fuse_init_in", 64,
    "major@0:u32, minor@4:u32, max_readahead@8:u32, flags@12:u32, flags2@16:u32")
FUSE_INIT_OUT = _layout("fuse_init_out", 64, """
    major@0:u32, minor@4:u32, max_readahead@8:u32, flags@12:u32, max_background@16:u16,
    congestion_threshold@18:u16, max_write@20:u32, time_gran@24:u32, max_pages@28:u16,
    map_alignment@30:u16, flags2@32:u32, max_stack_depth@36:u32""")
FUSE_FORGET_IN = _layout("fuse_forget_in", 8, "nlookup@0:u64")
FUSE_BATCH_FORGET_IN = _layout("fuse_batch_forget_in", 8, "count@0:u32, dummy@4:u32")
FUSE_FORGET_ONE = _layout("fuse_forget_one", 16, "nodeid@0:u64, nlookup@8:u64")
FUSE_INTERRUPT_IN = _layout("fuse_interrupt_in", 8, "unique@0:u64")
FUSE_POLL_IN = _layout("fuse_poll_in", 24, "fh@0:u64, kh@8:u64, flags@16:u32, events@20:u32")
FUSE_POLL_OUT = _layout("fuse_poll_out", 8, "revents@0:u32, padding@4:u32")
FUSE_IOCTL_IN = _layout("fuse_ioctl_in", 32, """
    fh@0:u64, flags@8:u32, cmd@12:u32, arg@16:u64, in_size@24:u32, out_size@28:u32""")
FUSE_IOCTL_OUT = _layout("fuse_ioctl_out", 16,
    "result@0:s32, flags@4:u32, in_iovs@8:u32, out_iovs@12:u32")
FUSE_STATX_IN = _layout("fuse_statx_in", 24,
    "getattr_flags@0:u32, reserved@4:u32, fh@8:u64, sx_flags@16:u32, sx_mask@20:u32")
FUSE_SX_TIME = _layout("fuse_sx_time", 16, "tv_sec@0:s64, tv_nsec@8:u32, __reserved@12:s32")
FUSE_STATX = _layout("fuse_statx", 256, """
    mask@0:u32, blksize@4:u32, attributes@8:u64, nlink@16:u32, uid@20:u32, gid@24:u32,
    mode@28:u16, ino@32:u64, size@40:u64, blocks@48:u64, attributes_mask@56:u64,
    rdev_major@128:u32, rdev_minor@132:u32, dev_major@136:u32, dev_minor@140:u32""",
    {"atime": (64, FUSE_SX_TIME), "btime": (80, FUSE_SX_TIME), "ctime": (96, FUSE_SX_TIME),
     "mtime": (112, FUSE_SX_TIME)})
FUSE_STATX_OUT = _layout("fuse_statx_out", 288,
    "attr_valid@0:u64, attr_valid_nsec@8:u32, flags@12:u32", {"stat": (32, FUSE_STATX)})
FUSE_BACKING_MAP = _layout("fuse_backing_map", 16, "fd@0:s32, flags@4:u32, padding@8:u64")
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
        FUSE_DIRENT, FUSE_DIRENTPLUS, FUSE_INIT_IN, FUSE_INIT_OUT, FUSE_FORGET_IN,
        FUSE_BATCH_FORGET_IN, FUSE_FORGET_ONE, FUSE_INTERRUPT_IN, FUSE_POLL_IN, FUSE_POLL_OUT,
        FUSE_IOCTL_IN, FUSE_IOCTL_OUT, FUSE_STATX_IN, FUSE_SX_TIME, FUSE_STATX, FUSE_STATX_OUT, FUSE_BACKING_MAP, MAP_RECORD)
}

# -------------------------------------------- §9 per-opcode argument lists

NAME_MAX = 255
PATH_MAX = 4096
XATTR_NAME_MAX = 255
XATTR_SIZE_MAX = 65536
DIRENT_BUFFER = 4096     # READDIR's dirent buffer capacity (PAGE_SIZE)

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
FUSE_WRITE_KILL_SUIDGID = 4      # fuse_write_in.write_flags (HANDLE_KILLPRIV_V2)
FUSE_OPEN_KILL_SUIDGID = 1       # fuse_open_in/fuse_create_in.open_flags (HANDLE_KILLPRIV_V2)
FUSE_SETXATTR_ACL_KILL_SGID = 1  # fuse_setxattr_in.setxattr_flags (SETXATTR_EXT)
FUSE_KERNEL_VERSION = 7
FUSE_KERNEL_MINOR_VERSION = 41   # what the transport speaks (6.9+: passthrough)
FUSE_MIN_READ_BUFFER = 8192

# FUSE_INIT flags: bits 0-31 in `flags`, bits 32-63 in `flags2` (mainline uapi).
INIT_FLAGS = {
    "ASYNC_READ": 1 << 0, "POSIX_LOCKS": 1 << 1, "FILE_OPS": 1 << 2, "ATOMIC_O_TRUNC": 1 << 3,
    "EXPORT_SUPPORT": 1 << 4, "BIG_WRITES": 1 << 5, "DONT_MASK": 1 << 6,
    "SPLICE_WRITE": 1 << 7, "SPLICE_MOVE": 1 << 8, "SPLICE_READ": 1 << 9,
    "FLOCK_LOCKS": 1 << 10, "HAS_IOCTL_DIR": 1 << 11, "AUTO_INVAL_DATA": 1 << 12,
    "DO_READDIRPLUS": 1 << 13, "READDIRPLUS_AUTO": 1 << 14, "ASYNC_DIO": 1 << 15,
    "WRITEBACK_CACHE": 1 << 16, "NO_OPEN_SUPPORT": 1 << 17, "PARALLEL_DIROPS": 1 << 18,
    "HANDLE_KILLPRIV": 1 << 19, "POSIX_ACL": 1 << 20, "ABORT_ERROR": 1 << 21,
    "MAX_PAGES": 1 << 22, "CACHE_SYMLINKS": 1 << 23, "NO_OPENDIR_SUPPORT": 1 << 24,
    "EXPLICIT_INVAL_DATA": 1 << 25, "MAP_ALIGNMENT": 1 << 26, "SUBMOUNTS": 1 << 27,
    "HANDLE_KILLPRIV_V2": 1 << 28, "SETXATTR_EXT": 1 << 29, "INIT_EXT": 1 << 30,
    "SECURITY_CTX": 1 << 32, "HAS_INODE_DAX": 1 << 33, "CREATE_SUPP_GROUP": 1 << 34,
    "HAS_EXPIRE_ONLY": 1 << 35, "DIRECT_IO_ALLOW_MMAP": 1 << 36, "PASSTHROUGH": 1 << 37,
    "NO_EXPORT_SUPPORT": 1 << 38, "HAS_RESEND": 1 << 39, "ALLOW_IDMAP": 1 << 40,
    "OVER_IO_URING": 1 << 41, "REQUEST_TIMEOUT": 1 << 42,
}
# /dev/fuse ioctls (§13): _IOR(229, 0, u32), _IOW(229, 1, fuse_backing_map), _IOW(229, 2, u32).
FUSE_DEV_IOC_CLONE = 0x8004E500
FUSE_DEV_IOC_BACKING_OPEN = 0x4010E501
FUSE_DEV_IOC_BACKING_CLOSE = 0x4004E502
FILESYSTEM_MAX_STACK_DEPTH = 2

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
# struct fuse_dirent `type` (d_type): what a readdir entry is, without a lookup.
DIRENT_TYPES = {"DT_UNKNOWN": 0, "DT_FIFO": 1, "DT_CHR": 2, "DT_DIR": 4, "DT_BLK": 6, "DT_REG": 8,
                "DT_LNK": 10, "DT_SOCK": 12, "DT_WHT": 14}
ACCESS_MASK = {"F_OK": 0, "R_OK": 4, "W_OK": 2, "X_OK": 1}
RENAME_FLAGS = {"RENAME_NOREPLACE": 1, "RENAME_EXCHANGE": 2, "RENAME_WHITEOUT": 4}

# Linux errno names -> numbers (Python's errno module is the Linux table here).
ERRNOS: dict[str, int] = {name: getattr(_errno, name) for name in dir(_errno)
                          if name.startswith("E") and isinstance(getattr(_errno, name), int)}


def errno_name(number: int) -> str:
    """Symbolic name of a positive errno ('ENOENT'), or the number as text."""
    return _errno.errorcode.get(number, str(number))


# ------------------------------------------------------ fuse_dirent records

DIRENT_ALIGN = 8
DT_UNKNOWN, DT_DIR, DT_REG, DT_LNK = 0, 4, 8, 10
_DIRENT_HEAD = _struct.Struct("<QQII")


def dirent_size(name: bytes) -> int:
    """Bytes of one fuse_dirent record for `name` (24-byte head + name, 8-aligned)."""
    return (FUSE_DIRENT.size + len(name) + DIRENT_ALIGN - 1) & ~(DIRENT_ALIGN - 1)


def pack_dirents(entries: "list[tuple[bytes, int, int, int]]", capacity: int = DIRENT_BUFFER
                 ) -> tuple[bytes, int]:
    """fuse_dirent records for (name, ino, next offset, type) entries, as many as fit
    in `capacity` bytes (the one packer: daemon, `fdsl test` and filter replies).
    Returns (bytes, number of entries packed)."""
    out = bytearray()
    count = 0
    for name, ino, off, dtype in entries:
        size = dirent_size(name)
        if len(out) + size > capacity:
            break
        start = len(out)
        out += bytes(size)
        _DIRENT_HEAD.pack_into(out, start, ino, off, len(name), dtype)
        out[start + FUSE_DIRENT.size:start + FUSE_DIRENT.size + len(name)] = name
        count += 1
    return bytes(out), count


def dirents_fitting(entries: "list[tuple[bytes, int, int, int]]",
                    capacity: int = DIRENT_BUFFER) -> int:
    """How many of `entries` `pack_dirents` would pack (without building the bytes)."""
    used = count = 0
    for name, _ino, _off, _dtype in entries:
        used += dirent_size(name)
        if used > capacity:
            break
        count += 1
    return count


def parse_dirents(data: "bytes | bytearray | memoryview") -> "list[tuple[bytes, int, int, int]]":
    """(name, ino, off, type) of every record; a malformed record raises ValueError
    (the kernel answers EIO: namelen 0, > 1024, a '/' in the name, or a cut record)."""
    records = []
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < FUSE_DIRENT.size:
            raise ValueError("truncated fuse_dirent record")
        ino, off, namelen, dtype = _DIRENT_HEAD.unpack_from(data, pos)
        start = pos + FUSE_DIRENT.size
        name = bytes(data[start:start + namelen])
        if not 0 < namelen <= 1024 or len(name) < namelen or b"/" in name:
            raise ValueError(f"bad fuse_dirent record at byte {pos}")
        records.append((name, ino, off, dtype))
        pos += dirent_size(name)
    return records
