"""The JIT's on-disk code cache: native object code, trusted only when nobody else could write it.

Cached code is run by the daemon, so a cache directory (and every entry and
ancestor) is used only if it is ours or root's and writable by nobody else;
every check is made on opened fds (openat, O_NOFOLLOW), and entries carry an
HMAC under a per-directory secret, so a damaged one is rebuilt.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import os
import stat
from pathlib import Path
from typing import Sequence

import llvmlite.binding as llvm

from fdsl import abi
from fdsl.vm import isa
from fdsl.vm.interpreter import STACK_SIZE
from fdsl.vm.isa import Insn

log = logging.getLogger("fdsl.vm.jit")

class _Untrusted(Exception):
    """A cache location or entry another user could have written."""


_REFUSED: set[str] = set()   # cache directories already reported as untrusted


class ObjectCache:
    """On-disk JIT object code: `$FDSL_JIT_CACHE`, else /var/cache/fdsl for root, else
    `$XDG_CACHE_HOME/fdsl` or `~/.cache/fdsl` (`FDSL_JIT_CACHE=off` disables it).

    One file per key; the key hashes the instructions, everything else the
    code depends on (maps, verifier facts, budget, pipeline), this module's
    source, the LLVM version and the host CPU.  Entries are written to a
    temporary name, fsynced and renamed, so readers never see half an entry.
    Cache failures (read-only home...) only cost speed.

    The entries are native code the daemon (often root) will run, so the cache
    is used only where no other user could have put anything: every ancestor
    directory (the real path) is owned by root or us and writable by nobody
    else (a sticky /tmp is not enough), the directory and each entry are ours
    and not group/other writable.  Everything is checked on the opened file
    descriptors (openat with O_NOFOLLOW from a directory fd), never on a path
    that could be swapped between the check and the use.  Each entry carries
    an HMAC under a secret kept in the directory (0600), so a file that did not
    come from a writer holding that secret -- damaged, copied in from
    elsewhere -- is ignored (and rewritten).  If any check fails the code is
    compiled in memory; that is logged once, at debug level.
    """

    MAGIC = b"fdsl-jit-object 2\n"
    SECRET = "secret"            # HMAC key file inside the cache directory
    MAX_ENTRIES = 512            # beyond this, a write removes the least recently written entries
    MAX_ENTRY_BYTES = 64 << 20

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    @classmethod
    def default(cls) -> "ObjectCache | None":
        setting = os.environ.get("FDSL_JIT_CACHE")
        if setting is not None:
            return None if setting.lower() in ("", "0", "off", "no") else cls(Path(setting))
        if os.geteuid() == 0:  # root's code must not come from a directory tied to $HOME/$XDG_*
            return cls(Path("/var/cache/fdsl"))
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return cls(Path(base) / "fdsl")

    def key(self, insns: Sequence[Insn], nmaps: int, checks, budget: int, opt: int) -> str:
        h = hashlib.sha256()
        kinds = sorted((pc, c.value) for pc, c in (checks or {}).items())
        from fdsl.vm.jit import BIG_PROGRAM   # the pipeline choice shapes the code
        h.update(repr((_code_identity(), nmaps, kinds, budget, opt, BIG_PROGRAM)).encode())
        h.update(isa.encode(list(insns)))
        return h.hexdigest()

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.jit"

    # -- trust checks (all on open file descriptors)

    def _open_dir(self, create: bool) -> int | None:
        """An fd of the cache directory after checking it and every ancestor; None
        if it is missing (and not `create`) or untrusted."""
        real = os.path.realpath(self.directory)
        fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            _check_ancestor(fd, "/")
            names = Path(real).parts[1:]
            for i, name in enumerate(names):
                last = i == len(names) - 1
                flags = (os.O_RDONLY if last else os.O_PATH) | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
                try:
                    child = os.open(name, flags, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        os.close(fd)
                        return None
                    try:
                        os.mkdir(name, 0o700, dir_fd=fd)
                    except FileExistsError:
                        pass
                    child = os.open(name, flags, dir_fd=fd)
                os.close(fd)
                fd = child
                if last:
                    _check_own(fd, real, directory=True)
                else:
                    _check_ancestor(fd, os.path.join("/", *names[:i + 1]))
            return fd
        except _Untrusted as why:
            os.close(fd)
            _refuse(real, str(why))
            return None
        except OSError as err:
            os.close(fd)
            if create:  # a failed write only costs speed, but say why once
                _refuse(real, f"{err.strerror or err}")
            return None

    @classmethod
    def _read(cls, dirfd: int, name: str) -> bytes:
        """Contents of our own private regular file `name` (FileNotFoundError if absent)."""
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dirfd)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            _check_own(fd, name, directory=False, st=st)
            if st.st_size > cls.MAX_ENTRY_BYTES:
                raise _Untrusted(f"{name}: too large")
            return f.read(cls.MAX_ENTRY_BYTES + 1)

    @staticmethod
    def _write_temp(dirfd: int, data: bytes) -> str:
        """A new private file with `data`, durable, under a fresh temporary name."""
        while True:
            name = f".tmp-{os.getpid()}-{os.urandom(6).hex()}"
            try:
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                             0o600, dir_fd=dirfd)
                break
            except FileExistsError:
                continue
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            os.unlink(name, dir_fd=dirfd)
            raise
        return name

    def _secret(self, dirfd: int, create: bool) -> bytes | None:
        """The directory's HMAC key; made on first write."""
        try:
            secret = self._read(dirfd, self.SECRET)
            if len(secret) == 32:
                return secret
            missing = False
        except FileNotFoundError:
            missing = True
        if not create:
            return None
        tmp = self._write_temp(dirfd, os.urandom(32))
        try:
            if missing:  # link, not rename: a concurrent writer's key must not be replaced
                try:
                    os.link(tmp, self.SECRET, src_dir_fd=dirfd, dst_dir_fd=dirfd, follow_symlinks=False)
                except FileExistsError:
                    pass
            else:
                os.replace(tmp, self.SECRET, src_dir_fd=dirfd, dst_dir_fd=dirfd)
        finally:
            try:
                os.unlink(tmp, dir_fd=dirfd)
            except FileNotFoundError:
                pass
        secret = self._read(dirfd, self.SECRET)
        return secret if len(secret) == 32 else None

    def _seal(self, secret: bytes, key: str, payload: bytes) -> bytes:
        return hmac.new(secret, key.encode() + b"\0" + payload, hashlib.sha256).digest()

    # -- the cache itself

    def get(self, key: str) -> tuple[dict, bytes] | None:
        """(metadata, object bytes), or None if missing, damaged or not trustworthy."""
        dirfd = self._open_dir(create=False)
        if dirfd is None:
            return None
        try:
            secret = self._secret(dirfd, create=False)
            if secret is None:
                return None
            data = self._read(dirfd, f"{key}.jit")
        except _Untrusted as why:
            _refuse(os.path.realpath(self.directory), str(why))
            return None
        except OSError:
            return None
        finally:
            os.close(dirfd)
        head = len(self.MAGIC)
        if not data.startswith(self.MAGIC) or len(data) < head + 32 + 4:
            return None
        mac, payload = data[head:head + 32], data[head + 32:]
        if not hmac.compare_digest(self._seal(secret, key, payload), mac):
            return None
        meta_len = int.from_bytes(payload[:4], "little")
        try:
            meta = json.loads(payload[4:4 + meta_len])
        except ValueError:
            return None
        obj = payload[4 + meta_len:]
        return (meta, obj) if isinstance(meta, dict) and obj else None

    def put(self, key: str, meta: dict, obj: bytes) -> None:
        meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
        payload = len(meta_bytes).to_bytes(4, "little") + meta_bytes + obj
        dirfd = self._open_dir(create=True)
        if dirfd is None:
            return
        try:
            secret = self._secret(dirfd, create=True)
            if secret is None:
                return
            data = self.MAGIC + self._seal(secret, key, payload) + payload
            tmp = self._write_temp(dirfd, data)
            try:
                os.replace(tmp, f"{key}.jit", src_dir_fd=dirfd, dst_dir_fd=dirfd)
            except BaseException:
                os.unlink(tmp, dir_fd=dirfd)
                raise
            self._prune(dirfd)
        except _Untrusted as why:
            _refuse(os.path.realpath(self.directory), str(why))
        except OSError:
            pass
        finally:
            os.close(dirfd)

    def _prune(self, dirfd: int) -> None:
        entries = [n for n in os.listdir(dirfd) if n.endswith(".jit") and not n.startswith(".")]
        if len(entries) <= self.MAX_ENTRIES:
            return

        def age(name: str) -> float:
            try:
                return os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mtime
            except OSError:
                return 0.0
        for name in sorted(entries, key=age)[:len(entries) - self.MAX_ENTRIES]:
            try:
                os.unlink(name, dir_fd=dirfd)
            except FileNotFoundError:
                pass


def _check_ancestor(fd: int, where: str) -> None:
    """A directory above the cache: root's or ours, and nobody else may write it
    (not even with the sticky bit: entries could still be planted next to ours)."""
    st = os.fstat(fd)
    if not stat.S_ISDIR(st.st_mode):
        raise _Untrusted(f"{where} is not a directory")
    if st.st_uid not in (0, os.geteuid()):
        raise _Untrusted(f"{where} belongs to uid {st.st_uid}")
    if st.st_mode & 0o022:
        raise _Untrusted(f"{where} is writable by group or others "
                         f"(mode {stat.S_IMODE(st.st_mode):04o})")


def _check_own(fd: int, where: str, directory: bool, st: os.stat_result | None = None) -> None:
    """The cache directory or an entry: ours, of the right type, not group/other writable."""
    st = st or os.fstat(fd)
    kind_ok = stat.S_ISDIR(st.st_mode) if directory else stat.S_ISREG(st.st_mode)
    if not kind_ok:
        raise _Untrusted(f"{where} is not a {'directory' if directory else 'regular file'}")
    if st.st_uid != os.geteuid():
        raise _Untrusted(f"{where} belongs to uid {st.st_uid}, not {os.geteuid()}")
    if st.st_mode & 0o022:
        raise _Untrusted(f"{where} is writable by group or others "
                         f"(mode {stat.S_IMODE(st.st_mode):04o})")


def _refuse(directory: str, why: str) -> None:
    """No disk cache here; say so once (at debug level: it only costs speed)."""
    if directory not in _REFUSED:
        _REFUSED.add(directory)
        log.debug("JIT disk cache %s not used: %s", directory, why)


@functools.cache
def _code_identity() -> tuple:
    """What makes object code from this process reusable: our code generator and the
    LLVM that compiled it, for this CPU."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for name in ("jit.py", "jit_ir.py"):          # the code generator, both halves
        digest.update((here / name).read_bytes())
    source = digest.hexdigest()
    return (source, STACK_SIZE, abi.CTX_SIZE, llvm.llvm_version_info, llvm.get_process_triple(), llvm.get_host_cpu_name(),
            llvm.get_host_cpu_features().flatten())
