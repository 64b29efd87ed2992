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


# ---- the direct paths for nodes whose scope has no program on an operation
# (`Engine._plain_lookup`, `_plain_create`, `_plain_remove`: no frame, no sequence,
# one fstatat for an inode that already has a node); the oracle is the same
# requests through the full path (a lookup program that counts and allows all).

COUNTING = "counter looked\non lookup pre { count looked }\n"
BAD_NAMES = [b".", b"..", b"a/b", b"n" * 300, b"x/y"]     # refused before any program
NAMES = [b"d", b"x", b"link", b"nothere", *BAD_NAMES]


@pytest.fixture
def linked(backing: Path) -> Path:
    """`backing` plus a symlink: what the direct lookup paths must treat as the full ones do."""
    (backing / "link").symlink_to("x")
    return backing


def outcome(engine: Engine, request):
    """(nodeid, attributes but the timeout) or the errno."""
    try:
        entry = engine.dispatch(request)
    except OSError as err:
        return err.errno
    attr = entry.attr
    return (entry.nodeid, attr.ino, attr.mode, attr.nlink, attr.uid, attr.gid, attr.size,
            attr.mtime_ns, attr.ctime_ns)


def test_lookup_without_a_program_answers_as_the_full_sequence_does(linked):
    plain, full = engine_for(None, linked), engine_for(COUNTING, linked)
    assert not plain.policy.runs_program(plain.root, "lookup")
    assert full.policy.runs_program(full.root, "lookup")
    for _ in range(2):                        # new inodes, then known ones
        for name in NAMES:
            assert outcome(plain, R.Lookup(ME, 1, name)) == outcome(full, R.Lookup(ME, 1, name))
    x = plain.dispatch(R.Lookup(ME, 1, b"x"))
    assert outcome(plain, R.Lookup(ME, x.nodeid, b"y")) == errno.ENOTDIR
    counts = {m["name"]: dict(m["entries"]) for m in full.policy.map_contents()}
    assert counts["looked"] == {"total": 2 * (len(NAMES) - len(BAD_NAMES))}
    plain.close()
    full.close()


def test_a_known_inode_is_found_again_with_fresh_attributes_and_one_more_lookup(linked):
    e = engine_for(None, linked)
    first = e.dispatch(R.Lookup(ME, 1, b"x"))
    os.chmod(linked / "x", 0o600)
    (linked / "x").write_text("longer")
    again = e.dispatch(R.Lookup(ME, 1, b"x"))
    assert again.nodeid == first.nodeid
    st = os.lstat(linked / "x")
    assert (again.attr.mode, again.attr.size, again.attr.ctime_ns) == \
        (st.st_mode, st.st_size, st.st_ctime_ns)
    assert again.attr.timeout == again.entry_timeout == 1.0
    e.forget(first.nodeid, 1)
    assert e.dispatch(R.Getattr(ME, first.nodeid)).size == 6    # one lookup still counted
    e.forget(first.nodeid, 1)
    with pytest.raises(OSError) as gone:
        e.dispatch(R.Getattr(ME, first.nodeid))
    assert gone.value.errno == errno.ESTALE
    e.close()


def test_a_name_now_naming_another_inode_gets_that_inodes_node(linked):
    e = engine_for(None, linked)
    old = e.dispatch(R.Lookup(ME, 1, b"x"))
    (linked / "other").write_text("other")
    os.rename(linked / "other", linked / "x")
    new = e.dispatch(R.Lookup(ME, 1, b"x"))
    assert new.nodeid != old.nodeid
    assert new.attr.size == 5 and e.nodes.get(new.nodeid).key[1] == os.lstat(linked / "x").st_ino
    e.close()


def test_a_known_node_whose_fd_was_evicted_is_found_through_its_handle(linked, monkeypatch):
    monkeypatch.setenv("FDSL_NODE_FD_CACHE", "1")
    e = engine_for(None, linked)
    if not e.nodes.handles:
        pytest.skip("not applicable here: no reopening by file handle (needs root and handles)")
    x = e.dispatch(R.Lookup(ME, 1, b"x"))
    e.dispatch(R.Lookup(ME, 1, b"link"))          # evicts x's fd
    assert e.nodes.get(x.nodeid)._fd < 0
    assert e.dispatch(R.Lookup(ME, 1, b"x")).nodeid == x.nodeid
    e.close()


def listing(engine: Engine) -> dict[bytes, tuple]:
    fh = engine.dispatch(R.Opendir(ME, 1)).fh
    out = {}
    for item in engine.dispatch(R.Readdir(ME, fh, 0)):
        entry = item.entry
        out[item.name] = (item.ino, item.dtype, item.next_offset) + (
            (entry.nodeid, entry.attr.mode, entry.attr.size) if entry else ())
    engine.dispatch(R.Releasedir(None, fh))
    return out


def test_listing_entries_without_a_lookup_program_are_the_full_sequences(linked):
    plain, full = engine_for(None, linked), engine_for(COUNTING, linked)
    d = plain.dispatch(R.Lookup(ME, 1, b"d"))         # a known node in the listing
    full.dispatch(R.Lookup(ME, 1, b"d"))
    first = listing(plain)
    assert first == listing(full)
    assert first[b"d"][3] == d.nodeid
    assert set(first) == {b".", b"..", b"d", b"x", b"link"}
    assert listing(plain) == first                     # every name known now
    plain.close()
    full.close()


def namespace_outcomes(engine: Engine, root: Path) -> list:
    """Create, unlink and rmdir outcomes (errno, or what the backing fs then holds)."""
    out = []
    for request in (R.Create(ME, 1, b"new", 0o640, os.O_WRONLY, 0o022),
                    R.Create(ME, 1, b"new", 0o600, os.O_WRONLY, 0o022),   # exists: opened
                    R.Create(ME, 1, b"..", 0o640, os.O_WRONLY, 0), R.Unlink(ME, 1, b"nothere"),
                    R.Unlink(ME, 1, b"d"), R.Rmdir(ME, 1, b"x"), R.Rmdir(ME, 1, b"d"),
                    R.Unlink(ME, 1, b"a/b"), R.Unlink(ME, 1, b"new"), R.Unlink(ME, 1, b"x"),
                    R.Unlink(ME, 1, b"d/f"), R.Unlink(ME, 1, b"link"), R.Rmdir(ME, 1, b"d")):
        try:
            result = engine.dispatch(request)
        except OSError as err:
            out.append(err.errno)
            continue
        if isinstance(result, R.Opened):
            st = os.lstat(root / "new")
            assert result.entry.attr.mode == st.st_mode and result.entry.nodeid > 1
            engine.dispatch(R.Release(None, result.fh))
            out.append(("created", oct(st.st_mode)))
        else:
            out.append(sorted(os.listdir(root)))
    return out


def test_create_unlink_rmdir_without_programs_answer_as_the_full_sequence_does(tmp_path):
    got = []
    for source in (None, COUNTING):
        root = tmp_path / ("plain" if source is None else "full")
        (root / "d").mkdir(parents=True)
        (root / "d" / "f").write_text("data")
        (root / "x").write_text("x")
        (root / "link").symlink_to("x")
        e = engine_for(source, root)
        assert e.policy.runs_program(e.root, "lookup") == (source is not None)
        got.append(namespace_outcomes(e, root))
        e.close()
    reset_thread_credentials()
    assert got[0] == got[1]
    assert got[0][:5] == [("created", oct(0o100640)), ("created", oct(0o100640)), errno.EINVAL,
                          errno.ENOENT, errno.EISDIR]
