"""Field-level requests: named field values in, decision and changed fields out.

Used by `fdsl run`, `fdsl test` and the daemon.  A request is an opcode, a
phase and a dict of language field names (the paths `abi.resolve_field`
knows: `name`, `newname`, `in.flags`, `out.attr.mode`, ...) plus a few
request-level keys:

    error               POST: the backing result (-2, 2, "ENOENT" all mean -ENOENT)
    nodeid              the context's nodeid
    uid gid pid tgid    the caller (helpers 14/15)

`prepare()` packs the arguments with the abi structs, presetting what the
kernel presets (`fdsl.abi.requests`: GETATTR's fh = all ones, READ/WRITE's
ret = the requested size, READDIR's size = 4096, the xattr size-0 shape), into
the same argument frame the daemon uses (`fdsl.vm.frame`), laid out for the
object's ABI (`prepare(..., record=filters.abi)`: ACK or RFC v1).  `run_phase()`
runs that phase through the daemon's own steps (`fdsl.vm.sequence`: the
program, the userspace half, the kernel's finalize errnos, the VFS lookup of
a name a create-type operation brings into existence).  `Prepared.result(r0)`
decodes a return value in the ABI's terms and reads back every writable field
that changed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fdsl import abi
from fdsl.vm import sequence, userspace
from fdsl.vm.frame import Frame, FrameCtx, layout_of, shape_of
from fdsl.vm.helpers import Caller
from fdsl.vm.userfilter import RuleFilter

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


def fields_of(record: abi.Abi, op: str, phase: str) -> list[abi.FieldLoc]:
    """Every field of `op` in `phase` in `record`'s slots (RFC v1: POST outputs in out_args)."""
    return abi.fields_for(record.ops[op], phase,
                          post_appends_outputs=record.post_appends_outputs)


def request_args(op: str, phase: str, fields: dict[str, Any],
                 record: abi.Abi = abi.ACK) -> tuple[list, list]:
    """The input and output argument bytes for `fields` (outputs only in POST)."""
    spec = record.ops.get(op)
    if spec is None:
        raise RequestError(f"unknown opcode {op!r}")
    if phase not in abi.PHASE_BITS:
        raise RequestError(f"unknown phase {phase!r}")
    struct_values: dict[tuple[str, int], dict[str, int]] = {}
    blobs: dict[tuple[str, int], Any] = {}
    merged = {**abi.requests.INPUT_DEFAULTS.get(op, {}),
              **{k: v for k, v in fields.items() if k not in REQUEST_KEYS}}
    for path, value in merged.items():
        loc = record.resolve_field(op, phase, path)
        if loc is None:
            raise RequestError(f"{op} {phase}: no field {path!r}")
        key = (loc.direction, loc.arg_index)
        if loc.arg.kind == "struct":
            member = path.split(".", 1)[1]
            struct_values.setdefault(key, {})[member] = int(value)
        else:
            blobs[key] = value
    # READ/WRITE: the kernel presets the result to the requested size
    for out, source in abi.requests.OUTPUT_PRESETS.get(op, {}).items():
        if out not in merged:
            loc = record.resolve_field(op, "pre", source)
            value = struct_values.get(("in", loc.arg_index), {}).get(source.split(".", 1)[1], 0) \
                if loc is not None else 0
            struct_values.setdefault(("out", 0), {})[out.split(".", 1)[1]] = value

    def build(direction: str, specs) -> list:
        out: list[Any] = []
        for i, arg in enumerate(specs):
            key = (direction, i)
            if arg.kind == "struct":
                out.append(bytes(arg.layout.pack(struct_values.get(key))))
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
    abi: abi.Abi = abi.ACK

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
        """ACK: the return bits set; RFC v1: the return code's name."""
        if self.ret < 0:
            return []
        return [n for n in sequence.describe(self.abi, self.ret).split("|") if n != "0"]

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
    context: FrameCtx
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
        return Result(ret, self.phase, self.error_in, changed, self.context.abi)


def read_writable_fields(ctx: FrameCtx, op: str, phase: str) -> dict[str, Any]:
    """Current value of every field a program can write, read where it writes it
    (ACK: through out_args; RFC v1: inputs in in_args, outputs in out_args)."""
    values: dict[str, Any] = {}
    for loc in fields_of(ctx.abi, op, phase):
        slots = ctx.in_args if loc.write_args == "in" else ctx.out_args
        if loc.write_slot is None or loc.write_slot >= len(slots):
            continue
        buf = slots[loc.write_slot]
        if not buf.address:
            continue
        raw = ctx.read_arg(buf, loc.offset + loc.size) or b""
        f = loc.arg.layout.member(loc.path.split(".", 1)[1])
        values[loc.path] = int.from_bytes(raw[loc.offset:loc.offset + loc.size], "little",
                                          signed=f.signed)
    return values


def prepare(op: str, phase: str, fields: dict[str, Any] | None = None,
            record: abi.Abi = abi.ACK) -> Prepared:
    """Build the argument frame for one field-level request under `record`'s layout (a
    frame of its own, so several prepared requests stay valid side by side)."""
    fields = dict(fields or {})
    inputs, outputs = request_args(op, phase, fields, record)
    error_in = parse_errno(fields["error"]) if phase == "post" and "error" in fields else 0
    caller = Caller(uid=int(fields.get("uid", 0)), gid=int(fields.get("gid", 0)),
                    pid=int(fields.get("pid", 0)),
                    tgid=int(fields.get("tgid", fields.get("pid", 0))))
    spec = record.ops[op]
    size0 = False
    if op in abi.requests.XATTR_SIZE_OPS:
        size0 = abi.FUSE_GETXATTR_IN.unpack(inputs[0])["size"] == 0
    frame = Frame(shape_of(spec, size0), layout_of(record))
    frame.begin(int(fields.get("nodeid", 0)))
    try:
        for i, value in enumerate(inputs):
            if isinstance(value, int):
                frame.set_null_input(i, value)
            else:
                frame.set_input(i, value)
        for j, value in enumerate(outputs):
            frame.set_output(j, value)
    except ValueError as err:
        raise RequestError(str(err)) from None
    if phase == "post":
        frame.to_post(error_in)
    ctx = frame.pre if phase == "pre" else frame.post
    prepared = Prepared(op, phase, fields, ctx, caller, error_in, {})
    prepared.before = prepared.read_fields()
    return prepared


@dataclass
class PhaseRun:
    """What one phase did through the daemon's steps."""

    ret: int                               # what the caller sees: the result, or -errno
    bpf_ret: int | None                    # the program's own r0 (None: it did not run)
    program_errno: int | None = None       # a deny's errno as the program returned it
    user: userspace.Outcome | None = None
    user_rules: int = 0
    entries: list[str] | None = None       # readdir post: names left in the listing
    hidden_name: bool = False              # refused by the VFS lookup of its new name


def run_phase(run: sequence.Program, prepared: Prepared, rules: RuleFilter | None,
              scope: str, nodeid: int = 0) -> PhaseRun:
    """Run `prepared`'s phase as the daemon would: program, userspace half, finalize."""
    seen: list[int] = []

    def program(ctx: Any, caller: Caller) -> int:
        r0 = run(ctx, caller)
        seen.append(r0)
        return r0

    op, frame = prepared.op, prepared.context.frame
    if prepared.phase == "pre" and op in abi.requests.NEW_NAME_FIELD:
        name = prepared.fields.get(abi.requests.NEW_NAME_FIELD[op])
        if name is not None and _lookup_denied(run, name, prepared.caller, rules, scope, nodeid,
                                               prepared.context.abi):
            return PhaseRun(-abi.ERRNOS["ENOENT"], None, hidden_name=True)
    half = rules.half(scope, prepared.caller, nodeid) if rules and rules.has_rules(scope, op) \
        else None
    try:
        if prepared.phase == "pre":
            ret = sequence.pre(program, frame, prepared.caller, op, half)
        else:
            ret = sequence.post(program, frame, prepared.caller, op, prepared.error_in, half)
        result = PhaseRun(ret, seen[0] if seen else None)
    except sequence.Denied as denied:
        result = PhaseRun(-(denied.errno or 0), seen[0] if seen else None, denied.program_errno)
    except OSError as err:     # the userspace postfilter refused
        result = PhaseRun(-(err.errno or 0), seen[0] if seen else None)
    if half is not None:
        result.user, result.user_rules, result.entries = half.outcome, half.rules, half.entries
    return result


def _lookup_denied(run: sequence.Program, name: Any, caller: Caller, rules: RuleFilter | None,
                   scope: str, nodeid: int, record: abi.Abi) -> bool:
    lookup = prepare("lookup", "pre", {"name": name, "uid": caller.uid, "gid": caller.gid,
                                       "pid": caller.pid, "tgid": caller.tgid, "nodeid": nodeid},
                     record)
    half = rules.half(scope, caller, nodeid) if rules and rules.has_rules(scope, "lookup") \
        else None
    try:
        sequence.pre(run, lookup.context.frame, caller, "lookup", half)
    except sequence.Denied:
        return True
    return False


def rule_filter(meta: Any, maps: userspace.MapAccess | None,
                emit: Any = None) -> RuleFilter | None:
    """The userspace half of an object's metadata (None without metadata)."""
    if meta is None:
        return None
    rules: dict[tuple[str, str, str], list] = {}
    for rule in meta.userspace:
        rules.setdefault((rule.scope, rule.op, rule.phase), []).append(rule)
    return RuleFilter(rules, maps, emit)
