"""Mount lifecycle: validate, load the policy, mount, serve, unmount.

Behaves like sshfs/bindfs: by default the command forks a daemon and returns
only once the mount is live (exit 0) or has failed (exit 1 with the daemon's
error message, passed back through a pipe); `foreground` serves in the
calling process.  SIGINT/SIGTERM unmount cleanly.
"""
from __future__ import annotations

import collections
import gc
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fdsl.errors import MountError

from . import control, logs, mounttable, sysio

log = logging.getLogger("fdsl.runtime")


@dataclass
class MountConfig:
    backing: str
    mountpoint: str
    policy: str | None = None          # .fdsl or .bpf.o; None/empty file = passthrough
    include_dirs: tuple[str, ...] = ()  # -I: where a .fdsl policy may include from
    foreground: bool = False
    fuse_options: list[str] = field(default_factory=list)
    backend: str = "auto"
    entry_timeout: float = 1.0
    attr_timeout: float = 1.0
    threads: int = 16                  # worker threads for blocking data I/O
    inline: bool = True                # cheap metadata ops inline: trio thread / reading thread
    transport: str = "dev"             # "dev" (/dev/fuse, runtime/transport) or "pyfuse3"
    passthrough: bool = True           # kernel FUSE_PASSTHROUGH for unfiltered file data
    default_permissions: bool | None = None  # the kernel checks modes and ACLs (None: the
                                             # transport's default: dev on, pyfuse3 off)
    debug: bool = False
    switch_identity: bool = True
    root_section: str | None = None    # program section for the root (bare objects)
    abi: str | None = None             # --abi: the ABI of an object without fdsl metadata
    nonempty: bool = False             # mount even if the mount point is already a mount
    log_file: str | None = None        # detached daemon's log (default: next to the socket)
    log_size: int = 1 << 20            # bytes before the log file is rotated
    log: str = "file"                  # where a detached daemon logs: file | journal
    journal_socket: str = "/run/systemd/journal/socket"   # journald's (runtime/journal.py)
    mode: str = "auto"                 # auto | kernel | emulate (runtime/kernel/mode.py)
    no_daemon: bool | None = None      # kernel mode without a daemon; None = when possible


def validate(cfg: MountConfig) -> None:
    """Clear errors before anything is forked or mounted."""
    if not os.path.exists(cfg.backing):
        raise MountError(f"backing directory {cfg.backing!r} does not exist")
    if not os.path.isdir(cfg.backing):
        raise MountError(f"backing path {cfg.backing!r} is not a directory")
    if not os.path.exists(cfg.mountpoint):
        raise MountError(f"mount point {cfg.mountpoint!r} does not exist")
    if not os.path.isdir(cfg.mountpoint):
        raise MountError(f"mount point {cfg.mountpoint!r} is not a directory")
    real_mnt = os.path.realpath(cfg.mountpoint)
    on_top = mounttable.find(real_mnt)
    if on_top is not None and on_top.is_fuse:
        raise MountError(f"mount point {cfg.mountpoint!r} is busy: already a FUSE mount "
                         f"({on_top.fstype}); unmount it first")
    if not cfg.nonempty and (on_top is not None or os.path.ismount(real_mnt)):
        raise MountError(f"mount point {cfg.mountpoint!r} is busy (already a mount point; "
                         "-o nonempty mounts on top)")
    real_backing = os.path.realpath(cfg.backing)
    if real_backing == real_mnt or real_backing.startswith(real_mnt + "/"):
        raise MountError("the backing directory must not be inside the mount point")
    if cfg.switch_identity and os.geteuid() == 0:
        try:
            sysio.require_thread_credentials()
        except OSError as err:
            raise MountError(err.strerror or str(err)) from None
    if not os.path.exists("/dev/fuse"):
        raise MountError("/dev/fuse is missing (is the fuse module loaded?)")
    if cfg.log == "journal":
        from .journal import check_socket

        problem = check_socket(cfg.journal_socket)
        if problem:
            raise MountError(f"-o log=journal: {problem}")
    if cfg.policy and os.path.isdir(cfg.policy):
        raise MountError(f"policy {cfg.policy!r} is a directory, not a .fdsl or .bpf.o file")
    if cfg.policy and not os.path.isfile(cfg.policy):
        if os.path.exists(cfg.policy):
            raise MountError(f"policy {cfg.policy!r} is not a regular file")
        raise MountError(f"policy file {cfg.policy!r} does not exist")


def read_policy_object(policy: str | None, include_dirs: tuple[str, ...] = (),
                       abi_name: str | None = None) -> bytes | None:
    """The BPF object to run: compiled on the fly for .fdsl (for the ABI `abi_name` names,
    ACK without one); None = pure passthrough."""
    if not policy:
        return None
    from fdsl.files import MAX_OBJECT_BYTES, InputFileError, read_regular_file

    try:
        data = read_regular_file(policy, MAX_OBJECT_BYTES).data
    except InputFileError as err:
        raise MountError(f"cannot read policy {policy!r}: {err.reason}") from None
    if data.startswith(b"\x7fELF"):
        return data
    if not data.strip():
        return None  # empty policy file: pure passthrough
    from fdsl.commands import target_abi_named
    from fdsl.compile.cache import compile_cached  # compiles (llvmlite) only on a cache miss

    return compile_cached(data, policy, include_dirs, target_abi_named(abi_name).id)[0]


# ----------------------------------------------------------------- serving

class MountStats:
    """Per-op request and error counts plus recent log lines, for `fdsl stats`."""

    def __init__(self) -> None:
        self.started = time.time()
        self.ready_cpu: float | None = None   # CPU seconds this process took to be ready
        self.ops: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.logs: collections.deque[str] = collections.deque(maxlen=200)

    def log(self, line: str) -> None:
        self.logs.append(f"{time.strftime('%H:%M:%S')} {line}")


class _DequeHandler(logging.Handler):
    def __init__(self, stats: MountStats) -> None:
        super().__init__(logging.WARNING)
        self.stats = stats

    def emit(self, record: logging.LogRecord) -> None:
        self.stats.log(f"{record.levelname.lower()}: {record.getMessage()}")


def _raise_fd_limit() -> None:
    """Every inode the kernel knows holds one O_PATH fd (until FORGET): a tree
    walk over more inodes than the soft RLIMIT_NOFILE would fail with EMFILE.
    Raise the soft limit to the hard one, as libfuse's passthrough_hp does."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as err:
            logging.getLogger("fdsl.runtime").warning("cannot raise RLIMIT_NOFILE: %s", err)


def serve(cfg: MountConfig, obj: bytes | None, ready: Callable[[str | None], None]) -> int:
    """Mount and serve until unmounted or signalled.  `ready(None)` once mounted,
    `ready(message)` if mounting failed.

    Only what answering requests needs comes before `ready`: the policy on the
    interpreter, the engine, the mount and a listening control socket (a
    `fdsl stats` that connects early waits in its backlog).  The JIT tier-up and
    trio (the control server, signal handling) start after it."""
    _raise_fd_limit()

    from .engine import Engine, EngineOptions
    from .policy import load_policy

    # New files get the caller's umask per thread (identity.thread_umask); the
    # process-wide one stays 0 so nothing else masks a mode twice.
    os.umask(0)
    stats = MountStats()
    logging.getLogger("fdsl").addHandler(_DequeHandler(stats))
    try:
        policy = load_policy(obj, cfg.backend, cfg.backing, stats, cfg.root_section, cfg.abi,
                             defer_jit=True)
        filters = getattr(policy, "filters", None)
        if filters is not None:     # policy `log` lines: to stderr (-f) or the log file
            filters.log_sink.callback = logs.policy_line_writer()
        engine = Engine(cfg.backing, policy, EngineOptions(
            cfg.entry_timeout, cfg.attr_timeout, cfg.switch_identity))
    except Exception as err:  # verifier rejection, bad object, unreadable backing dir
        ready(f"cannot load policy: {err}")
        return 1
    # Resolve every path now: after the mount, touching the mount point from the
    # daemon's own thread would send a request to ourselves and deadlock.
    cfg.mountpoint = os.path.realpath(cfg.mountpoint)
    cfg.backing = os.path.realpath(cfg.backing)
    sock_path = control.socket_path(cfg.mountpoint)
    try:
        control.ensure_runtime_dir(sock_path.parent)
    except MountError as err:
        ready(str(err))
        return 1
    transport: _Transport = (_Pyfuse3(cfg, engine, stats) if cfg.transport == "pyfuse3"
                             else _DevFuse(cfg, engine, stats))
    try:
        transport.mount()
    except Exception as err:
        ready(f"cannot mount {cfg.mountpoint}: {err}")
        engine.close()
        return 1
    try:
        listener: Any = _bind_control_socket(sock_path)
    except OSError as err:
        log.warning("no control socket (fdsl stats will not work): %s", err)
        listener = None
    early = _EarlySignals()         # until trio's receiver takes over
    stats.ready_cpu = time.process_time()
    ready(None)
    transport.started()
    if hasattr(policy, "start_jit"):
        policy.start_jit()
    code = 0
    try:
        import trio

        trio.run(_serve_async, cfg, engine, policy, stats, transport, listener, early)
    except BaseException as err:  # noqa: BLE001 - always unmount
        log.error("daemon stopped: %s", _describe(err))
        code = 1
    finally:
        transport.close()
        if listener is not None:
            listener.close()
        try:
            sock_path.unlink()
        except OSError:
            pass
        engine.close()
    return code


SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _EarlySignals:
    """Remembers a stop signal that arrives between the mount and trio's signal
    receiver (the default action would kill the daemon and leave a dead mount)."""

    def __init__(self) -> None:
        self.received: int | None = None
        for sig in SIGNALS:
            signal.signal(sig, self._note)

    def _note(self, signum: int, _frame: Any) -> None:
        self.received = signum


async def _serve_async(cfg: MountConfig, engine: Any, policy: Any, stats: MountStats,
                       transport: "_Transport", listener: Any, early: _EarlySignals) -> None:
    """The daemon's life after `ready`: stop signals, the control server, the transport."""
    import trio

    async def control_server() -> None:
        """Answer `fdsl stats`; nothing a client does may stop the mount."""
        clients = 0

        async def client(conn: Any) -> None:
            nonlocal clients
            try:
                await _answer(conn, cfg, engine, policy, stats)
            finally:
                clients -= 1

        sock = trio.socket.from_stdlib_socket(listener)
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    conn, _ = await sock.accept()
                except OSError as err:  # EMFILE...: wait a little, do not die
                    log.warning("control socket: accept failed: %s", err)
                    await trio.sleep(0.5)
                    continue
                if clients >= CONTROL_MAX_CLIENTS:
                    conn.close()       # busy: a flood of idle clients only hurts itself
                    continue
                clients += 1
                nursery.start_soon(client, conn)

    async with trio.open_nursery() as nursery:
        async def on_signals() -> None:
            with trio.open_signal_receiver(*SIGNALS) as sigs:
                if early.received is None:
                    async for _ in sigs:
                        break
                await transport.stop()

        nursery.start_soon(on_signals)
        if listener is not None:
            nursery.start_soon(control_server)
        try:
            await transport.run()
        finally:
            nursery.cancel_scope.cancel()


class _Transport:
    """What serve() needs of a transport: mount, serve until the end, stop, clean up."""

    def mount(self) -> None: ...

    def started(self) -> None:
        """After `ready`: what serving at full strength needs but answering does not."""

    async def run(self) -> None: ...

    async def stop(self) -> None: ...

    def close(self) -> None: ...


class _DevFuse(_Transport):
    """The default: our own protocol over /dev/fuse (runtime/transport)."""

    def __init__(self, cfg: MountConfig, engine: Any, stats: MountStats) -> None:
        from .transport import Connection, TransportOptions

        self.conn = Connection(engine, cfg.mountpoint, cfg.backing, cfg.fuse_options,
                               TransportOptions(threads=cfg.threads, passthrough=cfg.passthrough,
                                                default_permissions=cfg.default_permissions
                                                is not False, inline=cfg.inline), stats)

    def mount(self) -> None:
        self.conn.open(workers=1)      # the other workers once the mount is ready

    def started(self) -> None:
        session = self.conn.session
        if session is not None:
            session.start()

    async def run(self) -> None:
        import trio

        session = self.conn.session
        assert session is not None
        token = trio.lowlevel.current_trio_token()
        ended = trio.Event()
        session.on_finished = lambda: token.run_sync_soon(ended.set)
        if session.finished.is_set():
            return
        await ended.wait()

    async def stop(self) -> None:
        import trio

        await trio.to_thread.run_sync(self.conn.stop)

    def close(self) -> None:
        session = self.conn.session
        if session is not None and not session.finished.is_set():
            self.conn.stop()
        self.conn.close()


class _Pyfuse3(_Transport):
    """`-o transport=pyfuse3`: libfuse through pyfuse3 (runtime/fuse_adapter)."""

    def __init__(self, cfg: MountConfig, engine: Any, stats: MountStats) -> None:
        from .fuse_adapter import FuseOperations

        self.cfg = cfg
        self.ops = FuseOperations(engine, cfg.threads, stats, inline=cfg.inline)
        self.mounted = False

    def mount(self) -> None:
        import pyfuse3

        # No default_permissions unless asked for: libfuse cannot negotiate
        # FUSE_POSIX_ACL, so the kernel would check mode bits and ignore ACLs.
        options = {"fsname=fdsl", "subtype=fdsl", *self.cfg.fuse_options}
        if self.cfg.default_permissions:
            options.add("default_permissions")
        if self.cfg.debug:
            options.add("debug")
        pyfuse3.init(self.ops, self.cfg.mountpoint, options)
        self.mounted = True

    async def run(self) -> None:
        import pyfuse3

        await pyfuse3.main(min_tasks=2, max_tasks=self.cfg.threads * 2)

    async def stop(self) -> None:
        import pyfuse3

        pyfuse3.terminate()

    def close(self) -> None:
        import pyfuse3

        if self.mounted:
            try:
                pyfuse3.close(unmount=True)
            except Exception:
                pass


# ------------------------------------------------------------ control socket

CONTROL_MAX_REQUEST = 4096     # a request is one short JSON line
CONTROL_TIMEOUT = 5.0          # seconds for a whole exchange (read, answer, send)
CONTROL_MAX_CLIENTS = 64       # concurrent connections; more are closed at once


def _bind_control_socket(path: Path) -> Any:
    """A listening unix socket at `path` (0600, in the daemon's 0700 directory)."""
    import socket

    try:
        path.unlink()
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old = os.umask(0o177)  # never world-connectable, not even for a moment
        try:
            sock.bind(os.fspath(path))
        finally:
            os.umask(old)
        os.chmod(path, control.SOCKET_MODE)
        sock.listen(16)
    except BaseException:
        sock.close()
        raise
    return sock


async def _answer(conn: Any, cfg: MountConfig, engine: Any, policy: Any, stats: MountStats) -> None:
    """Serve one control client.  Every failure (a client that vanished, garbage,
    a bug in a reply) is logged and ends only this connection."""
    import trio

    with conn:
        try:
            with trio.move_on_after(CONTROL_TIMEOUT):
                uid = control.peer_uid(conn)
                if not control.may_query(uid):
                    log.info("control socket: refused uid %d", uid)
                    reply = {"error": "permission denied: only root or the mount's owner "
                             "can read its stats", "errno": "EACCES"}
                else:
                    reply = await _read_and_reply(conn, cfg, engine, policy, stats)
                payload = json.dumps(reply).encode() + b"\n"
                while payload:
                    sent = await conn.send(payload)
                    payload = payload[sent:]
        except (BrokenPipeError, ConnectionResetError) as err:
            log.debug("control client went away: %s", err)
        except Exception as err:  # noqa: BLE001 - a client must never stop the mount
            log.warning("control client failed: %s: %s", type(err).__name__, err)


async def _read_and_reply(conn: Any, cfg: MountConfig, engine: Any, policy: Any,
                          stats: MountStats) -> dict[str, Any]:
    """Read one request line (at most CONTROL_MAX_REQUEST bytes) and build the reply."""
    data = b""
    while b"\n" not in data:
        chunk = await conn.recv(CONTROL_MAX_REQUEST + 1 - len(data))
        if not chunk:
            break
        data += chunk
        if len(data) > CONTROL_MAX_REQUEST:
            return {"error": f"request too large (more than {CONTROL_MAX_REQUEST} bytes)"}
    try:
        req = json.loads(data.partition(b"\n")[0] or b"{}")
    except ValueError as err:
        return {"error": f"bad request: {err}"}
    if not isinstance(req, dict):
        return {"error": "bad request: not a JSON object"}
    try:
        return _control_reply(req, cfg, engine, policy, stats)
    except Exception as err:  # noqa: BLE001
        log.warning("control request %r failed: %s: %s", req.get("cmd"), type(err).__name__, err)
        return {"error": f"{type(err).__name__}: {err}"}


def _describe(err: BaseException) -> str:
    """The real exceptions behind an exception group ("1 sub-exception" says nothing)."""
    if isinstance(err, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in err.exceptions)
    return f"{type(err).__name__}: {err}"


def _control_reply(req: dict[str, Any], cfg: MountConfig, engine: Any, policy: Any,
                   stats: MountStats) -> dict[str, Any]:
    cmd = req.get("cmd")
    if cmd == "ping":
        return {"ok": True, "pid": os.getpid()}
    if cmd == "stats":
        return {
            "pid": os.getpid(),
            "mountpoint": cfg.mountpoint,
            "backing": cfg.backing,
            "policy": cfg.policy,
            "abi": engine.abi.id,       # how the programs' contexts and results read
            "uptime": round(time.time() - stats.started, 1),
            "ready_cpu": stats.ready_cpu,
            "nodes": len(engine.nodes),
            "node_fds": engine.nodes.open_fds(),
            "open_handles": len(engine.files),
            "ops": dict(stats.ops),
            "errors": dict(stats.errors),
            "maps": policy.map_contents() if hasattr(policy, "map_contents") else [],
            # which VM serves each program: "interp" until the background JIT is done
            "programs": policy.vm_backends() if hasattr(policy, "vm_backends") else {},
            "logs": list(policy.recent_logs()) if hasattr(policy, "recent_logs") else [],
            "daemon_logs": list(stats.logs),
            "log_file": cfg.log_file,
            "log": _log_target(cfg),
        }
    return {"error": f"unknown command {cmd!r}"}


def _log_target(cfg: MountConfig) -> dict[str, Any]:
    """Where this daemon's log lines go, for `fdsl stats`."""
    if cfg.log == "journal":
        return {"to": "journal", "socket": cfg.journal_socket,
                "match": {"SYSLOG_IDENTIFIER": "fdsl", "FDSL_MOUNTPOINT": cfg.mountpoint},
                "dropped": logs.journal_dropped() or 0}
    if cfg.log_file:
        return {"to": "file", "path": cfg.log_file}
    return {"to": "stderr"}


# ------------------------------------------------------------ entry point

Server = Callable[[MountConfig, "bytes | None", Callable[[str | None], None]], int]


def choose_server(cfg: MountConfig, loaded: Any) -> Server:
    """`serve` (emulation) or the kernel-mode mount, as `-o mode=` and the kernel say;
    `loaded` is the parsed object (`_loaded`)."""
    from fdsl import abi

    from .kernel import features
    from .kernel import mode as modes

    support = features.detect()
    needs = None
    if loaded is not None:
        record = loaded.abi(cfg.abi)
        if record.id != abi.ACK.id:     # fuse-bpf kernels are ACK's; RFC v1 was never merged
            support = features.FuseBpfSupport(
                None, f"{record.name} objects run in emulation only: no fuse-bpf kernel "
                "takes them (the kernels with fuse-bpf are ACK's)")
        if support.supported:
            needs = modes.daemon_needed(loaded.meta)
    chosen = modes.select(cfg.mode, cfg.no_daemon, support, needs)
    if not chosen.kernel:
        return serve
    from .kernel.session import mount_kernel

    return lambda c, o, ready: mount_kernel(c, o, chosen, support, ready)


def _loaded(obj: bytes | None) -> Any:
    """The parsed object, None for none or one that does not load (serving says why)."""
    if obj is None:
        return None
    from fdsl.errors import LoadError
    from fdsl.vm.loader import load_object

    try:
        return load_object(obj)
    except LoadError:
        return None


# The start-up allocates many long-lived objects (modules, classes, the policy) and
# little garbage: the default gen0 threshold runs ~60 collections over them.
_STARTUP_GC = (50_000, 20, 20)
_gc_saved: tuple[int, int, int] | None = None


def startup_gc() -> None:
    """Collect rarely until the mount is ready (`steady_gc`)."""
    global _gc_saved
    if _gc_saved is None:
        _gc_saved = gc.get_threshold()
        gc.set_threshold(*_STARTUP_GC)


def steady_gc() -> None:
    """Back to normal collection once ready; what start-up built lives as long as the
    daemon, so it moves out of the collector's way (gc.freeze)."""
    global _gc_saved
    if _gc_saved is not None:
        gc.freeze()
        gc.set_threshold(*_gc_saved)
        _gc_saved = None


def mount(cfg: MountConfig) -> int:
    """The `fdsl mount` command body: validate, compile, then serve or daemonize."""
    validate(cfg)
    obj = read_policy_object(cfg.policy, cfg.include_dirs, cfg.abi)
    loaded = _loaded(obj)
    if loaded is not None:  # an unknown or contradicting --abi is a usage error before forking
        from fdsl.commands import abi_choice

        with abi_choice(cfg.policy or ""):
            loaded.abi(cfg.abi)
    # The daemon works from "/" (it must not keep the launcher's directory busy),
    # so every path it keeps is made absolute now.
    cfg.backing = os.path.realpath(cfg.backing)
    cfg.mountpoint = os.path.realpath(cfg.mountpoint)
    cfg.policy = os.path.abspath(cfg.policy) if cfg.policy else cfg.policy
    cfg.log_file = os.path.abspath(cfg.log_file) if cfg.log_file else None
    level = logging.DEBUG if cfg.debug else logging.INFO
    server = choose_server(cfg, loaded)
    if cfg.foreground:
        def ready(message: str | None) -> None:
            steady_gc()
            if message:
                print(f"fdsl: {message}", file=sys.stderr)
        logs.setup(cfg.log_file, cfg.log_size, stream=True, level=level, journal=_journal(cfg))
        return server(cfg, obj, ready)
    if cfg.log == "file":
        cfg.log_file = cfg.log_file or os.fspath(control.socket_path(cfg.mountpoint)
                                                 .with_suffix(".log"))
    return _daemonize(cfg, obj, level, server)


def _journal(cfg: MountConfig) -> tuple[str, str] | None:
    """(journald's socket, the mount point) for `logs.setup` under -o log=journal."""
    return (cfg.journal_socket, cfg.mountpoint) if cfg.log == "journal" else None


def _daemonize(cfg: MountConfig, obj: bytes | None, level: int,
               server: Server) -> int:
    """Fork; the child becomes a proper daemon (python-daemon: double fork, setsid,
    cwd "/", umask, every inherited fd closed, stdio on /dev/null) and reports
    "OK" or the failure through a pipe once the mount is live or has failed."""
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        reported = False

        def ready(message: str | None) -> None:
            nonlocal reported
            if reported:
                return
            reported = True
            try:
                os.write(write_end, (message or "OK").encode() + b"\n")
                os.close(write_end)
            except OSError:
                pass
            steady_gc()

        code = 1
        try:
            import daemon  # python-daemon

            daemon.DaemonContext(
                working_directory="/", umask=0o022, detach_process=True,
                files_preserve=[write_end],
                signal_map={signal.SIGTSTP: None, signal.SIGTTIN: None, signal.SIGTTOU: None},
            ).open()
            control.ensure_runtime_dir(control.socket_path(cfg.mountpoint).parent)
            try:
                logs.setup(cfg.log_file, cfg.log_size, stream=False, level=level,
                           journal=_journal(cfg))
            except OSError as err:
                raise MountError(f"refusing the log file {cfg.log_file}: {err}") from None
            code = server(cfg, obj, ready)
        except BaseException as err:  # noqa: BLE001
            ready(f"daemon failed: {err}")
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = pipe.readline().decode(errors="replace").strip()
    os.waitpid(pid, 0)   # the intermediate process, gone once the daemon detached
    if answer == "OK":
        return 0
    raise MountError(answer or "the mount daemon exited before the mount was ready")


def umount(mountpoint: str, lazy: bool = False, timeout: float = 10.0) -> int:
    """fusermount3 -u, then wait until the daemon has gone (its socket disappears).
    Refuses anything that is not an fdsl mount: `fdsl umount` never takes down a
    filesystem it did not make."""
    import subprocess

    entry = mounttable.find(os.path.realpath(mountpoint))
    if entry is None:
        raise MountError(f"{mountpoint} is not a mount point")
    if not entry.is_fdsl:
        raise MountError(f"{mountpoint} is a {entry.fstype} mount, not an fdsl one; "
                         "use umount(8) for it")
    cmd = ["fusermount3", "-u"] + (["-z"] if lazy else []) + [mountpoint]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError:
        proc = subprocess.run(["umount"] + (["-l"] if lazy else []) + [mountpoint],
                              capture_output=True, text=True)
    if proc.returncode != 0:
        raise MountError((proc.stderr or proc.stdout).strip() or f"cannot unmount {mountpoint}")
    sock = control.socket_path(mountpoint)
    from .kernel.stats import STATE_SUFFIX

    try:
        sock.with_suffix(STATE_SUFFIX).unlink()   # a daemonless kernel-mode mount's record
    except OSError:
        pass
    deadline = time.monotonic() + timeout
    while sock.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return 0

