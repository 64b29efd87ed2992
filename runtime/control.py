"""The daemon's control socket: `fdsl stats` talks to a running mount through it.

One unix stream socket per mount, named after a hash of the mount point's
real path, in a private directory: /run/fdsl for root, else
$XDG_RUNTIME_DIR/fdsl, else /tmp/fdsl-<uid>.  The directory is 0700 and the
socket 0600, and the daemon also checks the peer's credentials
(SO_PEERCRED): stats carry counters, paths and trace lines that may name
files in directories only root can read, so only root and the daemon's own
user may ask.  Protocol: the client sends one JSON line ({"cmd": "stats"}),
the daemon answers one JSON line and closes.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import struct
from pathlib import Path
from typing import Any

from fdsl.errors import MountError

DIR_MODE = 0o700
SOCKET_MODE = 0o600
LOG_MODE = 0o600
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def runtime_dir_for(uid: int, xdg_runtime_dir: str | None = None) -> Path:
    """Where a daemon running as `uid` keeps its sockets and logs."""
    if uid == 0:
        return Path("/run/fdsl") if os.path.isdir("/run") else Path("/tmp/fdsl-0")
    if xdg_runtime_dir:
        return Path(xdg_runtime_dir) / "fdsl"
    return Path(f"/tmp/fdsl-{uid}")   # per user: a shared /tmp/fdsl could belong to anyone


def runtime_dir() -> Path:
    return runtime_dir_for(os.geteuid(), os.environ.get("XDG_RUNTIME_DIR"))


def _key(real_mountpoint: str) -> str:
    return hashlib.sha256(real_mountpoint.encode("utf-8", "surrogateescape")).hexdigest()[:20]


def socket_path(mountpoint: str | os.PathLike) -> Path:
    """Never call from the daemon after mounting (realpath stats the mount point)."""
    return runtime_dir() / f"{_key(os.path.realpath(os.fspath(mountpoint)))}.sock"


def ensure_runtime_dir(path: Path | None = None) -> Path:
    """Create the daemon's private directory (0700) or check an existing one.

    Refuses (MountError) anything that is not a real directory owned by us, or
    that others could have written into: a socket or log there could then be
    swapped or pre-planted.  An own directory that is merely too open for
    reading (a 0755 one from an older fdsl) is tightened to 0700.
    """
    path = path or runtime_dir()
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        pass
    except OSError as err:
        raise MountError(f"cannot create the control directory {path}: {err.strerror}") from None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        raise MountError(f"refusing the control directory {path}: not a real directory "
                         f"({err.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            raise MountError(f"refusing the control directory {path}: it belongs to uid "
                             f"{st.st_uid}, not {os.geteuid()}; remove it or set XDG_RUNTIME_DIR")
        if st.st_mode & 0o022:
            raise MountError(f"refusing the control directory {path}: others may write to it "
                             f"(mode {stat.S_IMODE(st.st_mode):04o}); remove it")
        if stat.S_IMODE(st.st_mode) != DIR_MODE:
            os.fchmod(fd, DIR_MODE)
    finally:
        os.close(fd)
    return path


def peer_uid(sock: socket.socket) -> int:
    """The effective uid of the process that connected `sock` (SO_PEERCRED)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    return _UCRED.unpack(raw)[1]


def may_query(uid: int) -> bool:
    """Only root and the daemon's own user may read a mount's stats."""
    return uid in (0, os.geteuid())


def open_log(path: Path) -> int:
    """Open (append) the daemon's log file: private, and never through a planted link."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
                 LOG_MODE)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_nlink != 1:
            raise PermissionError(f"{path} is not our own private log file")
        if stat.S_IMODE(st.st_mode) != LOG_MODE:
            os.fchmod(fd, LOG_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


# ------------------------------------------------------------------- client

def mount_owner(real_mountpoint: str) -> int | None:
    """The uid that mounted the FUSE filesystem at `real_mountpoint` (from mountinfo)."""
    from . import mounttable

    try:
        entry = mounttable.find(real_mountpoint)
    except OSError:
        return None
    if entry is None or not entry.is_fuse:
        return None            # not mounted, or something else is mounted on top
    owner = entry.option("user_id")
    return int(owner) if owner and owner.isdigit() else None


def candidate_sockets(mountpoint: str | os.PathLike) -> tuple[list[Path], int | None]:
    """Where the daemon's socket may be: our own runtime dir first, then the
    standard places of the user who mounted it (so root can query anyone's
    mount); also returns that user's uid when known."""
    real = os.path.realpath(os.fspath(mountpoint))
    name = f"{_key(real)}.sock"
    owner = mount_owner(real)
    dirs = [runtime_dir()]
    if owner is not None and owner != os.geteuid():
        dirs += [runtime_dir_for(owner, f"/run/user/{owner}"), runtime_dir_for(owner)]
    unique = list(dict.fromkeys(d / name for d in dirs))
    return unique, owner


def request(mountpoint: str | os.PathLike, cmd: str, timeout: float = 5.0,
            **params: Any) -> dict[str, Any]:
    """Send one command to the daemon serving `mountpoint`.

    Raises PermissionError if the daemon (or its directory) refuses us,
    another OSError if no daemon answers."""
    paths, owner = candidate_sockets(mountpoint)
    denied = False
    missing: OSError | None = None
    for path in paths:
        try:
            reply = _ask(path, cmd, timeout, params)
        except PermissionError:
            denied = True
            continue
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as err:
            missing = missing or err
            continue
        if reply.get("errno") == "EACCES":
            raise PermissionError(reply.get("error", "permission denied"))
        return reply
    if denied or (owner is not None and not may_query_as_client(owner)):
        raise PermissionError("permission denied")
    raise missing or FileNotFoundError("no control socket")


def may_query_as_client(owner: int) -> bool:
    """Whether we (the client) would be let in by a daemon run by `owner`."""
    return os.geteuid() in (0, owner)


def _ask(path: Path, cmd: str, timeout: float, params: dict[str, Any]) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(os.fspath(path))
        try:
            sock.sendall(json.dumps({"cmd": cmd, **params}).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # a refusing daemon may close before reading; its reply is still there
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            chunks.append(data)
    if not chunks:
        raise ConnectionAbortedError(f"the daemon closed {path} without answering")
    return json.loads(b"".join(chunks).decode("utf-8"))
