"""BPF statements with effects beyond the decision: counters, value maps, trace logs.

Helpers are called the usual way, through `inttoptr (i64 ID)` (spec 8.1);
their stack operands (map keys and values, printk formats) live in slots of
the entry block shared by every site of the same role, so hundreds of sites
stay inside the 512-byte stack.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llvmlite import ir

from fdsl import abi
from fdsl.compile.irbase import I8, I64, INT_TYPES, PTR, CodegenError, Field, c32, c64
from fdsl.compile.sharing import field_path
from fdsl.lang import ast


@dataclass
class LogSite:
    id: int
    fmt: str
    location: str


@dataclass
class ModuleInfo:
    """Side tables codegen fills for the metadata: log formats, map key meanings."""

    logs: list[LogSite] = field(default_factory=list)
    map_keys: dict[str, str] = field(default_factory=dict)


def map_sizes(decl: ast.MapDecl) -> tuple[int, int, int]:
    """(key_size, value_size, max_entries) of a declared map."""
    key_bits = decl.key_type.bits if decl.key_type is not None else 32
    value_bits = decl.value_type.bits if decl.value_type is not None else 64
    max_entries = decl.max_entries
    if decl.max_expr is not None:
        known = decl.max_expr.const_value
        if known is None and isinstance(decl.max_expr, ast.IntLit):
            known = decl.max_expr.value
        max_entries = known if known is not None else max_entries
    if decl.key_type is None:
        max_entries = 1
    return max(1, key_bits // 8), max(1, value_bits // 8), max_entries


class Effects:
    """Mixin of `codegen.ScopeGen`: counters, map stores and reads, logs."""

    fn: ir.Function
    b: ir.IRBuilder
    entry_block: ir.Block
    alloca_builder: ir.IRBuilder
    slots: dict[tuple[str, str], ir.AllocaInstr]
    maps: dict[str, ir.GlobalVariable]
    map_decls: dict[str, ast.MapDecl]
    info: ModuleInfo
    abi: abi.Abi

    def value(self, e: ast.Expr, env: Any) -> ir.Value:
        raise NotImplementedError

    def resolve(self, e: ast.Expr, env: Any) -> tuple[ast.Expr, Any]:
        raise NotImplementedError

    def field(self, node: ast.Expr) -> Field:
        raise NotImplementedError

    def read_base(self, f: Field) -> ir.Value:
        raise NotImplementedError

    def read_end(self, f: Field) -> ir.Value | None:
        raise NotImplementedError

    def guard(self, base: ir.Value, end: ir.Value | None, nbytes: int, f: ir.Block) -> None:
        raise NotImplementedError

    def emit_count(self, s: ast.Count, env: Any) -> None:
        decl = self.map_decls.get(s.map)
        if decl is None or s.map not in self.maps:
            raise CodegenError(f"unknown counter '{s.map}'", s)
        key_size, value_size, _ = map_sizes(decl)
        key_ty, value_ty = INT_TYPES[key_size], INT_TYPES[value_size]
        key = self.value(s.key, env) if s.key is not None else c64(0)
        by = self.value(s.by, env) if s.by is not None else c64(1)
        by = self.b.trunc(by, value_ty) if value_ty != I64 else by
        self.info.map_keys.setdefault(s.map, key_meaning(s.key))
        key_slot = self.stack(key_ty, "key")
        self.b.store(self.b.trunc(key, key_ty) if key_ty != I64 else key, key_slot)
        found = self.helper(self.abi.helper_id("map_lookup_elem"), PTR, [self.maps[s.map], key_slot])
        hit = self.fn.append_basic_block("count.hit")
        miss = self.fn.append_basic_block("count.miss")
        done = self.fn.append_basic_block("count.done")
        self.b.cbranch(self.b.icmp_unsigned("!=", found, ir.Constant(PTR, None)), hit, miss)
        self.b.position_at_end(hit)
        self.b.atomic_rmw("add", found, by, "monotonic")
        self.b.branch(done)
        self.b.position_at_end(miss)
        value_slot = self.stack(value_ty, "init")
        self.b.store(by, value_slot)
        self.helper(self.abi.helper_id("map_update_elem"), I64,
                    [self.maps[s.map], key_slot, value_slot, c64(abi.BPF_NOEXIST)])
        self.b.branch(done)
        self.b.position_at_end(done)

    def map_decl(self, name: str, node: ast.Node) -> ast.MapDecl:
        decl = self.map_decls.get(name)
        if decl is None or name not in self.maps:
            raise CodegenError(f"unknown map '{name}'", node)
        return decl

    def map_key(self, decl: ast.MapDecl, key: ir.Value) -> ir.AllocaInstr:
        """The key on the stack, at the map's key width (helpers take a pointer)."""
        key_ty = INT_TYPES[map_sizes(decl)[0]]
        slot = self.stack(key_ty, "key")
        self.b.store(self.b.trunc(key, key_ty) if key_ty != I64 else key, slot)
        return slot

    def emit_map_store(self, s: ast.MapStore, env: Any) -> None:
        """`m[key] = value`: map_update_elem(map, &key, &value, BPF_ANY).

        Both operands are computed before either is written to its stack slot:
        a map read inside them uses the same shared key slot."""
        decl = self.map_decl(s.map, s)
        if decl.kind != "map" or s.op != "=":
            raise CodegenError(f"only '=' can store into the value map '{s.map}'", s)
        value_ty = INT_TYPES[map_sizes(decl)[1]]
        key = self.value(s.key, env)
        value = self.value(s.value, env)
        self.info.map_keys.setdefault(s.map, key_meaning(s.key))
        key_slot = self.map_key(decl, key)
        value_slot = self.stack(value_ty, "value")
        self.b.store(self.b.trunc(value, value_ty) if value_ty != I64 else value, value_slot)
        self.helper(self.abi.helper_id("map_update_elem"), I64,
                    [self.maps[s.map], key_slot, value_slot, c64(abi.BPF_ANY)])

    def map_read(self, e: ast.MapRead, env: Any) -> ir.Value:
        """`m[key]`: map_lookup_elem, then the value, or 0 when the lookup returns NULL."""
        decl = self.map_decl(e.map, e)
        value_ty = INT_TYPES[map_sizes(decl)[1]]
        found = self.map_lookup(e, env)
        hit = self.fn.append_basic_block("read.hit")
        done = self.fn.append_basic_block("read.done")
        miss = self.b.block
        self.b.cbranch(self.b.icmp_unsigned("!=", found, ir.Constant(PTR, None)), hit, done)
        self.b.position_at_end(hit)
        raw = self.b.load(found, typ=value_ty, align=value_ty.width // 8)
        loaded = self.b.zext(raw, I64) if value_ty != I64 else raw
        self.b.branch(done)
        self.b.position_at_end(done)
        phi = self.b.phi(I64, "mapval")
        phi.add_incoming(c64(0), miss)
        phi.add_incoming(loaded, hit)
        return phi

    def map_lookup(self, e: ast.MapRead | ast.MapHas, env: Any) -> ir.Value:
        """map_lookup_elem(m, &key): the value's address, or NULL without an entry."""
        decl = self.map_decl(e.map, e)
        key = self.value(e.key, env)
        self.info.map_keys.setdefault(e.map, key_meaning(e.key))
        return self.helper(self.abi.helper_id("map_lookup_elem"), PTR,
                           [self.maps[e.map], self.map_key(decl, key)])

    def emit_log(self, s: ast.Log, env: Any) -> None:
        if len(s.args) > 3:
            raise CodegenError("log takes at most 3 values (bpf_trace_printk)", s)
        data = s.fmt.encode("utf-8") + b"\0"
        if len(data) > 256:
            raise CodegenError("log format longer than 255 bytes", s)
        location = f"{s.span.file}:{s.span.line}"
        if not any(l.fmt == s.fmt and l.location == location for l in self.info.logs):
            self.info.logs.append(LogSite(len(self.info.logs), s.fmt, location))
        padded = data + b"\0" * (-len(data) % 8)
        buf = self.stack(ir.ArrayType(I64, 32), "fmt")
        for i in range(0, len(padded), 8):
            word = int.from_bytes(padded[i:i + 8], "little")
            slot = self.b.gep(buf, [c64(i)], source_etype=I8)
            self.b.store(c64(word), self.b.bitcast(slot, I64.as_pointer()), align=8)
        # Packet ABIs: a name is printed only once proven to hold a byte (never
        # false for a real name: the line is skipped otherwise).
        skip = self.fn.append_basic_block("log.done") if self.abi.packet else None
        args = [self.log_arg(a, env, skip) for a in s.args]
        self.helper(self.abi.helper_id("trace_printk"), I64, [buf, c32(len(data)), *args])
        if skip is not None:
            self.b.branch(skip)
            self.b.position_at_end(skip)

    def log_arg(self, e: ast.Expr, env: Any, skip: ir.Block | None = None) -> ir.Value:
        """Integers as u64; a name field as its buffer pointer (for %s)."""
        e, env = self.resolve(e, env)
        if field_path(e) is not None:
            f = self.field(e)
            if f.loc.ctype in ("string", "buffer"):
                base = self.read_base(f)
                if skip is not None:
                    self.guard(base, self.read_end(f), 1, skip)
                return self.b.ptrtoint(base, I64)
        return self.value(e, env)

    def helper(self, helper_id: int, ret: ir.Type, args: list[ir.Value]) -> ir.Value:
        """Call BPF helper `helper_id` the usual way: through `inttoptr (i64 ID)`."""
        target = c64(helper_id).inttoptr(PTR)
        target.function_type = ir.FunctionType(ret, [a.type for a in args])
        return self.b.call(target, args)

    def stack(self, ty: ir.Type, name: str) -> ir.AllocaInstr:
        """A stack slot in the entry block, shared by every use of the same role.

        Uses never overlap (a slot lives within one statement), and sharing
        keeps hundreds of `count`/`log` sites inside the 512-byte stack."""
        key = (name, str(ty))
        slot = self.slots.get(key)
        if slot is None:
            self.alloca_builder.position_at_start(self.entry_block)
            slot = self.alloca_builder.alloca(ty, name=name)
            slot.align = 8
            self.slots[key] = slot
        return slot


def key_meaning(key: ast.Expr | None) -> str:
    """What a map key is, for `fdsl stats` ("uid", "op", "nodeid", ...)."""
    if key is None:
        return "none"
    if isinstance(key, ast.Ident):
        return key.name
    if isinstance(key, ast.FieldRef):
        return ".".join(key.path)
    return type(key).__name__.lower()
