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


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CAP_SETGID)")
def test_as_caller_switches_leave_exactly_the_callers_credentials():
    """`as_caller` skips the calls whose value is already set: after every switch
    (to and from root, same gid, other groups, nested) the thread has the
    caller's fsuid, fsgid and groups, as /proc reports them."""
    from fdsl.runtime.identity import Caller, as_caller, reset_thread_credentials

    callers = [Caller(uid=4141, gid=4242, groups=(4242,)), Caller(uid=0, gid=0, groups=()),
               Caller(uid=65534, gid=65534, groups=()), Caller(uid=4141, gid=65534, groups=()),
               Caller(uid=0, gid=4242, groups=(1, 2)), Caller(uid=0, gid=0, groups=()),
               Caller(uid=4343, gid=0, groups=()), Caller(uid=4343, gid=4242, groups=(7,))]
    seen: list[tuple] = []

    def creds(tid: int) -> tuple:
        return (_status(tid, "Uid")[3], _status(tid, "Gid")[3], tuple(_status(tid, "Groups")))

    def worker() -> None:
        tid = threading.get_native_id()
        try:
            for c in callers + callers[::-1]:
                with as_caller(c):
                    seen.append((creds(tid), (c.uid, c.gid, c.groups)))
                    with as_caller(callers[2]):
                        seen.append((creds(tid), (65534, 65534, ())))
                    seen.append((creds(tid), (c.uid, c.gid, c.groups)))
        finally:
            reset_thread_credentials()
            seen.append((creds(tid), (0, 0, ())))

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert len(seen) == 6 * len(callers) + 1
    for got, want in seen:
        assert got == want
