"""Per-thread credentials through the C library and the one raw syscall (setgroups)."""
from __future__ import annotations

import os
import threading

import pytest

from fdsl.runtime import sysio


def _status(tid: int, key: str) -> list[int]:
    with open(f"/proc/self/task/{tid}/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return [int(v) for v in line.split()[1:]]
    raise KeyError(key)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CAP_SETGID)")
def test_credentials_change_only_the_calling_thread():
    seen: dict[str, list[int]] = {}

    def worker() -> None:
        tid = threading.get_native_id()
        sysio.setgroups_thread([4242, 4343])
        sysio.setfsgid(4242)
        sysio.setfsuid(4141)
        try:
            seen["groups"] = _status(tid, "Groups")
            seen["fsuid"] = [_status(tid, "Uid")[3]]
            seen["fsgid"] = [_status(tid, "Gid")[3]]
            seen["main_groups"] = _status(os.getpid(), "Groups")
        finally:
            sysio.setfsuid(0)
            sysio.setfsgid(0)
            sysio.setgroups_thread([])

    before = _status(os.getpid(), "Groups")
    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen["groups"] == [4242, 4343] and seen["fsuid"] == [4141] and seen["fsgid"] == [4242]
    assert seen["main_groups"] == before
    assert _status(os.getpid(), "Uid")[3] == 0


def test_unknown_architecture_fails_loudly(monkeypatch):
    monkeypatch.setattr(sysio, "MACHINE", "pdp11")
    with pytest.raises(OSError, match="pdp11"):
        sysio.setgroups_thread([1])
    with pytest.raises(OSError, match="no_identity"):
        sysio.require_thread_credentials()
