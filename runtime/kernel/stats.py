"""`fdsl stats` for kernel-mode mounts: counters from the kernel's maps, logs from tracefs.

The programs count into kernel maps; whoever asks reads them with
BPF_MAP_LOOKUP_ELEM.  A daemon holds the map fds; a daemonless mount leaves
a state file next to where its control socket would be (same private,
checked directory) naming the maps by their kernel-wide *ids*, which
`fdsl stats` turns back into fds (BPF_MAP_GET_FD_BY_ID, root only).
`bpf_trace_printk` output is in tracefs `trace_pipe` when that is mounted and
readable; it is shared by every BPF program of the system, so lines are
shown as the kernel wrote them.
"""
from __future__ import annotations

import json
import os
import select
import time
from pathlib import Path
from typing import Any

from fdsl.vm.loader import MapSpec

from .. import control
from ..policy import describe_maps
from . import bpf, features
from .programs import KernelMap

STATE_SUFFIX = ".kernel.json"


def state_path(mountpoint: str) -> Path:
    return control.socket_path(mountpoint).with_suffix(STATE_SUFFIX)


def write_state(path: Path, info: dict[str, Any]) -> None:
    """Record a kernel-mode mount (0600, in the checked private directory, never through a
    planted link).  `path` comes from `state_path`, computed before mounting."""
    control.ensure_runtime_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(info, fh)


def read_state(mountpoint: str) -> dict[str, Any] | None:
    try:
        fd = os.open(state_path(os.path.realpath(mountpoint)), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd) as fh:
        try:
            value = json.load(fh)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


def map_records(maps: list[KernelMap]) -> list[dict[str, Any]]:
    """What a state file keeps of each map: its id and shape."""
    return [{"index": m.spec.index, "name": m.spec.name, "type": m.spec.type, "id": bpf.map_id(m.fd),
             "key_size": m.spec.key_size, "value_size": m.spec.value_size,
             "max_entries": m.spec.max_entries} for m in maps]


def maps_by_id(records: list[dict[str, Any]]) -> list[KernelMap]:
    out = []
    for r in records:
        spec = MapSpec(r["index"], r["name"], r["type"], r["key_size"], r["value_size"],
                       r["max_entries"])
        out.append(KernelMap(spec, bpf.map_fd_by_id(r["id"])))
    return out


def read_trace(limit: int = 200, wait: float = 0.0) -> list[str]:
    """Lines waiting in trace_pipe (consumed: trace_pipe hands each line out once)."""
    path = features.trace_pipe()
    if path is None:
        return []
    lines: list[str] = []
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        buf = b""
        deadline = time.monotonic() + wait
        while len(lines) < limit:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            buf += chunk
            *done, buf = buf.split(b"\n")
            lines.extend(line.decode("utf-8", "replace").strip() for line in done if line.strip())
    finally:
        os.close(fd)
    return lines[-limit:]


def daemonless_stats(mountpoint: str) -> dict[str, Any] | None:
    """The `fdsl stats` reply for a kernel-mode mount without a daemon (None: not one)."""
    state = read_state(mountpoint)
    if state is None:
        return None
    from fdsl.compile.metadata import Metadata

    meta = Metadata.from_json(json.dumps(state["metadata"])) if state.get("metadata") else None
    maps = maps_by_id(state.get("maps", []))
    try:
        rows = describe_maps(maps, meta)
    finally:
        for m in maps:
            os.close(m.fd)
    return {"pid": None, "mode": state.get("mode", "kernel, no daemon"),
            "mountpoint": state["mountpoint"], "backing": state["backing"],
            "policy": state.get("policy"), "uptime": round(time.time() - state["started"], 1),
            "nodes": "(kernel)", "open_handles": "(kernel)", "ops": {}, "errors": {},
            "maps": rows, "logs": read_trace(), "daemon_logs": []}
