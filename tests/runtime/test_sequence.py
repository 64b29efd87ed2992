"""The pre -> user -> backing -> post -> user sequence (spec §6), without a mount.

Real compiled policies, the real loader and interpreter, a real backing
directory, the engine's own driver (`Engine.dispatch`); the oracle is the
backing filesystem and the spec's rules.  Runs as any user: the caller is
the test process itself, so no credential switch changes anything.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from fdsl import abi
from fdsl.compile.driver import compile_source
from fdsl.runtime import requests as R
from fdsl.runtime.engine import Engine, EngineOptions
from fdsl.runtime.identity import reset_thread_credentials
from fdsl.runtime.policy import load_policy
from fdsl.vm import frame as frames
from fdsl.vm import sequence
from fdsl.vm.helpers import Caller

ME = Caller(uid=os.geteuid(), gid=os.getegid(), pid=os.getpid(), groups=tuple(os.getgroups()))


@pytest.fixture
def backing(tmp_path: Path) -> Path:
    root = tmp_path / "backing"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f").write_text("data")
    (root / "x").write_text("x")
    yield root
    reset_thread_credentials()


def engine_for(source: str | None, root: Path) -> Engine:
    obj = compile_source(source, "p.fdsl", want_asm=False).obj if source else None
    return Engine(str(root), load_policy(obj, "interp", str(root)), EngineOptions())


def errno_of(engine: Engine, request) -> int:
    with pytest.raises(OSError) as info:
        engine.dispatch(request)
    return info.value.errno


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_pre_deny_skips_the_backing_step_and_reports_the_kernels_errno(backing):
    e = engine_for('on lookup pre { if name == "x" { deny EACCES } }\n'
                   'on getattr pre { if uid == 4242 { deny EPERM } }\n'
                   'on mkdir pre { deny EROFS }\n', backing)
    assert errno_of(e, R.Lookup(ME, 1, b"x")) == errno.ENOENT      # LOOKUP: always ENOENT
    x = e.dispatch(R.Lookup(ME, 1, b"d"))
    stranger = Caller(uid=4242, gid=4242, pid=os.getpid())
    assert errno_of(e, R.Getattr(stranger, x.nodeid)) == errno.EIO  # GETATTR: always EIO
    assert errno_of(e, R.Mkdir(ME, 1, b"new", 0o755, 0)) == errno.EROFS
    assert not (backing / "new").exists()


def test_post_writes_are_the_result(backing):
    e = engine_for("on getattr post { out.attr.mode = 0o100600 }\n", backing)
    f = e.dispatch(R.Lookup(ME, 1, b"x"))
    assert e.dispatch(R.Getattr(ME, f.nodeid)).mode == 0o100600
    assert (backing / "x").stat().st_mode & 0o777 != 0o600          # the backing is untouched


def test_honoured_pre_writes_reach_the_backing_step_and_others_do_not(backing):
    e = engine_for("on mkdir pre { in.mode = 0o700 }\n"
                   "on setattr pre { in.valid = 0 }\n", backing)
    e.dispatch(R.Mkdir(ME, 1, b"m", 0o777, 0))
    assert (backing / "m").stat().st_mode & 0o777 == 0o700          # MKDIR honours mode
    f = e.dispatch(R.Lookup(ME, 1, b"x"))
    e.dispatch(R.Setattr(ME, f.nodeid, mode=0o100640))
    assert (backing / "x").stat().st_mode & 0o777 == 0o640          # SETATTR ignores valid


def test_a_postfilter_cannot_turn_a_failure_into_success(backing):
    e = engine_for("on open post { allow }\n", backing)
    d = e.dispatch(R.Lookup(ME, 1, b"d"))
    before = open_fds()
    assert errno_of(e, R.Open(ME, d.nodeid, os.O_WRONLY)) == errno.EISDIR
    assert open_fds() == before


def test_a_post_deny_closes_what_the_backing_step_opened(backing):
    e = engine_for("on open post { deny EPERM }\n", backing)
    f = e.dispatch(R.Lookup(ME, 1, b"x"))
    before = open_fds()
    assert errno_of(e, R.Open(ME, f.nodeid, os.O_RDONLY)) == errno.EPERM
    assert open_fds() == before and not e.files


def test_a_pre_result_without_backing_is_a_classic_request_with_the_original_arguments(backing):
    e = engine_for("on open pre { in.flags = O_WRONLY; return 0 }\n", backing)
    f = e.dispatch(R.Lookup(ME, 1, b"x"))
    opened = e.dispatch(R.Open(ME, f.nodeid, os.O_RDONLY))
    assert e.dispatch(R.Read(None, opened.fh, 0, 10)) == b"x"        # opened read-only
    e.dispatch(R.Release(None, opened.fh))


def test_the_steps_run_in_the_order_of_section_6(backing):
    """PRE, userspace prefilter, backing, POST, userspace postfilter, on one frame."""
    e = engine_for('on lookup pre { if name matches "^q+$" { deny EPERM } }\n'
                   'on lookup post { if name matches "^z+$" { deny EPERM } }\n', backing)
    policy, steps = e.policy, []
    program = policy.program("fuse/root")

    def run(ctx, caller):
        steps.append(f"program {ctx.phase}")
        return program(ctx, caller)

    half = policy.user_half(e.root, ME, "lookup")

    def user(phase, frame, error_in):
        steps.append(f"user {phase}")
        half(phase, frame, error_in)

    frame = frames.acquire(abi.OPS["lookup"])
    try:
        frame.begin(1)
        frame.set_input(0, b"x\0")
        value, posted = sequence.run(run, frame, ME, "lookup",
                                     backing=lambda subject, f: steps.append("backing") or 7,
                                     subject=None,
                                     fill_outputs=lambda f, v: steps.append("outputs"), user=user)
    finally:
        frames.release(frame)
    assert steps == ["program pre", "user pre", "backing", "outputs", "program post",
                     "user post"]
    assert (value, posted) == (7, True)


def test_listings_follow_the_kernel_only_readdir_rules_hide_names(backing):
    e = engine_for('on lookup pre { if name == "x" { deny ENOENT } }\n'
                   'hide name == "d"\n', backing)
    fh = e.dispatch(R.Opendir(ME, 1)).fh
    listing = {entry.name: entry for entry in e.dispatch(R.Readdir(None, fh, 0))}
    assert set(listing) == {b".", b"..", b"x"}       # "d" hidden by hide's readdir rule
    assert listing[b"x"].entry is None                 # listed without attributes
    e.dispatch(R.Releasedir(None, fh))


def test_a_failing_readdir_postfilter_ends_the_listing_instead_of_failing(backing):
    # one rule, so all of it runs in userspace (it drops entries), and it denies
    e = engine_for('on readdir post { drop entries where name matches "^x$"; deny EPERM }\n',
                   backing)
    fh = e.dispatch(R.Opendir(ME, 1)).fh
    names = [entry.name for entry in e.dispatch(R.Readdir(None, fh, 0))]
    assert names == [b".", b".."]                      # data, and no hidden name leaks
    e.dispatch(R.Releasedir(None, fh))


def test_creating_a_name_a_lookup_rule_refuses_fails_with_enoent_and_runs_lookup_once(backing):
    e = engine_for('counter looked\n'
                   'on lookup pre { count looked; if name == "h" { deny EACCES } }\n', backing)
    assert errno_of(e, R.Lookup(ME, 1, b"h")) == errno.ENOENT       # what the kernel sends first
    assert errno_of(e, R.Create(ME, 1, b"h", 0o644, os.O_WRONLY, 0)) == errno.ENOENT
    assert errno_of(e, R.Mkdir(ME, 1, b"h", 0o755, 0)) == errno.ENOENT   # no lookup before
    assert not (backing / "h").exists()
    counts = {m["name"]: dict(m["entries"]) for m in e.policy.map_contents()}
    assert counts["looked"] == {"total": 2}            # the remembered verdict: no second run


def test_getattr_and_lookup_without_a_program_skip_the_frame(backing):
    e = engine_for(None, backing)
    d = e.dispatch(R.Lookup(ME, 1, b"d"))
    attr = e.dispatch(R.Getattr(ME, d.nodeid))
    assert attr.ino == d.nodeid and attr.mode == (backing / "d").stat().st_mode
    assert R.Entry(d.nodeid, attr, 1.0).pack_entry_out()[:8] == d.nodeid.to_bytes(8, "little")


def test_fuse_bpf_filter_requests_are_served_from_the_same_rules(backing):
    """OP|PREFILTER and OP|POSTFILTER payloads (spec §7) through `Engine.user_filter`."""
    e = engine_for('on lookup pre { if name matches "^se.*t$" { deny EACCES } }\n'
                   'on readdir post { drop entries where name matches "^x$" }\n', backing)
    with pytest.raises(OSError) as info:
        e.user_filter("lookup", "pre", 1, ME, b"secret\0")
    assert info.value.errno == errno.EACCES           # the kernel's finalize makes it ENOENT
    assert e.user_filter("lookup", "pre", 1, ME, b"public\0") == b"public\0"
    records, _ = abi.pack_dirents([(b"x", 5, 1, abi.DT_REG), (b"y", 6, 2, abi.DT_REG)])
    read_in, read_out = bytes(40), bytes(16)
    reply = e.user_filter(abi.OPS["readdir"].number, "post", 1, ME, read_in + read_out + records)
    assert [r[0] for r in abi.parse_dirents(reply[16:])] == [b"y"]


def test_a_backing_scope_below_a_passthrough_one_runs_no_program(backing, tmp_path):
    """`under "a" passthrough` + `under "a/p" backing ...`: the remapped tree stays
    program-free (REPLACE the backing, REMOVE the program), while a top-level
    backing scope keeps the rules around it."""
    other, second = tmp_path / "other", tmp_path / "second"
    for d in (other, second):
        d.mkdir()
        (d / "f").write_text("remapped")
    (backing / "a" / "p").mkdir(parents=True)
    (backing / "top").mkdir()
    e = engine_for(f'on open pre {{ deny EPERM }}\nunder "a" passthrough\n'
                   f'under "a/p" backing "{other}"\nunder "top" backing "{second}"\n', backing)
    a = e.dispatch(R.Lookup(ME, 1, b"a"))
    p = e.dispatch(R.Lookup(ME, a.nodeid, b"p"))
    f = e.dispatch(R.Lookup(ME, p.nodeid, b"f"))
    assert e.program_of(p.nodeid) is None and e.program_of(f.nodeid) is None
    opened = e.dispatch(R.Open(ME, f.nodeid, os.O_RDONLY))
    assert e.dispatch(R.Read(None, opened.fh, 0, 20)) == b"remapped"
    e.dispatch(R.Release(None, opened.fh))
    top = e.dispatch(R.Lookup(ME, 1, b"top"))
    g = e.dispatch(R.Lookup(ME, top.nodeid, b"f"))
    assert errno_of(e, R.Open(ME, g.nodeid, os.O_RDONLY)) == errno.EPERM


@pytest.mark.parametrize("abi_name", ["ack", "rfc-v1"])
def test_post_sees_the_sizes_of_outputs_the_backing_step_filled(backing, abi_name):
    """The dirent buffer is filled after the frame turns to POST: its size (and RFC v1's
    end_offset) must be the filled length, not the shape's empty default."""
    policy = 'on readdir post { if in.offset == 2 and sizeof(dirents) == 0 { deny EIO } }\n'
    obj = compile_source(policy, "p.fdsl", want_asm=False, abi_record=abi.by_id(abi_name)).obj
    e = Engine(str(backing), load_policy(obj, "interp", str(backing)), EngineOptions())
    fh = e.dispatch(R.Opendir(ME, 1)).fh
    assert {entry.name for entry in e.dispatch(R.Readdir(None, fh, 0))} >= {b"d", b"x"}
    e.dispatch(R.Releasedir(None, fh))
