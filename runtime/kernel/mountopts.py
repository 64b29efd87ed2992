"""The fuse-bpf mount: option string and mount(2) (spec §3.1, §3.4).

The data string is what the ACK selftests pass, `fd=<devfd>,rootmode=<octal>,
user_id=<uid>,group_id=<gid>`, then `root_dir=<fd>` (an opened directory,
not O_PATH) and `root_bpf=<prog fd>`, then `no_daemon` for a mount without a
server.  User options the FUSE kernel module parses itself (allow_other,
default_permissions, max_read) join the string; the generic ones (ro,
nosuid, ...) become mount(2) flags; anything else is refused, since here no
libfuse is in between to interpret it.
"""
from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, field

from fdsl.errors import MountError, UsageError

MS_FLAGS = {"ro": 1, "nosuid": 2, "nodev": 4, "noexec": 8, "sync": 16, "dirsync": 128,
            "noatime": 1024, "nodiratime": 2048, "relatime": 1 << 21}
KERNEL_DATA_OPTIONS = ("allow_other", "default_permissions", "max_read")
IGNORED = ("rw", "nonempty", "suid", "dev", "exec", "async", "atime")


@dataclass(frozen=True)
class MountRequest:
    dev_fd: int
    root_dir_fd: int | None          # None only for a plain FUSE mount (tests on mainline)
    root_bpf_fd: int | None
    rootmode: int = 0o040000
    uid: int = 0
    gid: int = 0
    no_daemon: bool = False
    data_options: tuple[str, ...] = ()
    flags: int = 0
    fsname: str = "fdsl"
    subtype: str = "fdsl"

    def data(self) -> str:
        opts = [f"fd={self.dev_fd}", f"rootmode={self.rootmode:o}", f"user_id={self.uid}",
                f"group_id={self.gid}"]
        if self.root_dir_fd is not None:
            opts.append(f"root_dir={self.root_dir_fd}")
        if self.root_bpf_fd is not None:
            opts.append(f"root_bpf={self.root_bpf_fd}")
        if self.no_daemon:
            opts.append("no_daemon")
        return ",".join(opts + list(self.data_options))

    @property
    def fstype(self) -> str:
        return f"fuse.{self.subtype}" if self.subtype else "fuse"


@dataclass
class UserOptions:
    data: list[str] = field(default_factory=list)
    flags: int = 0
    fsname: str = "fdsl"
    subtype: str = "fdsl"


def split_user_options(options: list[str]) -> UserOptions:
    """-o options of `fdsl mount` as a kernel-mode mount takes them."""
    out = UserOptions()
    for opt in options:
        key, _, value = opt.partition("=")
        if key in MS_FLAGS:
            out.flags |= MS_FLAGS[key]
        elif key in KERNEL_DATA_OPTIONS:
            out.data.append(opt)
        elif key == "fsname":
            out.fsname = value
        elif key == "subtype":
            out.subtype = value
        elif key not in IGNORED:
            raise UsageError(f"-o {opt}: not a mount option the kernel's fuse module takes "
                             f"(kernel mode has no libfuse to interpret it)")
    return out


def kernel_mount(req: MountRequest, target: str) -> None:
    """mount(2) with the fuse-bpf data string; a refusal says what was asked."""
    libc = ctypes.CDLL(None, use_errno=True)
    ret = libc.mount(req.fsname.encode(), os.fsencode(target), req.fstype.encode(),
                     ctypes.c_ulong(req.flags), req.data().encode())
    if ret != 0:
        err = ctypes.get_errno()
        raise MountError(f"cannot mount {target} (mount -t {req.fstype} -o {req.data()}): "
                         f"{os.strerror(err)}")
