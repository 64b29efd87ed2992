"""The control socket (`fdsl stats`) must neither let a local user stop a mount
nor leak a mount's counters, paths and trace lines to other users."""
from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sysconfig
import textwrap
from pathlib import Path

import pytest

from fdsl.errors import MountError
from fdsl.runtime import control, daemon
from mounting import USER_PYTHON, errno_as, mounter, needs_fuse  # noqa: F401

NOBODY = 65534
DENIED = "permission denied: only root or the mount's owner can read its stats"


def _connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(os.fspath(path))
    return sock


def _exchange(path: Path, data: bytes) -> bytes:
    """Send `data`, then read until the daemon closes (whatever it thinks of it)."""
    with _connect(path) as sock:
        sock.settimeout(30)
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def _as_nobody(code: str, keep_fs_root: bool = False) -> subprocess.CompletedProcess:
    """Run Python `code` as uid 65534.  With `keep_fs_root`, the file-system uid stays
    0 (the saved uid allows it): file permissions then let the child reach the socket,
    but SO_PEERCRED still reports euid 65534, so only the daemon's own check remains."""
    prologue = textwrap.dedent(f"""
        import ctypes, os, sys
        os.setgroups([])
        os.setresgid({NOBODY}, {NOBODY}, {NOBODY})
        os.setresuid({NOBODY}, {NOBODY}, {0 if keep_fs_root else NOBODY})
        if {keep_fs_root}:
            ctypes.CDLL(None, use_errno=True).setfsuid(0)
        import site
        site.addsitedir({sysconfig.get_paths()["purelib"]!r})
    """)
    return subprocess.run([USER_PYTHON, "-c", prologue + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=60, cwd="/",
                          env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"})


# ------------------------------------------------------------ a mount survives its clients

@pytest.mark.mount
@needs_fuse
def test_clients_that_vanish_or_send_garbage_do_not_stop_the_mount(mounter):
    m = mounter.mount()
    path = control.socket_path(m.mnt)
    for _ in range(20):                       # connect and close at once
        _connect(path).close()
    for _ in range(5):                        # ask, then go away before the answer
        with _connect(path) as sock:
            sock.sendall(b'{"cmd": "stats"}\n')
    reply = _exchange(path, os.urandom(1 << 20))       # 1 MiB of garbage
    assert reply == b"" or b"too large" in reply or b"bad request" in reply
    reply = _exchange(path, b"x" * (1 << 20))           # 1 MiB without a newline
    assert reply == b"" or b"too large" in reply
    assert "bad request" in json.loads(_exchange(path, b"{not json\n"))["error"]
    assert "bad request" in json.loads(_exchange(path, b"[1, 2]\n"))["error"]
    assert "unknown command" in json.loads(_exchange(path, b'{"cmd": "reboot"}\n'))["error"]
    assert m.alive()
    stats = m.stats()
    assert stats["pid"] == m.pid
    assert not any("daemon stopped" in line for line in stats["daemon_logs"])


@pytest.mark.mount
@needs_fuse
def test_idle_clients_do_not_block_stats(mounter):
    m = mounter.mount()
    path = control.socket_path(m.mnt)
    idle = [_connect(path) for _ in range(50)]
    try:
        idle[0].sendall(b'{"cmd": "st')   # half a request, never finished
        assert m.stats()["pid"] == m.pid
    finally:
        for sock in idle:
            sock.close()
    assert m.alive() and m.stats()["pid"] == m.pid


# ------------------------------------------------------------ only root and the owner

@pytest.mark.mount
@needs_fuse
def test_socket_log_and_directory_are_private(mounter):
    m = mounter.mount()
    path = control.socket_path(m.mnt)
    st_dir, st_sock = os.lstat(path.parent), os.lstat(path)
    assert stat.S_ISDIR(st_dir.st_mode) and stat.S_IMODE(st_dir.st_mode) == 0o700
    assert stat.S_ISSOCK(st_sock.st_mode) and stat.S_IMODE(st_sock.st_mode) == 0o600
    assert st_dir.st_uid == st_sock.st_uid == os.geteuid()
    log = path.with_suffix(".log")
    st_log = os.lstat(log)
    assert stat.S_ISREG(st_log.st_mode) and stat.S_IMODE(st_log.st_mode) == 0o600


@pytest.mark.mount
@needs_fuse
def test_other_users_cannot_read_stats(mounter):
    m = mounter.mount()
    path = control.socket_path(m.mnt)

    # the private directory keeps them away from the socket...
    assert errno_as(NOBODY, NOBODY, f"""
        import socket
        socket.socket(socket.AF_UNIX).connect({str(path)!r})
        r = "connected"
    """) == "EACCES"

    # ...and the daemon checks the peer's credentials itself
    proc = _as_nobody(f"""
        import socket
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(30)
        s.connect({str(path)!r})
        try:
            s.sendall(b'{{"cmd": "stats"}}\\n')
        except OSError:
            pass
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        sys.stdout.write(data.decode())
    """, keep_fs_root=True)
    assert proc.returncode == 0, proc.stderr
    raw = proc.stdout
    assert raw == "" or set(json.loads(raw)) == {"error", "errno"}, raw
    assert str(m.backing) not in raw and str(m.mnt) not in raw and '"pid"' not in raw

    # `fdsl stats` says so clearly
    proc = _as_nobody(f"""
        from fdsl.cli import main
        sys.argv = ["fdsl", "stats", {str(m.mnt)!r}]
        sys.exit(main())
    """)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert DENIED in proc.stderr and proc.stdout == ""

    assert m.alive() and m.stats()["pid"] == m.pid      # root still may


# ------------------------------------------------------------ directories and logs

def test_runtime_dir_is_per_user():
    assert control.runtime_dir_for(1000) == Path("/tmp/fdsl-1000")
    assert control.runtime_dir_for(1000, "/run/user/1000") == Path("/run/user/1000/fdsl")
    assert control.runtime_dir_for(0, "/run/user/0") == Path("/run/fdsl")


def test_runtime_dir_is_created_private_and_tightened(tmp_path):
    fresh = tmp_path / "fdsl"
    control.ensure_runtime_dir(fresh)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    os.chmod(fresh, 0o755)                  # left by an older fdsl: ours, merely readable
    control.ensure_runtime_dir(fresh)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700


def test_runtime_dir_others_could_write_is_refused(tmp_path):
    opened = tmp_path / "open"
    opened.mkdir()
    os.chmod(opened, 0o777)
    with pytest.raises(MountError, match="others may write"):
        control.ensure_runtime_dir(opened)
    target = tmp_path / "target"
    target.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(MountError, match="not a real directory"):
        control.ensure_runtime_dir(link)
    regular = tmp_path / "file"
    regular.write_text("")
    with pytest.raises(MountError):
        control.ensure_runtime_dir(regular)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown)")
def test_runtime_dir_of_another_user_is_refused(tmp_path):
    theirs = tmp_path / "fdsl-theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, NOBODY, NOBODY)
    with pytest.raises(MountError, match="belongs to uid 65534"):
        control.ensure_runtime_dir(theirs)


def test_log_file_is_private_and_never_followed(tmp_path):
    log = tmp_path / "x.log"
    fd = control.open_log(log)
    os.close(fd)
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    os.chmod(log, 0o644)                     # an older fdsl's log
    os.close(control.open_log(log))
    assert stat.S_IMODE(log.stat().st_mode) == 0o600

    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    planted = tmp_path / "planted.log"
    planted.symlink_to(victim)
    with pytest.raises(OSError):
        control.open_log(planted)
    hard = tmp_path / "hard.log"
    os.link(victim, hard)
    with pytest.raises(OSError):
        control.open_log(hard)
    assert victim.read_text() == "precious\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown)")
def test_log_file_of_another_user_is_refused(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("")
    os.chown(log, NOBODY, NOBODY)
    with pytest.raises(PermissionError):
        control.open_log(log)


@pytest.mark.mount
@needs_fuse
def test_a_planted_log_file_fails_the_mount_and_is_not_written(mounter, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    planted = tmp_path / "d.log"
    planted.symlink_to(victim)
    m = mounter.mount("", options=f"log_file={planted}", expect_fail=True)
    assert "refusing the log file" in m.error  # type: ignore[attr-defined]
    assert victim.read_text() == "precious\n"


def test_daemon_errors_are_described_by_their_real_exceptions():
    group = BaseExceptionGroup("Exceptions from Trio nursery", [BrokenPipeError(32, "Broken pipe")])
    text = daemon._describe(group)
    assert "BrokenPipeError" in text and "Broken pipe" in text and "nursery" not in text


def test_peer_uid_reads_so_peercred():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert control.peer_uid(a) == os.geteuid()
    assert control.may_query(0) and control.may_query(os.geteuid())
    assert not control.may_query(NOBODY) or os.geteuid() == NOBODY
