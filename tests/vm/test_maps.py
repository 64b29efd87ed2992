"""maps: the kernel's update/lookup semantics, stable real memory, thread safety."""
from __future__ import annotations

import ctypes
import errno
import threading

import pytest

from fdsl import abi
from fdsl.vm.loader import MapSpec
from fdsl.vm.maps import ArrayMap, HashMap, MapTable, create_map

ANY, NOEXIST, EXIST = abi.BPF_ANY, abi.BPF_NOEXIST, abi.BPF_EXIST


def k(i: int, n: int = 4) -> bytes:
    return i.to_bytes(n, "little")


def test_array_semantics():
    m = ArrayMap(4, 8, 3, "a")
    assert m.lookup_value(k(0)) == bytes(8)           # zero initialised, always present
    assert m.lookup(k(3)) is None                     # out of range -> NULL
    assert m.update(k(1), k(7, 8), ANY) == 0
    assert m.update(k(1), k(8, 8), EXIST) == 0
    assert m.update(k(1), k(9, 8), NOEXIST) == -errno.EEXIST
    assert m.update(k(3), k(1, 8), ANY) == -errno.E2BIG
    assert m.update(k(3), k(1, 8), NOEXIST) == -errno.E2BIG   # range is checked first
    assert m.update(k(0), k(1, 8), 3) == -errno.EINVAL
    assert m.update(k(0), k(1, 8), 4) == -errno.EINVAL        # BPF_F_LOCK without a lock
    assert m.lookup_value(k(1)) == k(8, 8)
    assert m.int_items() == [(0, 0), (1, 8), (2, 0)]


def test_hash_semantics():
    m = HashMap(4, 4, 2, "h")
    assert m.lookup(k(5)) is None
    assert m.update(k(5), k(1), EXIST) == -errno.ENOENT
    assert m.update(k(5), k(1), NOEXIST) == 0
    assert m.update(k(5), k(2), NOEXIST) == -errno.EEXIST
    assert m.update(k(5), k(3), EXIST) == 0
    assert m.update(k(6), k(4), ANY) == 0
    assert m.update(k(7), k(5), ANY) == -errno.E2BIG           # full
    assert m.update(k(6), k(6), ANY) == 0                      # replacing works when full
    assert m.update(k(5), k(1), 7) == -errno.EINVAL
    assert m.items() == [(k(5), k(3)), (k(6), k(6))]
    assert len(m) == 2
    assert m.delete(k(5)) == 0 and m.delete(k(5)) == -errno.ENOENT
    assert m.update(k(7), k(5), NOEXIST) == 0


def test_values_live_in_stable_real_memory():
    m = HashMap(4, 8, 4, "h")
    m.update(k(1), k(10, 8))
    address = m.lookup(k(1))
    assert m.region.contains(address, 8) and address % 8 == 0
    ctypes.c_uint64.from_address(address).value += 5           # what a JIT does
    assert m.lookup_value(k(1)) == k(15, 8)
    m.update(k(1), k(20, 8), EXIST)
    assert m.lookup(k(1)) == address and ctypes.c_uint64.from_address(address).value == 20
    arr = ArrayMap(4, 12, 2, "a")
    assert arr.lookup(k(1)) - arr.lookup(k(0)) == 16           # value_size rounded up to 8


def test_key_and_value_sizes_checked():
    m = HashMap(4, 8, 2)
    with pytest.raises(ValueError):
        m.lookup(b"abc")
    with pytest.raises(ValueError):
        m.update(k(1), b"x")
    with pytest.raises(ValueError):
        ArrayMap(8, 8, 1)


def test_table_from_specs():
    table = MapTable([MapSpec(0, "h", abi.BPF_MAP_TYPE_HASH, 4, 8, 8),
                      MapSpec(1, "a", abi.BPF_MAP_TYPE_ARRAY, 4, 8, 1)])
    assert isinstance(table[0], HashMap) and isinstance(table[1], ArrayMap)
    assert table.by_handle(table[1].handle) is table[1]
    assert table.by_name("h") is table[0] and len(table) == 2
    assert [r.writable for r in table.regions()] == [True, True]
    with pytest.raises(ValueError):
        create_map(MapSpec(0, "x", 9, 4, 4, 1))


def test_concurrent_updates():
    m = HashMap(4, 8, 64, "h")

    def worker(base: int) -> None:
        for i in range(200):
            key = k((base + i) % 64)
            if m.update(key, k(i, 8), NOEXIST) == -errno.EEXIST:
                assert m.update(key, k(i, 8), EXIST) == 0

    threads = [threading.Thread(target=worker, args=(t * 7,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(m) == 64
    assert sorted(set(m.int_items()[i][0] for i in range(64))) == list(range(64))
