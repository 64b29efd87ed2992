"""In-process cost of one filesystem operation through the engine (no FUSE).

    .venv/bin/python bench/engine_cost.py [--rounds N] [--batch N]

Prints ONE JSON line: median µs per operation for every (operation, policy)
pair, keys like "getattr/none" or "getattr/realistic-jit", measured side by
side in one run (each round times every policy once, round after round, so a
busy machine slows all of them alike), plus the ratios the targets are about.

Operations (`Engine.dispatch`, as the pyfuse3 and /dev/fuse transports call
it): getattr, lookup+forget, open+release, readdir of a 100-entry directory
(opendir + the whole listing + releasedir), create+unlink.
Policies: none (no object), empty (bench/policies/empty.fdsl), realistic-jit
and realistic-interp (bench/policies/realistic.fdsl on each backend).

Targets (issue 9): realistic-jit minus none <= 3 µs for getattr and lookup;
the JIT >= 5x the interpreter on a whole filtered getattr (compared as the
filter costs: realistic minus none, per backend); no regression for none.
Run as root or not: the caller is this process, so credentials never switch.
Times are CPU time of the measuring thread (`time.thread_time`: user + system,
syscalls included), so a machine shared with other jobs does not inflate them
with time spent waiting for a CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fdsl.compile.driver import compile_file  # noqa: E402
from fdsl.runtime import requests as R  # noqa: E402
from fdsl.runtime.engine import Engine, EngineOptions  # noqa: E402
from fdsl.runtime.identity import reset_thread_credentials  # noqa: E402
from fdsl.runtime.policy import load_policy  # noqa: E402
from fdsl.vm.helpers import Caller  # noqa: E402

POLICIES = {
    "none": (None, "jit"),
    "empty": (ROOT / "bench" / "policies" / "empty.fdsl", "jit"),
    "realistic-jit": (ROOT / "bench" / "policies" / "realistic.fdsl", "jit"),
    "realistic-interp": (ROOT / "bench" / "policies" / "realistic.fdsl", "interp"),
}
OPS = ("getattr", "lookup", "open", "readdir", "create")
CALLER = Caller(uid=os.geteuid(), gid=os.getegid(), pid=os.getpid(), umask=0o022,
                groups=tuple(os.getgroups()))


def make_tree(base: Path) -> Path:
    root = base / "backing"
    (root / "dir100").mkdir(parents=True)
    for i in range(100):
        (root / "dir100" / f"entry{i:03d}").write_bytes(b"")
    (root / "file").write_bytes(b"x" * 100)
    (root / "work").mkdir()
    return root


def operations(engine: Engine) -> dict[str, Callable[[], Any]]:
    """One callable per benchmarked operation, requests built once."""
    d = engine.dispatch
    root = engine.root.nodeid
    file_id = d(R.Lookup(CALLER, root, b"file")).nodeid
    dir_id = d(R.Lookup(CALLER, root, b"dir100")).nodeid
    work_id = d(R.Lookup(CALLER, root, b"work")).nodeid
    stat_req, lookup_req = R.Getattr(CALLER, file_id), R.Lookup(CALLER, root, b"file")
    open_req = R.Open(CALLER, file_id, os.O_RDONLY)
    opendir_req = R.Opendir(CALLER, dir_id)
    create_req = R.Create(CALLER, work_id, b"new", 0o644, os.O_WRONLY, 0o022)
    unlink_req = R.Unlink(CALLER, work_id, b"new")

    def lookup_forget() -> None:
        engine.forget(d(lookup_req).nodeid, 1)

    def open_release() -> None:
        d(R.Release(None, d(open_req).fh))

    def readdir() -> None:
        fh = d(opendir_req).fh
        offset, n = 0, 0
        while True:
            batch = d(R.Readdir(None, fh, offset))
            if not batch:
                break
            for item in batch:
                if item.entry is not None:
                    engine.forget(item.entry.nodeid, 1)
            offset, n = batch[-1].next_offset, n + len(batch)
        d(R.Releasedir(None, fh))
        assert n == 102, n

    def create_unlink() -> None:
        opened = d(create_req)
        d(R.Release(None, opened.fh))
        engine.forget(opened.entry.nodeid, 1)
        d(unlink_req)

    return {"getattr": lambda: d(stat_req), "lookup": lookup_forget, "open": open_release,
            "readdir": readdir, "create": create_unlink}


def per_call_us(fn: Callable[[], Any], batch: int) -> float:
    start = time.thread_time()
    for _ in range(batch):
        fn()
    return (time.thread_time() - start) / batch * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15, help="timed rounds per pair (median)")
    ap.add_argument("--batch", type=int, default=200, help="calls per round (readdir: /20)")
    args = ap.parse_args(argv)
    os.umask(0)
    with tempfile.TemporaryDirectory() as tmp:
        backing = make_tree(Path(tmp))
        engines, ops = {}, {}
        for name, (policy, backend) in POLICIES.items():
            obj = compile_file(str(policy)).obj if policy else None
            engine = Engine(str(backing), load_policy(obj, backend, str(backing)),
                            EngineOptions(0.0, 0.0, True))
            engines[name], ops[name] = engine, operations(engine)
        samples: dict[str, list[float]] = {f"{op}/{p}": [] for op in OPS for p in POLICIES}
        for op in OPS:
            batch = max(1, args.batch // 20) if op == "readdir" else args.batch
            for name in POLICIES:                       # warm-up (JIT code, caches)
                per_call_us(ops[name][op], batch)
            for _ in range(args.rounds):
                for name in POLICIES:
                    samples[f"{op}/{name}"].append(per_call_us(ops[name][op], batch))
        for engine in engines.values():
            engine.close()
    reset_thread_credentials()
    result: dict[str, Any] = {k: round(statistics.median(v), 2) for k, v in samples.items()}
    for op in ("getattr", "lookup"):
        result[f"{op}/realistic-jit-minus-none"] = round(
            result[f"{op}/realistic-jit"] - result[f"{op}/none"], 2)
    jit_cost = result["getattr/realistic-jit"] - result["getattr/none"]
    interp_cost = result["getattr/realistic-interp"] - result["getattr/none"]
    result["getattr/interp-over-jit-filter-cost"] = round(interp_cost / max(jit_cost, 0.01), 1)
    result["getattr/interp-over-jit-whole"] = round(
        result["getattr/realistic-interp"] / result["getattr/realistic-jit"], 2)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
