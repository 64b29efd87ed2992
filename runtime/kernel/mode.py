"""`fdsl mount -o mode=auto|kernel|emulate` and `-o no_daemon`: which half runs where.

* `emulate`: our daemon runs the programs (the VM) and serves every request.
* `kernel`: the kernel's fuse-bpf runs them; refused, saying why, where the
  kernel has none.
* `auto` (the default): kernel where fuse-bpf is present, else emulation.

In kernel mode a policy that has no userspace rules and no `under` scopes
(nothing the daemon must answer: no filter requests, no lookup blocks) is
mounted daemonless (`no_daemon`, spec §3.4) unless `no_daemon=0` asks for a
daemon; `no_daemon` on a policy that needs one is refused with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fdsl.errors import MountError, UsageError

from .features import FuseBpfSupport

MODES = ("auto", "kernel", "emulate")


@dataclass(frozen=True)
class Mode:
    kernel: bool
    daemon: bool = True
    why: str = ""

    @property
    def name(self) -> str:
        if not self.kernel:
            return "emulate"
        return "kernel" if self.daemon else "kernel, no daemon"


def daemon_needed(meta: Any) -> str | None:
    """Why the policy needs a userspace half in kernel mode (None: it does not)."""
    if meta is None:
        return None
    if meta.userspace:
        rule = meta.userspace[0]
        return f"it has userspace rules ({rule.location}: {rule.reason})"
    scopes = [s.path for s in meta.scopes if s.path]
    if scopes:
        return f"its scope {scopes[0]!r} is attached at lookup time by the daemon"
    return None


def select(requested: str, no_daemon: bool | None, support: FuseBpfSupport,
           needs_daemon: str | None) -> Mode:
    """The mode to mount in; `no_daemon` None = not given."""
    if requested not in MODES:
        raise UsageError(f"-o mode={requested}: expected one of {', '.join(MODES)}")
    if requested == "emulate" or (requested == "auto" and not support.supported):
        if no_daemon:
            raise MountError("-o no_daemon needs fuse-bpf in the kernel: "
                             + (support.reason or "emulation is a daemon by definition"))
        why = "requested" if requested == "emulate" else support.reason
        return Mode(kernel=False, why=why)
    if not support.supported:
        raise MountError(f"-o mode=kernel: {support.reason}; use -o mode=emulate (or auto) to "
                         "run the policy in fdsl's own daemon")
    if no_daemon and needs_daemon:
        raise MountError(f"-o no_daemon: this policy needs a daemon: {needs_daemon}")
    daemon = needs_daemon is not None or no_daemon is False
    return Mode(kernel=True, daemon=daemon,
                why=f"fuse-bpf program type {support.prog_type}")
