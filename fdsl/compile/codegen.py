"""Plan -> LLVM IR (llvmlite), one function per scope in section `fuse/<scope>`.

The generated code follows the ACK fuse-bpf rules (spec sections 4, 8, 14):
dispatch on the full opcode with a compare chain; read argument slots only
for the opcodes that define them, at constant offsets; compare names with
unrolled loads bounded by the constant (byte loads for equality and prefixes;
suffixes, which need constant offsets per possible name size, share one
`switch` on the size per name and use the fewest, possibly unaligned, loads
of up to 4 bytes per size); write through `out_args[j].value` only; helpers
are called as `inttoptr (i64 ID)`; no globals except maps, the license and
the metadata; nothing that needs a bpf-to-bpf call.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from llvmlite import ir

from fdsl import abi
from fdsl.lang import ast
from fdsl.compile.planner import OpPlan, Plan, ScopePlan, simple_glob, walk_exprs
from fdsl.compile.userspace import ident_meaning

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
PTR = ir.PointerType()
MAP_RECORD_TYPE = ir.LiteralStructType([I32, I32, I64, I64, I32, I32])  # 32-byte legacy record
MAX_NAME_SIZE = abi.NAME_MAX + 1
FN_ATTRS = 'nounwind "no-jump-tables"="true"'

_INT_TYPES = {1: I8, 2: ir.IntType(16), 4: I32, 8: I64}


class CodegenError(Exception):
    """A construct the BPF back end cannot lower; carries the AST node for the span."""

    def __init__(self, message: str, node: ast.Node | None = None) -> None:
        super().__init__(message)
        self.node = node


def c64(value: int) -> ir.Constant:
    return ir.Constant(I64, value & ((1 << 64) - 1))


def c32(value: int) -> ir.Constant:
    return ir.Constant(I32, value & 0xFFFFFFFF)


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


# ---------------------------------------------------------------------- module

def generate(plan: Plan) -> tuple[ir.Module, ModuleInfo]:
    """Build the IR module: map records, one function per scope, the license.

    Call `add_section` for extra data (the metadata) and then `module_text`."""
    module = ir.Module(name="fdsl")
    module.triple = "bpfel"
    module.data_layout = "e-m:e-p:64:64-i64:64-i128:128-n32:64-S128"
    info = ModuleInfo()
    maps: dict[str, ir.GlobalVariable] = {}
    for decl in plan.maps:
        key_size, value_size, max_entries = map_sizes(decl)
        g = ir.GlobalVariable(module, MAP_RECORD_TYPE, decl.name)
        g.section = abi.MAPS_SECTION
        g.align = 8
        g.initializer = ir.Constant(MAP_RECORD_TYPE, [
            c32(abi.MAP_TYPES[decl.map_type]), c32(0), c64(key_size), c64(value_size),
            c32(max_entries), c32(0)])
        maps[decl.name] = g
    for scope in plan.scopes:
        ScopeGen(module, scope, maps, info, plan).emit()
    add_section(module, abi.LICENSE_SECTION, abi.LICENSE.encode() + b"\0", "_license")
    return module, info


def add_section(module: ir.Module, section: str, data: bytes, name: str | None = None) -> None:
    """A byte array global placed alone in `section` (license, metadata)."""
    arr = ir.ArrayType(I8, len(data))
    g = ir.GlobalVariable(module, arr, name or "_" + section.strip(".").replace(".", "_"))
    g.initializer = ir.Constant(arr, bytearray(data))
    g.section = section
    g.global_constant = True
    g.align = 1


def module_text(module: ir.Module) -> str:
    """IR text with the function attribute group llvmlite cannot spell."""
    text = str(module)
    text = text.replace(") nounwind section", ") #0 section")
    return text + f"\nattributes #0 = {{ {FN_ATTRS} }}\n"


# ----------------------------------------------------------------------- scope

@dataclass
class Env:
    """Names visible while lowering: `let` values and predicate parameters."""

    lets: dict[str, ir.Value] = field(default_factory=dict)
    params: dict[str, tuple[ast.Expr, "Env"]] = field(default_factory=dict)

    def child(self) -> "Env":
        return Env(dict(self.lets), dict(self.params))


class ScopeGen:
    """Emits the function of one scope."""

    def __init__(self, module: ir.Module, scope: ScopePlan, maps: dict[str, ir.GlobalVariable],
                 info: ModuleInfo, plan: Plan) -> None:
        self.module = module
        self.scope = scope
        self.maps = maps
        self.map_decls = {m.name: m for m in plan.maps}
        self.info = info
        fnty = ir.FunctionType(I32, [PTR])
        self.fn = ir.Function(module, fnty, scope.symbol)
        self.fn.attributes.add("nounwind")
        self.fn.section = scope.section
        self.ctx = self.fn.args[0]
        self.ctx.name = "ctx"
        self.entry_block = self.fn.append_basic_block("entry")
        self.b = ir.IRBuilder(self.entry_block)
        self.alloca_builder = ir.IRBuilder(self.entry_block)
        self.op = ""
        self.phase = ""
        self.slots: dict[tuple[str, str], ir.AllocaInstr] = {}

    # ---------------------------------------------------------------- layout
    def emit(self) -> None:
        opcode = self.ctx_load(abi.CTX_OPCODE, I32, "opcode")
        fallback = self.fn.append_basic_block("unmatched")
        shared: dict[tuple, ir.Block] = {}
        for entry in self.scope.entries:
            signature = self.entry_signature(entry)
            body = shared.get(signature)
            nxt = self.fn.append_basic_block("dispatch")
            if body is not None:
                # Same rules on the same argument layout: reuse that code.
                self.b.cbranch(self.b.icmp_unsigned("==", opcode, c32(entry.opcode)), body, nxt)
                self.b.position_at_end(nxt)
                continue
            body = self.fn.append_basic_block(f"{entry.op}.{entry.phase}")
            shared[signature] = body
            self.b.cbranch(self.b.icmp_unsigned("==", opcode, c32(entry.opcode)), body, nxt)
            self.b.position_at_end(body)
            self.emit_entry(entry)
            self.b.position_at_end(nxt)
        self.b.branch(fallback)
        self.b.position_at_end(fallback)
        self.emit_fallback(opcode)

    def entry_signature(self, entry: OpPlan) -> tuple:
        """Entries with equal signatures compile to identical code (e.g. `hide` on
        lookup/unlink/rmdir, whose name is always in_args[0])."""
        locations: list[object] = []
        for rule in entry.bpf_rules:
            for node in walk_exprs(rule.rule.body):
                path = _field_path(node) if isinstance(node, ast.Expr) else None
                if path is not None:
                    loc = abi.resolve_field(entry.op, entry.phase, path)
                    locations.append(loc and (loc.read_slot, loc.write_slot, loc.offset, loc.ctype,
                                              loc.size))
                if isinstance(node, ast.Ident) and ident_meaning(node) in (
                        ("builtin", "op"), ("builtin", "opcode")):
                    locations.append(entry.op)
        rules = tuple(id(r.rule) for r in entry.bpf_rules)
        return (entry.phase, rules, entry.allow_bits, id(entry.default), tuple(locations))

    def emit_fallback(self, opcode: ir.Value) -> None:
        """Ops without rules: the default, with plain BACKING (PRE) or 0 (POST) for allow."""
        default = self.scope.default
        if self.scope.kind == "passthrough" or isinstance(default, ast.Allow):
            post = self.b.and_(opcode, c32(abi.POSTFILTER))
            is_post = self.b.icmp_unsigned("!=", post, c32(0))
            self.b.ret(self.b.select(is_post, c32(0), c32(abi.BACKING)))
            return
        self.op, self.phase = "", "pre"
        self.emit_decision(default, abi.BACKING, Env())

    def emit_entry(self, entry: OpPlan) -> None:
        self.op, self.phase = entry.op, entry.phase
        for rule in entry.bpf_rules:
            try:
                self.emit_block(rule.rule.body, entry.allow_bits, Env())
            except CodegenError as err:
                if err.node is None:
                    err.node = rule.rule
                raise
            if self.b.block.is_terminated:
                return
        self.emit_decision(entry.default, entry.allow_bits, Env())

    # ------------------------------------------------------------ statements
    def emit_block(self, body: list[ast.Stmt], allow_bits: int, env: Env) -> None:
        env = env.child()
        for stmt in body:
            if self.b.block.is_terminated:
                return
            self.emit_stmt(stmt, allow_bits, env)

    def emit_stmt(self, s: ast.Stmt, allow_bits: int, env: Env) -> None:
        if isinstance(s, (ast.Allow, ast.Deny, ast.Return)):
            self.emit_decision(s, allow_bits, env)
        elif isinstance(s, ast.If):
            self.emit_if(s, allow_bits, env)
        elif isinstance(s, ast.Let):
            env.lets[s.name] = self.value(s.value, env)
        elif isinstance(s, ast.Assign):
            self.emit_assign(s, env)
        elif isinstance(s, ast.Count):
            self.emit_count(s, env)
        elif isinstance(s, ast.MapStore):
            self.emit_map_store(s, env)
        elif isinstance(s, ast.Log):
            self.emit_log(s, env)
        else:
            raise CodegenError(f"'{type(s).__name__}' cannot run in BPF", s)

    def emit_decision(self, s: ast.Stmt, allow_bits: int, env: Env) -> None:
        if isinstance(s, ast.Allow):
            self.b.ret(c32(allow_bits))
        elif isinstance(s, ast.Deny):
            errno = self.value(s.errno, env)
            self.b.ret(self.b.trunc(self.b.neg(errno), I32))
        elif isinstance(s, ast.Return):
            self.b.ret(self.b.trunc(self.value(s.value, env), I32))
        else:
            raise CodegenError("bad default decision", s)

    def emit_if(self, s: ast.If, allow_bits: int, env: Env) -> None:
        then_bb = self.fn.append_basic_block("then")
        else_bb = self.fn.append_basic_block("else")
        merge = self.fn.append_basic_block("endif")
        self.cond(s.cond, then_bb, else_bb, env)
        reached = False
        for block, body in ((then_bb, s.then), (else_bb, s.orelse)):
            self.b.position_at_end(block)
            self.emit_block(body, allow_bits, env)
            if not self.b.block.is_terminated:
                self.b.branch(merge)
                reached = True
        self.b.position_at_end(merge)
        if not reached:
            self.b.unreachable()

    def emit_assign(self, s: ast.Assign, env: Env) -> None:
        loc = self.field(s.target.path, s.target)
        if loc.write_slot is None or loc.ctype in ("string", "buffer"):
            raise CodegenError(f"'{'.'.join(s.target.path)}' is not writable in "
                               f"{self.op} {self.phase}", s.target)
        value = self.value(s.value, env)
        if s.op != "=":
            value = self.arith(s.op[:-1], self.load_field(loc), value, loc.ctype.startswith("s"))
        ptr = self.arg_pointer(abi.out_arg_offset(loc.write_slot), loc.offset)
        ity = _INT_TYPES[loc.size]
        self.b.store(self.b.trunc(value, ity) if ity != I64 else value, ptr, align=loc.size)

    def emit_count(self, s: ast.Count, env: Env) -> None:
        decl = self.map_decls.get(s.map)
        if decl is None or s.map not in self.maps:
            raise CodegenError(f"unknown counter '{s.map}'", s)
        key_size, value_size, _ = map_sizes(decl)
        key_ty, value_ty = _INT_TYPES[key_size], _INT_TYPES[value_size]
        key = self.value(s.key, env) if s.key is not None else c64(0)
        by = self.value(s.by, env) if s.by is not None else c64(1)
        by = self.b.trunc(by, value_ty) if value_ty != I64 else by
        self.info.map_keys.setdefault(s.map, key_meaning(s.key))
        key_slot = self.stack(key_ty, "key")
        self.b.store(self.b.trunc(key, key_ty) if key_ty != I64 else key, key_slot)
        found = self.helper(abi.HELPER_IDS["map_lookup_elem"], PTR, [self.maps[s.map], key_slot])
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
        self.helper(abi.HELPER_IDS["map_update_elem"], I64,
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
        key_ty = _INT_TYPES[map_sizes(decl)[0]]
        slot = self.stack(key_ty, "key")
        self.b.store(self.b.trunc(key, key_ty) if key_ty != I64 else key, slot)
        return slot

    def emit_map_store(self, s: ast.MapStore, env: Env) -> None:
        """`m[key] = value`: map_update_elem(map, &key, &value, BPF_ANY).

        Both operands are computed before either is written to its stack slot:
        a map read inside them uses the same shared key slot."""
        decl = self.map_decl(s.map, s)
        if decl.kind != "map" or s.op != "=":
            raise CodegenError(f"only '=' can store into the value map '{s.map}'", s)
        value_ty = _INT_TYPES[map_sizes(decl)[1]]
        key = self.value(s.key, env)
        value = self.value(s.value, env)
        self.info.map_keys.setdefault(s.map, key_meaning(s.key))
        key_slot = self.map_key(decl, key)
        value_slot = self.stack(value_ty, "value")
        self.b.store(self.b.trunc(value, value_ty) if value_ty != I64 else value, value_slot)
        self.helper(abi.HELPER_IDS["map_update_elem"], I64,
                    [self.maps[s.map], key_slot, value_slot, c64(abi.BPF_ANY)])

    def map_read(self, e: ast.MapRead, env: Env) -> ir.Value:
        """`m[key]`: map_lookup_elem, then the value, or 0 when the lookup returns NULL."""
        decl = self.map_decl(e.map, e)
        value_ty = _INT_TYPES[map_sizes(decl)[1]]
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

    def map_lookup(self, e: ast.MapRead | ast.MapHas, env: Env) -> ir.Value:
        """map_lookup_elem(m, &key): the value's address, or NULL without an entry."""
        decl = self.map_decl(e.map, e)
        key = self.value(e.key, env)
        self.info.map_keys.setdefault(e.map, key_meaning(e.key))
        return self.helper(abi.HELPER_IDS["map_lookup_elem"], PTR,
                           [self.maps[e.map], self.map_key(decl, key)])

    def emit_log(self, s: ast.Log, env: Env) -> None:
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
        args = [self.log_arg(a, env) for a in s.args]
        self.helper(abi.HELPER_IDS["trace_printk"], I64, [buf, c32(len(data)), *args])

    def log_arg(self, e: ast.Expr, env: Env) -> ir.Value:
        """Integers as u64; a name field as its buffer pointer (for %s)."""
        e, env = self.resolve(e, env)
        path = _field_path(e)
        if path is not None:
            loc = self.field(path, e)
            if loc.ctype in ("string", "buffer"):
                return self.b.ptrtoint(self.arg_pointer(abi.in_arg_offset(loc.read_slot), 0), I64)
        return self.value(e, env)

    # ------------------------------------------------------------- conditions
    @staticmethod
    def resolve(e: ast.Expr, env: Env) -> tuple[ast.Expr, Env]:
        """Follow predicate parameters to the argument expressions they stand for."""
        while isinstance(e, ast.Ident) and e.name in env.params and (
                e.ref is None or ident_meaning(e)[0] in ("param", "var", "field")):
            e, env = env.params[e.name]
        return e, env

    def cond(self, e: ast.Expr, t: ir.Block, f: ir.Block, env: Env) -> None:
        """Branch to `t` if `e` holds, else to `f` (short-circuit, early exit)."""
        e, env = self.resolve(e, env)
        if isinstance(e, ast.BoolLit):
            self.b.branch(t if e.value else f)
        elif isinstance(e, ast.Unary) and e.op == "not":
            self.cond(e.operand, f, t, env)
        elif isinstance(e, ast.Binary) and e.op == "or":
            self.cond_any(self.disjuncts(e, env), t, f)
        elif isinstance(e, ast.Binary) and e.op == "and":
            mid = self.fn.append_basic_block(e.op)
            if e.op == "and":
                self.cond(e.left, mid, f, env)
            else:
                self.cond(e.left, t, mid, env)
            self.b.position_at_end(mid)
            self.cond(e.right, t, f, env)
        elif isinstance(e, ast.Binary) and e.op in ("==", "!=") and self.is_string_cmp(e, env):
            left, right = self.resolve(e.left, env)[0], self.resolve(e.right, env)[0]
            subject, pattern = (left, right) if _field_path(left) else (right, left)
            yes, no = (t, f) if e.op == "==" else (f, t)
            self.string_any(subject, [("eq", p) for p in self.const_strings(pattern)], yes, no)
        elif isinstance(e, ast.Binary) and e.op in ("==", "!=", "<", "<=", ">", ">="):
            self.b.cbranch(self._cmp_cond(e, env), t, f)
        elif isinstance(e, ast.InSet):
            yes, no = (f, t) if e.negated else (t, f)
            self.in_set(e, yes, no, env)
        elif isinstance(e, ast.MapHas):
            yes, no = (f, t) if e.negated else (t, f)
            found = self.map_lookup(e, env)
            self.b.cbranch(self.b.icmp_unsigned("!=", found, ir.Constant(PTR, None)), yes, no)
        elif isinstance(e, ast.StrTest):
            kind = {"startswith": "prefix", "endswith": "suffix", "glob": "glob"}.get(e.kind)
            if kind is None:
                raise CodegenError(f"'{e.kind}' cannot run in BPF", e)
            self.string_any(self.resolve(e.subject, env)[0],
                            [(kind, p) for p in self.const_strings(e.pattern)], t, f)
        elif isinstance(e, ast.Call):
            body, inner = self.inline_call(e, env)
            self.cond(body, t, f, inner)
        elif isinstance(e, ast.Ident) and ident_meaning(e)[0] == "param" or (
                isinstance(e, ast.Ident) and e.name in env.params):
            bound, outer = env.params[e.name]
            self.cond(bound, t, f, outer)
        elif isinstance(e, ast.Ident) and ident_meaning(e)[0] == "const":
            self.cond(ident_meaning(e)[1].value, t, f, env)
        elif isinstance(e, ast.Ident) and ident_meaning(e)[0] == "pred":
            self.cond(ident_meaning(e)[1].body, t, f, Env(dict(env.lets)))
        else:
            v = self.value(e, env)
            if v.type == I1:
                self.b.cbranch(v, t, f)
            else:
                self.b.cbranch(self.b.icmp_unsigned("!=", v, ir.Constant(v.type, 0)), t, f)

    def disjuncts(self, e: ast.Expr, env: Env) -> list[tuple[ast.Expr, Env]]:
        """The operands of an `or` tree, looking through predicate calls."""
        e, env = self.resolve(e, env)
        if isinstance(e, ast.Binary) and e.op == "or":
            return self.disjuncts(e.left, env) + self.disjuncts(e.right, env)
        if isinstance(e, ast.Call):
            return self.disjuncts(*self.inline_call(e, env))
        return [(e, env)]

    def cond_any(self, parts: list[tuple[ast.Expr, Env]], t: ir.Block, f: ir.Block) -> None:
        """Branch to `t` if any part holds.  Neighbouring name tests on the same field
        become one `string_any`, so their suffix tests share one size dispatch
        (the tests have no side effects, so their order does not matter)."""
        i = 0
        while i < len(parts):
            e, env = parts[i]
            found = self.string_tests(e, env)
            j = i + 1
            if found is not None:
                subject, tests = found
                path = _field_path(subject)
                while j < len(parts):
                    more = self.string_tests(*parts[j])
                    if more is None or _field_path(more[0]) != path:
                        break
                    tests += more[1]
                    j += 1
            nxt = f if j == len(parts) else self.fn.append_basic_block("or")
            if found is not None:
                self.string_any(found[0], found[1], t, nxt)
            else:
                self.cond(e, t, nxt, env)
            if nxt is not f:
                self.b.position_at_end(nxt)
            i = j

    def string_tests(self, e: ast.Expr, env: Env) -> tuple[ast.Expr, list[tuple[str, bytes]]] | None:
        """(name field, tests) if `e` only tests a name against constants, else None."""
        e, env = self.resolve(e, env)
        if isinstance(e, ast.StrTest):
            kind = {"startswith": "prefix", "endswith": "suffix", "glob": "glob"}.get(e.kind)
            subject = self.resolve(e.subject, env)[0]
            if kind is None or _field_path(subject) is None:
                return None
            return subject, [(kind, p) for p in self.const_strings(e.pattern)]
        if isinstance(e, ast.InSet) and not e.negated:
            subject = self.resolve(e.subject, env)[0]
            if _field_path(subject) and self.is_string_field(subject):
                return subject, [("eq", self.const_string(m)) for m in self.set_members(e.members)]
        return None

    def in_set(self, e: ast.InSet, t: ir.Block, f: ir.Block, env: Env) -> None:
        members = self.set_members(e.members)
        subject_expr, subject_env = self.resolve(e.subject, env)
        if _field_path(subject_expr) and self.is_string_field(subject_expr):
            self.string_any(subject_expr, [("eq", self.const_string(m)) for m in members], t, f)
            return
        subject = self.value(subject_expr, subject_env)
        for member in members:
            nxt = self.fn.append_basic_block("in.next")
            hit = self.b.icmp_unsigned("==", subject, self.value(member, env))
            self.b.cbranch(hit, t, nxt)
            self.b.position_at_end(nxt)
        self.b.branch(f)

    def inline_call(self, e: ast.Call, env: Env) -> tuple[ast.Expr, Env]:
        pred = e.ref[1] if isinstance(e.ref, tuple) else e.ref
        if not isinstance(pred, ast.PredDecl):
            raise CodegenError(f"unknown predicate '{e.func}'", e)
        inner = Env(dict(env.lets), {p: (a, env) for p, a in zip(pred.params, e.args)})
        return pred.body, inner

    # ----------------------------------------------------------------- strings
    def is_string_field(self, e: ast.Expr) -> bool:
        path = _field_path(e)
        if path is None:
            return False
        return self.field(path, e).ctype == "string"

    def is_string_cmp(self, e: ast.Binary, env: Env) -> bool:
        for side in (self.resolve(e.left, env)[0], self.resolve(e.right, env)[0]):
            if isinstance(side, ast.StrLit) or (side.ty is not None and side.ty.kind == "string"):
                return True
            if self.is_string_field(side):
                return True
        return False

    def set_members(self, e: ast.Expr) -> list[ast.Expr]:
        if isinstance(e, ast.SetLit):
            return list(e.members)
        if isinstance(e, ast.Ident):
            kind, payload = ident_meaning(e)
            if kind == "set":
                return list(payload.members)
            if kind == "const":
                return self.set_members(payload.value)
        return [e]

    def const_string(self, e: ast.Expr) -> bytes:
        if isinstance(e, ast.StrLit):
            return e.value.encode("utf-8")
        if isinstance(e, ast.Ident) and ident_meaning(e)[0] == "const":
            return self.const_string(ident_meaning(e)[1].value)
        raise CodegenError("names can only be compared with string constants in BPF", e)

    def const_strings(self, e: ast.Expr) -> list[bytes]:
        return [self.const_string(m) for m in self.set_members(e)]

    def string_any(self, subject: ast.Expr, tests: list[tuple[str, bytes]],
                   t: ir.Block, f: ir.Block) -> None:
        """Branch to `t` if the name matches any of the (kind, pattern) tests.

        kind: "eq", "prefix", "suffix" or "glob".  Tests without a suffix part
        run one after the other; tests with one share a single dispatch on the
        name's size per prefix (see `suffix_group`)."""
        path = _field_path(subject)
        if path is None:
            raise CodegenError("string tests need a name field on the left", subject)
        loc = self.field(path, subject)
        if loc.ctype != "string":
            raise CodegenError(f"'{'.'.join(path)}' is not a name", subject)
        capacity = min(loc.size, MAX_NAME_SIZE)
        plain: list[_StrTest] = []
        groups: dict[tuple[bytes, bool], list[_StrTest]] = {}
        for kind, pattern in tests:
            test = _StrTest.parse(kind, pattern)
            if test.need > capacity:
                continue                       # longer than any name: never matches
            if test.suffix:
                groups.setdefault((test.prefix, test.wild), []).append(test)
            else:
                plain.append(test)
        slot = abi.in_arg_offset(loc.read_slot)
        for test in plain:
            nxt = self.fn.append_basic_block("str.next")
            size = self.ctx_load(slot + abi.ARG_SIZE, I32, "size")
            ok = self.fn.append_basic_block("str.size")
            pred = "==" if test.exact else ">="
            self.b.cbranch(self.b.icmp_unsigned(pred, size, c32(test.need)), ok, nxt)
            self.b.position_at_end(ok)
            base = self.ctx_load(slot + abi.ARG_VALUE, PTR, "name")
            self.compare_bytes(base, 0, test.prefix, test.wild, nxt)
            self.b.branch(t)
            self.b.position_at_end(nxt)
        for (prefix, wild), group in groups.items():
            nxt = self.fn.append_basic_block("str.next")
            self.suffix_group(slot, capacity, prefix, wild, group, t, nxt)
            self.b.position_at_end(nxt)
        self.b.branch(f)

    def suffix_group(self, slot: int, capacity: int, prefix: bytes, wild: bool,
                     group: list["_StrTest"], t: ir.Block, f: ir.Block) -> None:
        """Suffix tests sharing a prefix: one `switch` on the size, then every test per size.

        Buffer offsets must be constants (spec 4.1), so each possible size gets
        its own compares at offset size - 1 - len(suffix); the switch (no jump
        tables: the function attribute) becomes a balanced compare tree, and
        a size's leaf tries every suffix that fits, with the fewest loads."""
        need = min(test.need for test in group)
        size = self.ctx_load(slot + abi.ARG_SIZE, I32, "size")
        if prefix:
            ok = self.fn.append_basic_block("str.size")
            self.b.cbranch(self.b.icmp_unsigned(">=", size, c32(need)), ok, f)
            self.b.position_at_end(ok)
        base = self.ctx_load(slot + abi.ARG_VALUE, PTR, "name")
        self.compare_bytes(base, 0, prefix, wild, f)
        switch = self.b.switch(size, f)
        for total in range(need, capacity + 1):
            leaf = self.fn.append_basic_block(f"suffix.{total}")
            switch.add_case(c32(total), leaf)
            self.b.position_at_end(leaf)
            for test in group:
                if test.need > total:
                    continue
                nxt = self.fn.append_basic_block("suffix.next")
                self.compare_bytes(base, total - 1 - len(test.suffix), test.suffix, test.wild, nxt,
                                   wide=True)
                self.b.branch(t)
                self.b.position_at_end(nxt)
            self.b.branch(f)

    def compare_bytes(self, base: ir.Value, offset: int, expected: bytes, wild: bool,
                      f: ir.Block, wide: bool = False) -> None:
        """Compare `expected` at base+offset; exit to `f` at the first mismatch.

        Byte loads (globs skip '?') unless `wide`: suffix compares are repeated
        for every possible size, so there each run of literal bytes is read
        with the fewest loads of up to 4 bytes, the last one overlapping the
        previous one instead of a narrower load (7 bytes = two 4-byte loads).
        Wide loads are as unaligned as the name; the IR claims natural alignment because the BPF
        back end would otherwise split each one into byte loads, and the
        kernels fuse-bpf ships on (x86-64, arm64) load unaligned buffer words.
        Every byte read is one of `expected`'s, so nothing past it is read."""
        for start, width in _load_plan(expected, wild, wide):
            ity = _INT_TYPES[width]
            value = int.from_bytes(expected[start:start + width], "little")
            ptr = self.b.gep(base, [c64(offset + start)], source_etype=I8)
            loaded = self.b.load(ptr, typ=ity, align=width)
            nxt = self.fn.append_basic_block("bytes")
            self.b.cbranch(self.b.icmp_unsigned("==", loaded, ir.Constant(ity, value)), nxt, f)
            self.b.position_at_end(nxt)

    # ------------------------------------------------------------------ values
    def value(self, e: ast.Expr, env: Env) -> ir.Value:
        """An integer expression as i64 (booleans as 0/1)."""
        e, env = self.resolve(e, env)
        if e.const_value is not None and not isinstance(e, ast.StrLit):
            return c64(int(e.const_value))
        if isinstance(e, ast.IntLit):
            return c64(e.value)
        if isinstance(e, ast.BoolLit):
            return c64(int(e.value))
        if isinstance(e, ast.FieldRef):
            return self.load_field(self.field(e.path, e))
        if isinstance(e, ast.Ident):
            return self.ident_value(e, env)
        if isinstance(e, ast.Unary):
            if e.op == "not":
                return self.bool_value(e, env)
            operand = self.value(e.operand, env)
            return self.b.neg(operand) if e.op == "-" else self.b.not_(operand)
        if isinstance(e, ast.Binary):
            if e.op in ("and", "or", "==", "!=", "<", "<=", ">", ">="):
                return self.bool_value(e, env)
            signed = self.signed(e.left) or self.signed(e.right)
            return self.arith(e.op, self.value(e.left, env), self.value(e.right, env), signed)
        if isinstance(e, (ast.InSet, ast.StrTest, ast.Call, ast.MapHas)):
            return self.bool_value(e, env)
        if isinstance(e, ast.MapRead):
            return self.map_read(e, env)
        if isinstance(e, ast.ArgSize):    # in_args[i].size of the whole argument
            slot = self.field(e.arg.path, e).read_slot
            return self.b.zext(self.ctx_load(abi.in_arg_offset(slot) + abi.ARG_SIZE, I32, "size"), I64)
        raise CodegenError(f"'{type(e).__name__}' has no value in BPF", e)

    def ident_value(self, e: ast.Ident, env: Env) -> ir.Value:
        if e.name in env.params:
            bound, outer = env.params[e.name]
            return self.value(bound, outer)
        kind, payload = ident_meaning(e)
        if kind == "int":
            return c64(payload)
        if kind == "const":
            return self.value(payload.value, env)
        if kind == "pred":
            return self.bool_value(e, env)
        if kind in ("let", "var") and e.name in env.lets:
            return env.lets[e.name]
        if kind == "builtin":
            return self.builtin(payload)
        if kind == "field":
            path = tuple(payload.split(".")) if isinstance(payload, str) else tuple(
                getattr(payload, "path", payload))
            return self.load_field(self.field(path, e))
        if e.name in ("name", "newname", "target"):
            raise CodegenError(f"'{e.name}' is a string", e)
        raise CodegenError(f"unknown name '{e.name}'", e)

    def bool_value(self, e: ast.Expr, env: Env) -> ir.Value:
        t = self.fn.append_basic_block("true")
        f = self.fn.append_basic_block("false")
        done = self.fn.append_basic_block("bool")
        self.cond(e, t, f, env)
        for block in (t, f):
            self.b.position_at_end(block)
            self.b.branch(done)
        self.b.position_at_end(done)
        phi = self.b.phi(I64, "b")
        phi.add_incoming(c64(1), t)
        phi.add_incoming(c64(0), f)
        return phi

    def compare(self, op: str, left: ir.Value, right: ir.Value, signed: bool) -> ir.Value:
        return (self.b.icmp_signed if signed else self.b.icmp_unsigned)(op, left, right)

    def arith(self, op: str, a: ir.Value, b: ir.Value, signed: bool) -> ir.Value:
        simple: dict[str, Callable[..., ir.Value]] = {
            "+": self.b.add, "-": self.b.sub, "*": self.b.mul, "&": self.b.and_,
            "|": self.b.or_, "^": self.b.xor}
        if op in simple:
            return simple[op](a, b)
        if op in ("<<", ">>"):
            amount = self.b.and_(b, c64(63))
            if op == "<<":
                return self.b.shl(a, amount)
            return self.b.ashr(a, amount) if signed else self.b.lshr(a, amount)
        if op in ("/", "%"):
            # BPF semantics: x / 0 == 0, x % 0 == x; never emit UB.
            zero = self.b.icmp_unsigned("==", b, c64(0))
            safe = self.b.select(zero, c64(1), b)
            if op == "/":
                q = self.b.udiv(a, safe)
                return self.b.select(zero, c64(0), q)
            r = self.b.urem(a, safe)
            return self.b.select(zero, a, r)
        if op in ("==", "!=", "<", "<=", ">", ">="):
            return self.b.zext(self.compare(op, a, b, signed), I64)
        raise CodegenError(f"operator '{op}' is not supported")

    def signed(self, e: ast.Expr) -> bool:
        if e.ty is not None and e.ty.kind == "int":
            return e.ty.signed
        if isinstance(e, ast.IntLit):
            return e.value < 0
        if isinstance(e, ast.Unary) and e.op == "-":
            return True
        if isinstance(e, ast.Ident) and ident_meaning(e) == ("builtin", "error"):
            return True
        path = _field_path(e)
        if path is not None and self.op:
            loc = abi.resolve_field(self.op, self.phase, path)
            return bool(loc and loc.ctype.startswith("s"))
        return False

    # -------------------------------------------------------------- bool compare
    # (comparisons are lowered through `cond` so their operands get short-circuit)
    def _cmp_cond(self, e: ast.Binary, env: Env) -> ir.Value:
        signed = self.signed(e.left) or self.signed(e.right)
        return self.compare(e.op, self.operand(e.left, env), self.operand(e.right, env), signed)

    def operand(self, e: ast.Expr, env: Env) -> ir.Value:
        """A comparison operand; an opcode name ("lookup") compared with `op` is its number."""
        if isinstance(e, ast.StrLit) and e.value in abi.OPS:
            return c64(abi.OPS[e.value].number)
        return self.value(e, env)

    # ---------------------------------------------------------- context access
    def field(self, path: tuple[str, ...], node: ast.Node | None) -> abi.FieldLoc:
        loc = abi.resolve_field(self.op, self.phase, path) if self.op else None
        if loc is None:
            raise CodegenError(f"field '{'.'.join(path)}' does not exist for "
                               f"{self.op or 'this op'} {self.phase}", node)
        return loc

    def ctx_load(self, offset: int, ty: ir.Type, name: str = "") -> ir.Value:
        ptr = self.b.gep(self.ctx, [c64(offset)], source_etype=I8)
        return self.b.load(ptr, name=name, typ=ty, align=8 if ty in (I64, PTR) else 4)

    def arg_pointer(self, slot_offset: int, offset: int) -> ir.Value:
        """Pointer `offset` bytes into the buffer of the slot at `slot_offset`."""
        base = self.ctx_load(slot_offset + abi.ARG_VALUE, PTR, "arg")
        return self.b.gep(base, [c64(offset)], source_etype=I8) if offset else base

    def load_field(self, loc: abi.FieldLoc) -> ir.Value:
        if loc.ctype in ("string", "buffer"):
            raise CodegenError(f"'{loc.path}' is a {loc.ctype}, not a number")
        ptr = self.arg_pointer(abi.in_arg_offset(loc.read_slot), loc.offset)
        ity = _INT_TYPES[loc.size]
        raw = self.b.load(ptr, typ=ity, align=loc.size)
        if ity == I64:
            return raw
        return self.b.sext(raw, I64) if loc.ctype.startswith("s") else self.b.zext(raw, I64)

    def builtin(self, name: str) -> ir.Value:
        if name == "nodeid":
            return self.ctx_load(abi.CTX_NODEID, I64, "nodeid")
        if name == "opcode":    # the context's full opcode, phase bit included
            return self.b.zext(self.ctx_load(abi.CTX_OPCODE, I32, "opcode"), I64)
        if name == "op":
            # Each dispatch entry is compiled for one opcode, so this is a constant.
            return c64(abi.OPS[self.op].number if self.op else 0)
        if name == "error":
            raw = self.ctx_load(abi.CTX_ERROR_IN, I32, "error_in")
            return self.b.neg(self.b.sext(raw, I64))
        helper = "get_current_uid_gid" if name in ("uid", "gid") else "get_current_pid_tgid"
        both = self.helper(abi.HELPER_IDS[helper], I64, [])
        if name in ("uid", "pid"):
            return self.b.and_(both, c64(0xFFFFFFFF))
        return self.b.lshr(both, c64(32))

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


@dataclass(frozen=True)
class _StrTest:
    """One name test as prefix + suffix: eq ("a"), prefix ("a*"), suffix ("*a"), glob ("a*b")."""

    prefix: bytes
    suffix: bytes
    exact: bool        # size must equal `need` (no '*')
    wild: bool         # '?' matches any byte (globs)

    @property
    def need(self) -> int:
        """The smallest size (with the NUL) a matching name has."""
        return len(self.prefix) + len(self.suffix) + 1

    @classmethod
    def parse(cls, kind: str, pattern: bytes) -> "_StrTest":
        if kind == "eq":
            return cls(pattern, b"", True, False)
        if kind == "prefix":
            return cls(pattern, b"", False, False)
        if kind == "suffix":
            return cls(b"", pattern, False, False)
        if not simple_glob(pattern.decode("utf-8", "replace")):
            raise CodegenError("this glob cannot run in BPF")
        if b"*" not in pattern:
            return cls(pattern, b"", True, True)
        prefix, suffix = pattern.split(b"*", 1)
        return cls(prefix, suffix, False, True)


def _load_plan(expected: bytes, wild: bool, wide: bool) -> list[tuple[int, int]]:
    """(start, width) loads covering the literal bytes of `expected` ('?' skipped if wild)."""
    runs: list[tuple[int, int]] = []
    start = None
    for i, byte in enumerate(expected + b"?"):
        literal = i < len(expected) and not (wild and byte == ord("?"))
        if literal and start is None:
            start = i
        elif not literal and start is not None:
            runs.append((start, i - start))
            start = None
    plan: list[tuple[int, int]] = []
    for start, length in runs:
        if not wide:
            plan += [(start + k, 1) for k in range(length)]
        elif length in (1, 2, 4):
            plan.append((start, length))
        elif length == 3:
            plan += [(start, 2), (start + 2, 1)]
        else:   # 4-byte loads, the last one ending at the run's end (overlapping)
            plan += [(start + k, 4) for k in range(0, length - 4, 4)] + [(start + length - 4, 4)]
    return plan


def _field_path(e: ast.Expr) -> tuple[str, ...] | None:
    if isinstance(e, ast.FieldRef):
        return tuple(e.path)
    if isinstance(e, ast.Ident):
        kind, payload = ident_meaning(e)
        if kind == "field":
            return tuple(payload.split(".")) if isinstance(payload, str) else tuple(
                getattr(payload, "path", payload))
        if kind == "var" and e.name in ("name", "newname", "target"):
            return (e.name,)
    return None


def key_meaning(key: ast.Expr | None) -> str:
    """What a map key is, for `fdsl stats` ("uid", "op", "nodeid", ...)."""
    if key is None:
        return "none"
    if isinstance(key, ast.Ident):
        return key.name
    if isinstance(key, ast.FieldRef):
        return ".".join(key.path)
    return type(key).__name__.lower()


__all__ = ["generate", "add_section", "module_text", "CodegenError", "ModuleInfo", "map_sizes",
           "key_meaning"]
