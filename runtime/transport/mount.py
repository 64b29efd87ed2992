"""Mounting and unmounting a FUSE connection.

As root: open /dev/fuse and mount(2) it directly (`fd=`, `rootmode=`,
`user_id=`, `group_id=`; source = fsname, type `fuse.<subtype>`).  As any
other user: run the setuid `fusermount3`, which opens /dev/fuse, mounts it
and passes the fd back over a unix socket named in `_FUSE_COMMFD` (the
protocol libfuse uses).  Unmounting: umount2(2) as root, `fusermount3 -u`
otherwise.
"""
from __future__ import annotations

import ctypes
import os
import socket
import stat
import subprocess
from dataclasses import dataclass, field

from fdsl.errors import MountError

_libc = ctypes.CDLL(None, use_errno=True)

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_SYNCHRONOUS, MS_DIRSYNC, MS_NOATIME, MS_NODIRATIME = 16, 128, 1024, 2048
MS_RELATIME, MS_STRICTATIME, MS_LAZYTIME = 1 << 21, 1 << 24, 1 << 25
MNT_DETACH = 2

# option -> (flag, set it?)
FLAG_OPTIONS = {
    "ro": (MS_RDONLY, True), "rw": (MS_RDONLY, False),
    "nosuid": (MS_NOSUID, True), "suid": (MS_NOSUID, False),
    "nodev": (MS_NODEV, True), "dev": (MS_NODEV, False),
    "noexec": (MS_NOEXEC, True), "exec": (MS_NOEXEC, False),
    "sync": (MS_SYNCHRONOUS, True), "async": (MS_SYNCHRONOUS, False),
    "dirsync": (MS_DIRSYNC, True), "noatime": (MS_NOATIME, True), "atime": (MS_NOATIME, False),
    "nodiratime": (MS_NODIRATIME, True), "diratime": (MS_NODIRATIME, False),
    "relatime": (MS_RELATIME, True), "norelatime": (MS_RELATIME, False),
    "strictatime": (MS_STRICTATIME, True), "nostrictatime": (MS_STRICTATIME, False),
    "lazytime": (MS_LAZYTIME, True), "nolazytime": (MS_LAZYTIME, False),
}
KERNEL_OPTIONS = {"allow_other", "default_permissions", "max_read", "blksize",
                  "context", "fscontext", "defcontext", "rootcontext"}
# auto_unmount needs a helper process that outlives the daemon (fusermount3's);
# a mount(2) by root has none, and `fdsl mount` unmounts on every exit path.
IGNORED_OPTIONS = {"nonempty", "debug", "auto_unmount"}


@dataclass
class MountOptions:
    fsname: str = "fdsl"
    subtype: str = "fdsl"
    flags: int = MS_NOSUID | MS_NODEV
    kernel: list[str] = field(default_factory=list)     # allow_other, default_permissions, ...
    user_flags: list[str] = field(default_factory=list)  # the flag options as given

    @classmethod
    def parse(cls, options: list[str]) -> "MountOptions":
        """Split FUSE mount options; an unknown one is a usage error (as libfuse's)."""
        out = cls()
        for opt in options:
            key, _, value = opt.partition("=")
            if key in FLAG_OPTIONS:
                bit, on = FLAG_OPTIONS[key]
                out.flags = out.flags | bit if on else out.flags & ~bit
                out.user_flags.append(key)
            elif key in ("fsname", "subtype") and value and "," not in value:
                setattr(out, key, value)
            elif key in KERNEL_OPTIONS:
                if opt not in out.kernel:
                    out.kernel.append(opt)
            elif key not in IGNORED_OPTIONS:
                raise MountError(f"unknown mount option {opt!r}")
        return out


def mount(mountpoint: str, options: MountOptions) -> int:
    """Mount a new FUSE connection at `mountpoint`; returns the /dev/fuse fd."""
    if os.geteuid() == 0:
        return _mount_root(mountpoint, options)
    return _mount_fusermount(mountpoint, options)


def _mount_root(mountpoint: str, options: MountOptions) -> int:
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    try:
        rootmode = stat.S_IFMT(os.stat(mountpoint).st_mode)
        data = ",".join([f"fd={fd}", f"rootmode={rootmode:o}", f"user_id={os.getuid()}",
                         f"group_id={os.getgid()}", *options.kernel])
        if _libc.mount(options.fsname.encode(), mountpoint.encode(),
                       f"fuse.{options.subtype}".encode(), ctypes.c_ulong(options.flags),
                       data.encode()) != 0:
            err = ctypes.get_errno()
            raise MountError(f"cannot mount {mountpoint}: {os.strerror(err)}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _mount_fusermount(mountpoint: str, options: MountOptions) -> int:
    opts = ",".join([f"fsname={options.fsname}", f"subtype={options.subtype}",
                     *options.user_flags, *options.kernel])
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        env = {**os.environ, "_FUSE_COMMFD": str(theirs.fileno())}
        try:
            proc = subprocess.run(["fusermount3", "-o", opts, "--", mountpoint], env=env,
                                  pass_fds=(theirs.fileno(),), capture_output=True, text=True)
        except FileNotFoundError:
            raise MountError("fusermount3 is not installed (package fuse3): a non-root "
                             "user cannot mount without it") from None
        if proc.returncode != 0:
            raise MountError(proc.stderr.strip() or f"fusermount3 failed ({proc.returncode})")
        theirs.close()
        _msg, fds, _flags, _addr = socket.recv_fds(ours, 1, 1)
    if not fds:
        raise MountError("fusermount3 mounted but passed no /dev/fuse descriptor")
    os.set_inheritable(fds[0], False)
    return fds[0]


def unmount(mountpoint: str, lazy: bool = False) -> None:
    """Unmount (MNT_DETACH if `lazy`); raises MountError with the reason."""
    if os.geteuid() == 0:
        if _libc.umount2(mountpoint.encode(), MNT_DETACH if lazy else 0) != 0:
            err = ctypes.get_errno()
            raise MountError(f"cannot unmount {mountpoint}: {os.strerror(err)}")
        return
    proc = subprocess.run(["fusermount3", "-u"] + (["-z"] if lazy else []) + [mountpoint],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise MountError(proc.stderr.strip() or f"cannot unmount {mountpoint}")


def connection_id(mountpoint: str) -> int | None:
    """The FUSE connection number (/sys/fs/fuse/connections/N) of a mount, from
    mountinfo (a stat of the mount point would be a request to ourselves)."""
    found = None
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) > 4 and parts[4] == mountpoint:
                found = int(parts[2].split(":")[1])   # the topmost mount there wins
    return found


def abort_connection(conn: int | None) -> bool:
    """Abort a connection whose mount is gone but whose requests still hang (fusectl)."""
    if conn is None:
        return False
    try:
        with open(f"/sys/fs/fuse/connections/{conn}/abort", "w") as fh:
            fh.write("1")
        return True
    except OSError:
        return False
