"""Array and hash maps with the kernel's semantics, values in real memory.

Every map owns one ctypes buffer holding all its values (the hash map is
preallocated like the kernel's default `htab`), so value addresses are
stable for the map's lifetime and a JIT can hand them to native code.  Each
value slot is `value_size` rounded up to 8, as in the kernel.

Update results are the kernel's (`0` or a negative errno):
  * flags other than BPF_ANY/NOEXIST/EXIST        -> -EINVAL
  * array: index >= max_entries                   -> -E2BIG
           BPF_NOEXIST (every element exists)     -> -EEXIST
  * hash:  BPF_NOEXIST and the key exists         -> -EEXIST
           BPF_EXIST and the key is missing       -> -ENOENT
           new key while max_entries are in use   -> -E2BIG
Lookups of a missing key / out-of-range index return None (NULL).

Updates and hash lookups hold a per-map lock, so a multi-threaded daemon can
share maps; value bytes themselves are changed by programs without the lock
(as in the kernel; programs use atomics for counters).
"""
from __future__ import annotations

import ctypes
import errno
import threading
from dataclasses import dataclass

from fdsl import abi


@dataclass(frozen=True)
class Region:
    """A block of real memory a program may access."""

    address: int
    length: int
    writable: bool
    name: str = ""

    @property
    def end(self) -> int:
        return self.address + self.length

    def contains(self, address: int, size: int) -> bool:
        return self.address <= address and address + size <= self.address + self.length


def _round8(n: int) -> int:
    return (n + 7) & ~7


class BpfMap:
    """Common part of array and hash maps."""

    map_type = 0

    def __init__(self, key_size: int, value_size: int, max_entries: int, name: str = "") -> None:
        if key_size <= 0 or value_size <= 0 or max_entries <= 0:
            raise ValueError("map sizes must be positive")
        self.name = name
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries
        self.elem_size = _round8(value_size)
        self._storage = (ctypes.c_ubyte * (self.elem_size * max_entries))()
        self.base = ctypes.addressof(self._storage)
        self._lock = threading.Lock()
        # a unique stable address standing for the map itself (what ld_imm64 loads)
        self._handle_obj = ctypes.c_uint64(0)
        self.handle = ctypes.addressof(self._handle_obj)

    @property
    def region(self) -> Region:
        return Region(self.base, self.elem_size * self.max_entries, True, f"map {self.name}")

    def value_at(self, address: int) -> bytes:
        return ctypes.string_at(address, self.value_size)

    def _check_key(self, key: bytes) -> bytes:
        key = bytes(key)
        if len(key) != self.key_size:
            raise ValueError(f"map {self.name!r}: key must be {self.key_size} bytes, got {len(key)}")
        return key

    def _store(self, address: int, value: bytes) -> None:
        value = bytes(value)
        if len(value) != self.value_size:
            raise ValueError(f"map {self.name!r}: value must be {self.value_size} bytes, got {len(value)}")
        ctypes.memmove(address, value, self.value_size)

    # interface implemented by subclasses
    def lookup(self, key: bytes) -> int | None:
        """Address of the value for `key`, or None (NULL)."""
        raise NotImplementedError

    def update(self, key: bytes, value: bytes, flags: int = abi.BPF_ANY) -> int:
        """Store `value`; 0 or a negative errno exactly as the kernel."""
        raise NotImplementedError

    def items(self) -> list[tuple[bytes, bytes]]:
        """Snapshot of (key, value) pairs, for `fdsl stats` and tests."""
        raise NotImplementedError

    def lookup_value(self, key: bytes) -> bytes | None:
        address = self.lookup(key)
        return None if address is None else self.value_at(address)

    def int_items(self, signed: bool = False) -> list[tuple[int, int]]:
        """items() with keys and values read as little-endian integers."""
        return [(int.from_bytes(k, "little"), int.from_bytes(v, "little", signed=signed))
                for k, v in self.items()]

    def contains_address(self, address: int, size: int = 1) -> bool:
        return self.region.contains(address, size)


class ArrayMap(BpfMap):
    """BPF_MAP_TYPE_ARRAY: u32 index keys, every element exists, zero initialised."""

    map_type = abi.BPF_MAP_TYPE_ARRAY

    def __init__(self, key_size: int, value_size: int, max_entries: int, name: str = "") -> None:
        if key_size != 4:
            raise ValueError("array maps need 4-byte keys")
        super().__init__(key_size, value_size, max_entries, name)

    def _index(self, key: bytes) -> int:
        return int.from_bytes(self._check_key(key), "little")

    def lookup(self, key: bytes) -> int | None:
        index = self._index(key)
        if index >= self.max_entries:
            return None
        return self.base + index * self.elem_size

    def update(self, key: bytes, value: bytes, flags: int = abi.BPF_ANY) -> int:
        if flags & 0xFFFFFFFFFFFFFFFF > abi.BPF_EXIST:
            return -errno.EINVAL
        index = self._index(key)
        if index >= self.max_entries:
            return -errno.E2BIG
        if flags == abi.BPF_NOEXIST:
            return -errno.EEXIST
        with self._lock:
            self._store(self.base + index * self.elem_size, value)
        return 0

    def items(self) -> list[tuple[bytes, bytes]]:
        return [(i.to_bytes(4, "little"), self.value_at(self.base + i * self.elem_size))
                for i in range(self.max_entries)]


class HashMap(BpfMap):
    """BPF_MAP_TYPE_HASH, preallocated: keys map to fixed value slots."""

    map_type = abi.BPF_MAP_TYPE_HASH

    def __init__(self, key_size: int, value_size: int, max_entries: int, name: str = "") -> None:
        super().__init__(key_size, value_size, max_entries, name)
        self._slots: dict[bytes, int] = {}
        self._free = list(range(max_entries - 1, -1, -1))

    def lookup(self, key: bytes) -> int | None:
        slot = self._slots.get(self._check_key(key))
        return None if slot is None else self.base + slot * self.elem_size

    def update(self, key: bytes, value: bytes, flags: int = abi.BPF_ANY) -> int:
        if flags & 0xFFFFFFFFFFFFFFFF > abi.BPF_EXIST:
            return -errno.EINVAL
        key = self._check_key(key)
        with self._lock:
            slot = self._slots.get(key)
            if slot is not None and flags == abi.BPF_NOEXIST:
                return -errno.EEXIST
            if slot is None and flags == abi.BPF_EXIST:
                return -errno.ENOENT
            if slot is None:
                if not self._free:
                    return -errno.E2BIG
                slot = self._free.pop()
                # a fresh element starts from the new value only (no stale bytes in the padding)
                ctypes.memset(self.base + slot * self.elem_size, 0, self.elem_size)
                self._store(self.base + slot * self.elem_size, value)
                self._slots[key] = slot
            else:
                self._store(self.base + slot * self.elem_size, value)
        return 0

    def delete(self, key: bytes) -> int:
        """Userspace-side delete (programs cannot call map_delete_elem)."""
        key = self._check_key(key)
        with self._lock:
            slot = self._slots.pop(key, None)
            if slot is None:
                return -errno.ENOENT
            self._free.append(slot)
        return 0

    def __len__(self) -> int:
        return len(self._slots)

    def items(self) -> list[tuple[bytes, bytes]]:
        with self._lock:
            pairs = sorted(self._slots.items())
        return [(k, self.value_at(self.base + s * self.elem_size)) for k, s in pairs]


def create_map(spec) -> BpfMap:
    """A map for a `loader.MapSpec` (or anything with type/key_size/value_size/max_entries/name)."""
    cls = {abi.BPF_MAP_TYPE_ARRAY: ArrayMap, abi.BPF_MAP_TYPE_HASH: HashMap}.get(spec.type)
    if cls is None:
        raise ValueError(f"unsupported map type {spec.type}")
    return cls(spec.key_size, spec.value_size, spec.max_entries, spec.name)


class MapTable:
    """The maps of one object, by index (the relocated ld_imm64 imm) and by handle."""

    def __init__(self, specs) -> None:
        self.maps: list[BpfMap] = [create_map(s) for s in specs]
        self._by_handle = {m.handle: m for m in self.maps}

    def __getitem__(self, index: int) -> BpfMap:
        return self.maps[index]

    def __len__(self) -> int:
        return len(self.maps)

    def __iter__(self):
        return iter(self.maps)

    def by_handle(self, handle: int) -> BpfMap | None:
        return self._by_handle.get(handle)

    def by_name(self, name: str) -> BpfMap | None:
        return next((m for m in self.maps if m.name == name), None)

    def regions(self) -> list[Region]:
        return [m.region for m in self.maps]
