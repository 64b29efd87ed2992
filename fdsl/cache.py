"""A private per-user cache directory for derived files (the Lark parser tables).

`$FDSL_CACHE` if set (`off` disables), else /var/cache/fdsl for root (never a
directory tied to $HOME), else `$XDG_CACHE_HOME/fdsl` or `~/.cache/fdsl`.
What is cached here is loaded with pickle, so the directory is used only if it
and every ancestor is owned by root or us and writable by nobody else, and
the directory itself is private (0700).  Any failure just means no cache.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path


def base_dir() -> Path | None:
    setting = os.environ.get("FDSL_CACHE")
    if setting is not None:
        return None if setting.lower() in ("", "0", "off", "no") else Path(setting)
    if os.geteuid() == 0:
        return Path("/var/cache/fdsl")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fdsl"


def _trusted(st: os.stat_result, own: bool) -> bool:
    if not stat.S_ISDIR(st.st_mode) or st.st_mode & 0o022:
        return False
    return st.st_uid == os.geteuid() if own else st.st_uid in (0, os.geteuid())


def private_dir(sub: str) -> Path | None:
    """`base_dir()/sub`, created 0700 if missing; None if it cannot be trusted."""
    base = base_dir()
    if base is None:
        return None
    path = Path(os.path.abspath(base)) / sub
    try:
        # every directory we create is 0700 (mkdir's parents=True would give the missing
        # ancestors 0777 & ~umask: world-writable in a daemon, whose umask is 0)
        for missing in reversed([p for p in (path, *path.parents) if not p.exists()]):
            missing.mkdir(mode=0o700, exist_ok=True)
        real = Path(os.path.realpath(path))
        for ancestor in reversed(real.parents):
            if not _trusted(os.stat(ancestor), own=False):
                return None
        if os.lstat(real).st_mode & 0o077 or not _trusted(os.lstat(real), own=True):
            return None
    except OSError:
        return None
    return real
