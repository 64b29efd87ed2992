"""`-o log=journal`: a detached daemon's policy `log` lines and warnings go to the systemd
journal over its native protocol: checked against a real systemd-journald (in a journal
namespace of its own, read back with journalctl) and, byte for byte, against a socket the
test binds itself."""
from __future__ import annotations

import os
import socket
import struct

import pytest

from journald import journald  # noqa: F401
from mounting import check_stats_follow, fdsl, logging_policy, mounter, needs_fuse  # noqa: F401

pytestmark = [pytest.mark.mount, needs_fuse]

def _getattr_line(entry: dict) -> bool:
    return entry.get("MESSAGE", "").startswith("getattr by uid 0 nodeid")


def test_policy_lines_reach_a_real_journald(mounter, logging_policy, journald):
    m = mounter.mount(logging_policy, options=f"attr_timeout=0,entry_timeout=0,log=journal,"
                                      f"journal_socket={journald.socket}")
    (m.backing / "f").write_text("x")
    os.stat(m.mnt / "f")
    real = os.path.realpath(m.mnt)
    entries = journald.wait_for(_getattr_line, "SYSLOG_IDENTIFIER=fdsl",
                                f"FDSL_MOUNTPOINT={real}")
    [entry, *_] = [e for e in entries if _getattr_line(e)]
    assert entry["PRIORITY"] == "6" and entry["FDSL_LOGGER"] == "fdsl.policy"
    assert int(entry["_PID"]) == m.pid
    stats = m.stats()
    assert stats["log_file"] is None and stats["log"]["to"] == "journal"
    text = fdsl("stats", m.mnt, check=True).stdout
    assert (f"logs     to the journal: journalctl --namespace={journald.namespace} "
            f"SYSLOG_IDENTIFIER=fdsl FDSL_MOUNTPOINT={real}") in text


def test_stats_follow_tails_the_journal_until_unmount(mounter, logging_policy, journald):
    m = mounter.mount(logging_policy, options=f"attr_timeout=0,entry_timeout=0,log=journal,"
                                      f"journal_socket={journald.socket}")
    (m.backing / "f").write_text("x")
    check_stats_follow(m, "logs     to the journal")


def _fields(datagram: bytes) -> dict[str, str]:
    """Decode the native protocol independently of runtime/journal.py."""
    out, pos = {}, 0
    while pos < len(datagram):
        end = datagram.index(b"\n", pos)
        line = datagram[pos:end]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            pos = end + 1
        else:
            key = line
            (size,) = struct.unpack_from("<Q", datagram, end + 1)
            value = datagram[end + 9:end + 9 + size]
            assert datagram[end + 9 + size:end + 10 + size] == b"\n"
            pos = end + 10 + size
        out[key.decode()] = value.decode()
    return out


def test_the_datagrams_carry_the_native_protocol_fields(mounter, logging_policy, tmp_path):
    path = tmp_path / "journal.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    try:
        m = mounter.mount(logging_policy,
                          options=f"attr_timeout=0,log=journal,journal_socket={path}")
        (m.backing / "f").write_text("x")
        os.stat(m.mnt / "f")
        receiver.settimeout(20)
        while True:
            fields = _fields(receiver.recv(1 << 16))
            if fields.get("MESSAGE", "").startswith("getattr by uid 0"):
                break
        assert fields["PRIORITY"] == "6"
        assert fields["SYSLOG_IDENTIFIER"] == "fdsl"
        assert fields["FDSL_MOUNTPOINT"] == os.path.realpath(m.mnt)
        assert fields["FDSL_LOGGER"] == "fdsl.policy"
    finally:
        receiver.close()


def test_log_journal_without_a_journal_is_a_clear_failure(mounter, logging_policy, tmp_path):
    m = mounter.mount(logging_policy, options=f"log=journal,journal_socket={tmp_path}/none",
                      expect_fail=True)
    assert "no journal socket at" in m.error and "Traceback" not in m.error


def test_log_journal_and_log_file_exclude_each_other(mounter, logging_policy, tmp_path):
    backing, mnt = mounter.dirs()
    proc = fdsl("mount", "-o", f"log=journal,log_file={tmp_path}/x.log", logging_policy,
                backing, mnt)
    assert proc.returncode == 2 and "exclude each other" in proc.stderr
