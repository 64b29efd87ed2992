"""Field-level requests: named field values in, decision and changed fields out.

Used by `fdsl run`, `fdsl test` and the daemon.  A request is an opcode, a
phase and a dict of language field names (the paths `abi.resolve_field`
knows: `name`, `newname`, `in.flags`, `out.attr.mode`, ...) plus a few
request-level keys:

    error               POST: the backing result (-2, 2, "ENOENT" all mean -ENOENT)
    nodeid              the context's nodeid
    uid gid pid tgid    the caller (helpers 14/15)

`prepare()` packs the arguments with the abi structs, presetting what the
kernel presets (GETATTR's fh = all ones, READ/WRITE's ret = the requested
size, READDIR's size = 4096), and builds the context.  After a VM run,
`Prepared.result(r0)` decodes the return value (allow/deny errno/bits) and
reads back every writable field that changed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fdsl import abi
from fdsl.vm.context import Arena, Context, build_context
from fdsl.vm.helpers import Caller

REQUEST_KEYS = ("error", "nodeid", "uid", "gid", "pid", "tgid")


class RequestError(ValueError):
    """A field name or value that does not fit the opcode/phase."""


def parse_errno(value: Any) -> int:
    """-errno from 2, -2, "ENOENT" or "-ENOENT"; 0 stays 0."""
    if isinstance(value, str):
        name = value.lstrip("-")
        if name not in abi.ERRNOS:
            try:
                return -abs(int(value, 0))
            except ValueError:
                raise RequestError(f"unknown errno {value!r}") from None
        return -abi.ERRNOS[name]
    return -abs(int(value))


def _presets(op: str) -> dict[str, int]:
    return {
        "getattr": {"in.fh": 0xFFFFFFFFFFFFFFFF},
        "readdir": {"in.size": abi.DIRENT_BUFFER},
    }.get(op, {})


def request_args(op: str, phase: str, fields: dict[str, Any]) -> tuple[list, list]:
    """The input and output argument bytes for `fields` (outputs only in POST)."""
    spec = abi.OPS.get(op)
    if spec is None:
        raise RequestError(f"unknown opcode {op!r}")
    if phase not in abi.PHASE_BITS:
        raise RequestError(f"unknown phase {phase!r}")
    struct_values: dict[tuple[str, int], dict[str, int]] = {}
    blobs: dict[tuple[str, int], Any] = {}
    merged = {**_presets(op), **{k: v for k, v in fields.items() if k not in REQUEST_KEYS}}
    for path, value in merged.items():
        loc = abi.resolve_field(op, phase, path)
        if loc is None:
            raise RequestError(f"{op} {phase}: no field {path!r}")
        key = (loc.direction, loc.arg_index)
        if loc.arg.kind == "struct":
            member = path.split(".", 1)[1]
            struct_values.setdefault(key, {})[member] = int(value)
        else:
            blobs[key] = value
    # READ/WRITE: the kernel presets the result to the requested size
    if op in ("read", "write") and "out.ret" not in merged:
        size = struct_values.get(("in", 0), {}).get("size", 0)
        struct_values.setdefault(("out", 0), {})["ret"] = size

    def build(direction: str, specs) -> list:
        out = []
        for i, arg in enumerate(specs):
            key = (direction, i)
            if arg.kind == "struct":
                out.append(bytes(arg.struct.pack(struct_values.get(key))))
            elif arg.null_value:
                value = blobs.get(key)
                out.append(len(value) if isinstance(value, (bytes, bytearray, str))
                           else int(value) if value is not None
                           else struct_values.get(("in", 0), {}).get("size", 0))
            else:
                out.append(_blob(arg, blobs.get(key), op, struct_values))
        return out

    inputs = build("in", spec.inputs)
    outputs = build("out", spec.outputs) if phase == "post" else []
    return inputs, outputs


def _blob(arg: abi.ArgSpec, value: Any, op: str, struct_values) -> bytes:
    if arg.kind == "string":
        data = value.encode() if isinstance(value, str) else bytes(value or b"")
        if b"\0" in data:
            raise RequestError(f"{arg.alias}: string contains NUL")
        data += b"\0"
    else:
        data = value.encode() if isinstance(value, str) else bytes(value or b"")
        if op in ("getxattr", "listxattr") and value is None \
                and struct_values.get(("in", 0), {}).get("size", 0) == 0:
            data = bytes(abi.FUSE_GETXATTR_OUT.size)  # size 0 asks for fuse_getxattr_out
    if len(data) > max(arg.capacity, 1) and arg.capacity:
        raise RequestError(f"{arg.alias}: {len(data)} bytes exceed the capacity {arg.capacity}")
    return data


@dataclass
class Result:
    """What one run decided, and what it changed."""

    ret: int                              # r0 as a signed 32-bit value
    phase: str
    error_in: int = 0
    changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # path -> (before, after)

    @property
    def denied(self) -> bool:
        return self.ret < 0

    @property
    def errno(self) -> int | None:
        return -self.ret if self.ret < 0 else None

    @property
    def errno_name(self) -> str | None:
        return abi.errno_name(-self.ret) if self.ret < 0 else None

    @property
    def decision(self) -> str:
        return "deny" if self.ret < 0 else "allow"

    @property
    def bits(self) -> list[str]:
        if self.ret < 0:
            return []
        return [name for name, bit in abi.RETURN_BITS.items() if self.ret & bit]

    @property
    def final_errno(self) -> int | None:
        """The operation's error after this run (POST cannot turn a failure into success)."""
        if self.ret < 0:
            return -self.ret
        if self.phase == "post" and self.error_in < 0:
            return -self.error_in
        return None

    def describe(self) -> str:
        if self.ret < 0:
            return f"deny {self.errno_name}"
        return "allow " + ("|".join(self.bits) or "0")


@dataclass
class Prepared:
    op: str
    phase: str
    fields: dict[str, Any]
    context: Context
    caller: Caller
    error_in: int
    before: dict[str, Any]

    def read_fields(self) -> dict[str, Any]:
        return read_writable_fields(self.context, self.op, self.phase)

    def result(self, ret: int) -> Result:
        ret &= 0xFFFFFFFF
        ret = ret - (1 << 32) if ret & 0x80000000 else ret
        after = self.read_fields()
        changed = {p: (self.before.get(p), v) for p, v in after.items() if self.before.get(p) != v}
        return Result(ret, self.phase, self.error_in, changed)


def read_writable_fields(ctx: Context, op: str, phase: str) -> dict[str, Any]:
    """Current value of every field a program can write, read where it writes it."""
    values: dict[str, Any] = {}
    for loc in abi.fields_of(op, phase):
        if loc.write_slot is None or loc.write_slot >= len(ctx.out_args):
            continue
        buf = ctx.out_args[loc.write_slot]
        if not buf.address:
            continue
        raw = ctx.read_out(loc.write_slot, loc.offset + loc.size)
        f = loc.arg.struct.field(loc.path.split(".", 1)[1])
        values[loc.path] = int.from_bytes(raw[loc.offset:loc.offset + loc.size], "little",
                                          signed=f.signed)
    return values


def prepare(op: str, phase: str, fields: dict[str, Any] | None = None, *,
            arena: Arena | None = None) -> Prepared:
    """Build the context for one field-level request."""
    fields = dict(fields or {})
    inputs, outputs = request_args(op, phase, fields)
    error_in = parse_errno(fields["error"]) if phase == "post" and "error" in fields else 0
    caller = Caller(int(fields.get("uid", 0)), int(fields.get("gid", 0)),
                    int(fields.get("pid", 0)), int(fields.get("tgid", fields.get("pid", 0))))
    ctx = build_context(op, phase, inputs, outputs, nodeid=int(fields.get("nodeid", 0)),
                        error_in=error_in, arena=arena)
    prepared = Prepared(op, phase, fields, ctx, caller, error_in, {})
    prepared.before = prepared.read_fields()
    return prepared
