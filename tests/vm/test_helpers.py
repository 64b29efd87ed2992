"""helpers 1, 2, 6, 14, 15 (spec §8.1)."""
from __future__ import annotations

import ctypes
import errno

from fdsl.vm.helpers import Caller, Helpers, LogSink, format_trace_printk, trace_printk
from fdsl.vm.maps import ArrayMap, HashMap

U64 = 2**64 - 1


def buf(data: bytes):
    b = ctypes.create_string_buffer(data, len(data))
    return b, ctypes.addressof(b)


def test_ids_come_from_the_caller():
    h = Helpers([])
    c = Caller(uid=1000, gid=2000, pid=42, tgid=40)
    assert h.call(15, caller=c) == (2000 << 32) | 1000
    assert h.call(14, caller=c) == (40 << 32) | 42


def test_map_helpers():
    hm, am = HashMap(4, 8, 2, "h"), ArrayMap(4, 8, 1, "a")
    h = Helpers([hm, am])
    kb, key = buf((7).to_bytes(4, "little"))
    vb, value = buf((99).to_bytes(8, "little"))
    assert h.call(1, 0, key) == 0                               # NULL
    assert h.call(2, 0, key, value, 1) == 0
    assert h.call(2, hm.handle, key, value, 1) == -errno.EEXIST & U64
    address = h.call(1, hm.handle, key)
    assert ctypes.c_uint64.from_address(address).value == 99
    assert h.call(2, 1, key, value, 0) == -errno.E2BIG & U64    # array index 7 >= 1


def test_trace_printk_formats():
    sb, s = buf(b"hello\0")
    cases = [
        (b"uid %u op %x", (1000, 0x10001), "uid 1000 op 10001"),
        (b"%d %i", (U64, 2**32 - 5), "-1 -5"),
        (b"%u", (U64,), "4294967295"),
        (b"%ld %lu", (U64, U64), f"-1 {U64}"),
        (b"%lld %llu %llx", (2**63, 5, 0xABC), f"{-2**63} 5 abc"),
        (b"%lx %X", (2**40, 255), "10000000000 FF"),
        (b"%5d|%-4u|%08x", (42, 7, 0xBEEF), "   42|7   |0000beef"),
        (b"100%% %s!", (s,), "100% hello!"),
        (b"%p", (0x1234,), "0000000000001234"),
        (b"%c%c", (ord("o"), ord("k")), "ok"),
        (b"no args", (), "no args"),
    ]
    for fmt, args, expected in cases:
        assert format_trace_printk(fmt, args) == expected, fmt


def test_trace_printk_helper_and_errors():
    sink = LogSink(maxlen=2)
    fb, fmt = buf(b"n=%d\n\0")
    assert trace_printk(fmt, 6, (5, 0, 0), sink) == 4
    assert sink.recent() == ["n=5"]
    seen = []
    sink.callback = seen.append
    for fmt_bytes in (b"%d %d %d %d\0", b"%q\0", b"%s5\0", b"\x01\0", b"abc"):
        b, p = buf(fmt_bytes)
        assert trace_printk(p, len(fmt_bytes), (0, 0, 0), sink) == -errno.EINVAL & U64, fmt_bytes
    b, p = buf(b"x\0")
    trace_printk(p, 2, (), sink)
    trace_printk(p, 2, (), sink)
    assert seen == ["x", "x"] and len(sink.recent()) == 2


def test_percent_s_fault_gives_empty_string():
    class Faulty:
        def read(self, address, size):
            if address < 1000:
                raise ValueError("bad")
            return ctypes.string_at(address, size)

    fb, fmt = buf(b"[%s]\0")
    sink = LogSink()
    assert trace_printk(fmt, 5, (8, 0, 0), sink, Faulty()) == 2
    assert sink.recent() == ["[]"]
