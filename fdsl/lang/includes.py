"""Where an `include "path"` may read from, and reading it safely.

An include names a `.fdsl` file relative to the including file, or failing
that relative to one of the `-I` directories.  Whatever it resolves to (after
symlinks) must lie under the top-level policy's directory or an `-I`
directory: a policy cannot make the toolchain (which may run as root, e.g. for
`fdsl mount`) read `/etc/shadow`.  Only regular files are read, never blocking
and never more than `files.MAX_POLICY_BYTES` each and `MAX_TOTAL_BYTES` in all,
and nothing is read from a path that fails these checks, so no diagnostic can
quote a file that is not a policy.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from fdsl.files import MAX_POLICY_BYTES, InputFileError, read_regular_file

MAX_TOTAL_BYTES = 16 << 20   # a policy and everything it includes
MAX_FILES = 256              # distinct files one policy may include
SUFFIX = ".fdsl"


class IncludeError(Exception):
    """An include that must not be (or cannot be) read; str() is the diagnostic."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@dataclass
class IncludeRules:
    """Include roots and what has been read so far for one policy."""

    roots: tuple[str, ...]          # real paths: the policy's directory, then each -I
    search: tuple[str, ...] = ()    # the -I directories as given, searched in order
    seen: set[str] = field(default_factory=set)
    total_bytes: int = 0

    @classmethod
    def for_policy(cls, filename: str, include_dirs: tuple[str, ...] | list[str] = ()) -> "IncludeRules":
        base = os.path.dirname(filename) if filename != "<string>" else ""
        search = tuple(include_dirs)
        roots = tuple(os.path.realpath(d or ".") for d in (base, *search))
        rules = cls(roots, search)
        if os.path.exists(filename):
            rules.seen.add(os.path.realpath(filename))
        return rules

    def count(self, data: bytes) -> None:
        self.total_bytes += len(data)

    def candidates(self, path: str, parent: str) -> list[str]:
        base = os.path.dirname(parent) if parent != "<string>" else ""
        return [os.path.normpath(os.path.join(d, path)) for d in (base, *self.search)]

    def resolve(self, path: str, parent: str) -> tuple[str, str] | None:
        """(shown path, real path) of the include, or None if it was already read.

        Raises IncludeError when the include is refused."""
        if not path or os.path.isabs(path):
            raise IncludeError(f"include path must be relative: '{path}'",
                               "paths are relative to the including file (or an -I directory)")
        if not path.endswith(SUFFIX):
            raise IncludeError(f"cannot include '{path}': only {SUFFIX} policy files can be included")
        options = self.candidates(path, parent)
        shown = next((p for p in options if os.path.lexists(p)), options[0])
        real = os.path.realpath(shown)
        if not any(_within(real, root) for root in self.roots):
            raise IncludeError(f"cannot include '{path}': it is outside the policy's directory",
                               "add `-I DIR` to allow includes from another directory")
        if real in self.seen:
            return None
        if len(self.seen) >= MAX_FILES:
            raise IncludeError(f"cannot include '{path}': more than {MAX_FILES} files included")
        return shown, real

    def read(self, path: str, shown: str, real: str) -> bytes:
        """The include's bytes; refuses special files, oversized files and a path that
        turned out (at open time) to lie outside the roots."""
        budget = min(MAX_POLICY_BYTES, MAX_TOTAL_BYTES - self.total_bytes)
        try:
            got = read_regular_file(shown, max(budget, 0))
        except InputFileError as err:
            raise IncludeError(f"cannot include '{path}': {err.reason}") from None
        if not any(_within(got.real_path, root) for root in self.roots):
            raise IncludeError(f"cannot include '{path}': it is outside the policy's directory")
        self.seen.add(real)
        self.count(got.data)
        return got.data
