"""Who is calling, and running backing operations as that caller.

The daemon runs as root, and every backing operation runs in a worker thread
whose filesystem credentials are switched to the caller's (fsuid, fsgid,
supplementary groups).  The backing filesystem then makes the permission
decisions itself (so a non-root caller cannot read a root 0600 file) and new
files get the caller's uid/gid, setgid directories included.  fsuid != 0 also
drops the fs capabilities (CAP_DAC_OVERRIDE, CAP_FOWNER, ...), so there is
no privilege leak through the daemon.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

from . import sysio


@dataclass(frozen=True)
class Caller:
    """The identity of a FUSE request (transport independent)."""

    uid: int = 0
    gid: int = 0
    pid: int = 0
    umask: int = 0o022
    groups: tuple[int, ...] | None = None  # None: read lazily from /proc/<pid>/status

    @property
    def pid_tgid(self) -> int:
        return (self.pid << 32) | self.pid


ROOT = Caller(0, 0, 0, 0, ())


def read_groups(pid: int) -> tuple[int, ...]:
    """Supplementary groups of a process; empty if it is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"Groups:"):
                    return tuple(int(g) for g in line.split()[1:])
    except OSError:
        pass
    return ()


@dataclass
class _GroupCache:
    """pid -> groups for a short time: reading /proc per request costs ~20 µs."""

    ttl: float = 1.0
    entries: dict[int, tuple[float, tuple[int, ...]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, pid: int) -> tuple[int, ...]:
        now = time.monotonic()
        with self.lock:
            hit = self.entries.get(pid)
            if hit and now - hit[0] < self.ttl:
                return hit[1]
        groups = read_groups(pid)
        with self.lock:
            if len(self.entries) > 4096:
                self.entries.clear()
            self.entries[pid] = (now, groups)
        return groups


_groups = _GroupCache()
_state = threading.local()


def _apply(uid: int, gid: int, groups: tuple[int, ...]) -> None:
    current = getattr(_state, "creds", None)
    if current == (uid, gid, groups):
        return
    # Order matters: groups and gid first, while fsuid still grants CAP_SETGID.
    sysio.setfsuid(0)
    sysio.setgroups_thread(list(groups))
    sysio.setfsgid(gid)
    sysio.setfsuid(uid)
    _state.creds = (uid, gid, groups)


class as_caller:
    """Context manager: run the enclosed file operations with the caller's credentials.

    Only meaningful in a thread dedicated to one request at a time (worker
    threads); the credentials stay set until the next request on that thread,
    which avoids two syscalls per request for a steady caller.
    """

    def __init__(self, caller: Caller, enabled: bool = True) -> None:
        self.caller = caller
        self.enabled = enabled and os.geteuid() == 0

    def __enter__(self) -> Caller:
        if self.enabled:
            c = self.caller
            groups = c.groups if c.groups is not None else (
                () if c.uid == 0 else _groups.get(c.pid))
            _apply(c.uid, c.gid, groups)
        return self.caller

    def __exit__(self, *exc: object) -> None:
        return None


def reset_thread_credentials() -> None:
    """Back to root for daemon-internal work (opening control files, logs)."""
    if os.geteuid() == 0:
        _apply(0, 0, ())
