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

Memory is bounded: `memory_cost` is what a map really allocates at full
occupancy (value slots rounded up to 8, plus, for a hash map, the Python
objects behind each key), and `check_budget` refuses a map above
`MAX_MAP_BYTES`, an object whose maps together exceed `MAX_TOTAL_MAP_BYTES`, or
more than `MAX_MAPS` maps, before anything is allocated.  Free hash slots are
not preallocated as a list (that alone cost 40 bytes per entry).

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


MAX_MAP_BYTES = 128 << 20        # one map (a 1M-entry u64 -> u64 hash map fits)
MAX_TOTAL_MAP_BYTES = 256 << 20  # all maps of one object
MAX_MAPS = 64                    # maps per object (the kernel's MAX_USED_MAPS per program)
# Python objects behind one used hash key: its bytes object, the slot int and the
# dict entry (measured with tracemalloc, rounded up; tests/vm/test_maps.py checks it).
HASH_ENTRY_OVERHEAD = 112


class MapLimitError(ValueError):
    """A map (or all of an object's maps) would need more memory than allowed;
    `name` is the map over the per-map limit (None when the total is)."""

    def __init__(self, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


def memory_cost(map_type: int, key_size: int, value_size: int, max_entries: int) -> int:
    """Bytes a map allocates when full: its value slots, plus the key objects of a hash."""
    per_entry = _round8(value_size)
    if map_type == abi.BPF_MAP_TYPE_HASH:
        per_entry += _round8(key_size) + HASH_ENTRY_OVERHEAD
    return per_entry * max_entries


def check_budget(specs) -> int:
    """Refuse maps above the per-map or total limit (MapLimitError naming the limit);
    returns the total cost.  `specs` have name/type/key_size/value_size/max_entries."""
    specs = list(specs)
    if len(specs) > MAX_MAPS:
        raise MapLimitError(f"{len(specs)} maps; at most {MAX_MAPS} are allowed (MAX_MAPS)")
    total = 0
    for spec in specs:
        cost = memory_cost(spec.type, spec.key_size, spec.value_size, spec.max_entries)
        if cost > MAX_MAP_BYTES:
            raise MapLimitError(f"map {spec.name!r} needs {_mib(cost)} ({spec.max_entries} entries); "
                                f"one map may use at most {_mib(MAX_MAP_BYTES)} (MAX_MAP_BYTES)", spec.name)
        total += cost
    if total > MAX_TOTAL_MAP_BYTES:
        raise MapLimitError(f"the maps need {_mib(total)} together; at most "
                            f"{_mib(MAX_TOTAL_MAP_BYTES)} are allowed (MAX_TOTAL_MAP_BYTES)")
    return total


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


class BpfMap:
    """Common part of array and hash maps."""

    map_type = 0

    def __init__(self, key_size: int, value_size: int, max_entries: int, name: str = "") -> None:
        if key_size <= 0 or value_size <= 0 or max_entries <= 0:
            raise ValueError("map sizes must be positive")
        cost = memory_cost(self.map_type, key_size, value_size, max_entries)
        if cost > MAX_MAP_BYTES:
            raise MapLimitError(f"map {name!r} needs {_mib(cost)}; at most {_mib(MAX_MAP_BYTES)}")
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
        self._unused = 0               # slots >= this were never handed out
        self._freed: list[int] = []    # slots given back by delete()

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
                if self._freed:
                    slot = self._freed.pop()
                elif self._unused < self.max_entries:
                    slot, self._unused = self._unused, self._unused + 1
                else:
                    return -errno.E2BIG
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
            self._freed.append(slot)
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
        check_budget(specs)
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
