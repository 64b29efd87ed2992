"""Compiled objects of .fdsl policies, cached so `fdsl mount POLICY.fdsl` need not compile
(nor import the compiler and LLVM) when nothing changed.

An entry is keyed by the policy's bytes and real path, the -I directories, the
target ABI's id and the identity of this fdsl (version, the size and mtime of every module and grammar
file, the llvmlite version); it records every included file with the SHA-256 of
its bytes, and is used only while all of them still match.  Entries live in
`fdsl.cache.private_dir("objects")` (0700, trusted ancestors), are written
atomically and read only if they are our own regular files; the object still
goes through the loader and verifier when the daemon loads it.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Sequence

from fdsl import __version__

MAGIC = b"fdsl-compiled-object 1\n"
MAX_ENTRIES = 64
MAX_ENTRY_BYTES = 64 << 20
PACKAGE = Path(__file__).resolve().parent.parent


@functools.cache
def _identity() -> str:
    """What the compiled bytes depend on besides the sources: this fdsl's code."""
    from importlib.util import find_spec   # not importlib.metadata: 10-20 ms a mount

    h = hashlib.sha256(__version__.encode())
    import fdsl.grammar

    roots = [PACKAGE, Path(fdsl.grammar.__file__).parent]
    llvmlite = find_spec("llvmlite")
    if llvmlite is not None and llvmlite.origin:   # rewritten by every llvmlite install
        version = Path(llvmlite.origin).with_name("_version.py")
        h.update(version.read_bytes() if version.is_file() else llvmlite.origin.encode())
    for root in roots:
        h.update("".join(_stamps(os.fspath(root))).encode())
    return h.hexdigest()


def _stamps(root: str) -> list[str]:
    """`relative/path:size:mtime` of every .py and .lark file under `root`, sorted
    (os.walk and strings: pathlib's rglob and sorting cost ~10 ms on every mount)."""
    out = []
    for top, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith((".py", ".lark")):
                full = os.path.join(top, name)
                st = os.stat(full)
                out.append(f"{os.path.relpath(full, root)}:{st.st_size}:{st.st_mtime_ns}\n")
    out.sort()
    return out


def _key(data: bytes, path: str, include_dirs: Sequence[str], abi_id: str | None) -> str:
    from fdsl import abi

    abi_id = abi.by_id(abi_id).id if abi_id is not None else abi.DEFAULT.id
    h = hashlib.sha256(_identity().encode())
    h.update(repr((os.path.realpath(path), sorted(os.path.realpath(d) for d in include_dirs),
                   abi_id)).encode())
    h.update(data)
    return h.hexdigest()


def _digest(path: str) -> str | None:
    """SHA-256 of an included file, read as the compiler reads it (a regular file of
    bounded size, never blocking: an include swapped for a FIFO must not hang a mount)."""
    from fdsl.files import MAX_POLICY_BYTES, InputFileError, read_regular_file

    try:
        return hashlib.sha256(read_regular_file(path, MAX_POLICY_BYTES).data).hexdigest()
    except InputFileError:
        return None


def _read_own(directory: Path, name: str) -> bytes | None:
    try:
        fd = os.open(directory / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077 \
                or st.st_size > MAX_ENTRY_BYTES:
            return None
        return fh.read()


def lookup(data: bytes, path: str, include_dirs: Sequence[str] = (),
           abi_id: str | None = None) -> bytes | None:
    """The cached object for this policy compiled for `abi_id`, or None."""
    from fdsl import cache

    directory = cache.private_dir("objects")
    if directory is None:
        return None
    raw = _read_own(directory, _key(data, path, include_dirs, abi_id) + ".o")
    if raw is None or not raw.startswith(MAGIC):
        return None
    header, _, obj = raw[len(MAGIC):].partition(b"\n")
    try:
        files = json.loads(header)
    except ValueError:
        return None
    if any(_digest(f) != digest for f, digest in files.items()):
        return None           # an included file changed (or vanished)
    return obj


def store(data: bytes, path: str, include_dirs: Sequence[str], obj: bytes,
          included: Sequence[str], abi_id: str | None = None) -> None:
    """Remember `obj` for this policy and ABI; `included` are the files it included."""
    from fdsl import cache

    directory = cache.private_dir("objects")
    if directory is None:
        return
    files = {os.path.realpath(f): _digest(f) for f in included}
    name = _key(data, path, include_dirs, abi_id) + ".o"
    tmp = directory / f".{name}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(MAGIC + json.dumps(files).encode() + b"\n" + obj)
        os.replace(tmp, directory / name)
        _prune(directory)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass


def _prune(directory: Path) -> None:
    entries = sorted((p for p in directory.glob("*.o")), key=lambda p: p.stat().st_mtime)
    for old in entries[:-MAX_ENTRIES]:
        try:
            old.unlink()
        except OSError:
            pass


def compile_cached(data: bytes, path: str, include_dirs: Sequence[str] = (),
                   abi_id: str | None = None) -> tuple[bytes, bool]:
    """(object, whether it came from the cache) for the .fdsl source `data` read from `path`,
    compiled for the ABI `abi_id` names."""
    obj = lookup(data, path, include_dirs, abi_id)
    if obj is not None:
        return obj, True
    from fdsl import abi
    from fdsl.compile import driver

    result = driver.compile_source(data, path, want_asm=False, include_dirs=include_dirs,
                                   abi_record=abi.by_id(abi_id) if abi_id else abi.DEFAULT)
    texts = result.sources.texts if result.sources is not None else {}
    included = [f for f in texts if f != path and not f.startswith("<")]
    store(data, path, include_dirs, result.obj, included, abi_id)
    return result.obj, False
