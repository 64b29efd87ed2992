"""`fdsl mount`, `fdsl umount`, `fdsl stats`: run and inspect the filtering daemon."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from fdsl.commands import add_abi_option, add_include_option

MOUNT_EPILOG = """examples:
  fdsl mount examples/hide_secrets.fdsl /srv/data /mnt/view
  fdsl mount -o allow_other,ro policy.bpf.o /srv/data /mnt/view
  fdsl mount '' /srv/data /mnt/view          # no policy: pure passthrough
  fdsl umount /mnt/view                      # or: fusermount3 -u /mnt/view"""


def register(subparsers: Any) -> None:
    from fdsl.commands import mount_options

    p = subparsers.add_parser(
        "mount", help="mount BACKING at MOUNTPOINT through a policy (.fdsl or .bpf.o)",
        usage="fdsl mount [-f] [-d] [--abi NAME] [-o OPT[,OPT...]] [POLICY] BACKING MOUNTPOINT",
        description="Mount a filtered passthrough view of BACKING at MOUNTPOINT. The policy "
        "(a .fdsl source compiled on the fly, or a compiled .bpf.o; an empty file or '' "
        "means pure passthrough) runs on every operation as a fuse-bpf kernel would. "
        "It is the first argument or -o policy=FILE (the form mount(8) and fstab use: "
        "'mount -t fuse.fdsl BACKING MOUNTPOINT -o policy=FILE' runs 'fdsl BACKING "
        "MOUNTPOINT -o policy=FILE'). "
        "Daemonizes and returns once the mount is ready unless -f is given. "
        "RFC v1 objects (their metadata, --abi rfc-v1 for clang-built ones, or a .fdsl "
        "policy mounted with --abi rfc-v1) run in "
        "emulation only: no fuse-bpf kernel takes them, so -o mode=kernel refuses them.",
        epilog=mount_options.help_text() + "\n\n" + MOUNT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="[POLICY] BACKING MOUNTPOINT",
                   help="policy file (.fdsl or .bpf.o, '' for none; or -o policy=FILE), "
                   "backing directory, mount point")
    add_include_option(p)
    add_abi_option(p)
    p.add_argument("-f", "--foreground", action="store_true", help="do not daemonize")
    p.add_argument("-d", "--debug", action="store_true", help="FUSE debug output (implies -f)")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPT[,OPT...]",
                   help="mount options, listed below (repeatable)")
    p.set_defaults(func=cmd_mount)

    u = subparsers.add_parser("umount", help="unmount an fdsl mount (fusermount3 -u)",
                              description="Unmount an fdsl mount and wait until its daemon has "
                              "gone.  Refuses mount points that fdsl does not serve.")
    u.add_argument("mountpoint")
    u.add_argument("-z", "--lazy", action="store_true", help="lazy unmount")
    u.set_defaults(func=cmd_umount)

    s = subparsers.add_parser("stats", help="counters (map contents) and recent logs of a mount",
                              description="Show a mount's request counts, map contents, "
                              "recent log lines and where its log file is.")
    s.add_argument("mountpoint")
    s.add_argument("--json", action="store_true", help="raw JSON")
    s.add_argument("--follow", action="store_true",
                   help="after the stats, print new log lines as they are written (like tail -f)")
    s.set_defaults(func=cmd_stats)


def cmd_mount(args: argparse.Namespace) -> int:
    from fdsl.commands import mount_options
    from fdsl.errors import UsageError
    from fdsl.runtime.daemon import MountConfig, mount, startup_gc

    startup_gc()
    parsed = mount_options.parse(args.options)
    settings = parsed.settings
    if len(args.paths) == 3:
        if settings.get("policy") is not None:
            raise UsageError("the policy is given twice (argument and -o policy=)")
        settings["policy"] = args.paths[0]
    elif len(args.paths) != 2:
        raise UsageError(f"mount takes [POLICY] BACKING MOUNTPOINT, got {len(args.paths)} "
                         "arguments")
    backing, mountpoint = args.paths[-2:]
    if settings.get("log") == "journal" and settings.get("log_file"):
        raise UsageError("-o log=journal and -o log_file= exclude each other")
    settings["debug"] = settings["debug"] or args.debug
    cfg = MountConfig(backing=backing, mountpoint=mountpoint,
                      foreground=args.foreground or settings["debug"],
                      fuse_options=parsed.fuse, **settings)
    cfg.policy = cfg.policy or None
    cfg.include_dirs = tuple(args.include_dirs)
    if args.abi is not None:
        if cfg.abi is not None:
            raise UsageError("the ABI is given twice (--abi and -o abi=)")
        cfg.abi = args.abi
    code = mount(cfg)
    if code == 0 and not cfg.foreground and getattr(args, "whole_process", False):
        # The daemon is serving and this launcher has nothing left to say: leave without
        # the interpreter's teardown, which would compete for the CPU with the daemon's
        # own post-ready start (workers, JIT) and delay "ready" for whoever waits on us.
        import os

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return code


def cmd_umount(args: argparse.Namespace) -> int:
    from fdsl.runtime.daemon import umount

    return umount(args.mountpoint, lazy=args.lazy)


def cmd_stats(args: argparse.Namespace) -> int:
    import json
    import shlex

    from fdsl import abi
    from fdsl.errors import MountError
    from fdsl.runtime import control

    try:
        reply = control.request(args.mountpoint, "stats")
    except (FileNotFoundError, ConnectionRefusedError) as err:
        from fdsl.runtime.kernel.stats import daemonless_stats

        kernel = daemonless_stats(args.mountpoint)   # a kernel-mode mount without a daemon
        if kernel is None:
            raise MountError(f"no fdsl daemon serves {args.mountpoint} "
                             f"({err.strerror or err})") from None
        reply = kernel
    except PermissionError:
        raise MountError("permission denied: only root or the mount's owner can read its "
                         "stats") from None
    except OSError as err:
        raise MountError(f"no fdsl daemon serves {args.mountpoint} ({err.strerror or err})") from None
    except ValueError as err:
        raise MountError(f"garbled reply from the daemon serving {args.mountpoint}: {err}") from None
    if args.json:
        print(json.dumps(reply, indent=2), flush=True)
        if args.follow and "error" not in reply:
            _follow(args.mountpoint, reply)
        return 0
    if "error" in reply:
        raise MountError(reply["error"])
    out = sys.stdout
    who = f"pid {reply['pid']}" if reply.get("pid") else "no daemon"
    mode = f", {reply['mode']}" if reply.get("mode") else ""
    print(f"mount    {reply['mountpoint']}  ({who}{mode}, up {reply['uptime']} s)", file=out)
    print(f"backing  {reply['backing']}", file=out)
    abi_note = ""
    if reply.get("abi") not in (None, abi.ACK.id):      # the programs' ABI, when not ACK's
        abi_note = f"  ({reply['abi']}, emulated)"
    print(f"policy   {reply['policy'] or '(none: passthrough)'}{abi_note}", file=out)
    print(f"nodes    {reply['nodes']}  open handles {reply['open_handles']}", file=out)
    programs = reply.get("programs") or {}
    if programs:
        print("programs " + "  ".join(f"{k} ({v})" for k, v in sorted(programs.items())),
              file=out)
    ops = reply.get("ops", {})
    if ops:
        errs = reply.get("errors", {})
        print("requests " + "  ".join(
            f"{k}={v}" + (f"(err {errs[k]})" if k in errs else "") for k, v in sorted(ops.items())),
            file=out)
    for m in reply.get("maps", []):
        print(f"map {m['name']} ({m.get('kind', 'map')}, key {m.get('key', '?')})", file=out)
        entries = m.get("entries", [])
        if not entries:
            print("    (empty)", file=out)
        for key, value in entries:
            print(f"    {key:<24} {value}", file=out)
    logs = reply.get("logs", []) + reply.get("daemon_logs", [])
    if logs:
        print("recent logs:", file=out)
        for line in logs[-30:]:
            print(f"    {line}", file=out)
    journal = reply.get("log") or {}
    if journal.get("to") == "journal":
        dropped = f", {journal['dropped']} dropped" if journal.get("dropped") else ""
        cmd = _journalctl(journal)
        shown = shlex.join(cmd) if cmd else f"socket {journal.get('socket')}"
        print(f"logs     to the journal: {shown}{dropped}", file=out)
    else:
        print(f"log file {reply.get('log_file') or '(none: the daemon runs in the foreground)'}",
              file=out)
    if args.follow:
        _follow(args.mountpoint, reply)
    return 0


def _journalctl(journal: dict[str, Any], follow: bool = False) -> list[str] | None:
    """The journalctl command showing this mount's lines (None: not a journal it reads)."""
    import re

    found = re.fullmatch(r"/run/systemd/journal(?:\.([^/]+))?/socket", journal.get("socket", ""))
    if found is None:
        return None
    namespace = [f"--namespace={found.group(1)}"] if found.group(1) else []
    match = [f"{k}={v}" for k, v in journal.get("match", {}).items()]
    return ["journalctl", *namespace, *(["-f", "-n", "0"] if follow else []), *match]


def _follow(mountpoint: str, reply: dict[str, Any]) -> None:
    """Print the mount's new log lines until it is unmounted (or Ctrl-C)."""
    import os
    from pathlib import Path

    from fdsl.errors import MountError
    from fdsl.runtime import logs, mounttable

    real = os.path.realpath(mountpoint)

    def alive() -> bool:
        entry = mounttable.find(real)
        return entry is not None and entry.is_fdsl

    journal = reply.get("log") or {}
    if journal.get("to") == "journal":
        _follow_journal(journal, alive)
        return
    log_file = reply.get("log_file")
    if not log_file:
        raise MountError("this mount has no log file to follow (it runs in the foreground "
                         "and prints its logs there)")
    print("following; Ctrl-C stops", file=sys.stderr)
    for line in logs.follow(Path(log_file), alive):
        print(line, flush=True)


def _follow_journal(journal: dict[str, Any], alive: Any) -> None:
    """`journalctl -f` on this mount's lines, stopped once the mount has gone."""
    import shutil
    import subprocess
    import time

    from fdsl.errors import MountError

    cmd = _journalctl(journal, follow=True)
    if cmd is None or shutil.which("journalctl") is None:
        raise MountError(f"this mount logs to the journal at {journal.get('socket')}, which "
                         "journalctl cannot follow from here")
    print("following the journal; Ctrl-C stops", file=sys.stderr)
    sys.stdout.flush()
    proc = subprocess.Popen(cmd)
    try:
        while proc.poll() is None and alive():
            time.sleep(0.3)
        time.sleep(0.3)       # the daemon's last lines
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait()

