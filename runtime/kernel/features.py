"""Does this kernel have fuse-bpf, and which program-type number does it use (spec §1)?

Two sysfs files decide: `/sys/fs/fuse/features/fuse_bpf` must start with
`supported`, and `/sys/fs/fuse/bpf_prog_type_fuse` holds the program type
as ASCII decimal.  The number is never hard-coded: it is 31, 32 or 33
depending on the ACK base, and mainline uses those numbers for other types.
`sysfs` is a parameter so a test can point the detection at a directory tree
it built (the parsing is the same).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

SYSFS_FUSE = "/sys/fs/fuse"
FEATURE_FILE = "features/fuse_bpf"
PROG_TYPE_FILE = "bpf_prog_type_fuse"
TRACEFS_PIPES = ("/sys/kernel/tracing/trace_pipe", "/sys/kernel/debug/tracing/trace_pipe")


@dataclass(frozen=True)
class FuseBpfSupport:
    """`prog_type` is set exactly when the kernel has fuse-bpf; `reason` says why not."""

    prog_type: int | None
    reason: str = ""

    @property
    def supported(self) -> bool:
        return self.prog_type is not None


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return fh.read(64).decode("ascii", "replace")
    except OSError:
        return None


def detect(sysfs: str = SYSFS_FUSE) -> FuseBpfSupport:
    """What the running kernel (or the tree at `sysfs`) says about fuse-bpf."""
    feature = _read(os.path.join(sysfs, FEATURE_FILE))
    if feature is None:
        return FuseBpfSupport(None, f"this kernel has no fuse-bpf ({os.path.join(sysfs, FEATURE_FILE)} "
                                    f"is missing; fuse-bpf exists only in Android Common Kernels "
                                    f"built with CONFIG_FUSE_BPF, never in mainline Linux)")
    if not feature.startswith("supported"):
        return FuseBpfSupport(None, f"this kernel has no usable fuse-bpf "
                                    f"({os.path.join(sysfs, FEATURE_FILE)} says {feature.strip()!r})")
    raw = _read(os.path.join(sysfs, PROG_TYPE_FILE))
    if raw is None:
        return FuseBpfSupport(None, f"fuse-bpf is advertised but {os.path.join(sysfs, PROG_TYPE_FILE)} "
                                    f"is missing: the program type number is unknown")
    text = raw.strip()
    if not text.isdigit():
        return FuseBpfSupport(None, f"{os.path.join(sysfs, PROG_TYPE_FILE)} does not hold a decimal "
                                    f"number: {text!r}")
    return FuseBpfSupport(int(text, 10))


def trace_pipe() -> str | None:
    """The tracefs trace_pipe bpf_trace_printk writes to, when this process may read it."""
    for path in TRACEFS_PIPES:
        if os.access(path, os.R_OK):
            return path
    return None
