"""Plan -> LLVM IR (llvmlite), one function per scope in section `fuse/<scope>`.

The generated code follows the ACK fuse-bpf rules (spec sections 4, 8, 14):
dispatch on the full opcode with a `switch` (compares and bit tests, never a
jump table), then code shared by every opcode whose next rule has the same
shape (`sharing`): an `on all` rule, a group or `hide` on several opcodes
is emitted once, with the few values that differ per opcode (the argument
slot a field is in, the decision's constant) computed in a small block per
opcode; where opcodes' rule chains part, a second switch picks the next
piece.  Argument slots are read only for the opcodes that define them, at
constant offsets; names are compared with unrolled loads bounded by the
constant (`names`); writes go through `out_args[j].value` only; context
loads are kept apart from buffer loads (`ScopeGen.ctx_load`); helpers are
called as `inttoptr (i64 ID)` (`effects`); no globals except maps, the
license and the metadata; nothing that needs a bpf-to-bpf call.

Everything that differs between ABIs comes from the plan's `Abi` record
(`self.abi`): context offsets, field slots, helper ids, return codes (the
planner's ACK bits mapped by `Abi.from_ack_return`).  Under a packet ABI (RFC
v1, spec §12) every buffer read is preceded by a compare of the pointer it
reads through against the slot's `end_offset` (`guard`), and writes go
through the pointer helpers 208/209 return, after a NULL check (`emit_assign`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from llvmlite import ir

from fdsl import abi
from fdsl.lang import ast
from fdsl.compile import sharing
from fdsl.compile.irbase import (BARRIER_ATTRS, FN_ATTRS, I1, I8, I32, I64, INT_TYPES, MAP_RECORD_TYPE,
                                 PTR, CodegenError, Field, Node, Param, c32, c64, opaque)
from fdsl.compile.effects import Effects, ModuleInfo, key_meaning, map_sizes
from fdsl.compile.names import NameTests
from fdsl.compile.planner import Plan, ScopePlan, walk_exprs
from fdsl.compile.sharing import Member, field_path
from fdsl.compile.userspace import ident_meaning

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
    """IR text with the attribute groups llvmlite cannot spell."""
    text = str(module)
    text = text.replace(") nounwind section", ") #0 section")
    return text + f"\nattributes #0 = {{ {FN_ATTRS} }}\nattributes #1 = {{ {BARRIER_ATTRS} }}\n"


@dataclass
class Env:
    """Names visible while lowering: `let` values and predicate parameters."""

    lets: dict[str, ir.Value] = field(default_factory=dict)
    params: dict[str, tuple[ast.Expr, "Env"]] = field(default_factory=dict)

    def child(self) -> "Env":
        return Env(dict(self.lets), dict(self.params))


class ScopeGen(NameTests, Effects):
    """Emits the function of one scope."""

    def __init__(self, module: ir.Module, scope: ScopePlan, maps: dict[str, ir.GlobalVariable],
                 info: ModuleInfo, plan: Plan) -> None:
        self.module = module
        self.scope = scope
        self.maps = maps
        self.map_decls = {m.name: m for m in plan.maps}
        self.info = info
        fnty = ir.FunctionType(I32, [PTR])
        self.abi = plan.abi
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
        self.invariant = module.add_metadata([])
        self.members: list[Member] = []
        self.node: Node | None = None
        self.slots: dict[tuple[str, str], ir.AllocaInstr] = {}

    # ---------------------------------------------------------------- layout
    def emit(self) -> None:
        """Dispatch on the full opcode, then shared code (see `dispatch`)."""
        fallback = self.fn.append_basic_block("unmatched")
        self.dispatch([Member(e, 0) for e in self.scope.entries], fallback)
        self.b.position_at_end(fallback)
        self.emit_fallback(self.opcode())

    def dispatch(self, members: list[Member], fallback: ir.Block | None) -> None:
        """Branch from the current block to the code of each member's next piece.

        Members whose pieces have the same shape share one `Node`; a `switch`
        on the opcode (lowered to compares and bit tests, never a jump table)
        picks the node, through a small block per distinct set of the node's
        per-entry values.  `fallback` is where other opcodes go; None means
        the members are all the opcodes that can arrive here, so one node is
        the switch default and a single node needs no switch at all."""
        at = self.b.block
        targets: list[tuple[Member, ir.Block]] = []
        for group in sharing.group(members, self.abi):
            node = self.emit_node(group)
            setups: dict[tuple, ir.Block] = {}
            for index, m in enumerate(group):
                specs = tuple(p.specs[index] for p in node.params)
                if specs not in setups:
                    setups[specs] = self.setup(node, specs) if node.params else node.block
                targets.append((m, setups[specs]))
        self.b.position_at_end(at)
        counts: dict[int, int] = {}
        for _, block in targets:
            counts[id(block)] = counts.get(id(block), 0) + 1
        if fallback is None:
            fallback = next(b for _, b in targets if counts[id(b)] == max(counts.values()))
            if len(counts) == 1:
                self.b.branch(fallback)
                return
        switch = self.b.switch(self.opcode(), fallback)
        for m, block in targets:
            if block is not fallback:
                switch.add_case(c32(m.entry.opcode), block)

    def setup(self, node: Node, specs: tuple) -> ir.Block:
        """A block computing one entry's values of the node's parameters."""
        block = self.fn.append_basic_block("setup")
        self.b.position_at_end(block)
        for param, spec in zip(node.params, specs):
            param.phi.add_incoming(self.materialize(param.phi.type, spec), block)
        self.b.branch(node.block)
        return block

    def emit_node(self, members: list[Member]) -> Node:
        """One piece of code for every member, and the pieces after it.

        Consecutive pieces stay in the same node while every member continues
        with the same shape (no re-dispatch); the node ends at a decision on
        every path or where the members' chains part."""
        saved = (self.members, self.node, self.op, self.phase)
        node = Node(self.fn.append_basic_block(f"{members[0].entry.op}.{members[0].entry.phase}"))
        self.node = node
        # The node's first block holds only its phis; the code starts in the next one.
        self.b.position_at_end(node.block)
        body = self.fn.append_basic_block("body")
        self.b.branch(body)
        self.b.position_at_end(body)
        while True:
            self.members = members
            self.op, self.phase = members[0].entry.op, members[0].entry.phase
            self.emit_piece(members[0])
            if self.b.block.is_terminated:
                break
            following = sharing.group([Member(m.entry, m.step + 1) for m in members], self.abi)
            if len(following) > 1:
                self.dispatch([m for g in following for m in g], None)
                break
            members = following[0]
        self.members, self.node, self.op, self.phase = saved
        return node

    def emit_piece(self, m: Member) -> None:
        rule = m.piece()
        if rule is None:
            self.emit_decision(m.entry.default, Env())
            return
        try:
            self.emit_block(rule.rule.body, Env())
        except CodegenError as err:
            if err.node is None:
                err.node = rule.rule
            raise

    def per_entry(self, ty: ir.Type, specs: list[tuple]) -> ir.Value:
        """A value that may differ between the members: computed here when it
        does not, else a parameter of the node (a phi its setup blocks feed).

        A spec is ("const", int) or ("ctx", offset): a context load."""
        if all(spec == specs[0] for spec in specs):
            return self.materialize(ty, specs[0])
        if self.abi.packet and self.members_write() and any(
                spec[0] == "ctx" and spec[1] >= self.abi.in_arg_offset(0) for spec in specs):
            return self.selected_slot_field(ty, specs)
        node = self.node
        assert node is not None, "per-entry values exist only inside a node"
        key = (str(ty), tuple(specs))
        for param in node.params:
            if param.key == key:
                return param.phi
        here = ir.IRBuilder(node.block)
        here.position_at_start(node.block)
        phi = here.phi(ty, "param")
        node.params.append(Param(key, specs, phi))
        return phi

    def members_write(self) -> bool:
        """Some rule of the current members' entries writes a field (calls 208/209)."""
        return any(isinstance(n, ast.Assign) for m in self.members for r in m.entry.bpf_rules
                   for n in walk_exprs(r.rule.body))

    def selected_slot_field(self, ty: ir.Type, specs: list[tuple]) -> ir.Value:
        """Packet ABIs with writes: a slot field that differs between the members, loaded here.

        A node parameter holding the loaded pointer would live across the
        node's helper 208/209 calls, which invalidate (and may move) the
        argument; so the parameter is the member's index among the distinct
        fields, and every use loads each candidate and selects one."""
        distinct = list(dict.fromkeys(specs))
        index = self.per_entry(I32, [("const", distinct.index(spec)) for spec in specs])
        value = self.materialize(ty, distinct[-1])
        for k, spec in enumerate(distinct[:-1]):
            value = self.b.select(self.b.icmp_unsigned("==", index, c32(k)),
                                  self.materialize(ty, spec), value)
        return value

    def materialize(self, ty: ir.Type, spec: tuple) -> ir.Value:
        if spec[0] == "const":
            return ir.Constant(ty, spec[1] & ((1 << ty.width) - 1))
        return self.ctx_load(spec[1], ty)

    def emit_fallback(self, opcode: ir.Value) -> None:
        """Ops without rules: the default, with plain BACKING (PRE) or 0 (POST) for allow."""
        default = self.scope.default
        if self.scope.kind == "passthrough" or isinstance(default, ast.Allow):
            pre, post = self.ret_code(abi.BACKING, "pre"), self.ret_code(0, "post")
            if pre == post:         # RFC v1: CONTINUE either way
                self.b.ret(c32(pre))
                return
            is_post = self.b.icmp_unsigned("!=", self.b.and_(opcode, c32(abi.POSTFILTER)), c32(0))
            self.b.ret(self.b.select(is_post, c32(post), c32(pre)))
            return
        self.op, self.phase = "", "pre"
        self.members = []
        self.emit_decision(default, Env())

    # ------------------------------------------------------------ statements
    def emit_block(self, body: list[ast.Stmt], env: Env) -> None:
        env = env.child()
        for stmt in body:
            if self.b.block.is_terminated:
                return
            self.emit_stmt(stmt, env)

    def emit_stmt(self, s: ast.Stmt, env: Env) -> None:
        if isinstance(s, (ast.Allow, ast.Deny, ast.Return)):
            self.emit_decision(s, env)
        elif isinstance(s, ast.If):
            self.emit_if(s, env)
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

    def emit_decision(self, s: ast.Stmt, env: Env) -> None:
        """Return the decision; `allow` and constant decisions may differ per member."""
        if isinstance(s, ast.Allow) or sharing.const_decision(s):
            if not self.members:            # the fallback: ops without entries
                value = abi.BACKING if isinstance(s, ast.Allow) else self.decision_of(s)
                self.b.ret(c32(self.ret_code(value, "pre", s)))
                return
            specs = [("const", self.ret_code(m.entry.allow_bits if isinstance(s, ast.Allow)
                                             else self.decision_of(m.node(s)), m.entry.phase, s))
                     for m in self.members]
            self.b.ret(self.per_entry(I32, specs))
        elif isinstance(s, ast.Deny):
            errno = self.value(s.errno, env)
            self.b.ret(self.b.trunc(self.b.neg(errno), I32))
        elif isinstance(s, ast.Return):
            if self.abi.return_style != "bitmask":
                raise CodegenError(f"a computed 'return' has no {self.abi.name} return code", s)
            self.b.ret(self.b.trunc(self.value(s.value, env), I32))
        else:
            raise CodegenError("bad default decision", s)

    def ret_code(self, value: int, phase: str, node: ast.Node | None = None) -> int:
        """This ABI's result for the ACK result `value` (bits or a negative errno)."""
        code = self.abi.from_ack_return(value, phase)
        if code is None:        # abi_check reports these at the source first
            raise CodegenError(f"{self.abi.name} has no return code for {value} in {phase}", node)
        return code

    @staticmethod
    def decision_of(s: ast.Node) -> int:
        """The return value of a constant `deny` / `return`."""
        if isinstance(s, ast.Deny) and s.errno.const_value is not None:
            return -int(s.errno.const_value)
        if isinstance(s, ast.Return) and s.value.const_value is not None:
            return int(s.value.const_value)
        raise CodegenError("decision is not a constant", s)

    def emit_if(self, s: ast.If, env: Env) -> None:
        then_bb = self.fn.append_basic_block("then")
        else_bb = self.fn.append_basic_block("else")
        merge = self.fn.append_basic_block("endif")
        self.cond(s.cond, then_bb, else_bb, env)
        reached = False
        for block, body in ((then_bb, s.then), (else_bb, s.orelse)):
            self.b.position_at_end(block)
            self.emit_block(body, env)
            if not self.b.block.is_terminated:
                self.b.branch(merge)
                reached = True
        self.b.position_at_end(merge)
        if not reached:
            self.b.unreachable()

    def emit_assign(self, s: ast.Assign, env: Env) -> None:
        f = self.field(s.target)
        loc = f.loc
        if loc.write_slot is None or loc.ctype in ("string", "buffer"):
            raise CodegenError(f"'{'.'.join(s.target.path)}' is not writable in "
                               f"{self.op} {self.phase}", s.target)
        value = self.value(s.value, env)
        if s.op != "=":
            value = self.arith(s.op[:-1], self.load_field(f), value, loc.ctype.startswith("s"))
        base = self.writable_base(f) if self.abi.buffer_stores == "helpers" else self.write_base(f)
        ptr = self.b.gep(base, [c64(loc.offset)], source_etype=I8)
        ity = INT_TYPES[loc.size]
        self.b.store(self.b.trunc(value, ity) if ity != I64 else value, ptr, align=loc.size)

    def writable_base(self, f: Field) -> ir.Value:
        """RFC v1: the argument's writable buffer from helper 208/209, NULL-checked.

        The whole argument is asked for (a smaller size would shrink a
        variable-size one), with copy set so the other bytes stay.  When the
        kernel refuses (NULL) the operation fails with EIO rather than going
        on without the write a policy asked for."""
        directions = {l.write_args for l in f.locs}
        if len(directions) != 1:
            raise CodegenError("a write shared by inputs and outputs")
        direction = directions.pop()
        slot = self.per_entry(I64, [("const", l.write_slot or 0) for l in f.locs])
        value = self.write_base(f)
        size = self.per_entry(I64, [("const", l.arg.size) for l in f.locs])
        ptr = self.helper(self.abi.writable_helpers[direction], PTR,
                          [self.ctx, slot, value, size, c64(1)])
        refused = self.fn.append_basic_block("write.refused")
        ok = self.fn.append_basic_block("write")
        self.b.cbranch(self.b.icmp_unsigned("==", ptr, ir.Constant(PTR, None)), refused, ok)
        self.b.position_at_end(refused)
        self.b.ret(c32(-abi.ERRNOS["EIO"]))
        self.b.position_at_end(ok)
        return ptr

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
            subject, pattern = (left, right) if field_path(left) else (right, left)
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
                path = field_path(subject)
                while j < len(parts):
                    more = self.string_tests(*parts[j])
                    if more is None or field_path(more[0]) != path:
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
            if kind is None or field_path(subject) is None:
                return None
            return subject, [(kind, p) for p in self.const_strings(e.pattern)]
        if isinstance(e, ast.InSet) and not e.negated:
            subject = self.resolve(e.subject, env)[0]
            if field_path(subject) and self.is_string_field(subject):
                return subject, [("eq", self.const_string(m)) for m in self.set_members(e.members)]
        return None

    def in_set(self, e: ast.InSet, t: ir.Block, f: ir.Block, env: Env) -> None:
        members = self.set_members(e.members)
        subject_expr, subject_env = self.resolve(e.subject, env)
        if field_path(subject_expr) and self.is_string_field(subject_expr):
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
        path = field_path(e)
        if path is None:
            return False
        return self.field(e).loc.ctype == "string"

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
            return self.load_field(self.field(e))
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
            return self.b.zext(self.read_size(self.field(e.arg)), I64)
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
            return self.load_field(self.field(e))
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
        path = field_path(e)
        if path is not None and self.op:
            loc = self.abi.resolve_field(self.op, self.phase, path)
            return bool(loc and loc.ctype.startswith("s"))
        return False

    # -------------------------------------------------------------- bool compare
    # (comparisons are lowered through `cond` so their operands get short-circuit)
    def _cmp_cond(self, e: ast.Binary, env: Env) -> ir.Value:
        signed = self.signed(e.left) or self.signed(e.right)
        return self.compare(e.op, self.operand(e.left, env), self.operand(e.right, env), signed)

    def operand(self, e: ast.Expr, env: Env) -> ir.Value:
        """A comparison operand; an opcode name ("lookup") compared with `op` is its number."""
        if isinstance(e, ast.StrLit) and e.value in self.abi.ops:
            return c64(self.abi.ops[e.value].number)
        return self.value(e, env)

    # ---------------------------------------------------------- context access
    def field(self, node: ast.Expr) -> Field:
        """Where every member finds the field `node` names (same offset and type)."""
        path = field_path(node) or ()
        locs = []
        for m in self.members:
            own = m.node(node)
            loc = self.abi.resolve_field(m.entry.op, self.phase, field_path(own) or path)
            if loc is None:
                raise CodegenError(f"field '{'.'.join(path)}' does not exist for "
                                   f"{m.entry.op} {self.phase}", node)
            locs.append(loc)
        if not locs:
            raise CodegenError(f"field '{'.'.join(path)}' does not exist for this op", node)
        return Field(locs[0], locs)

    def read_slot(self, f: Field, member: str, ty: ir.Type) -> ir.Value:
        """A field of the argument slot the field is read from (per member)."""
        return self.per_entry(ty, [("ctx", self.abi.slot_offset(l.read_args, l.read_slot, member))
                                   for l in f.locs])

    def read_base(self, f: Field) -> ir.Value:
        """The buffer the field is read from (in_args[slot].value, per member)."""
        return self.read_slot(f, "value", PTR)

    def read_end(self, f: Field) -> ir.Value | None:
        """The end of that buffer under a packet ABI (`end_offset`); None for ACK."""
        return self.read_slot(f, "end_offset", PTR) if self.abi.packet else None

    def write_base(self, f: Field) -> ir.Value:
        return self.per_entry(PTR, [("ctx", self.abi.slot_offset(l.write_args, l.write_slot or 0,
                                                                 "value")) for l in f.locs])

    def read_size(self, f: Field) -> ir.Value:
        """in_args[slot].size of the field's argument (a name's length + 1)."""
        return self.read_slot(f, "size", I32)

    def guard(self, base: ir.Value, end: ir.Value | None, nbytes: int, f: ir.Block) -> None:
        """Packet ABIs: go on only if `nbytes` from `base` are below `end` (else to `f`).

        The compare of base + nbytes against end_offset is what gives the
        verifier (and the RFC kernel's) packet pointer its range (spec §12.1)."""
        if end is None or nbytes <= 0:
            return
        ok = self.fn.append_basic_block("inbounds")
        last = self.b.gep(base, [c64(nbytes)], source_etype=I8)
        self.b.cbranch(self.b.icmp_unsigned(">", last, end), f, ok)
        self.b.position_at_end(ok)

    def opcode(self) -> ir.Value:
        return self.ctx_load(self.abi.header_offset("opcode"), I32, "opcode")

    def ctx_load(self, offset: int, ty: ir.Type, name: str = "") -> ir.Value:
        """A context field, followed by an empty asm statement that uses it.

        LLVM's tail merging would otherwise merge this load with a buffer load
        at the same offset in another branch (say `nodeid`, ctx+0, and `in.fh`,
        buffer+0, in two rules' trace_printk calls) into one instruction
        reached with two pointer kinds, which the kernel refuses ("same insn
        cannot be used with different pointers", spec 4.1).  The asm emits no
        instruction and touches no memory the program can see, so the load
        is still combined with dominating loads of the same field."""
        ptr = self.b.gep(self.ctx, [c64(offset)], source_etype=I8)
        load = self.b.load(ptr, name=name, typ=ty, align=8 if ty in (I64, PTR) else 4)
        # The context does not change while the program runs (nothing stores
        # into it), so one load serves every later use, even across stores
        # into argument buffers.  Except RFC v1's argument slots: helpers
        # 208/209 may move an argument, and the pointers loaded before the
        # call are no longer valid packet pointers.
        if not self.abi.packet or offset < self.abi.in_arg_offset(0):
            load.set_metadata("invariant.load", self.invariant)
        return opaque(self.b, load)

    def load_field(self, f: Field) -> ir.Value:
        """A numeric field as i64.  Under a packet ABI the whole struct is first
        proven in bounds (one compare per argument, which later reads share);
        a shorter argument reads as 0."""
        loc = f.loc
        if loc.ctype in ("string", "buffer"):
            raise CodegenError(f"'{loc.path}' is a {loc.ctype}, not a number")
        base = self.read_base(f)
        end = self.read_end(f)
        short = self.fn.append_basic_block("short") if end is not None else None
        if short is not None:
            # The smallest member struct still holds the field (equal shapes: same offset).
            self.guard(base, end, min(l.arg.size for l in f.locs), short)
        ptr = self.b.gep(base, [c64(loc.offset)], source_etype=I8)
        ity = INT_TYPES[loc.size]
        raw = self.b.load(ptr, typ=ity, align=loc.size)
        value = raw if ity == I64 else (self.b.sext(raw, I64) if loc.ctype.startswith("s")
                                        else self.b.zext(raw, I64))
        if short is None:
            return value
        loaded = self.b.block
        done = self.fn.append_basic_block("field")
        self.b.branch(done)
        self.b.position_at_end(short)
        self.b.branch(done)
        self.b.position_at_end(done)
        phi = self.b.phi(I64, "field")
        phi.add_incoming(value, loaded)
        phi.add_incoming(c64(0), short)
        return phi

    def builtin(self, name: str) -> ir.Value:
        if name == "nodeid":
            return self.ctx_load(self.abi.header_offset("nodeid"), I64, "nodeid")
        if name == "opcode":    # the context's full opcode, phase bit included
            return self.b.zext(self.opcode(), I64)
        if name == "op":
            numbers = {self.abi.ops[m.entry.op].number for m in self.members}
            if len(numbers) == 1:
                return c64(numbers.pop())
            # Shared by several opcodes: read it (one load and a mask, not a value per opcode).
            return self.b.zext(self.b.and_(self.opcode(), c32(abi.OPCODE_MASK)), I64)
        if name == "error":
            raw = self.ctx_load(self.abi.header_offset("error_in"), I32, "error_in")
            return self.b.neg(self.b.sext(raw, I64))
        helper = "get_current_uid_gid" if name in ("uid", "gid") else "get_current_pid_tgid"
        both = self.helper(self.abi.helper_id(helper), I64, [])
        if name in ("uid", "pid"):
            return self.b.and_(both, c64(0xFFFFFFFF))
        return self.b.lshr(both, c64(32))

__all__ = ["generate", "add_section", "module_text", "CodegenError", "ModuleInfo", "map_sizes",
           "key_meaning"]
