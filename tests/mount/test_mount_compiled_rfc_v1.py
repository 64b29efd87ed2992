"""Policies compiled with `fdsl compile --abi rfc-v1`, mounted (emulation, both transports)
without any flag: the daemon reads the ABI from the object, and the view is the one the
same policy compiled for ACK gives, operation for operation (the backing directory is
the oracle for what changed)."""
from __future__ import annotations

import errno
import os

import pytest

from mounting import EXAMPLES, fdsl, mounter, needs_fuse  # noqa: F401

pytestmark = [pytest.mark.mount, needs_fuse]


def outcome(call) -> object:
    try:
        return call()
    except OSError as err:
        return errno.errorcode[err.errno]


def hide_secrets_view(mounter, obj) -> dict[str, object]:
    b, mnt = mounter.dirs()
    for name in (".env", "server.key", "README.md", "notes.txt"):
        (b / name).write_text(f"{name} data")
    mounter.mount(obj, b, mnt)
    seen = {
        "listing": sorted(os.listdir(mnt)),
        "read .env": outcome(lambda: (mnt / ".env").read_text()),
        "stat server.key": outcome(lambda: os.stat(mnt / "server.key").st_size),
        "read README.md": outcome(lambda: (mnt / "README.md").read_text()),
        "create new.key": outcome(lambda: open(mnt / "new.key", "w").close()),
        "create ok.txt": outcome(lambda: open(mnt / "ok.txt", "w").close()),
        "mkdir .git": outcome(lambda: os.mkdir(mnt / ".git")),
        "rename onto id_rsa": outcome(lambda: os.rename(mnt / "notes.txt", mnt / "id_rsa")),
        "rename ok": outcome(lambda: os.rename(mnt / "ok.txt", mnt / "ok2.txt")),
    }
    seen["backing"] = sorted(os.listdir(b))
    return seen


def test_hide_secrets_compiled_for_rfc_v1_gives_the_ack_view(mounter, tmp_path):
    objects = {}
    for name in ("ack", "rfc-v1"):
        objects[name] = tmp_path / f"hide.{name}.o"
        fdsl("compile", "--abi", name, EXAMPLES / "hide_secrets.fdsl", "-o", objects[name], check=True)
    v1 = hide_secrets_view(mounter, objects["rfc-v1"])
    assert v1 == {
        "listing": ["README.md", "notes.txt"],
        "read .env": "ENOENT",
        "stat server.key": "ENOENT",
        "read README.md": "README.md data",
        "create new.key": "ENOENT",
        "create ok.txt": None,
        "mkdir .git": "ENOENT",
        "rename onto id_rsa": "ENOENT",
        "rename ok": None,
        "backing": [".env", "README.md", "notes.txt", "ok2.txt", "server.key"],
    }
    assert hide_secrets_view(mounter, objects["ack"]) == v1
