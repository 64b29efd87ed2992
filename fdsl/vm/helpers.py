"""The five helpers of the ACK fuse program type (spec §8.1).

The VMs call these with raw 64-bit register values; pointers are read
through a `Memory` (the interpreter passes a bounds-checked one, the JIT the
unchecked `RAW_MEMORY`).  Helpers 14 and 15 report the *caller* of the FUSE
request (a `Caller` passed in per run), not the daemon, because the kernel
runs the program in the context of the task doing the file operation.

Return values are u64 register values (a negative errno is returned in two's
complement, as the kernel does).
"""
from __future__ import annotations

import ctypes
import errno
import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable, Protocol

from fdsl import abi
from fdsl.vm.maps import BpfMap

U64 = 0xFFFFFFFFFFFFFFFF
MAX_BPRINTF_BUF = 512        # kernel's output buffer for one trace_printk
MAX_TRACE_PRINTK_ARGS = 3

HELPER_MAP_LOOKUP_ELEM = 1
HELPER_MAP_UPDATE_ELEM = 2
HELPER_TRACE_PRINTK = 6
HELPER_GET_CURRENT_PID_TGID = 14
HELPER_GET_CURRENT_UID_GID = 15
# bpf_fuse_get_writeable_in/out of the ABIs that have them (RFC v1: 208, 209)
WRITEABLE_HELPERS = frozenset(h for a in abi.ABIS.values() for h in a.writable_helpers.values())


@dataclass(frozen=True, slots=True)
class Caller:
    """The task doing a file operation: the one caller type of VMs, daemon and tests.

    `uid`/`gid`/`pid` come from the fuse_in_header (`pid` is the thread id).
    `tgid` 0 means "not known yet": FUSE gives only the thread id, so the daemon
    reads it from /proc only for programs that call bpf_get_current_pid_tgid
    (`runtime.identity.with_tgid`).  `umask` is the caller's (FUSE_DONT_MASK);
    `groups` None = read from /proc/<pid>/status when a backing step checks
    permissions as the caller.
    """

    uid: int = 0
    gid: int = 0
    pid: int = 0
    tgid: int = 0
    umask: int = 0o022
    groups: tuple[int, ...] | None = None


class Memory(Protocol):
    def read(self, address: int, size: int) -> bytes:
        """`size` bytes at `address`; raises on an invalid access."""


class RawMemory:
    """Unchecked access to this process's memory (for verified code under the JIT)."""

    def read(self, address: int, size: int) -> bytes:
        if not address:
            raise ValueError("NULL pointer")
        return ctypes.string_at(address, size)


RAW_MEMORY = RawMemory()


class LogSink:
    """Bounded buffer of recent trace_printk lines plus an optional callback."""

    def __init__(self, maxlen: int = 1000, callback: Callable[[str], None] | None = None) -> None:
        self.lines: deque[str] = deque(maxlen=maxlen)
        self.callback = callback
        self._lock = threading.Lock()

    def emit(self, line: str) -> None:
        with self._lock:
            self.lines.append(line)
        if self.callback is not None:
            self.callback(line)

    def recent(self) -> list[str]:
        with self._lock:
            return list(self.lines)


def _neg(err: int) -> int:
    return -err & U64


def get_current_pid_tgid(caller: Caller) -> int:
    return ((caller.tgid & 0xFFFFFFFF) << 32) | (caller.pid & 0xFFFFFFFF)


def get_current_uid_gid(caller: Caller) -> int:
    return ((caller.gid & 0xFFFFFFFF) << 32) | (caller.uid & 0xFFFFFFFF)


def map_lookup_elem(m: BpfMap, key_ptr: int, memory: Memory = RAW_MEMORY) -> int:
    """Address of the value or 0 (NULL)."""
    address = m.lookup(memory.read(key_ptr, m.key_size))
    return 0 if address is None else address


def map_update_elem(m: BpfMap, key_ptr: int, value_ptr: int, flags: int,
                    memory: Memory = RAW_MEMORY) -> int:
    key = memory.read(key_ptr, m.key_size)
    value = memory.read(value_ptr, m.value_size)
    return m.update(key, value, flags & U64) & U64


# ------------------------------------------------------------ trace_printk

class _FormatError(Exception):
    pass


def _printable(ch: int) -> bool:
    return 0x20 <= ch < 0x7F or ch in (0x09, 0x0A, 0x0B, 0x0C, 0x0D)


def _ispunct(ch: int) -> bool:
    return 0x21 <= ch < 0x7F and not chr(ch).isalnum()


def _isspace(ch: int) -> bool:
    return ch in (0x20, 0x09, 0x0A, 0x0B, 0x0C, 0x0D)


def _read_cstring(memory: Memory, address: int, limit: int) -> str:
    """Like strncpy_from_kernel_nofault: a fault gives the empty string."""
    out = bytearray()
    try:
        while len(out) < limit:
            ch = memory.read(address + len(out), 1)[0]
            if ch == 0:
                break
            out.append(ch)
    except Exception:
        return ""
    return out.decode("latin-1")


def format_trace_printk(fmt: bytes, args: tuple[int, ...], memory: Memory = RAW_MEMORY) -> str:
    """Format like the kernel's bpf_bprintf_prepare + bstr_printf; raises _FormatError (EINVAL).

    Conversions: %d %i %u %x %X with l/ll, %c, %s, %p (%px %pK %ps: the
    pointer in hex, unhashed), %%, and the width field "[0 +-][digits]".
    """
    out: list[str] = []
    n = len(fmt)
    i = 0
    spec = 0

    def at(k: int) -> int:
        return fmt[k] if k < n else 0

    while i < n:
        ch = fmt[i]
        if not _printable(ch):
            raise _FormatError("non-printable character in format")
        if ch != 0x25:  # '%'
            out.append(chr(ch))
            i += 1
            continue
        if at(i + 1) == 0x25:
            out.append("%")
            i += 2
            continue
        if spec >= MAX_TRACE_PRINTK_ARGS:
            raise _FormatError("too many conversions")
        arg = args[spec] if spec < len(args) else 0
        spec += 1
        i += 1
        start = i
        while at(i) in b"0+- ":
            i += 1
        if 0x31 <= at(i) <= 0x39:
            i += 1
            while 0x30 <= at(i) <= 0x39:
                i += 1
        flags = fmt[start:i].decode()
        conv = at(i)
        if conv == ord("p"):
            nxt = at(i + 1)
            if nxt in (ord("k"), ord("u")) and at(i + 2) == ord("s"):
                i += 2
                conv = ord("s")
            elif nxt == 0 or _isspace(nxt) or _ispunct(nxt) or nxt in b"KxsS":
                if nxt in b"KxsS":
                    i += 1
                out.append(("%" + flags + "s") % format(arg & U64, "016x"))
                i += 1
                continue
            else:
                raise _FormatError("unsupported %p modifier")
        if conv == ord("s"):
            nxt = at(i + 1)
            if nxt != 0 and not _isspace(nxt) and not _ispunct(nxt):
                raise _FormatError("bad character after %s")
            text = _read_cstring(memory, arg & U64, MAX_BPRINTF_BUF)
            out.append(("%" + flags + "s") % text)
            i += 1
            continue
        if conv == ord("c"):
            out.append(("%" + flags + "c") % chr(arg & 0xFF))
            i += 1
            continue
        bits = 32
        if conv == ord("l"):
            bits = 64
            i += 1
            if at(i) == ord("l"):
                i += 1
            conv = at(i)
        if conv not in b"iduxX" or conv == 0:
            raise _FormatError("unsupported conversion")
        value = arg & ((1 << bits) - 1)
        if conv in b"di" and value >> (bits - 1):
            value -= 1 << bits
        pyconv = {ord("i"): "d", ord("u"): "d"}.get(conv, chr(conv))
        out.append(("%" + flags + pyconv) % value)
        i += 1
    return "".join(out)


def trace_printk(fmt_ptr: int, fmt_size: int, args: tuple[int, ...], sink: LogSink | None,
                 memory: Memory = RAW_MEMORY) -> int:
    """Helper 6: bytes written, or -EINVAL for a bad format (as the kernel)."""
    fmt_size &= 0xFFFFFFFF
    if fmt_size == 0 or fmt_size > 4096:
        return _neg(errno.EINVAL)
    try:
        raw = memory.read(fmt_ptr, fmt_size)
    except Exception:
        return _neg(errno.EFAULT)
    end = raw.find(b"\0")
    if end < 0:
        return _neg(errno.EINVAL)
    try:
        text = format_trace_printk(raw[:end], tuple(a & U64 for a in args), memory)
    except _FormatError:
        return _neg(errno.EINVAL)
    written = len(text.encode("latin-1"))
    text = text.encode("latin-1")[:MAX_BPRINTF_BUF - 1].decode("latin-1")
    if sink is not None:
        sink.emit(text[:-1] if text.endswith("\n") else text)
    return written


# ------------------------------------------------------------- dispatcher

class Helpers:
    """Dispatch `call N` for one object: its maps, its log sink, one memory view.

    `call(helper_id, r1..r5, caller)`; map arguments are the register value
    an ld_imm64 with BPF_PSEUDO_MAP_FD produced: the VM chooses what that
    is, and `resolve_map` turns it back into a `BpfMap` (default: the map
    index, or a `BpfMap.handle` address).
    """

    def __init__(self, maps, sink: LogSink | None = None, memory: Memory = RAW_MEMORY,
                 resolve_map: Callable[[int], BpfMap | None] | None = None) -> None:
        self.maps = list(maps)
        self.sink = sink if sink is not None else LogSink()
        self.memory = memory
        by_handle = {m.handle: m for m in self.maps}
        self.resolve_map = resolve_map or (
            lambda v: by_handle.get(v) or (self.maps[v] if 0 <= v < len(self.maps) else None))

    def _map(self, value: int) -> BpfMap:
        m = self.resolve_map(value)
        if m is None:
            raise ValueError(f"invalid map pointer {value:#x}")
        return m

    def call(self, helper_id: int, r1: int = 0, r2: int = 0, r3: int = 0, r4: int = 0,
             r5: int = 0, caller: Caller = Caller()) -> int:
        if helper_id == HELPER_MAP_LOOKUP_ELEM:
            return map_lookup_elem(self._map(r1), r2, self.memory)
        if helper_id == HELPER_MAP_UPDATE_ELEM:
            return map_update_elem(self._map(r1), r2, r3, r4, self.memory)
        if helper_id == HELPER_TRACE_PRINTK:
            return trace_printk(r1, r2, (r3, r4, r5), self.sink, self.memory)
        if helper_id == HELPER_GET_CURRENT_PID_TGID:
            return get_current_pid_tgid(caller)
        if helper_id == HELPER_GET_CURRENT_UID_GID:
            return get_current_uid_gid(caller)
        if helper_id in WRITEABLE_HELPERS:
            from fdsl.vm.context_rfc_v1 import get_writeable   # only RFC v1 programs call these
            return get_writeable(r1, helper_id, r2, r3, r4)
        raise ValueError(f"unknown helper {helper_id}")
