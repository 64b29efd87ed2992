"""`fdsl mount`, `fdsl umount`, `fdsl stats`: run and inspect the filtering daemon."""
from __future__ import annotations

import argparse
import sys
from typing import Any

MOUNT_EPILOG = """examples:
  fdsl mount examples/hide_secrets.fdsl /srv/data /mnt/view
  fdsl mount -o allow_other,ro policy.bpf.o /srv/data /mnt/view
  fdsl mount '' /srv/data /mnt/view          # no policy: pure passthrough
  fdsl umount /mnt/view                      # or: fusermount3 -u /mnt/view"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "mount", help="mount BACKING at MOUNTPOINT through a policy (.fdsl or .bpf.o)",
        description="Mount a filtered passthrough view of BACKING at MOUNTPOINT. The policy "
        "(a .fdsl source compiled on the fly, or a compiled .bpf.o; an empty file or '' "
        "means pure passthrough) runs on every operation as a fuse-bpf kernel would. "
        "Daemonizes and returns once the mount is ready unless -f is given.",
        epilog=MOUNT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("policy", help="policy file (.fdsl or .bpf.o), or '' for none")
    p.add_argument("backing", help="backing directory")
    p.add_argument("mountpoint", help="where to mount")
    p.add_argument("-f", "--foreground", action="store_true", help="do not daemonize")
    p.add_argument("-d", "--debug", action="store_true", help="FUSE debug output (implies -f)")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPT[,OPT...]",
                   help="FUSE mount options (allow_other, default_permissions, ro, ...) and "
                   "fdsl options: entry_timeout=S, attr_timeout=S, threads=N, "
                   "backend=auto|jit|interp (auto, the default: serve with the interpreter at once "
                   "and switch to the JIT when it has compiled), "
                   "inline=0|1 (default 1: cheap metadata operations run on the daemon's main "
                   "thread and threads=N workers serve data I/O; 0 runs every operation in a "
                   "worker, so a very slow backing fs stalls only its own requests), "
                   "no_identity (run backing ops as the daemon, not as the caller)")
    p.set_defaults(func=cmd_mount)

    u = subparsers.add_parser("umount", help="unmount an fdsl mount (fusermount3 -u)")
    u.add_argument("mountpoint")
    u.add_argument("-z", "--lazy", action="store_true", help="lazy unmount")
    u.set_defaults(func=cmd_umount)

    s = subparsers.add_parser("stats", help="counters (map contents) and recent logs of a mount")
    s.add_argument("mountpoint")
    s.add_argument("--json", action="store_true", help="raw JSON")
    s.set_defaults(func=cmd_stats)


def _parse_options(values: list[str]) -> tuple[list[str], dict[str, str]]:
    """Split -o values into FUSE options and our own key=value settings."""
    ours = {"entry_timeout", "attr_timeout", "threads", "inline", "backend", "no_identity"}
    fuse, mine = [], {}
    for value in values:
        for opt in filter(None, (o.strip() for o in value.split(","))):
            key, _, val = opt.partition("=")
            if key in ours:
                mine[key] = val
            else:
                fuse.append(opt)
    return fuse, mine


def _flag(value: str) -> bool:
    """`inline`, `inline=1`/`yes`/`true` -> True; `0`/`no`/`false` -> False."""
    v = value.strip().lower()
    if v in ("", "1", "yes", "true", "on"):
        return True
    if v in ("0", "no", "false", "off"):
        return False
    raise ValueError(f"not a yes/no value: {value!r}")


def cmd_mount(args: argparse.Namespace) -> int:
    from fdsl.errors import UsageError
    from fdsl.runtime.daemon import MountConfig, mount

    fuse_opts, mine = _parse_options(args.options)
    try:
        cfg = MountConfig(
            backing=args.backing, mountpoint=args.mountpoint, policy=args.policy or None,
            foreground=args.foreground or args.debug, fuse_options=fuse_opts,
            backend=mine.get("backend", "auto"),
            entry_timeout=float(mine.get("entry_timeout", 1.0)),
            attr_timeout=float(mine.get("attr_timeout", 1.0)),
            threads=int(mine.get("threads", 16)),
            inline=_flag(mine.get("inline", "1")),
            debug=args.debug, switch_identity="no_identity" not in mine)
    except ValueError as err:
        raise UsageError(f"bad -o value: {err}") from None
    return mount(cfg)


def cmd_umount(args: argparse.Namespace) -> int:
    from fdsl.runtime.daemon import umount

    return umount(args.mountpoint, lazy=args.lazy)


def cmd_stats(args: argparse.Namespace) -> int:
    import json

    from fdsl.errors import MountError
    from fdsl.runtime import control

    try:
        reply = control.request(args.mountpoint, "stats")
    except PermissionError:
        raise MountError("permission denied: only root or the mount's owner can read its "
                         "stats") from None
    except OSError as err:
        raise MountError(f"no fdsl daemon serves {args.mountpoint} ({err.strerror or err})") from None
    except ValueError as err:
        raise MountError(f"garbled reply from the daemon serving {args.mountpoint}: {err}") from None
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0
    if "error" in reply:
        raise MountError(reply["error"])
    out = sys.stdout
    print(f"mount    {reply['mountpoint']}  (pid {reply['pid']}, up {reply['uptime']} s)", file=out)
    print(f"backing  {reply['backing']}", file=out)
    print(f"policy   {reply['policy'] or '(none: passthrough)'}", file=out)
    print(f"nodes    {reply['nodes']}  open handles {reply['open_handles']}", file=out)
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
    return 0

