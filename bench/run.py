"""The one benchmark command: fdsl against native, bindfs and a plain pyfuse3 passthrough.

    .venv/bin/python -m bench.run [--quick] [--workloads metadata,roundtrip,tree,data]
                                  [--targets native,bindfs,...] [--reps N] [--out FILE]

Every target sees the same backing directory (a temp dir on the same
filesystem); each (workload, repetition, target) gets a fresh mount, so FUSE
caches start cold and nothing leaks between targets; repetitions rotate the
target order so slow drift does not favour one column.  Results: one markdown
table per workload (median, min-max, speed relative to native and to bindfs),
the compiler and engine tables from bench/compile_bench.py and
bench/engine_bench.py, the clang comparison, and the targets with met/missed,
written to bench/results/latest.md and printed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import workloads as wl  # noqa: E402
from bench.mounts import (REPO, ZERO, MountContext, MountError, Target, Timeouts,  # noqa: E402
                          fdsl_backend_option, fdsl_command, fdsl_default_timeouts,
                          fdsl_mount_help, mounted)

BENCH = REPO / "bench"
RESULTS = BENCH / "results"
POLICIES = BENCH / "policies"

# Used for bindfs and the pyfuse3 baseline when the fdsl daemon's own defaults
# cannot be read from runtime/ (libfuse's high-level defaults are 1 s too).
FALLBACK_TIMEOUTS = Timeouts(1.0, 1.0, 0.0)

# Honest targets (issue: "Benchmarks: fdsl against native and against what users pick instead").
TARGET_FILTER_US = 5.0
TARGET_COMPILE_200_S = 1.0
TARGET_JIT_SPEEDUP = 10.0


@dataclass
class Cell:
    values: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None


@dataclass
class Env:
    """What this run found out about the machine and about fdsl."""

    timeouts: Timeouts
    timeouts_source: str
    drop_caches: bool
    fdsl_status: str
    backend_note: str
    ctx: MountContext
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ setup

def fdsl_check(policy: Path) -> str | None:
    """None when `fdsl check` accepts the policy, else the reason."""
    out = subprocess.run(fdsl_command() + ["check", str(policy)], capture_output=True,
                         text=True, cwd=REPO, timeout=120)
    if out.returncode == 0:
        return None
    msg = (out.stderr or out.stdout).strip().splitlines()
    return "fdsl check failed: " + (_short(msg[-1], 100) if msg else f"exit {out.returncode}")


def discover(quick: bool) -> tuple[list[Target], Env]:
    """Build the target list and learn how to drive the fdsl daemon (or why we cannot)."""
    ctx = MountContext()
    notes: list[str] = []
    timeouts, source = fdsl_default_timeouts()
    if timeouts is None:
        notes.append(f"fdsl daemon default cache timeouts: {source}; using libfuse's "
                     f"defaults ({FALLBACK_TIMEOUTS.label()}) for every FUSE target")
        timeouts, source = FALLBACK_TIMEOUTS, "fallback (libfuse high-level defaults)"
    help_text = fdsl_mount_help()
    empty, realistic = POLICIES / "empty.fdsl", POLICIES / "realistic.fdsl"
    targets = [Target("native", "native"), Target("bindfs", "bindfs"),
               Target("pyfuse3", "pyfuse3"),
               Target("fdsl passthrough", "fdsl", None, "jit"),
               Target("fdsl empty", "fdsl", empty, "jit"),
               Target("fdsl realistic jit", "fdsl", realistic, "jit"),
               Target("fdsl realistic interp", "fdsl", realistic, "interp"),
               Target("fdsl pyfuse3 transport", "fdsl", None, "jit",
                      options=("transport=pyfuse3",)),
               Target("fdsl no kernel passthrough", "fdsl", None, "jit",
                      options=("passthrough=0",)),
               # bindfs and pyfuse3 run without default_permissions; with it the
               # kernel refreshes a directory's attributes (one GETATTR) before
               # the next permission check after every create or unlink in it
               Target("fdsl no default_permissions", "fdsl", None, "jit",
                      options=("default_permissions=0",))]
    if shutil.which("bindfs") is None:
        targets[1].unavailable = "bindfs not installed"
    if help_text is None:
        status = "`fdsl mount` not available (subcommand missing or failing)"
        backend_note = "n/a: `fdsl mount` not available"
        for t in targets[3:]:
            t.unavailable = "fdsl mount unavailable"
    else:
        status = "`fdsl mount` available"
        ctx.backend_flag = fdsl_backend_option(help_text)
        ctx.fdsl_timeout_opts = "entry_timeout" in help_text
        if not ctx.fdsl_timeout_opts:
            notes.append("`fdsl mount --help` does not mention entry_timeout: the round-trip "
                         "workload cannot turn fdsl's caches off; fdsl runs with its defaults")
        if ctx.backend_flag:
            sep = "" if ctx.backend_flag.endswith("=") else " "
            backend_note = f"selected with `fdsl mount {ctx.backend_flag}{sep}jit|interp`"
        else:
            backend_note = ("`fdsl mount --help` shows no way to choose the interpreter or "
                            "the JIT: the daemon cannot select the backend")
            targets[6].unavailable = "daemon cannot select the backend"
        for t in targets[4:]:
            if t.unavailable is None and t.policy is not None:
                t.unavailable = fdsl_check(t.policy)
    env = Env(timeouts, source, drop_caches=wl.drop_caches(), fdsl_status=status,
              backend_note=backend_note, ctx=ctx, notes=notes)
    return targets, env


# ------------------------------------------------------------------ running

def run_workloads(targets: list[Target], names: list[str], sizes: wl.Sizes, reps: int,
                  env: Env, backing_parent: Path | None) -> dict[str, dict[str, dict[str, Cell]]]:
    """results[workload][metric][target name] = Cell."""
    results: dict[str, dict[str, dict[str, Cell]]] = {}
    backing = Path(tempfile.mkdtemp(prefix="fdsl-bench-backing-", dir=backing_parent))
    live = [t for t in targets if t.unavailable is None]
    try:
        for name in names:
            w = wl.WORKLOADS[name]
            cells = {m: {t.name: Cell() for t in targets} for m in w.metrics}
            results[name] = cells
            if w.prepare:
                w.prepare(backing, sizes)
            timeouts = ZERO if w.zero_timeouts else env.timeouts
            for rep in range(reps):
                order = live[rep % len(live):] + live[:rep % len(live)] if live else []
                for t in order:
                    if any(cells[m][t.name].error for m in w.metrics):
                        continue
                    t0 = time.monotonic()
                    try:
                        values = {}
                        for phase in w.phases or (w.run,):
                            with wl.scratch_filesystem(backing, w.scratch_fs), \
                                    mounted(t, backing, timeouts, env.ctx) as view:
                                values.update(phase(view, sizes))
                        for m in w.metrics:
                            cells[m][t.name].values.append(values[m])
                        status = " ".join(f"{m}={values[m]:.4g}" for m in w.metrics)
                    except (MountError, OSError, RuntimeError, subprocess.SubprocessError) as err:
                        status = f"ERROR {err}"
                        for m in w.metrics:
                            cells[m][t.name].error = _short(str(err))
                    print(f"  {name} rep {rep + 1}/{reps} {t.name:<22} "
                          f"{time.monotonic() - t0:5.1f}s  {status}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(backing, ignore_errors=True)
    return results


def run_engine_costs(targets: list[Target], sizes: wl.Sizes, reps: int,
                     backing_parent: Path | None) -> dict[str, dict[str, Cell]]:
    """results[metric][target] for the in-process Engine measurement (fdsl targets only)."""
    w = wl.ENGINE
    cells = {m: {t.name: Cell() for t in targets} for m in w.metrics}
    seconds = 0.2 if sizes.meta_files < 10_000 else 0.7
    backing = Path(tempfile.mkdtemp(prefix="fdsl-bench-engine-", dir=backing_parent))
    try:
        for rep in range(reps):
            for t in targets:
                if t.kind != "fdsl" or t.unavailable:
                    continue
                try:
                    values = wl.daemon_op_costs(backing, t.policy, t.backend or "jit", seconds)
                    for m in w.metrics:
                        cells[m][t.name].values.append(values[m])
                    status = " ".join(f"{m}={values[m]:.4g}" for m in w.metrics)
                except Exception as err:  # noqa: BLE001  (runtime/ is someone else's, in flux)
                    status = f"ERROR {type(err).__name__}: {err}"
                    for m in w.metrics:
                        cells[m][t.name].error = _short(status)
                print(f"  engine rep {rep + 1}/{reps} {t.name:<22} {status}", file=sys.stderr,
                      flush=True)
    finally:
        shutil.rmtree(backing, ignore_errors=True)
    return cells


def engine_table(cells: dict[str, dict[str, Cell]], targets: list[Target]) -> str:
    """µs per operation in the daemon, and the increment over no policy (the filter cost)."""
    w = wl.ENGINE
    lines = [f"### {w.title}", "", w.description, "",
             "| operation | target | median µs | min–max | filter cost (vs fdsl passthrough) |",
             "|---|---|---:|---:|---:|"]
    for m in w.metrics:
        base = cells[m].get("fdsl passthrough", Cell()).median
        for t in targets:
            if t.kind != "fdsl":
                continue
            c = cells[m][t.name]
            if t.unavailable or c.error or not c.values:
                lines.append(f"| {wl.METRICS[m].label} | {t.name} | "
                             f"n/a ({t.unavailable or c.error or 'not run'}) | | |")
                continue
            extra = "—" if t.name == "fdsl passthrough" or base is None else f"+{c.median - base:.1f} µs"
            lines.append(f"| {wl.METRICS[m].label} | {t.name} | {fmt(c.median)} | "
                         f"{fmt(min(c.values))}–{fmt(max(c.values))} | {extra} |")
    return "\n".join(lines)


def _short(text: str, n: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


# ------------------------------------------------------------------ formatting

def fmt(v: float | None) -> str:
    if v is None:
        return "n/a"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def speed_ratio(metric: str, value: float | None, ref: float | None) -> float | None:
    """How fast `value` is relative to `ref` (>1 faster), whatever the metric's direction."""
    if value is None or ref is None or value == 0 or ref == 0:
        return None
    return value / ref if wl.METRICS[metric].higher_is_better else ref / value


def workload_table(w: wl.Workload, cells: dict[str, dict[str, Cell]],
                   targets: list[Target]) -> str:
    lines = [f"### {w.title}", "", w.description, "",
             "| metric | target | median | min–max | vs native | vs bindfs | vs pyfuse3 |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for m in w.metrics:
        meta = wl.METRICS[m]
        row = cells[m]
        refs = {k: row[k].median if k in row else None for k in ("native", "bindfs", "pyfuse3")}
        for t in targets:
            c = row[t.name]
            label = f"{meta.label} ({meta.unit})"
            if t.unavailable or c.error or not c.values:
                reason = t.unavailable or c.error or "not run"
                lines.append(f"| {label} | {t.name} | n/a ({reason}) | | | | |")
                continue
            ratios = []
            for k in ("native", "bindfs", "pyfuse3"):
                r = speed_ratio(m, c.median, refs[k])
                ratios.append(f"{r:.2f}x" if r is not None else "n/a")
            lines.append(f"| {label} | {t.name} | {fmt(c.median)} | "
                         f"{fmt(min(c.values))}–{fmt(max(c.values))} | " + " | ".join(ratios) + " |")
    lines.append("")
    lines.append("Ratios are speeds: >1.00x is faster than the reference column, <1.00x slower "
                 "(for µs/op the inverse of the time ratio).")
    return "\n".join(lines)


def machine_section(env: Env, sizes: wl.Sizes, reps: int, quick: bool) -> str:
    mem_kib = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    cpu = "unknown"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    lines = [
        f"- date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}, {cpu}), "
        f"{mem_kib / 1024 / 1024:.1f} GiB memory, kernel {platform.release()}, "
        f"Python {platform.python_version()}",
        f"- mode: {'QUICK (tiny sizes, smoke test only)' if quick else 'full'}; "
        f"{reps} repetition(s) per target, median and min–max reported",
        f"- sizes: {sizes}",
        f"- cache timeouts for every FUSE target: {env.timeouts.label()} "
        f"(source: {env.timeouts_source}); round-trip workload: all 0",
        f"- drop_caches before each fio job: {'yes' if env.drop_caches else 'not allowed here'}",
        f"- fdsl: {env.fdsl_status}; interpreter vs JIT: {env.backend_note}",
        f"- bindfs: {_version(['bindfs', '--version'])}, single-threaded default; fio: "
        f"{_version(['fio', '--version'])}",
    ]
    lines += [f"- note: {n}" for n in env.notes]
    return "\n".join(lines)


def _version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[0]
    except (OSError, IndexError):
        return "not installed"


# ------------------------------------------------------------------ other benches

def run_sub_bench(module: str, quick: bool, timeout: float) -> tuple[str, str | None]:
    """Run bench/<module>.py (owned by another engineer) and return (markdown, error)."""
    path = BENCH / f"{module}.py"
    if not path.exists():
        return "", f"bench/{module}.py does not exist yet"
    cmd = [sys.executable, "-m", f"bench.{module}"]
    if quick:  # use whatever small-size switch the script offers
        try:
            help_text = subprocess.run(cmd + ["--help"], capture_output=True, text=True,
                                       cwd=REPO, timeout=60).stdout
        except subprocess.TimeoutExpired:
            help_text = ""
        if "--quick" in help_text:
            cmd.append("--quick")
        elif "--repeat" in help_text:
            cmd += ["--repeat", "1"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "", f"`{' '.join(cmd[1:])}` did not finish within {timeout:g}s"
    if out.returncode != 0:
        return out.stdout, f"`{' '.join(cmd[1:])}` exited {out.returncode}: " \
                           f"{_short(out.stderr.strip()[-600:], 600)}"
    return out.stdout.strip(), None


# ------------------------------------------------------------------ targets

def _median(results: dict, workload: str, metric: str, target: str) -> float | None:
    try:
        return results[workload][metric][target].median
    except KeyError:
        return None


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**missed**")


def md_tables(md: str) -> list[list[dict[str, str]]]:
    """Every markdown table in `md` as a list of {header: cell} rows (for sub-bench output)."""
    tables, rows, header = [], [], None
    for line in md.splitlines() + [""]:
        line = line.strip()
        if line.startswith("|") and line.endswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if header is None:
                header = cells
            elif all(set(c) <= set(":- ") for c in cells):
                continue
            else:
                rows.append(dict(zip(header, cells)))
        else:
            if header is not None and rows:
                tables.append(rows)
            header, rows = None, []
    return tables


def _number(cell: str) -> float | None:
    m = re.search(r"[-+]?\d[\d,]*\.?\d*(?:e[-+]?\d+)?", cell or "")
    return float(m.group(0).replace(",", "")) if m else None


def _from_sub(sub: dict[str, tuple[str, str | None]], module: str, row_pat: str,
              col_pat: str) -> tuple[float | None, str]:
    """First number in a sub-bench table cell: row's first cell matches row_pat, header col_pat."""
    text, err = sub.get(module, ("", "not run"))
    for table in md_tables(text):
        for row in table:
            first = next(iter(row.values()), "")
            if re.search(row_pat, first, re.I):
                for col, val in row.items():
                    if re.search(col_pat, col, re.I) and _number(val) is not None:
                        return _number(val), f"{col} = {val}"
    return None, err or f"no row matching /{row_pat}/ with a /{col_pat}/ column in its tables"


def targets_report(results: dict, targets: list[Target],
                   sub: dict[str, tuple[str, str | None]]) -> str:
    """The issue's targets, met or missed, with the measured numbers behind each verdict."""
    fdsl = [t.name for t in targets if t.kind == "fdsl"]
    lines = ["| target | configuration | measured | verdict |", "|---|---|---|---|"]

    def speed_rows(workload: str, ref: str, goal: float, tolerance: float = 0.0) -> None:
        w = wl.WORKLOADS[workload]
        for name in fdsl:
            parts, oks = [], []
            for m in w.metrics:
                r = speed_ratio(m, _median(results, workload, m, name),
                                _median(results, workload, m, ref))
                parts.append(f"{m} {r:.2f}x" if r is not None else f"{m} n/a")
                oks.append(None if r is None else r >= goal * (1 - tolerance))
            ok = None if None in oks else all(oks)
            lines.append(f"| {w.name} >= {goal:.1f}x {ref} | {name} | {', '.join(parts)} | "
                         f"{_verdict(ok)} |")

    if "metadata" in results:
        speed_rows("metadata", "bindfs", 1.0)
    if "tree" in results:
        speed_rows("tree", "bindfs", 1.0)
    if "roundtrip" in results:
        speed_rows("roundtrip", "pyfuse3", 1.0, tolerance=0.05)
    if "roundtrip" in results:
        # the same through FUSE: fstat (one GETATTR) with the policy minus without
        base = _median(results, "roundtrip", "fstat", "fdsl passthrough")
        for name in fdsl:
            v = _median(results, "roundtrip", "fstat", name)
            if name == "fdsl passthrough" or v is None or base is None:
                continue
            extra = v - base
            lines.append(f"| filter cost <= {TARGET_FILTER_US:g} µs/op (through FUSE) | {name}, "
                         f"fstat | {v:.1f} µs vs {base:.1f} µs with no policy: +{extra:.1f} µs | "
                         f"{_verdict(extra <= TARGET_FILTER_US)} |")
    if "engine" in results:
        # filter cost in the daemon: Engine µs per op with the policy minus without
        eng = results["engine"]
        for m in wl.ENGINE.metrics:
            base = eng[m].get("fdsl passthrough", Cell()).median
            for name in fdsl:
                v = eng[m].get(name, Cell()).median
                if name == "fdsl passthrough":
                    continue
                if v is None or base is None:
                    lines.append(f"| filter cost <= {TARGET_FILTER_US:g} µs/op (in the daemon) | "
                                 f"{name}, {m} | n/a | n/a |")
                    continue
                extra = v - base
                lines.append(f"| filter cost <= {TARGET_FILTER_US:g} µs/op (in the daemon) | "
                             f"{name}, {m} | {v:.1f} µs vs {base:.1f} µs with no policy: "
                             f"+{extra:.1f} µs | {_verdict(extra <= TARGET_FILTER_US)} |")
            jit = eng[m].get("fdsl realistic jit", Cell()).median
            interp = eng[m].get("fdsl realistic interp", Cell()).median
            if None not in (jit, interp, base):
                dj, di = jit - base, interp - base
                speedup = di / dj if dj > 0 else float("inf")
                lines.append(f"| JIT >= {TARGET_JIT_SPEEDUP:g}x interpreter (in the daemon) | "
                             f"realistic, {m} | filter share: interp +{di:.1f} µs, jit "
                             f"+{dj:.1f} µs: {speedup:.1f}x | "
                             f"{_verdict(speedup >= TARGET_JIT_SPEEDUP)} |")

    value, where = _from_sub(sub, "engine_bench", r"JIT, per call incl.*FilterSet", r"value")
    if value is None:
        value, where = _from_sub(sub, "engine_bench", r"JIT.*per call incl", r"value")
    if value is not None:
        unit_us = value / 1000 if re.search(r"\bns\b", where) else value
        ok = unit_us <= TARGET_FILTER_US
    lines.append(f"| filter cost <= {TARGET_FILTER_US:g} µs/op (engine_bench: one JIT call incl. "
                 f"context setup) | engine_bench | {where if value is not None else 'n/a (' + where + ')'} | "
                 f"{_verdict(None if value is None else ok)} |")
    for row, label in ((r"speed-?up JIT vs interp.*incl", "incl. context setup"),
                       (r"speed-?up JIT vs interp.*exec", "execution only")):
        value, where = _from_sub(sub, "engine_bench", row, r"value")
        lines.append(f"| JIT >= {TARGET_JIT_SPEEDUP:g}x interpreter (engine_bench, {label}) | "
                     f"engine_bench | {where if value is not None else 'n/a (' + where + ')'} | "
                     f"{_verdict(None if value is None else value >= TARGET_JIT_SPEEDUP)} |")
    value, where = _from_sub(sub, "compile_bench", r"200", r"compile|time|ms|\bs\b")
    if value is not None:
        seconds = value / 1000 if re.search(r"ms", where) else value
        ok: bool | None = seconds <= TARGET_COMPILE_200_S
    else:
        ok = None
    lines.append(f"| 200-rule compile <= {TARGET_COMPILE_200_S:g} s | compile_bench | "
                 f"{where if value is not None else 'n/a (' + where + ')'} | {_verdict(ok)} |")
    lines.append("")
    lines.append("Round trip is 'no worse' within 5% of the pyfuse3 median.  Filter cost in the "
                 "daemon = µs per operation through the runtime Engine (in-process loop, warm "
                 "caches) with the policy minus without one (PRE + POST programs, argument "
                 "marshalling, context setup); through FUSE = the same difference per fstat in "
                 "the round-trip workload (the real cost per request, cold CPU caches "
                 "included, but noisier).")
    return "\n".join(lines)


# ------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, 1 repetition: a smoke test, not a measurement")
    parser.add_argument("--workloads", default=",".join(wl.WORKLOADS),
                        help="comma-separated subset of: " + ", ".join(wl.WORKLOADS))
    parser.add_argument("--targets", default="",
                        help="comma-separated subset of target names (default: all)")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 3, quick 1)")
    parser.add_argument("--no-sub", action="store_true",
                        help="skip compile_bench, engine_bench and the clang comparison")
    parser.add_argument("--no-engine", action="store_true",
                        help="skip the in-process measurement of the daemon's Engine")
    parser.add_argument("--backing-dir", type=Path, default=None,
                        help="create the backing temp dir here (default: the system temp dir)")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.md")
    args = parser.parse_args(argv)

    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        print("bench.run: needs root and /dev/fuse (it mounts FUSE filesystems)", file=sys.stderr)
        return 2
    names = [n for n in args.workloads.split(",") if n]
    unknown = [n for n in names if n not in wl.WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(unknown)}")
    sizes = wl.Sizes.quick() if args.quick else wl.Sizes.full()
    reps = args.reps or (1 if args.quick else 3)

    started = time.monotonic()
    targets, env = discover(args.quick)
    if args.targets:
        wanted = {s.strip() for s in args.targets.split(",")}
        targets = [t for t in targets if t.name in wanted]
    for t in targets:
        print(f"bench: target {t.name:<22} {'n/a: ' + t.unavailable if t.unavailable else 'ok'}",
              file=sys.stderr)

    results = run_workloads(targets, names, sizes, reps, env, args.backing_dir)
    if not args.no_engine and any(t.kind == "fdsl" and not t.unavailable for t in targets):
        results["engine"] = run_engine_costs(targets, sizes, reps, args.backing_dir)

    sections = ["# fdsl benchmarks", "", machine_section(env, sizes, reps, args.quick), ""]
    sections += ["## Workloads", ""]
    for name in names:
        sections += [workload_table(wl.WORKLOADS[name], results[name], targets), ""]
    if "engine" in results:
        sections += [engine_table(results["engine"], targets), ""]

    sub: dict[str, tuple[str, str | None]] = {}
    if not args.no_sub:
        from bench import clang_compare  # noqa: PLC0415  (pyelftools only when needed)
        for module, title in (("compile_bench", "Compiler"), ("engine_bench", "Filter engine")):
            print(f"bench: running bench/{module}.py", file=sys.stderr, flush=True)
            text, err = run_sub_bench(module, args.quick, timeout=300)
            sub[module] = (text, err)
            sections += [f"## {title} (bench/{module}.py)", ""]
            if text:
                sections += [_demote_headings(text), ""]
            if err:
                sections += [f"n/a ({err})", ""]
        sections += ["## Instruction count: fdsl vs clang -O2 (bench/c/)", "",
                     clang_compare.report(), ""]

    sections += ["## Targets", "", targets_report(results, targets, sub), ""]
    sections.append(f"_Total wall time: {time.monotonic() - started:.0f} s._")
    text = "\n".join(sections) + "\n"
    text = text.replace(str(REPO) + os.sep, "")  # no paths of this machine in results
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(args.out)
    print(text)
    print(f"bench: wrote {os.path.relpath(args.out)}", file=sys.stderr)
    return 0


def _demote_headings(md: str) -> str:
    """Sub-bench output goes under our `##` heading: push its headings down one level."""
    return re.sub(r"^(#{1,5}) ", lambda m: "#" + m.group(1) + " ", md, flags=re.M)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        traceback.print_exc()
        sys.exit(130)
