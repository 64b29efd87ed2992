"""The bpf(2) system call: exact `union bpf_attr` bytes and the few commands we use.

Only what fuse-bpf needs (spec §2): BPF_MAP_CREATE for the legacy `maps`
records, BPF_PROG_LOAD with a license and a verifier log, and the map element
commands that `fdsl stats` reads counters with.  Each command's attribute is
built from an explicit table of uapi offsets (`AttrLayout`), so the bytes are
checkable against the kernel's own header (tests compile a C program against
`linux/bpf.h` and compare byte for byte).

The attribute passed is exactly as long as the fields we set: a kernel zeroes
the rest of its (possibly larger) `union bpf_attr`, and older kernels accept it
because nothing we send lies beyond what they know.
"""
from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
from dataclasses import dataclass

from fdsl.errors import FdslError

# enum bpf_cmd (uapi linux/bpf.h)
BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_LOAD = 5
BPF_MAP_GET_FD_BY_ID = 14
BPF_OBJ_GET_INFO_BY_FD = 15
COMMAND_NAMES = {BPF_MAP_CREATE: "BPF_MAP_CREATE", BPF_MAP_LOOKUP_ELEM: "BPF_MAP_LOOKUP_ELEM",
                 BPF_MAP_UPDATE_ELEM: "BPF_MAP_UPDATE_ELEM",
                 BPF_MAP_DELETE_ELEM: "BPF_MAP_DELETE_ELEM",
                 BPF_MAP_GET_NEXT_KEY: "BPF_MAP_GET_NEXT_KEY", BPF_PROG_LOAD: "BPF_PROG_LOAD",
                 BPF_MAP_GET_FD_BY_ID: "BPF_MAP_GET_FD_BY_ID",
                 BPF_OBJ_GET_INFO_BY_FD: "BPF_OBJ_GET_INFO_BY_FD"}

BPF_OBJ_NAME_LEN = 16

# __NR_bpf per `platform.machine()`: the number differs between architectures
# (asm/unistd_64.h on x86-64, asm-generic/unistd.h on the newer ports).
SYSCALL_NUMBERS = {
    "x86_64": 321, "amd64": 321,
    "i386": 357, "i486": 357, "i586": 357, "i686": 357,
    "aarch64": 280, "arm64": 280, "riscv64": 280, "loongarch64": 280,
    "armv7l": 386, "armv8l": 386, "armv6l": 386,
    "ppc64le": 361, "ppc64": 361,
    "s390x": 351,
}


class BpfError(FdslError):
    """A bpf(2) command failed; `errno` is the kernel's answer."""

    exit_code = 1

    def __init__(self, message: str, err: int) -> None:
        super().__init__(message)
        self.errno = err


class UnknownArchitecture(FdslError):
    exit_code = 1


def syscall_number(machine: str | None = None) -> int:
    """__NR_bpf for this machine; an unknown one fails loudly (no guessing)."""
    machine = machine or platform.machine()
    try:
        return SYSCALL_NUMBERS[machine]
    except KeyError:
        raise UnknownArchitecture(
            f"the bpf(2) system call number of architecture {machine!r} is not known to fdsl; "
            f"known: {', '.join(sorted(SYSCALL_NUMBERS))}") from None


@dataclass(frozen=True)
class AttrLayout:
    """The fields of one command's member of `union bpf_attr`: (name, offset, struct code)."""

    command: str
    fields: tuple[tuple[str, int, str], ...]

    @property
    def size(self) -> int:
        name, offset, code = self.fields[-1]
        return offset + struct.calcsize("<" + code)

    def pack(self, **values: int | bytes) -> bytes:
        """The attribute bytes; unnamed fields (and padding) are zero."""
        known = {name for name, _, _ in self.fields}
        unknown = set(values) - known
        if unknown:
            raise TypeError(f"{self.command}: no field {', '.join(sorted(unknown))}")
        out = bytearray(self.size)
        for name, offset, code in self.fields:
            if name in values:
                struct.pack_into("<" + code, out, offset, values[name])
        return bytes(out)


MAP_CREATE_ATTR = AttrLayout("BPF_MAP_CREATE", (
    ("map_type", 0, "I"), ("key_size", 4, "I"), ("value_size", 8, "I"),
    ("max_entries", 12, "I"), ("map_flags", 16, "I"), ("inner_map_fd", 20, "I"),
    ("numa_node", 24, "I"), ("map_name", 28, f"{BPF_OBJ_NAME_LEN}s")))

PROG_LOAD_ATTR = AttrLayout("BPF_PROG_LOAD", (
    ("prog_type", 0, "I"), ("insn_cnt", 4, "I"), ("insns", 8, "Q"), ("license", 16, "Q"),
    ("log_level", 24, "I"), ("log_size", 28, "I"), ("log_buf", 32, "Q"),
    ("kern_version", 40, "I"), ("prog_flags", 44, "I"),
    ("prog_name", 48, f"{BPF_OBJ_NAME_LEN}s"), ("prog_ifindex", 64, "I"),
    ("expected_attach_type", 68, "I")))

MAP_ELEM_ATTR = AttrLayout("BPF_MAP_*_ELEM", (
    ("map_fd", 0, "I"), ("key", 8, "Q"), ("value", 16, "Q"), ("flags", 24, "Q")))

GET_FD_BY_ID_ATTR = AttrLayout("BPF_*_GET_FD_BY_ID", (
    ("id", 0, "I"), ("next_id", 4, "I"), ("open_flags", 8, "I")))

OBJ_INFO_ATTR = AttrLayout("BPF_OBJ_GET_INFO_BY_FD", (
    ("bpf_fd", 0, "I"), ("info_len", 4, "I"), ("info", 8, "Q")))

# struct bpf_map_info, the fields we read: type@0, id@4, key_size@8, value_size@12,
# max_entries@16, map_flags@20, name@24 (16 bytes)
MAP_INFO_SIZE = 40


def object_name(name: str) -> bytes:
    """A kernel object name: at most 15 of [A-Za-z0-9_.] (others become '_'), NUL padded."""
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "_.") else "_" for c in name)
    return cleaned[:BPF_OBJ_NAME_LEN - 1].encode("ascii")


# ------------------------------------------------------------- the call

_libc: ctypes.CDLL | None = None


def _syscall() -> ctypes._CFuncPtr:  # type: ignore[name-defined]
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    return _libc.syscall


def bpf(command: int, attr: bytes | ctypes.Array) -> int:
    """Run one bpf(2) command; returns its non-negative result or raises BpfError.

    `attr` may be a ctypes buffer when the kernel writes back into it."""
    number = syscall_number()
    buf = attr if isinstance(attr, ctypes.Array) else ctypes.create_string_buffer(bytes(attr), len(attr))
    ret = _syscall()(ctypes.c_long(number), ctypes.c_long(command), buf,
                     ctypes.c_uint(ctypes.sizeof(buf)))
    if ret < 0:
        err = ctypes.get_errno()
        name = COMMAND_NAMES.get(command, str(command))
        raise BpfError(f"{name}: {os.strerror(err)}", err)
    return int(ret)


def _address(buf: ctypes.Array | None) -> int:
    return ctypes.addressof(buf) if buf is not None else 0


# ------------------------------------------------------------- maps

def map_create(map_type: int, key_size: int, value_size: int, max_entries: int,
               name: str = "") -> int:
    """A new map's fd (owned by the caller)."""
    return bpf(BPF_MAP_CREATE, MAP_CREATE_ATTR.pack(
        map_type=map_type, key_size=key_size, value_size=value_size,
        max_entries=max_entries, map_name=object_name(name)))


def _element_query(command: int, fd: int, key: bytes | None, out_size: int) -> bytes | None:
    """LOOKUP_ELEM / GET_NEXT_KEY: the bytes the kernel wrote, None for ENOENT."""
    kbuf = ctypes.create_string_buffer(key, len(key)) if key is not None else None
    out = ctypes.create_string_buffer(out_size)
    try:
        bpf(command, MAP_ELEM_ATTR.pack(map_fd=fd, key=_address(kbuf), value=_address(out)))
    except BpfError as err:
        if err.errno == errno.ENOENT:
            return None
        raise
    return out.raw


def map_lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    """The value stored under `key`, or None when there is none."""
    return _element_query(BPF_MAP_LOOKUP_ELEM, fd, key, value_size)


def map_update(fd: int, key: bytes, value: bytes, flags: int = 0) -> None:
    kbuf = ctypes.create_string_buffer(key, len(key))
    vbuf = ctypes.create_string_buffer(value, len(value))
    bpf(BPF_MAP_UPDATE_ELEM, MAP_ELEM_ATTR.pack(map_fd=fd, key=_address(kbuf),
                                                value=_address(vbuf), flags=flags))


def map_next_key(fd: int, key: bytes | None, key_size: int) -> bytes | None:
    """The key after `key` (the first key for None); None at the end."""
    return _element_query(BPF_MAP_GET_NEXT_KEY, fd, key, key_size)


def map_id(fd: int) -> int:
    """The kernel-wide id of a map (stable while the map lives, unlike an fd)."""
    info = ctypes.create_string_buffer(MAP_INFO_SIZE)
    bpf(BPF_OBJ_GET_INFO_BY_FD, OBJ_INFO_ATTR.pack(bpf_fd=fd, info_len=MAP_INFO_SIZE,
                                                   info=_address(info)))
    return int(struct.unpack_from("<I", info.raw, 4)[0])


def map_fd_by_id(map_id: int) -> int:
    """A new fd of the map with this id (needs CAP_SYS_ADMIN); ENOENT once it is gone."""
    return bpf(BPF_MAP_GET_FD_BY_ID, GET_FD_BY_ID_ATTR.pack(id=map_id))


def map_items(fd: int, key_size: int, value_size: int, limit: int = 4096
              ) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs of a map, at most `limit` (for stats)."""
    out: list[tuple[bytes, bytes]] = []
    key = map_next_key(fd, None, key_size)
    while key is not None and len(out) < limit:
        value = map_lookup(fd, key, value_size)
        if value is not None:
            out.append((key, value))
        key = map_next_key(fd, key, key_size)
    return out


# ------------------------------------------------------------- programs

LOG_LEVEL = 1                 # the verifier's normal log (what bpftool prints)
LOG_START = 256 << 10
LOG_MAX = 16 << 20            # grown until the whole log fits (older kernels keep its head)


class ProgLoadError(BpfError):
    """BPF_PROG_LOAD refused a program; `log` is the verifier's log."""

    def __init__(self, message: str, err: int, log: str) -> None:
        super().__init__(message, err)
        self.log = log

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.rstrip("\n").splitlines()[-lines:])


def prog_load_attr(prog_type: int, insns_address: int, insn_count: int, license_address: int,
                   name: str = "", log_address: int = 0, log_size: int = 0) -> bytes:
    """BPF_PROG_LOAD's attribute (spec §2.1: no attach type, no BTF)."""
    return PROG_LOAD_ATTR.pack(
        prog_type=prog_type, insn_cnt=insn_count, insns=insns_address, license=license_address,
        log_level=LOG_LEVEL if log_size else 0, log_size=log_size, log_buf=log_address,
        prog_name=object_name(name), expected_attach_type=0)


def prog_load(prog_type: int, insns: bytes, license: str = "GPL", name: str = "") -> int:
    """Load one program; returns its fd.  On rejection, loads again with a verifier
    log (grown until it fits) and raises ProgLoadError carrying it."""
    if len(insns) % 8:
        raise ValueError("instruction bytes must be a multiple of 8")
    code = ctypes.create_string_buffer(bytes(insns), len(insns))
    lic = ctypes.create_string_buffer(license.encode("ascii") + b"\0")
    try:
        return bpf(BPF_PROG_LOAD, prog_load_attr(prog_type, _address(code), len(insns) // 8,
                                                 _address(lic), name))
    except BpfError:
        pass  # load again with a log to say why
    size = LOG_START
    while True:
        log = ctypes.create_string_buffer(size)
        try:
            fd = bpf(BPF_PROG_LOAD, prog_load_attr(prog_type, _address(code), len(insns) // 8,
                                                   _address(lic), name, _address(log), size))
        except BpfError as err:
            if err.errno == errno.ENOSPC and size < LOG_MAX:
                size *= 4
                continue
            text = log.value.decode("utf-8", "replace")
            raise ProgLoadError(f"BPF_PROG_LOAD {name or '(program)'}: {os.strerror(err.errno)}",
                                err.errno, text) from None
        return fd  # accepted the second time (a transient failure): keep it
