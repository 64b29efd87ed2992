"""FUSE_INIT negotiation: which capabilities we ask for, and why.

The kernel offers flags; we answer with the subset we want (never a bit it
did not offer).  Each wanted flag, and the reason:

* ASYNC_READ: reads of one file may be in flight in parallel (readahead).
* ATOMIC_O_TRUNC: open(O_TRUNC) arrives as one OPEN with O_TRUNC, run by the
  backing fs as the caller, instead of OPEN + a separate SETATTR(size).
* BIG_WRITES, MAX_PAGES: writes and reads of up to `max_pages` pages (1 MiB)
  per request instead of 4 KiB.
* DONT_MASK: the kernel sends a new file's mode unmasked plus the caller's
  umask; the backing fs (the daemon runs creates with that umask) applies it,
  or the parent's default ACL instead of it, exactly as a local fs would.
* POSIX_ACL: with `default_permissions` the kernel checks ACLs as well as mode
  bits (it reads system.posix_acl_access through GETXATTR and caches it),
  and stops applying the umask itself (the backing fs does, see DONT_MASK).
* HANDLE_KILLPRIV_V2: the kernel does not send a separate chmod to clear
  S_ISUID/S_ISGID before a write, truncate or chown; the backing step runs as
  the caller, so the backing fs clears them itself exactly when it should
  (and a chown that fails clears nothing).
* DO_READDIRPLUS: listings carry each entry's attributes (one round trip for
  `ls -l`).  READDIRPLUS_AUTO is *not* asked for: our inode numbers are node
  ids assigned at lookup, so a plain READDIR costs the same lookups and would
  only add FORGET traffic.
* PARALLEL_DIROPS: lookups and readdirs in one directory run concurrently
  (the engine is thread-safe).
* SETXATTR_EXT: setxattr carries the 16-byte fuse_setxattr_in (with the
  ACL_KILL_SGID hint; the backing fs clears S_ISGID itself, as the caller).
* DIRECT_IO_ALLOW_MMAP: files whose read rules must see every read are opened
  with FOPEN_DIRECT_IO (no page cache between callers); this keeps shared
  mmap of them working (the kernel refuses it with ENODEV otherwise).
* EXPORT_SUPPORT: not asked for (no lookups of "." and "..", so no NFS export).
* PASSTHROUGH (flags2): open/create replies may name a backing file registered
  with FUSE_DEV_IOC_BACKING_OPEN; the kernel then reads and writes it directly.
  `max_stack_depth` is 1 when the backing tree is on a non-stacked fs, 2 when it
  is on overlayfs or another stacked fs (the kernel refuses deeper backing).
* INIT_EXT: needed to send flags2 at all.
"""
from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

from fdsl import abi

from .protocol import ProtocolError, Request

log = logging.getLogger("fdsl.runtime")
F = abi.INIT_FLAGS

WANTED = (F["ASYNC_READ"] | F["ATOMIC_O_TRUNC"] | F["BIG_WRITES"] | F["DONT_MASK"]
          | F["DO_READDIRPLUS"] | F["PARALLEL_DIROPS"] | F["HANDLE_KILLPRIV_V2"]
          | F["POSIX_ACL"] | F["MAX_PAGES"] | F["SETXATTR_EXT"] | F["DIRECT_IO_ALLOW_MMAP"]
          | F["INIT_EXT"])
_INIT_IN_V1 = struct.Struct("<4I")  # before 7.36 the request ends after `flags`
_INIT_IN_V2 = struct.Struct("<5I")
MAX_PAGES = 256                     # the kernel's default fuse_max_pages_limit
MAX_WRITE = MAX_PAGES * 4096
MAX_BACKGROUND = 64
TIME_GRAN = 1                       # ns: we report backing timestamps exactly


@dataclass
class InitOptions:
    posix_acl: bool = True          # with default_permissions (the safe default)
    passthrough: bool = True
    max_stack_depth: int = 1


@dataclass
class Negotiated:
    """What the connection runs with after INIT."""

    minor: int
    flags: int
    max_write: int
    passthrough: bool

    def has(self, name: str) -> bool:
        return bool(self.flags & F[name])


def negotiate(req: Request, options: InitOptions) -> tuple[bytes, Negotiated]:
    """The fuse_init_out payload answering INIT request `req`."""
    major, minor, max_readahead, flags = req.struct(_INIT_IN_V1)
    flags2 = req.struct(_INIT_IN_V2)[4] if len(req.body) >= _INIT_IN_V2.size else 0
    if major != abi.FUSE_KERNEL_VERSION:
        raise ProtocolError(f"kernel speaks FUSE {major}.{minor}, we speak "
                            f"{abi.FUSE_KERNEL_VERSION}.x")
    offered = flags | ((flags2 << 32) if flags & F["INIT_EXT"] else 0)
    wanted = WANTED
    if not options.posix_acl:
        wanted &= ~F["POSIX_ACL"]
    if options.passthrough:
        wanted |= F["PASSTHROUGH"]
    chosen = offered & wanted
    passthrough = bool(chosen & F["PASSTHROUGH"])
    if options.passthrough and not passthrough:
        log.info("the kernel offers no FUSE_PASSTHROUGH: data goes through the daemon")
    out_minor = min(minor, abi.FUSE_KERNEL_MINOR_VERSION)
    payload = abi.FUSE_INIT_OUT.codec.pack(
        abi.FUSE_KERNEL_VERSION, out_minor, max_readahead, chosen & 0xFFFFFFFF,
        MAX_BACKGROUND, MAX_BACKGROUND * 3 // 4, MAX_WRITE, TIME_GRAN, MAX_PAGES, 0,
        chosen >> 32, options.max_stack_depth if passthrough else 0)
    log.debug("FUSE_INIT: kernel %d.%d offers %#x, we take %#x", major, minor, offered, chosen)
    return payload, Negotiated(out_minor, chosen, MAX_WRITE, passthrough)
