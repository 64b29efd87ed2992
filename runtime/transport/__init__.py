"""The FUSE transport over /dev/fuse, the default of `fdsl mount`.

Speaks the kernel protocol directly (no libfuse), so the daemon can
negotiate what a faithful passthrough needs (DONT_MASK, POSIX_ACL,
HANDLE_KILLPRIV_V2, FUSE_PASSTHROUGH, ...), receive every opcode (lseek,
fallocate, copy_file_range, tmpfile, rename2 and setxattr flags, UTIME_NOW),
and, in fuse-bpf kernel mode, the userspace filter requests.

One module per job:

| module | job |
|---|---|
| `mount` | mount(2) as root, fusermount3 fd passing otherwise; unmount |
| `protocol` | request header decoding, reply encoders (layouts from `fdsl.abi`) |
| `init` | FUSE_INIT negotiation (and why each flag) |
| `session` | leader/follower workers on cloned fds, the stall watchdog; one writev per reply; bad input handling |
| `interrupts` | FUSE_INTERRUPT: running requests finish, unknown ones EAGAIN, unstarted EINTR |
| `dispatch` | the opcode -> handler table others can register into |
| `ops`, `fileops` | the handlers, calling the engine |
| `passthrough` | kernel passthrough backing ids (FUSE_DEV_IOC_BACKING_OPEN/CLOSE) |
"""
from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from typing import Any

from ..engine import Engine
from ..sysio import fs_magic
from . import mount as mounting
from .dispatch import Dispatcher
from .fileops import FileOperations
from .init import InitOptions
from .ops import register_all
from .passthrough import BackingFiles
from .protocol import OPCODES, Request
from .session import Session

log = logging.getLogger("fdsl.runtime")
_FH = struct.Struct("<Q")                  # fuse_flush_in starts with the file handle


@dataclass
class TransportOptions:
    threads: int = 8
    passthrough: bool = True          # -o passthrough=0 turns kernel passthrough off
    default_permissions: bool = True  # the kernel checks modes and ACLs (-o default_permissions=0)
    inline: bool = True               # cheap metadata in the reading thread (-o inline=0: never)


def stack_depth(path: str) -> int:
    """FUSE_PASSTHROUGH's max_stack_depth: 2 if the backing tree sits on a stacked
    filesystem (overlayfs, ecryptfs, another FUSE passthrough), else 1."""
    stacked = {0x794C7630, 0xF15F, 0x65735546}    # overlayfs, ecryptfs, fuse
    return 2 if fs_magic(path) in stacked else 1


class Connection:
    """One mounted FUSE connection served by worker threads."""

    def __init__(self, engine: Engine, mountpoint: str, backing: str, fuse_options: list[str],
                 options: TransportOptions, stats: Any = None) -> None:
        self.engine = engine
        self.mountpoint = mountpoint
        self.options = options
        kernel_opts = list(fuse_options)
        if options.default_permissions and "default_permissions" not in kernel_opts:
            kernel_opts.append("default_permissions")
        self.mount_options = mounting.MountOptions.parse(kernel_opts)
        self.init_options = InitOptions(
            posix_acl="default_permissions" in self.mount_options.kernel,
            passthrough=options.passthrough and os.geteuid() == 0,
            max_stack_depth=stack_depth(backing))
        self.dispatcher = Dispatcher()
        self.stats = stats
        self.session: Session | None = None
        self.conn_id: int | None = None

    def open(self, workers: int | None = None) -> None:
        """Mount, answer FUSE_INIT, register the handlers and start serving (with
        `workers` threads for now: `session.start()` adds the others)."""
        devfd = mounting.mount(self.mountpoint, self.mount_options)
        self.conn_id = mounting.connection_id(self.mountpoint)
        session = self.session = Session(devfd, self.dispatcher, self.options.threads, self.stats,
                                         inline=self.options.inline)
        try:
            negotiated = session.handshake(self.init_options)
        except BaseException:
            self.unmount(lazy=True)
            session.close()
            raise
        backing = BackingFiles(devfd, negotiated.passthrough)
        register_all(self.dispatcher, self.engine, FileOperations(self.engine, backing),
                     setxattr_ext=negotiated.has("SETXATTR_EXT"))
        self.backing_files = backing
        self.dispatcher.blocking[OPCODES["flush"]] = self._flush_may_block
        session.start(workers)

    def _flush_may_block(self, req: Request) -> bool:
        """`Engine.flush_may_block` for the file handle of a raw FLUSH request."""
        fh = _FH.unpack_from(req.body)[0] if len(req.body) >= _FH.size else 0
        return self.engine.flush_may_block(fh)

    def unmount(self, lazy: bool = False) -> None:
        try:
            mounting.unmount(self.mountpoint, lazy)
        except Exception as err:  # noqa: BLE001 - already gone, or busy
            if not lazy:
                log.info("unmount failed (%s): detaching lazily", err)
                try:
                    mounting.unmount(self.mountpoint, lazy=True)
                except Exception as err2:  # noqa: BLE001
                    log.debug("lazy unmount failed: %s", err2)

    def stop(self, timeout: float = 2.0) -> None:
        """Unmount and end the session; abort the connection if it outlives its mount."""
        self.unmount()
        if self.session is not None and not self.session.finished.wait(timeout):
            if mounting.abort_connection(self.conn_id):
                log.info("aborted FUSE connection %s (files were still open)", self.conn_id)

    def close(self) -> None:
        if self.session is not None:
            self.session.close()

