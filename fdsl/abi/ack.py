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

from dataclasses import dataclass

from fdsl.abi.model import Abi, CtxField, slot_offsets

from fdsl.abi.fuse import (ACCESS_MASK, ACTION_KEEP, ACTION_REMOVE, ACTION_REPLACE, CStruct,
                           DIRENT_BUFFER, DIRENT_TYPES, FATTR, FOPEN, FUSE_ACCESS_IN, FUSE_ATTR_OUT,
                           FUSE_COPY_FILE_RANGE_IN, FUSE_CREATE_IN, FUSE_ENTRY_BPF_OUT,
                           FUSE_ENTRY_OUT, FUSE_FALLOCATE_IN, FUSE_FLUSH_IN, FUSE_FSYNC_FDATASYNC,
                           FUSE_FSYNC_IN, FUSE_GETATTR_FH, FUSE_GETATTR_IN, FUSE_GETXATTR_IN,
                           FUSE_LINK_IN, FUSE_LSEEK_IN, FUSE_LSEEK_OUT, FUSE_MKDIR_IN,
                           FUSE_MKNOD_IN, FUSE_OPEN_IN, FUSE_OPEN_OUT, FUSE_READ_IN, FUSE_READ_OUT,
                           FUSE_RELEASE_IN, FUSE_RENAME2_IN, FUSE_RENAME_IN, FUSE_ROOT_ID,
                           FUSE_SETATTR_IN, FUSE_SETXATTR_IN, FUSE_STATFS_OUT, FUSE_WRITE_IN,
                           FUSE_WRITE_OUT, MODE_BITS, NAME_MAX, OPEN_FLAGS, PATH_MAX, RENAME_FLAGS,
                           RW_RESULT, XATTR_NAME_MAX, XATTR_SIZE_MAX)

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


in_arg_offset = slot_offsets(IN_ARGS_BASE, ARG_SLOT_SIZE, MAX_IN_ARGS, "in_args")
out_arg_offset = slot_offsets(OUT_ARGS_BASE, ARG_SLOT_SIZE, MAX_OUT_ARGS, "out_args")


def value_pointer_offsets() -> dict[int, str]:
    """Context offsets that hold argument pointers, and whether they are in/out."""
    offsets = {in_arg_offset(i) + ARG_VALUE: "in" for i in range(MAX_IN_ARGS)}
    offsets.update({out_arg_offset(j) + ARG_VALUE: "out" for j in range(MAX_OUT_ARGS)})
    return offsets



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

    @property
    def layout(self) -> CStruct:
        """The struct of a struct argument; a TypeError for strings and buffers."""
        if self.struct is None:
            raise TypeError(f"argument {self.alias!r} is a {self.kind}, not a struct")
        return self.struct


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
    read_args: str = "in"      # the context array `read_slot` indexes ("in" / "out")
    write_args: str = "out"    # the context array `write_slot` indexes

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
                for f in arg.layout.fields if not f.name.startswith(("padding", "unused", "dummy"))]
    return [(arg.alias, 0, arg.kind, arg.capacity)]


def fields_of(op: str, phase: str) -> list[FieldLoc]:
    """Every field a program for `op` in `phase` ("pre"/"post") can name."""
    return fields_for(OPS[op], phase, post_appends_outputs=True)


def fields_for(spec: OpSpec, phase: str, *, post_appends_outputs: bool) -> list[FieldLoc]:
    """The fields of one opcode under an ABI's slot rules.

    ACK (`post_appends_outputs`): PRE writes go through the aliasing out slot,
    POST reads outputs from `in_args[n_inputs + j]`.  RFC v1: inputs are read
    and (through helper 208) written in `in_args[i]`, outputs in `out_args[j]`.
    """
    op = spec.name
    n_in = len(spec.inputs)
    in_writes = "out" if post_appends_outputs else "in"
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
                                  effective=writable and _matches(path, spec.honoured),
                                  write_args=in_writes))
    if phase == "post":
        for j, arg in enumerate(spec.outputs):
            for path, offset, ctype, size in _arg_fields(arg):
                if path in seen:
                    continue
                seen.add(path)
                writable = ctype not in ("string", "buffer")
                found.append(FieldLoc(path, op, phase, arg, "out", j,
                                      n_in + j if post_appends_outputs else j,
                                      j if writable else None, offset, ctype, size,
                                      effective=writable and _matches(path, spec.finalized),
                                      read_args="in" if post_appends_outputs else "out"))
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
    arg_names: tuple[str, ...] = ()      # for messages ("flags"); defaults to the kinds


HELPERS: dict[int, HelperSpec] = {h.id: h for h in (
    HelperSpec(1, "map_lookup_elem", ("map", "key"), "map_value_or_null"),
    HelperSpec(2, "map_update_elem", ("map", "key", "value", "scalar"), "scalar",
               arg_names=("map", "key", "value", "flags")),
    HelperSpec(6, "trace_printk", ("fmt", "size", "any", "any", "any"), "scalar",
               min_args=2, gpl_only=True),
    HelperSpec(14, "get_current_pid_tgid", (), "scalar"),
    HelperSpec(15, "get_current_uid_gid", (), "scalar"),
)}
HELPER_IDS = {h.name: h.id for h in HELPERS.values()}

# Every named integer constant a policy may use, in one table.
NAMED_CONSTANTS: dict[str, int] = {
    **RETURN_BITS, **FATTR, **FOPEN, **OPEN_FLAGS, **MODE_BITS, **ACCESS_MASK, **RENAME_FLAGS,
    **DIRENT_TYPES,
    "FUSE_FSYNC_FDATASYNC": FUSE_FSYNC_FDATASYNC, "FUSE_GETATTR_FH": FUSE_GETATTR_FH,
    "FUSE_ROOT_ID": FUSE_ROOT_ID, "ACTION_KEEP": ACTION_KEEP,
    "ACTION_REMOVE": ACTION_REMOVE, "ACTION_REPLACE": ACTION_REPLACE,
}


# ------------------------------------------------------------ the record

# Limits the verifier and loaders enforce for this ABI (kernel values where the
# kernel has one): BPF_MAXINSNS-style program size, stack, argument windows.
LIMITS = {
    "stack_size": 512,
    "max_insns": 1_000_000,          # the kernel's BPF_COMPLEXITY_LIMIT_INSNS for privileged loads
    "name_buffer": NAME_MAX + 1,
    "xattr_name_buffer": XATTR_NAME_MAX + 1,
    "xattr_value_buffer": XATTR_SIZE_MAX,
    "dirent_buffer": DIRENT_BUFFER,
}

ACK = Abi(
    id=ABI_ID, name="ACK fuse-bpf", ctx_size=CTX_SIZE,
    max_in_args=MAX_IN_ARGS, max_out_args=MAX_OUT_ARGS,
    in_arg_offset=in_arg_offset, out_arg_offset=out_arg_offset,
    return_bits=RETURN_BITS, ops=OPS, ops_by_number=OPS_BY_NUMBER, helpers=HELPERS,
    stack_size=LIMITS["stack_size"], resolve_field=resolve_field, limits=LIMITS,
    slot_size=ARG_SLOT_SIZE,
    slot_fields={"size": (ARG_SIZE, 4), "value": (ARG_VALUE, 8), "end_offset": (ARG_END_OFFSET, 8)},
    header_fields=(CtxField("nodeid", CTX_NODEID, 8), CtxField("opcode", CTX_OPCODE, 4),
                   CtxField("error_in", CTX_ERROR_IN, 4), CtxField("in_numargs", CTX_IN_NUMARGS, 4),
                   CtxField("out_numargs", CTX_OUT_NUMARGS, 4), CtxField("flags", CTX_FLAGS, 4)),
    strict_ctx_sizes=False, buffer_access="constant", buffer_stores="out_args",
    return_style="bitmask", post_appends_outputs=True, aliases=("ack",),
)
