"""The workloads: each runs against one mounted view and returns named measurements.

A workload has a `prepare(backing, sizes)` step that builds shared input data
natively in the backing directory once (so every target reads the same bytes),
and a `run(view, sizes)` step timed against one mount.  `run` returns
{metric: value}; `METRICS` says the unit and whether higher is better.
Everything a workload writes through the view it removes again.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator


@dataclass(frozen=True)
class Sizes:
    """Problem sizes; `quick()` is for smoke tests, `full()` for the real run."""

    meta_files: int
    roundtrip_seconds: float
    tree_dirs: int
    tree_files_per_dir: int
    tree_file_bytes: int
    data_bytes: int
    rand_seconds: float

    @staticmethod
    def full() -> "Sizes":
        return Sizes(meta_files=10_000, roundtrip_seconds=1.5, tree_dirs=100,
                     tree_files_per_dir=100, tree_file_bytes=512,
                     data_bytes=1 << 30, rand_seconds=3.0)

    @staticmethod
    def quick() -> "Sizes":
        return Sizes(meta_files=500, roundtrip_seconds=0.3, tree_dirs=10,
                     tree_files_per_dir=50, tree_file_bytes=512,
                     data_bytes=32 << 20, rand_seconds=1.0)


@dataclass(frozen=True)
class Metric:
    unit: str
    higher_is_better: bool
    label: str


METRICS: dict[str, Metric] = {
    "create": Metric("ops/s", True, "create (open O_CREAT + close)"),
    "stat": Metric("ops/s", True, "stat"),
    "unlink": Metric("ops/s", True, "unlink"),
    "fstat": Metric("µs/op", False, "os.fstat on an open fd"),
    "stat_path": Metric("µs/op", False, "os.stat of one path"),
    "find_stat": Metric("entries/s", True, "find -printf (lstat every entry)"),
    "tar": Metric("entries/s", True, "tar cf /dev/null"),
    "seq_write": Metric("MiB/s", True, "sequential write 1M blocks"),
    "seq_read": Metric("MiB/s", True, "sequential read 1M blocks"),
    "rand_read": Metric("IOPS", True, "random 4 KiB reads"),
    "engine_getattr": Metric("µs/op", False, "Engine.getattr (PRE, backing fstat, POST)"),
    "engine_lookup": Metric("µs/op", False, "Engine.lookup + forget"),
}


STEP_TIMEOUT = 300  # seconds: a hung daemon fails that cell instead of the whole run


def drop_caches() -> bool:
    """Write back and drop the page/dentry/inode caches; False where not allowed."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")
        return True
    except OSError:
        return False


SCRATCH_FS = "scratch-fs"


@contextlib.contextmanager
def scratch_filesystem(backing: Path, wanted: bool) -> Iterator[None]:
    """A new, empty ext4 (loop device, default mkfs options) mounted at
    backing/SCRATCH_FS for one run, so no run inherits another's deleted
    inodes; without root or mkfs the workload uses the backing directory."""
    if not wanted:
        yield
        return
    image = backing.parent / f"{backing.name}-scratch.img"
    where = backing / SCRATCH_FS
    mounted = False
    try:
        with open(image, "wb") as fh:
            fh.truncate(512 << 20)
        where.mkdir(exist_ok=True)
        mounted = (subprocess.run(["mkfs.ext4", "-q", "-F", str(image)],
                                  capture_output=True).returncode == 0
                   and subprocess.run(["mount", "-o", "loop", str(image), str(where)],
                                      capture_output=True).returncode == 0)
        if not mounted:
            where.rmdir()
        yield
    finally:
        if mounted:
            subprocess.run(["umount", str(where)], capture_output=True)
            where.rmdir()
        image.unlink(missing_ok=True)


def _scratch(view: Path, prefix: str) -> Path:
    path = view / f"{prefix}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


# ------------------------------------------------------------------ metadata

def run_metadata(view: Path, sizes: Sizes) -> dict[str, float]:
    """Create, stat and unlink N empty files in one directory: per-phase ops/s.

    Runs on a filesystem of its own made for this one run (`scratch_filesystem`)
    where possible: on ext4 without a journal (a common root fs) inode
    allocation skips and rechecks every inode deleted in the last minute, so
    in a shared backing directory each target paid for the previous target's
    10,000 unlinks (native creates measured 4,000/s first, 600/s after three
    earlier runs)."""
    d = _scratch(view / SCRATCH_FS if (view / SCRATCH_FS).is_dir() else view, "meta")
    names = [str(d / f"f{i:06d}") for i in range(sizes.meta_files)]
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
    out: dict[str, float] = {}
    try:
        t0 = time.perf_counter()
        for p in names:
            os.close(os.open(p, flags, 0o644))
        t1 = time.perf_counter()
        for p in names:
            os.stat(p)
        t2 = time.perf_counter()
        for p in names:
            os.unlink(p)
        t3 = time.perf_counter()
        n = len(names)
        out = {"create": n / (t1 - t0), "stat": n / (t2 - t1), "unlink": n / (t3 - t2)}
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return out


# ------------------------------------------------------------------ round trip

ROUNDTRIP_FILE = "roundtrip-target"


def prepare_roundtrip(backing: Path, sizes: Sizes) -> None:
    (backing / ROUNDTRIP_FILE).write_bytes(b"x" * 4096)


def _per_call_us(fn: Callable[[], object], seconds: float) -> float:
    """Mean µs per call over batches until `seconds` have passed (after a warm-up)."""
    for _ in range(50):
        fn()
    calls = 0
    batch = 200
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while True:
        for _ in range(batch):
            fn()
        calls += batch
        now = time.perf_counter()
        if now >= deadline:
            return (now - t0) / calls * 1e6


def run_roundtrip(view: Path, sizes: Sizes) -> dict[str, float]:
    """One trip through the daemon per call: meant to be mounted with zero cache timeouts."""
    path = str(view / ROUNDTRIP_FILE)
    fd = os.open(path, os.O_RDONLY)
    try:
        fstat_us = _per_call_us(lambda: os.fstat(fd), sizes.roundtrip_seconds)
    finally:
        os.close(fd)
    stat_us = _per_call_us(lambda: os.stat(path), sizes.roundtrip_seconds)
    return {"fstat": fstat_us, "stat_path": stat_us}


# ------------------------------------------------------------------ tree walk

TREE = "tree"


def prepare_tree(backing: Path, sizes: Sizes) -> None:
    """Build the tree natively, then walk it once so the backing caches are warm."""
    payload = b"t" * sizes.tree_file_bytes
    root = backing / TREE
    if root.exists():
        shutil.rmtree(root)
    for d in range(sizes.tree_dirs):
        sub = root / f"d{d:03d}" / "sub"
        sub.mkdir(parents=True)
        for f in range(sizes.tree_files_per_dir):
            # every 25th name is one the realistic policy hides
            name = f"f{f:04d}.txt" if f % 25 else f"secret.f{f:04d}"
            (sub / name).write_bytes(payload)
    subprocess.run(["find", str(root), "-printf", "%s\n"], stdout=subprocess.DEVNULL, check=True)


def tree_entries(sizes: Sizes) -> int:
    """Entries in the tree as seen natively (files + directories + the root)."""
    return sizes.tree_dirs * (sizes.tree_files_per_dir + 2) + 1


def run_find(view: Path, sizes: Sizes) -> dict[str, float]:
    """find + lstat of every entry (find -printf needs the stat of each)."""
    t0 = time.perf_counter()
    subprocess.run(["find", str(view / TREE), "-printf", "%s %m %u %g %T@\n"],
                   stdout=subprocess.DEVNULL, check=True, timeout=STEP_TIMEOUT)
    return {"find_stat": tree_entries(sizes) / (time.perf_counter() - t0)}


def run_tar(view: Path, sizes: Sizes) -> dict[str, float]:
    """tar of the whole tree to /dev/null.

    GNU tar notices that its archive is /dev/null and then does not read file
    contents, so this measures directory reading and lstat of every entry (a
    metadata walk, as the brief asks), not data throughput.
    """
    t0 = time.perf_counter()
    subprocess.run(["tar", "cf", "/dev/null", "-C", str(view / TREE), "."],
                   stdout=subprocess.DEVNULL, check=True, timeout=STEP_TIMEOUT)
    return {"tar": tree_entries(sizes) / (time.perf_counter() - t0)}


# ------------------------------------------------------------------ data (fio)

DATA_FILE = "fio-read-target"


def prepare_data(backing: Path, sizes: Sizes) -> None:
    """The read target, written natively once (same bytes for every target)."""
    path = backing / DATA_FILE
    if path.exists() and path.stat().st_size == sizes.data_bytes:
        return
    chunk = os.urandom(1 << 20)
    with open(path, "wb") as fh:
        for _ in range(sizes.data_bytes // len(chunk)):
            fh.write(chunk)
    os.sync()


def _fio(args: list[str]) -> dict:
    out = subprocess.run(["fio", "--output-format=json", "--ioengine=psync", "--fallocate=none",
                          "--invalidate=1", "--numjobs=1", "--group_reporting"] + args,
                         capture_output=True, text=True, timeout=STEP_TIMEOUT)
    if out.returncode != 0:
        raise RuntimeError(f"fio failed: {out.stderr.strip()[-500:]}")
    text = out.stdout
    return json.loads(text[text.index("{"):])["jobs"][0]


DATA_JOB_REPEATS = 3   # each fio job this many times per mount: the median goes in


def _seq_write(view: Path, size: str) -> float:
    wfile = view / f"fio-write-{uuid.uuid4().hex[:8]}"
    try:
        drop_caches()
        w = _fio(["--name=seqwrite", f"--filename={wfile}", "--rw=write", "--bs=1M",
                  f"--size={size}"])
        return float(w["write"]["bw_bytes"]) / (1 << 20)
    finally:
        try:
            os.unlink(wfile)
        except FileNotFoundError:
            pass


def run_data(view: Path, sizes: Sizes) -> dict[str, float]:
    """fio: sequential write and read of `data_bytes`, then time-bound random 4 KiB reads.

    Caches are dropped before every job (when allowed), so reads come from the
    backing device through the FUSE layer, not from memory.  Writes go to the
    page cache (no fsync), whose speed swings several-fold from run to run on
    a VM (the same 1 GiB native write measured 300 to 5,000 MiB/s back to
    back, with the system time to match: fresh guest pages), so each job runs
    DATA_JOB_REPEATS times on the mount and the median counts.
    """
    size = f"{sizes.data_bytes}"
    rfile = view / DATA_FILE
    writes, reads, rands = [], [], []
    for _ in range(DATA_JOB_REPEATS):
        writes.append(_seq_write(view, size))
        drop_caches()
        r = _fio(["--name=seqread", f"--filename={rfile}", "--rw=read", "--bs=1M",
                  f"--size={size}"])
        reads.append(float(r["read"]["bw_bytes"]) / (1 << 20))
        drop_caches()
        rr = _fio(["--name=randread", f"--filename={rfile}", "--rw=randread", "--bs=4k",
                   f"--size={size}", f"--runtime={sizes.rand_seconds:g}", "--time_based",
                   "--randrepeat=1"])
        rands.append(float(rr["read"]["iops"]))
    return {"seq_write": statistics.median(writes), "seq_read": statistics.median(reads),
            "rand_read": statistics.median(rands)}


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    metrics: tuple[str, ...]
    run: Callable[[Path, Sizes], dict[str, float]]
    prepare: Callable[[Path, Sizes], None] | None = None
    # metric groups each measured on a fresh mount (cold FUSE caches), instead of `run`
    phases: tuple[Callable[[Path, Sizes], dict[str, float]], ...] = ()
    zero_timeouts: bool = False  # mount with every cache lifetime 0 (one trip per call)
    scratch_fs: bool = False     # each run on a fresh filesystem (scratch_filesystem)
    description: str = ""


WORKLOADS: dict[str, Workload] = {w.name: w for w in (
    Workload("metadata", "Metadata: create, stat, unlink N empty files",
             ("create", "stat", "unlink"), run_metadata, scratch_fs=True,
             description="One directory; Python loop of os.open(O_CREAT|O_EXCL)+close, "
                         "os.stat, os.unlink; ops/s per phase.  Each run on a new ext4 "
                         "(loop device) mounted inside the backing directory."),
    Workload("roundtrip", "Request round trip (caches off)", ("fstat", "stat_path"),
             run_roundtrip, prepare_roundtrip, zero_timeouts=True,
             description="Mounted with entry/attr/negative timeouts 0, so every call is at "
                         "least one trip through the daemon (stat of a path: LOOKUP + "
                         "GETATTR)."),
    Workload("tree", "Tree walk", ("find_stat", "tar"), lambda view, sizes: {}, prepare_tree,
             phases=(run_find, run_tar),
             description="One tree (dirs × sub × small files); find and tar each run on a "
                         "fresh mount, so each starts with cold FUSE caches (backing caches "
                         "warm).  Rates count the entries of the tree as seen natively."),
    Workload("data", "Data (fio, psync)", ("seq_write", "seq_read", "rand_read"), run_data,
             prepare_data,
             description="fio psync, 1 job; caches dropped before each job where allowed."),
)}

# Not a filesystem workload: measured in-process for the fdsl targets only.
ENGINE = Workload(
    "engine", "Filter cost inside the daemon (runtime Engine, no FUSE)",
    ("engine_getattr", "engine_lookup"), lambda view, sizes: {},
    description="The daemon's own request path (`fdsl.runtime.engine.Engine` with the "
                "policy loaded as `fdsl mount` loads it: PRE program, backing step, POST "
                "program, argument marshalling, credential scope) called in a loop from "
                "Python, as root, without the kernel and the pyfuse3/trio transport.  "
                "(policy − no policy) is the filter cost per operation.")


# ------------------------------------------------------------------ in-daemon filter cost

ENGINE_FILE = "engine-target.txt"


def daemon_op_costs(backing: Path, policy: Path | None, backend: str,
                    seconds: float) -> dict[str, float]:
    """µs per getattr and per lookup+forget through the daemon's Engine, without FUSE.

    The same code a request runs inside `fdsl mount` (`Engine.dispatch`: PRE
    program, backing step, POST program, argument frames, credential scope), minus the
    kernel and the pyfuse3/trio transport, so (policy - no policy) is the
    filter cost per operation without the transport's noise.  Imports
    runtime/, so the runner calls it only when `fdsl mount` works.
    """
    from fdsl.runtime import requests as R
    from fdsl.runtime.engine import Engine, EngineOptions
    from fdsl.runtime.identity import Caller
    from fdsl.runtime.policy import load_policy

    (backing / ENGINE_FILE).write_bytes(b"e" * 100)
    obj = None
    if policy is not None:
        from fdsl.compile.driver import compile_file
        obj = compile_file(str(policy)).obj
    engine = Engine(str(backing), load_policy(obj, backend, str(backing), None),
                    EngineOptions(0.0, 0.0, True))
    caller = Caller(uid=0, gid=0, pid=os.getpid(), umask=0o022, groups=())  # as the workloads
    root = engine.root.nodeid
    name = ENGINE_FILE.encode()
    nodeid = engine.dispatch(R.Lookup(caller, root, name)).nodeid
    stat_request, lookup_request = R.Getattr(caller, nodeid), R.Lookup(caller, root, name)

    def lookup_forget() -> None:
        engine.forget(engine.dispatch(lookup_request).nodeid, 1)

    try:
        return {"engine_getattr": _per_call_us(lambda: engine.dispatch(stat_request), seconds),
                "engine_lookup": _per_call_us(lookup_forget, seconds)}
    finally:
        from fdsl.runtime.identity import reset_thread_credentials
        reset_thread_credentials()
