"""RFC v1 objects in a real mount (emulation), both transports: tests/c/abi_pair.c built
for RFC v1 (`fdsl mount --abi rfc-v1`) behaves as its C says, and exactly like the same
C built for ACK, request for request."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from fdsl import abi
from mounting import EXAMPLES, fdsl, mounter, needs_fuse  # noqa: F401

pytestmark = [pytest.mark.mount, needs_fuse]
MTIME = 1234567890


def outcome(call) -> object:
    try:
        return call()
    except OSError as err:
        return errno.errorcode[err.errno]


def behaviour(mounter, obj, flags: tuple[str, ...]) -> dict[str, object]:
    b, mnt = mounter.dirs()
    for name in ("secret", "late", "f"):
        (b / name).write_text(f"{name} data")
    mounter.mount(obj, b, mnt, flags=flags)
    seen = {
        "listing": sorted(os.listdir(mnt)),
        "stat secret": outcome(lambda: os.stat(mnt / "secret").st_size),
        "create secret": outcome(lambda: open(mnt / "secret", "w").close()),
        "stat late": outcome(lambda: os.stat(mnt / "late").st_size),
        "mtime f": outcome(lambda: int(os.stat(mnt / "f").st_mtime)),
        "read f": outcome(lambda: (mnt / "f").read_text()),
        "mkdir nope": outcome(lambda: os.mkdir(mnt / "nope")),
        "mkdir user": outcome(lambda: os.mkdir(mnt / "user")),
        "mkdir dir": outcome(lambda: os.mkdir(mnt / "dir")),
        "mkdir locked": outcome(lambda: os.mkdir(mnt / "locked", 0o777)),
    }
    seen["mode locked"] = oct((b / "locked").stat().st_mode & 0o7777)
    seen["backing"] = sorted(os.listdir(b))
    return seen


EXPECTED = {
    "listing": ["f", "late", "secret"],     # only readdir rules hide names (as on ACK)
    "stat secret": "ENOENT",                # LOOKUP PRE -ENOENT
    "create secret": "ENOENT",              # the VFS looks the name up first
    "stat late": "EACCES",                  # LOOKUP POST (after the backing lookup)
    "mtime f": MTIME,                       # GETATTR POST rewrote attr.mtime
    "read f": "f data",                     # OPEN: backing, then the userspace postfilter
    "mkdir nope": "EPERM",
    "mkdir user": None,                     # userspace prefilter (echo), then backing
    "mkdir dir": None,
    "mkdir locked": None,
    "mode locked": "0o700",                 # PRE rewrote in.mode (RFC v1: helper 208)
    "backing": ["dir", "f", "late", "locked", "secret", "user"],
}


def test_an_rfc_v1_object_mounts_and_behaves_as_its_ack_twin(mounter, bpf_c_object, tmp_path):
    v1, ack = tmp_path / "pair.v1.o", tmp_path / "pair.ack.o"
    v1.write_bytes(bpf_c_object("abi_pair", "-DRFC_V1"))
    ack.write_bytes(bpf_c_object("abi_pair"))
    got_v1 = behaviour(mounter, v1, ("--abi", "rfc-v1"))
    got_ack = behaviour(mounter, ack, ())
    assert [m.stats()["abi"] for m in mounter.mounts] == [abi.RFC_V1.id, abi.ACK.id]
    assert "(rfc-v1, emulated)" in fdsl("stats", mounter.mounts[0].mnt, check=True).stdout
    assert got_v1 == EXPECTED
    assert got_ack == got_v1


def test_kernel_mode_refuses_rfc_v1_and_without_the_flag_it_is_an_ack_object(
        mounter, bpf_c_object, tmp_path):
    v1 = tmp_path / "pair.v1.o"
    v1.write_bytes(bpf_c_object("abi_pair", "-DRFC_V1"))
    m = mounter.mount(v1, options="mode=kernel", flags=("--abi", "rfc-v1"), expect_fail=True)
    assert "emulation only" in m.error and "Traceback" not in m.error
    b, mnt = mounter.dirs()                       # -o abi= (the fstab form) is --abi
    (b / "secret").write_text("x")
    mounter.mount(v1, b, mnt, options="abi=rfc-v1")
    assert outcome(lambda: os.stat(mnt / "secret")) == "ENOENT"
    twice = fdsl("mount", "--abi", "rfc-v1", "-o", "abi=rfc-v1", v1, *mounter.dirs())
    assert twice.returncode == 2 and "given twice" in twice.stderr
    # read as ACK the verifier refuses helper 209: a partial load, its operations fail with EIO
    b, mnt = mounter.dirs()
    (b / "f").write_text("x")
    mounter.mount(v1, b, mnt)
    assert outcome(lambda: os.stat(mnt / "f")) == "EIO"


def test_a_policy_source_is_compiled_for_the_flags_abi(mounter, tmp_path):
    """`--abi` with a .fdsl policy compiles it for that ABI; with a compiled fdsl object
    whose metadata says otherwise it is a usage error and nothing is mounted."""
    b, mnt = mounter.dirs()
    (b / ".env").write_text("x")
    (b / "notes").write_text("y")
    m = mounter.mount(EXAMPLES / "hide_secrets.fdsl", b, mnt, flags=("--abi", "rfc-v1"))
    assert m.stats()["abi"] == abi.RFC_V1.id
    assert sorted(os.listdir(mnt)) == ["notes"]
    assert outcome(lambda: os.stat(mnt / ".env")) == "ENOENT"
    obj = tmp_path / "audit.o"
    fdsl("compile", EXAMPLES / "audit.fdsl", "-o", obj, check=True)
    b, mnt = mounter.dirs()
    proc = fdsl("mount", "--abi", "rfc-v1", obj, b, mnt)
    assert proc.returncode == 2 and "contradicts its metadata" in proc.stderr
    assert not os.path.ismount(mnt)


USERSPACE_POLICY = """
userspace {
    on mkdir pre { if name matches "^tmp[0-9]+$" { deny EACCES } }
    on getattr post { out.attr.uid = 4242 }
}
"""


def compiled(policy: Path, abi_name: str, out: Path) -> Path:
    fdsl("compile", "--abi", abi_name, policy, "-o", out, check=True)
    return out


def policy_behaviour(mounter, obj: Path) -> dict[str, object]:
    """What a caller sees through hide_secrets + a policy whose rules run in the daemon:
    the userspace prefilter's verdict and the userspace postfilter's rewrite."""
    b, mnt = mounter.dirs()
    for name in (".env", "id_rsa", "README.md", "server.key", "notes.txt"):
        (b / name).write_text(name)
    mounter.mount(obj, b, mnt)             # the ABI comes from the object's metadata
    seen = {
        "listing": sorted(os.listdir(mnt)),                      # readdir: userspace drop
        "stat .env": outcome(lambda: os.stat(mnt / ".env").st_size),
        "stat server.key": outcome(lambda: os.stat(mnt / "server.key").st_size),   # suffix
        "read README.md": outcome(lambda: (mnt / "README.md").read_text()),
        # the name in another slot per opcode (create/mkdir in_args[1], rename in_args[2])
        "create new.key": outcome(lambda: open(mnt / "new.key", "w").close()),
        "create ok.txt": outcome(lambda: open(mnt / "ok.txt", "w").close()),
        "mkdir .git": outcome(lambda: os.mkdir(mnt / ".git")),
        "rename onto a.key": outcome(lambda: os.rename(mnt / "notes.txt", mnt / "a.key")),
        "rename ok": outcome(lambda: os.rename(mnt / "ok.txt", mnt / "ok2.txt")),
    }
    seen["backing"] = sorted(os.listdir(b))
    return seen


def user_behaviour(mounter, obj: Path) -> dict[str, object]:
    b, mnt = mounter.dirs()
    (b / "f").write_text("f")
    mounter.mount(obj, b, mnt)
    return {"mkdir tmp12": outcome(lambda: os.mkdir(mnt / "tmp12")),   # userspace prefilter
            "mkdir tmpx": outcome(lambda: os.mkdir(mnt / "tmpx")),
            "uid f": outcome(lambda: os.stat(mnt / "f").st_uid),        # userspace postfilter
            "backing": sorted(os.listdir(b))}


def test_fdsl_objects_compiled_for_rfc_v1_mount_like_their_ack_builds(mounter, tmp_path):
    user_policy = tmp_path / "user.fdsl"
    user_policy.write_text(USERSPACE_POLICY)
    for name, (policy, run, expected) in {
        "hide": (EXAMPLES / "hide_secrets.fdsl", policy_behaviour,
                 {"listing": ["README.md", "notes.txt"], "stat .env": "ENOENT",
                  "stat server.key": "ENOENT", "read README.md": "README.md",
                  "create new.key": "ENOENT", "create ok.txt": None, "mkdir .git": "ENOENT",
                  "rename onto a.key": "ENOENT", "rename ok": None,
                  "backing": [".env", "README.md", "id_rsa", "notes.txt", "ok2.txt",
                              "server.key"]}),
        "user": (user_policy, user_behaviour,
                 {"mkdir tmp12": "EACCES", "mkdir tmpx": None, "uid f": 4242,
                  "backing": ["f", "tmpx"]}),
    }.items():
        got = {abi_name: run(mounter, compiled(policy, abi_name, tmp_path / f"{name}.{abi_name}.o"))
               for abi_name in ("rfc-v1", "ack")}
        assert got["rfc-v1"] == expected, name
        assert got["ack"] == got["rfc-v1"], name


def test_a_post_program_shrinking_the_dirent_buffer_through_helper_209(mounter, bpf_c_object,
                                                                       tmp_path):
    """A variable-size output rewritten by size (RFC v1 only: ACK has no way to do it):
    each page is cut to its first record, and the other names stay reachable."""
    obj = tmp_path / "listing.v1.o"
    obj.write_bytes(bpf_c_object("rfc_v1_listing"))
    b, mnt = mounter.dirs()
    names = {"a", "bb", "ccc"}
    for name in names:
        (b / name).write_text(name)
    mounter.mount(obj, b, mnt, flags=("--abi", "rfc-v1"))
    listed = os.listdir(mnt)
    assert len(listed) == 1 and set(listed) <= names
    assert {n: (mnt / n).read_text() for n in names} == {n: n for n in names}
