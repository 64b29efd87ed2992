"""The one table of `-o` mount options: parsing, `--help` text and the man page.

`fdsl mount -o ...`, the mount(8) helper form (`mount -t fuse.fdsl`, fstab
lines) and `man fdsl` all read `OPTIONS`, so a new option is one row here.
Each row is either an fdsl setting (`dest` names the `MountConfig` field it
sets), a FUSE option handed to the kernel mount as written (`dest=None`), or
mount(8)/fstab bookkeeping that mount.fuse3 may pass on and we ignore.
A value that does not parse is a usage error (exit 2) naming the option.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any

from fdsl.errors import UsageError

# What a row's value looks like.
FLAG = "flag"        # `name` alone (no value)
BOOL = "bool"        # `name`, `name=1|yes|true|on`, `name=0|no|false|off`
INT = "int"
FLOAT = "float"
CHOICE = "choice"
TEXT = "text"

# What a row is for.
FDSL = "fdsl"        # sets MountConfig.<dest>
FUSE = "fuse"        # passed to the FUSE mount unchanged
IGNORED = "ignored"  # fstab/mount(8) bookkeeping: accepted, dropped


@dataclass(frozen=True)
class MountOption:
    name: str
    help: str
    kind: str = FLAG
    group: str = FDSL
    dest: str | None = None            # MountConfig field (FDSL rows)
    default: Any = None                # documented default (a test compares with MountConfig)
    flag_value: Any = True             # what a FLAG row stores in `dest`
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    metavar: str = ""

    def synopsis(self) -> str:
        if self.kind in (FLAG,):
            return self.name
        if self.kind == BOOL:
            return f"{self.name}[=0|1]"
        if self.kind == CHOICE:
            return f"{self.name}={'|'.join(self.choices)}"
        return f"{self.name}={self.metavar or self.kind.upper()}"


def _fuse_flags(names: str, help: str) -> list[MountOption]:
    return [MountOption(n, help, FLAG, FUSE) for n in names.split()]


OPTIONS: tuple[MountOption, ...] = (
    # ---- fdsl settings
    MountOption("policy", "the policy (.fdsl or .bpf.o); how mount(8) and fstab name it",
                TEXT, dest="policy", metavar="FILE"),
    MountOption("backend", "run programs with the JIT, the interpreter, or auto (interpreter "
                "at once, JIT once it has compiled)", CHOICE, dest="backend", default="auto",
                choices=("auto", "jit", "interp")),
    MountOption("entry_timeout", "seconds the kernel caches a name lookup", FLOAT,
                dest="entry_timeout", default=1.0, low=0, high=86400, metavar="SECONDS"),
    MountOption("attr_timeout", "seconds the kernel caches attributes", FLOAT,
                dest="attr_timeout", default=1.0, low=0, high=86400, metavar="SECONDS"),
    MountOption("threads", "worker threads for blocking data I/O", INT, dest="threads",
                default=16, low=1, high=1024, metavar="N"),
    MountOption("inline", "cheap metadata operations run in the thread that read them (0: every "
                "operation in a worker, so a slow backing fs stalls only its own requests)",
                BOOL, dest="inline", default=True),
    MountOption("transport", "how the daemon talks to the kernel: dev (the FUSE protocol over "
                "/dev/fuse) or pyfuse3 (through libfuse: no kernel passthrough, lseek, fallocate "
                "or setxattr flags)", CHOICE, dest="transport", default="dev",
                choices=("dev", "pyfuse3")),
    MountOption("passthrough", "the kernel reads and writes files whose scope has no read or "
                "write rules itself (FUSE_PASSTHROUGH; root only, transport=dev)", BOOL,
                dest="passthrough", default=True),
    MountOption("default_permissions", "the kernel checks mode bits and POSIX ACLs of every "
                "path component before the daemon sees a request (default 1; 0: only the "
                "backing fs checks, as the caller, when the daemon runs an operation, so a "
                "path used within entry_timeout skips its parents' search permission and FIFO "
                "modes go unchecked; transport=pyfuse3 defaults to 0: it cannot negotiate ACLs)",
                BOOL, dest="default_permissions"),
    MountOption("root_section", "program section attached to the mount root (default: the "
                "policy's root scope, fuse/root, or a bare object's only fuse/* section)",
                TEXT, dest="root_section", metavar="SECTION"),
    MountOption("abi", "ABI of an object without fdsl metadata (clang-built C), as --abi; RFC v1 "
                "objects run in emulation only", CHOICE, dest="abi", choices=("ack", "rfc-v1")),
    MountOption("no_identity", "run backing operations as the daemon, not as the caller",
                FLAG, dest="switch_identity", default=True, flag_value=False),
    MountOption("nonempty", "allow mounting over a mount point that is already a mount",
                FLAG, dest="nonempty", default=False),
    MountOption("debug", "FUSE debug output (implies -f, like -d)", FLAG, dest="debug",
                default=False),
    MountOption("mode", "where the programs run: kernel = the kernel's fuse-bpf (refused where "
                "the kernel has none), emulate = fdsl's daemon, auto = kernel where fuse-bpf "
                "exists, else emulate", CHOICE, dest="mode", default="auto",
                choices=("auto", "kernel", "emulate")),
    MountOption("no_daemon", "kernel mode without a daemon process (the default when the policy "
                "has no userspace rules and no under scopes; 0 keeps a daemon)", BOOL,
                dest="no_daemon"),
    MountOption("log", "where a detached daemon sends policy `log` lines and warnings: a "
                "log file (see log_file) or the systemd journal (SYSLOG_IDENTIFIER=fdsl, "
                "FDSL_MOUNTPOINT=the mount point)", CHOICE, dest="log", default="file",
                choices=("file", "journal")),
    MountOption("log_file", "where a detached daemon writes policy `log` lines and warnings "
                "(default: next to its control socket)", TEXT, dest="log_file", metavar="FILE"),
    MountOption("log_size", "bytes of log file kept before it is rotated (one old file, .1, "
                "is kept)", INT, dest="log_size", default=1 << 20, low=4096, high=1 << 40,
                metavar="BYTES"),
    MountOption("journal_socket", "journald's socket for log=journal (another journal "
                "namespace's, or a container's)", TEXT, dest="journal_socket",
                default="/run/systemd/journal/socket", metavar="PATH"),
    # ---- FUSE options, passed to the kernel mount
    MountOption("allow_other", "let users other than the mounter use the mount", FLAG, FUSE),
    MountOption("auto_unmount", "unmount when the daemon dies", FLAG, FUSE),
    MountOption("fsname", "the source name mount(8) and df show", TEXT, FUSE, metavar="NAME"),
    MountOption("max_read", "largest read request in bytes", INT, FUSE, low=4096,
                high=1 << 30, metavar="BYTES"),
    *[MountOption(n, "SELinux context of the mount", TEXT, FUSE, metavar="CONTEXT")
      for n in ("context", "fscontext", "defcontext", "rootcontext")],
    *_fuse_flags("ro rw dev nodev suid nosuid exec noexec async sync dirsync atime noatime "
                 "diratime nodiratime relatime norelatime strictatime nostrictatime lazytime "
                 "nolazytime", "generic mount flag, see mount(8)"),
    # ---- bookkeeping mount(8) and fstab lines carry
    *[MountOption(n, "fstab bookkeeping, ignored", FLAG, IGNORED)
      for n in ("defaults", "auto", "noauto", "user", "nouser", "users", "owner", "group",
                "nofail", "_netdev", "sloppy")],
    MountOption("comment", "fstab bookkeeping, ignored", TEXT, IGNORED),
)

# `x-systemd.automount`, `x-gvfs-show`, ...: userspace options for other tools.
IGNORED_PREFIXES = ("x-",)

BY_NAME: dict[str, MountOption] = {o.name: o for o in OPTIONS}


@dataclass
class ParsedOptions:
    settings: dict[str, Any] = field(default_factory=dict)   # MountConfig field -> value
    fuse: list[str] = field(default_factory=list)            # FUSE options, in order given


def defaults() -> dict[str, Any]:
    """Every fdsl setting at its default (what `fdsl mount` passes to MountConfig)."""
    out: dict[str, Any] = {}
    for opt in OPTIONS:
        if opt.group == FDSL and opt.dest and opt.dest not in out:
            out[opt.dest] = opt.default
    return out


def split(values: list[str]) -> list[str]:
    """`-o a,b=1 -o c` -> ["a", "b=1", "c"]."""
    return [o.strip() for value in values for o in value.split(",") if o.strip()]


def parse(values: list[str]) -> ParsedOptions:
    """Parse `-o` values; a `UsageError` (exit 2) names the first bad one."""
    parsed = ParsedOptions(defaults())
    for item in split(values):
        name, has_value, raw = item.partition("=")
        if name.startswith(IGNORED_PREFIXES):
            continue
        opt = BY_NAME.get(name)
        if opt is None:
            raise UsageError(_unknown(name))
        value = _convert(opt, raw, bool(has_value), item)
        if opt.group == FUSE:
            parsed.fuse.append(item)
        elif opt.group == FDSL and opt.dest:
            parsed.settings[opt.dest] = value
    return parsed


def _unknown(name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(BY_NAME), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return (f"unknown mount option '-o {name}'{hint}; 'fdsl mount --help' lists them")


def _bad(item: str, what: str) -> UsageError:
    return UsageError(f"bad mount option '-o {item}': {what}")


def _convert(opt: MountOption, raw: str, has_value: bool, item: str) -> Any:
    if opt.kind == FLAG:
        if has_value:
            raise _bad(item, f"{opt.name} takes no value")
        return opt.flag_value
    if opt.kind == BOOL:
        v = raw.strip().lower()
        if not has_value or v in ("1", "yes", "true", "on"):
            return True
        if v in ("0", "no", "false", "off"):
            return False
        raise _bad(item, f"{opt.name} is 0 or 1 (also no/yes, false/true, off/on)")
    if not has_value or not raw:
        raise _bad(item, f"{opt.name} needs a value: {opt.synopsis()}")
    if opt.kind == CHOICE:
        if raw not in opt.choices:
            raise _bad(item, f"{opt.name} is one of {', '.join(opt.choices)}")
        return raw
    if opt.kind in (INT, FLOAT):
        return _number(opt, raw, item)
    return raw


def _number(opt: MountOption, raw: str, item: str) -> int | float:
    try:
        value: int | float = int(raw, 0) if opt.kind == INT else float(raw)
    except ValueError:
        noun = "an integer" if opt.kind == INT else "a number of seconds"
        raise _bad(item, f"{opt.name} takes {noun}") from None
    if value != value or (opt.low is not None and value < opt.low) or \
            (opt.high is not None and value > opt.high):
        raise _bad(item, f"{opt.name} must be in {_fmt(opt.low)}..{_fmt(opt.high)}")
    return value


def _fmt(bound: float | None) -> str:
    if bound is None:
        return ""
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def help_text() -> str:
    """The OPTIONS part of `fdsl mount --help` (and of the man page)."""
    lines = ["mount options (-o OPT[,OPT...], also the options of fstab lines):"]
    for group, title in ((FDSL, "fdsl"), (FUSE, "FUSE")):
        lines.append(f"  {title}:")
        for opt in OPTIONS:
            if opt.group != group or (opt.group == FUSE and opt.help.startswith("generic")):
                continue
            default = ""
            if opt.default is not None and opt.kind not in (FLAG,):
                shown = int(opt.default) if isinstance(opt.default, bool) else opt.default
                default = f" (default {shown})"
            lines += textwrap.wrap(f"{opt.help}{default}", width=78,
                                   initial_indent=f"    {opt.synopsis():<26} ",
                                   subsequent_indent=" " * 31, break_on_hyphens=False)
    generic = [o.name for o in OPTIONS if o.group == FUSE and o.help.startswith("generic")]
    lines += textwrap.wrap("generic mount flags (see mount(8)): " + ", ".join(generic),
                           width=78, initial_indent="    ", subsequent_indent="      ")
    lines += textwrap.wrap("accepted and ignored (fstab bookkeeping): " + ", ".join(
        o.name for o in OPTIONS if o.group == IGNORED) + ", x-*", width=78,
        initial_indent="  ", subsequent_indent="    ")
    return "\n".join(lines)
