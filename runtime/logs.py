"""Durable logs: policy `log` lines and daemon warnings, kept past the unmount.

In the foreground (`fdsl mount -f`) every line goes to stderr.  A detached
daemon writes them to a size-bounded log file (rotated once: FILE and
FILE.1), by default next to its control socket; `fdsl stats` shows the path
and `fdsl stats --follow` tails it (`follow`).  The file is created 0600 and
never through a planted link (`control.open_log`).  With `-o log=journal`
they go to the systemd journal instead (`runtime.journal`).
"""
from __future__ import annotations

import logging
import logging.handlers
import os
import time
from pathlib import Path
from typing import Callable, Iterator

from . import control

POLICY_LOGGER = "fdsl.policy"      # one record per policy `log` line
FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class PrivateRotatingFile(logging.handlers.RotatingFileHandler):
    """RotatingFileHandler whose file is opened by `control.open_log` (0600, O_NOFOLLOW,
    our own regular file), whatever the process umask is."""

    def _open(self):  # type: ignore[no-untyped-def]
        return os.fdopen(control.open_log(Path(self.baseFilename)), "a", encoding="utf-8",
                         errors="backslashreplace")


def setup(log_file: str | None, max_bytes: int, stream: bool, level: int = logging.INFO,
          journal: tuple[str, str] | None = None) -> None:
    """Route `fdsl.*` records (policy lines at INFO, daemon warnings) to stderr, the log
    file and/or the journal (`journal` = (socket path, mount point)); records stop there
    (the root logger may print to a closed stderr)."""
    formatter = logging.Formatter(FORMAT, "%Y-%m-%d %H:%M:%S")
    handlers: list[logging.Handler] = []
    if stream:
        handlers.append(logging.StreamHandler())
    if log_file:
        handlers.append(PrivateRotatingFile(log_file, maxBytes=max_bytes, backupCount=1))
    top = logging.getLogger("fdsl")
    for handler in handlers:
        handler.setFormatter(formatter)
        top.addHandler(handler)
    if journal is not None:
        from .journal import JournalHandler

        top.addHandler(JournalHandler(journal[1], journal[0]))
    top.setLevel(level)
    top.propagate = False


def journal_dropped() -> int | None:
    """Records the journal handler could not deliver; None when not logging there."""
    from .journal import JournalHandler

    for handler in logging.getLogger("fdsl").handlers:
        if isinstance(handler, JournalHandler):
            return handler.dropped
    return None


def policy_line_writer() -> Callable[[str], None]:
    """The LogSink callback: one INFO record per `log` line."""
    logger = logging.getLogger(POLICY_LOGGER)
    return lambda line: logger.info("%s", line)


def follow(path: Path, alive: Callable[[], bool], poll: float = 0.2) -> Iterator[str]:
    """New lines of `path` as they are written, across rotations, until `alive()` is false
    (the daemon has gone) and nothing more is left to read."""
    fh = None
    inode = None
    while True:
        if fh is None:
            try:
                fh = open(path, encoding="utf-8", errors="replace")
            except FileNotFoundError:
                if not alive():
                    return
                time.sleep(poll)
                continue
            st = os.fstat(fh.fileno())
            if inode is None:
                fh.seek(0, os.SEEK_END)     # the stats already showed the recent lines
            inode = st.st_ino
        line = fh.readline()
        if line:
            yield line.rstrip("\n")
            continue
        try:
            rotated = os.stat(path).st_ino != inode
        except FileNotFoundError:
            rotated = True
        if rotated:
            for rest in fh:                 # what was written just before the rotation
                yield rest.rstrip("\n")
            fh.close()
            fh = None
            continue
        if not alive():
            fh.close()
            return
        time.sleep(poll)
