"""The daemon's control socket: `fdsl stats` talks to a running mount through it.

One unix stream socket per mount, under $XDG_RUNTIME_DIR/fdsl (or /run/fdsl
for root), named after a hash of the mount point's real path.  Protocol: the
client sends one JSON line ({"cmd": "stats"}), the daemon answers one JSON
line and closes.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path
from typing import Any


def runtime_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR")
    if os.geteuid() == 0 or not base:
        base = "/run" if os.geteuid() == 0 and os.access("/run", os.W_OK) else (base or "/tmp")
    return Path(base) / "fdsl"


def socket_path(mountpoint: str | os.PathLike) -> Path:
    """Never call from the daemon after mounting (realpath stats the mount point)."""
    real = os.path.realpath(os.fspath(mountpoint))
    key = hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:20]
    return runtime_dir() / f"{key}.sock"


def request(mountpoint: str | os.PathLike, cmd: str, timeout: float = 5.0,
            **params: Any) -> dict[str, Any]:
    """Send one command to the daemon serving `mountpoint`; raises OSError if none."""
    path = socket_path(mountpoint)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(os.fspath(path))
        sock.sendall(json.dumps({"cmd": cmd, **params}).encode() + b"\n")
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return json.loads(b"".join(chunks).decode("utf-8"))
