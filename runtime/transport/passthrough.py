"""Kernel FUSE_PASSTHROUGH backing ids (spec §13).

An open or create reply may carry FOPEN_PASSTHROUGH and a backing id; the
kernel then reads and writes (and mmaps) the backing file itself, without a
request to the daemon.  The kernel insists that all passthrough opens of one
inode use the same backing id, so ids are kept per node, reference counted
by open handle, and closed (FUSE_DEV_IOC_BACKING_CLOSE) when the last handle
using it is released.

Which files: regular files whose scope has no rule on READ or WRITE (the
only operations the kernel takes over) and without S_ISUID/S_ISGID (the
kernel's passthrough write runs with the credentials that registered the
id, so it would not clear those bits for the writer).  Ids are registered
with the filesystem capabilities dropped (fsuid `nobody`): a passthrough
write then clears S_ISUID/S_ISGID if they were set after the open, as an
unprivileged writer's would.
"""
from __future__ import annotations

import fcntl
import logging
import os
import stat
import struct
import threading

from fdsl import abi

from ..identity import Caller, as_caller
from ..sysio import fs_magic

log = logging.getLogger("fdsl.runtime")

# Filesystems whose files have no ->flush: close(2) of a backing fd there does
# nothing a FLUSH request could pass on (no write-back, no error to report;
# the daemon holds no POSIX locks), so opens of their files may carry
# FOPEN_NOFLUSH and the kernel sends no FLUSH per close.  NFS, CIFS, FUSE and
# overlayfs have one (write-back and errors at close): their files keep it.
NO_FLUSH_FS = {0xEF53: "ext2/3/4", 0x58465342: "xfs", 0x9123683E: "btrfs",
               0x01021994: "tmpfs", 0xF2F52010: "f2fs"}

_BACKING_MAP = abi.FUSE_BACKING_MAP.codec
_U32 = struct.Struct("<I")
NOBODY = Caller(uid=65534, gid=65534, umask=0, groups=())


class BackingFiles:
    def __init__(self, devfd: int, enabled: bool) -> None:
        self.devfd = devfd
        self.enabled = enabled
        self._lock = threading.Lock()
        self._by_node: dict[int, list[int]] = {}     # nodeid -> [backing id, handles]
        self._by_fh: dict[int, int] = {}             # fh -> nodeid
        self._no_flush: dict[int, bool] = {}         # st_dev -> files there have no ->flush

    def no_flush(self, fd: int, st: os.stat_result, flush_rules: bool) -> bool:
        """May the open of backing file `fd` (whose fstat is `st`) carry FOPEN_NOFLUSH?
        Not where the node's scope has rules on FLUSH (they must see every close),
        nor off NO_FLUSH_FS."""
        if flush_rules:
            return False
        known = self._no_flush.get(st.st_dev)
        if known is None:
            known = self._no_flush[st.st_dev] = fs_magic(fd) in NO_FLUSH_FS
        return known

    def eligible(self, st: os.stat_result, filtered: bool) -> bool:
        """May the kernel do the I/O of an open backing file with this fstat?"""
        if not self.enabled or filtered:
            return False
        return stat.S_ISREG(st.st_mode) and not st.st_mode & (stat.S_ISUID | stat.S_ISGID)

    def attach(self, fh: int, nodeid: int, fd: int) -> int:
        """The backing id for open handle `fh` of node `nodeid` (0 = serve it ourselves)."""
        with self._lock:
            held = self._by_node.get(nodeid)
            if held is None:
                try:
                    # A mutable buffer makes fcntl.ioctl return the syscall's result.
                    with as_caller(NOBODY):
                        backing_id = fcntl.ioctl(self.devfd, abi.FUSE_DEV_IOC_BACKING_OPEN,
                                                 bytearray(_BACKING_MAP.pack(fd, 0, 0)))
                except OSError as err:
                    log.warning("FUSE_DEV_IOC_BACKING_OPEN failed (%s): kernel passthrough "
                                "off for this mount", err)
                    self.enabled = False
                    return 0
                held = self._by_node[nodeid] = [int(backing_id), 0]
            held[1] += 1
            self._by_fh[fh] = nodeid
            return held[0]

    def detach(self, fh: int) -> None:
        """Open handle `fh` was released: close its node's id if it was the last user."""
        with self._lock:
            nodeid = self._by_fh.pop(fh, None)
            if nodeid is None:
                return
            held = self._by_node[nodeid]
            held[1] -= 1
            if held[1] > 0:
                return
            del self._by_node[nodeid]
        try:
            fcntl.ioctl(self.devfd, abi.FUSE_DEV_IOC_BACKING_CLOSE, bytearray(_U32.pack(held[0])))
        except OSError as err:
            log.warning("FUSE_DEV_IOC_BACKING_CLOSE of id %d failed: %s", held[0], err)

    def __len__(self) -> int:
        return len(self._by_node)
