"""Add capabilities to the FUSE_INIT reply that pyfuse3 cannot ask for.

pyfuse3 (3.x) calls `Operations.init()` from libfuse's init callback but does
not hand it the `struct fuse_conn_info`, so a daemon cannot set
`conn->want`.  Two capabilities matter for a faithful passthrough:

* FUSE_CAP_DONT_MASK: the kernel then sends the mode of a new file *unmasked*
  plus the caller's umask, and the daemon (here: the backing filesystem, with
  the thread's umask set to the caller's) applies the umask, or the parent's
  default ACL instead of it.  Without it the kernel applies the umask before
  the daemon sees the mode, and a default ACL can no longer replace it.
* FUSE_CAP_HANDLE_KILLPRIV: the daemon clears S_ISUID/S_ISGID on write,
  truncate and chown.  Our backing steps run with the caller's credentials,
  so the backing filesystem does exactly that by itself.  Without it the
  kernel sends a chmod on behalf of a non-owner writer, which the backing fs
  refuses (EPERM) when run as that caller.

How: libfuse is still inside its init handler when `Operations.init()` runs,
and only computes the reply flags afterwards from `se->conn.want`.  We find
pyfuse3's `session` pointer through the extension module's symbol table,
locate `conn` inside the session by its contents (proto_major 7, a plausible
proto_minor, READDIRPLUS among `capable`, `want` a subset of `capable`:
exactly one match is required) and set the bits, only those the kernel
offers.  Anything unexpected (stripped module, other layout) makes this a
no-op that returns 0; the daemon then falls back (`Engine._is_kill_suid`).
"""
from __future__ import annotations

import ctypes
import logging
import os
import struct

log = logging.getLogger("fdsl.runtime")

FUSE_CAP_DONT_MASK = 1 << 6
FUSE_CAP_READDIRPLUS = 1 << 13
FUSE_CAP_HANDLE_KILLPRIV = 1 << 20

_SESSION_SYMBOL = "__pyx_v_7pyfuse3_session"
_SCAN_BYTES = 1536   # struct fuse_session is larger; conn sits after ~50 pointers


def _module_base(path: str) -> int | None:
    """Load address of a shared object in this process (its offset-0 mapping)."""
    real = os.path.realpath(path)
    with open("/proc/self/maps") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 6 and parts[5] == real and int(parts[2], 16) == 0:
                return int(parts[0].split("-")[0], 16)
    return None


def _session_pointer(module_path: str) -> int | None:
    from elftools.elf.elffile import ELFFile  # pyelftools: already needed by the loader

    with open(module_path, "rb") as fh:
        elf = ELFFile(fh)
        symtab = elf.get_section_by_name(".symtab")
        if symtab is None:
            return None
        found = symtab.get_symbol_by_name(_SESSION_SYMBOL)
        if not found:
            return None
        value = found[0]["st_value"]
        first_load = min((seg["p_vaddr"] for seg in elf.iter_segments()
                          if seg["p_type"] == "PT_LOAD"), default=0)
    base = _module_base(module_path)
    if base is None:
        return None
    return ctypes.c_void_p.from_address(base - (first_load & ~0xFFF) + value).value


def _find_conn(session: int) -> int | None:
    raw = ctypes.string_at(session, _SCAN_BYTES)
    matches = []
    for off in range(0, _SCAN_BYTES - 28, 4):
        major, minor, _mw, _mr, _mra, capable, want = struct.unpack_from("<7I", raw, off)
        if (major == 7 and 12 <= minor < 1000 and capable & FUSE_CAP_READDIRPLUS
                and want & ~capable == 0):
            matches.append(session + off)
    return matches[0] if len(matches) == 1 else None


def request_capabilities(module_path: str, wanted: int) -> int:
    """Add `wanted` FUSE_CAP_* bits (those the kernel offers) to the INIT reply.

    Call only from `Operations.init()`.  Returns the bits actually added."""
    try:
        session = _session_pointer(module_path)
        conn = _find_conn(session) if session else None
        if conn is None:
            log.warning("cannot reach libfuse's connection info: running without "
                        "FUSE_DONT_MASK/FUSE_HANDLE_KILLPRIV")
            return 0
        capable = ctypes.c_uint32.from_address(conn + 20)
        want = ctypes.c_uint32.from_address(conn + 24)
        added = wanted & capable.value
        want.value |= added
        return added
    except Exception as err:  # never let this stop the mount
        log.warning("cannot request FUSE capabilities: %s", err)
        return 0
