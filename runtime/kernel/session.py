"""A kernel-mode mount from start to end: load, mount with root_dir/root_bpf, serve, unmount.

Order (spec §2-§3, §14): programs and maps into the kernel (a rejection
fails the mount with the section and the verifier's log tail); open
/dev/fuse (O_CLOEXEC, so no child can ever write replies in our name) and the
backing root (a real open, not O_PATH); mount(2); then either return
(daemonless: the kernel holds the programs, maps and backing root; a state
file lets `fdsl stats` find the maps) or serve: the transport's session
(`runtime/transport`) answers FUSE_INIT and reads /dev/fuse on its threads,
and kernel mode registers its filter opcodes in the transport's dispatch
table, all answered by `FilterServer`, until the mount goes away.
"""
from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fdsl import abi
from fdsl.errors import FdslError
from fdsl.vm import loader

from .. import control
from . import filters, programs, protocol, stats
from .features import FuseBpfSupport
from .mode import Mode
from .mountopts import MountRequest, kernel_mount, split_user_options

log = logging.getLogger("fdsl.runtime")

FORGET = abi.NON_BPF_OPCODES["forget"]
BATCH_FORGET = abi.NON_BPF_OPCODES["batch_forget"]
DESTROY = abi.NON_BPF_OPCODES["destroy"]
INTERRUPT = abi.NON_BPF_OPCODES["interrupt"]


class _NodeCount:
    """The node table as the stats reply reads it; the kernel holds the backing inodes,
    so the daemon keeps no fd per node."""

    def __init__(self, nodes: dict[int, Any]) -> None:
        self.nodes = nodes

    def __len__(self) -> int:
        return len(self.nodes)

    def open_fds(self) -> int:
        return 0


@dataclass
class _EngineView:
    """What the stats reply reads of an engine."""

    nodes: _NodeCount
    files: dict[int, Any]
    abi: abi.Abi = abi.ACK             # kernel mode runs ACK objects only


class _PolicyView:
    """Stats of a kernel-mode mount: the kernel's maps, trace_pipe and userspace-rule logs."""

    def __init__(self, kobj: programs.KernelObject, policy: Any) -> None:
        self.kobj, self.policy = kobj, policy
        self.trace: list[str] = []

    def map_contents(self) -> list[dict[str, Any]]:
        from ..policy import describe_maps

        return describe_maps(self.kobj.maps, getattr(self.policy, "meta", None))

    def recent_logs(self) -> list[str]:
        self.trace = (self.trace + stats.read_trace())[-200:]
        own = self.policy.recent_logs() if hasattr(self.policy, "recent_logs") else []
        return self.trace + list(own)


def mount_kernel(cfg: Any, obj_bytes: bytes | None, mode: Mode, support: FuseBpfSupport,
                 ready: Callable[[str | None], None]) -> int:
    """Load, mount and (with a daemon) serve; `ready` as for `daemon.serve`."""
    assert support.prog_type is not None
    try:
        obj = loader.load_object(obj_bytes) if obj_bytes is not None else None
        kobj = programs.load(obj, support.prog_type) if obj is not None else \
            programs.KernelObject(support.prog_type)
    except FdslError as err:
        ready(f"cannot load policy into the kernel: {err}")
        return 1
    try:
        return _mount_loaded(cfg, obj, obj_bytes, kobj, mode, ready)
    finally:
        kobj.close()


def _mount_loaded(cfg: Any, obj: Any, obj_bytes: bytes | None, kobj: programs.KernelObject,
                  mode: Mode, ready: Callable[[str | None], None]) -> int:
    policy = None
    if mode.daemon and obj_bytes is not None:
        from fdsl.vm import userspace

        from ..policy import load_policy

        policy = load_policy(obj_bytes, "interp", cfg.backing)   # userspace rules + scopes
        policy.user_maps = userspace.TableMaps(kobj)             # counting into the kernel's maps
    cfg.mountpoint = os.path.realpath(cfg.mountpoint)
    cfg.backing = os.path.realpath(cfg.backing)
    root_section = _root_section(obj, policy)
    try:
        user = split_user_options(list(cfg.fuse_options))
        dev_fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    except (FdslError, OSError) as err:
        ready(f"cannot mount {cfg.mountpoint}: {err}")
        return 1
    root_fd = os.open(cfg.backing, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    # Paths derived from the mount point are resolved now: afterwards a stat of it would
    # be a request to ourselves.
    sock_path = control.socket_path(cfg.mountpoint)
    state_path = stats.state_path(cfg.mountpoint)
    try:
        request = MountRequest(dev_fd, root_fd, kobj.prog_fd(root_section),
                               uid=os.getuid(), gid=os.getgid(), no_daemon=not mode.daemon,
                               data_options=tuple(user.data), flags=user.flags,
                               fsname=user.fsname, subtype=user.subtype)
        try:
            control.ensure_runtime_dir(state_path.parent)
            kernel_mount(request, cfg.mountpoint)
        except (FdslError, OSError) as err:
            ready(str(err))
            return 1
        stats.write_state(state_path, {
            "mode": mode.name, "mountpoint": cfg.mountpoint, "backing": cfg.backing,
            "policy": cfg.policy, "started": time.time(), "maps": stats.map_records(kobj.maps),
            "metadata": obj.metadata if obj is not None else None})
        if not mode.daemon:
            ready(None)
            return 0
        server = filters.FilterServer(policy, kobj.prog_fd, cfg.backing) if policy is not None \
            else None
        try:
            return _serve(cfg, dev_fd, server, kobj, policy, ready, sock_path, state_path)
        finally:
            if server is not None:
                server.close()
    finally:
        os.close(root_fd)
        os.close(dev_fd)


def _root_section(obj: Any, policy: Any) -> str | None:
    if policy is not None:
        return policy.root_section
    if obj is None:
        return None
    return "fuse/root" if "fuse/root" in obj.programs else next(iter(programs.program_sections(obj)), None)


class _Stop(Exception):
    pass


def register_filters(dispatcher: Any, server: filters.FilterServer | None) -> None:
    """Kernel mode's handlers in the transport's opcode table: every `OP|PREFILTER` and
    `OP|POSTFILTER` (spec §7) and FORGET/BATCH_FORGET (the daemon's node names) go to the
    FilterServer; INTERRUPT takes no reply, DESTROY an empty one.  Everything else is
    answered ENOSYS by the dispatcher (classic requests, which fdsl programs never cause)."""
    from ..transport.dispatch import NO_REPLY

    def handle(req: Any) -> Any:
        assert server is not None
        header = protocol.InHeader(protocol.IN_HEADER.size + len(req.body), req.opcode,
                                   req.unique, req.nodeid, req.uid, req.gid, req.pid,
                                   req.error_in)
        body = server.answer(header, bytes(req.body))
        return NO_REPLY if body is None else body

    if server is not None:
        for op in abi.OPS.values():
            dispatcher.register(op.number | abi.PREFILTER, handle)
            dispatcher.register(op.number | abi.POSTFILTER, handle)
        dispatcher.register(FORGET, handle)
        dispatcher.register(BATCH_FORGET, handle)
    dispatcher.register(INTERRUPT, lambda req: NO_REPLY)
    dispatcher.register(DESTROY, lambda req: None)


def start_session(dev_fd: int, server: filters.FilterServer | None, threads: int,
                  mstats: Any) -> Any:
    """Answer FUSE_INIT (no fuse-bpf capability flag exists, spec §3.1; no kernel
    passthrough, fuse-bpf passes data itself) and serve on the transport's threads.
    The session gets its own dup of `dev_fd` and closes it."""
    from ..transport.dispatch import Dispatcher
    from ..transport.init import InitOptions
    from ..transport.session import Session

    dispatcher = Dispatcher()
    register_filters(dispatcher, server)
    session = Session(os.dup(dev_fd), dispatcher, threads, mstats)
    try:
        session.handshake(InitOptions(posix_acl=False, passthrough=False))
    except BaseException:
        session.close()
        raise
    session.start()
    return session


def _serve(cfg: Any, dev_fd: int, server: filters.FilterServer | None,
           kobj: programs.KernelObject, policy: Any, ready: Callable[[str | None], None],
           sock_path: Path, state_path: Path) -> int:
    from ..daemon import MountStats

    mstats = MountStats()
    view = _PolicyView(kobj, policy)
    engine = _EngineView(_NodeCount(server.nodes if server else {}), {})

    def stop(signum: int, frame: Any) -> None:
        raise _Stop()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
    code = 0
    session = None
    listener = None
    try:
        session = start_session(dev_fd, server, max(1, cfg.threads), mstats)
        listener = _control_thread(sock_path, cfg, engine, view, mstats)
        ready(None)
        while not session.finished.wait(0.5):
            pass
    except _Stop:
        pass
    except Exception as err:  # noqa: BLE001 - always unmount
        log.error("kernel-mode daemon stopped: %s: %s", type(err).__name__, err)
        ready(f"kernel-mode daemon failed: {err}")
        code = 1
    finally:
        _unmount(cfg.mountpoint)
        if session is not None:
            session.finished.wait(2.0)
            session.close()
        if listener is not None:
            listener.close()
        for path in (sock_path, state_path):
            try:
                path.unlink()
            except OSError:
                pass
    return code


def _unmount(target: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(os.fsencode(target), 0) != 0:
        libc.umount2(os.fsencode(target), 2)   # MNT_DETACH: busy; detach lazily


def _control_thread(sock_path: Any, cfg: Any, engine: Any, view: Any, mstats: Any
                    ) -> socket.socket | None:
    """`fdsl stats` for this mount, answered from a thread (same protocol and checks as
    the emulation daemon's socket)."""
    from ..daemon import CONTROL_MAX_REQUEST, CONTROL_TIMEOUT, _bind_control_socket, _control_reply

    try:
        listener: socket.socket = _bind_control_socket(sock_path)
    except OSError as err:
        log.warning("no control socket (fdsl stats will not work): %s", err)
        return None

    def answer(conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(CONTROL_TIMEOUT)
                if not control.may_query(control.peer_uid(conn)):
                    reply: dict[str, Any] = {"error": "permission denied", "errno": "EACCES"}
                else:
                    line = conn.recv(CONTROL_MAX_REQUEST).partition(b"\n")[0]
                    req = json.loads(line or b"{}")
                    reply = _control_reply(req, cfg, engine, view, mstats) if isinstance(req, dict) \
                        else {"error": "bad request: not a JSON object"}
                    reply.setdefault("mode", "kernel")
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except Exception as err:  # noqa: BLE001 - a client must never stop the mount
                log.warning("control client failed: %s: %s", type(err).__name__, err)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError as err:
                if err.errno in (errno.EBADF, errno.EINVAL):
                    return   # closed at unmount
                time.sleep(0.5)
                continue
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, name="fdsl-control", daemon=True).start()
    return listener
