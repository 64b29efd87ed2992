"""Pass 4, request fields: what each opcode and phase of a rule can read and write.

Every `FieldRef` is resolved through `abi.resolve_field` for **every** opcode
the rule covers (a field missing for some is an error naming them) and gets its
type; request values (`uid`, `error`, ...) get theirs where the phase has them;
assignments are checked against the ABI's writable / honoured columns.  A
value the request does not have keeps `ty` None, so the type pass reports
nothing more about it.  Predicate bodies are checked at each call, with the
caller's opcodes.
"""
from __future__ import annotations

from fdsl import abi
from fdsl.lang import ast as A
from fdsl.lang.passes.common import (BUILTIN_TYPES, ENTRY_FIELDS, Request, all_rules, field_type, no_request,
                                     op_list, rule_request, similar)
from fdsl.lang.passes.visitor import InliningVisitor, Unit


def run(unit: Unit) -> None:
    fields = Fields(unit)
    for item in unit.policy.items:
        if isinstance(item, A.ConstDecl):
            item.value = fields.check(item.value, no_request("a const"))
        elif isinstance(item, A.SetDecl):
            item.members = [fields.check(m, no_request("a set")) for m in item.members]
        elif isinstance(item, A.MapDecl) and item.max_expr is not None:
            item.max_expr = fields.check(item.max_expr, no_request("a map size"))
        elif isinstance(item, A.Default):
            item.decision = fields.check(item.decision, no_request("the default"))
    for rule in all_rules(unit.policy.items):
        if rule.resolved_ops:
            fields.request = rule_request(rule)
            fields.named_ops = {o.name for o in rule.ops}
            rule.body = fields.visit_all(rule.body)


class Fields(InliningVisitor):
    def __init__(self, unit: Unit) -> None:
        super().__init__(unit.diags)
        self.request = no_request("a const")
        self.named_ops: set[str] = set()   # opcodes the rule names (not through a group)

    def visit_Deny(self, s: A.Deny) -> A.Deny:
        """Warn about a PRE deny whose errno the kernel's finalize replaces (spec §6):
        a refused LOOKUP reaches the caller as ENOENT, a refused GETATTR as EIO.
        Only for opcodes the rule names: `explain` shows it for groups."""
        s.errno = self.visit(s.errno)
        ref = getattr(s.errno, "ref", None)
        value = ref.value if isinstance(ref, (A.ErrnoRef, A.AbiConstRef)) else \
            s.errno.value if isinstance(s.errno, A.IntLit) else None
        if value is None or not 1 <= value <= 4095 or self.request.phase != "pre":
            return s
        lost = [op for op in self.request.ops if op in self.named_ops
                and op in abi.requests.PRE_DENY_ERRNO
                and (op == "getattr" or abi.requests.PRE_DENY_ERRNO[op] != value)]
        if lost:
            seen = ", ".join(f"{op} as {abi.errno_name(abi.requests.PRE_DENY_ERRNO[op])}"
                             for op in lost)
            self.diags.warn(f"a fuse-bpf kernel answers this deny {abi.errno_name(value)} of "
                            f"{seen}", s.span,
                            "a refused LOOKUP always reaches the caller as ENOENT, a refused "
                            "GETATTR as EIO (and the inode is marked bad); refuse open or "
                            "access instead")
        return s

    def check(self, node, request: Request):
        """Visit one node in the given request context."""
        outer, self.request = self.request, request
        try:
            return self.visit(node)
        finally:
            self.request = outer

    # ------------------------------------------------------------ reads
    def locations(self, ref: A.FieldRef) -> dict[str, abi.FieldLoc] | None:
        """The field for every opcode of the request; None after reporting missing ones."""
        req = self.request
        dotted = ".".join(ref.path)
        if req.phase is None:
            self.diags.error(f"request field '{dotted}' cannot be used in {req.where}", ref.span)
            return None
        locs: dict[str, abi.FieldLoc] = {}
        missing: list[str] = []
        for op in req.ops:
            loc = abi.resolve_field(op, req.phase, ref.path)
            if loc is None:
                missing.append(op)
            else:
                locs[op] = loc
        if missing:
            self.diags.error(f"field '{dotted}' is not available for {op_list(missing)} {req.phase}",
                             ref.span, field_hint(dotted, missing[0], req.phase))
            return None
        return locs

    def visit_FieldRef(self, ref: A.FieldRef) -> A.Expr:
        if self.request.entry and ref.path == ("name",):
            ref.ty = A.STRING              # the dirent's name, not an argument
            return ref
        if self.request.entry and len(ref.path) == 1 and ref.path[0] in ENTRY_FIELDS:
            ref.ty = ENTRY_FIELDS[ref.path[0]]     # the dirent's ino / type
            return ref
        locs = self.locations(ref)
        if locs is None:
            return ref
        types = {field_type(loc) for loc in locs.values()}
        dotted = ".".join(ref.path)
        if any(t.kind == "buffer" for t in types):
            self.diags.error(f"'{dotted}' is a data buffer and cannot be read by a filter", ref.span)
        elif len({t.kind for t in types}) > 1:
            self.diags.error(f"field '{dotted}' has different types across the rule's opcodes", ref.span)
        else:
            ref.ty = max(types, key=lambda t: t.bits)
        return ref

    def visit_Ident(self, e: A.Ident) -> A.Expr:
        if not isinstance(e.ref, A.BuiltinRef):
            return super().visit_Ident(e)
        req = self.request
        if req.phase is None:
            self.diags.error(f"'{e.name}' describes a request and cannot be used in {req.where}", e.span)
        elif e.name == "error" and req.phase == "pre":
            self.diags.error("'error' is only defined in post rules", e.span,
                             "it is the positive errno of the backing operation (0 = success)")
        else:
            e.ty = BUILTIN_TYPES[e.name]
        return e

    def visit_MapRead(self, e: A.MapRead | A.MapHas) -> A.Expr:
        e.key = self.visit(e.key)
        if e.ref is not None and self.request.phase is None:
            self.diags.error(f"map '{e.map}' cannot be read in {self.request.where}", e.span,
                             "map contents exist only while requests run")
        return e

    visit_MapHas = visit_MapRead

    def visit_ArgSize(self, e: A.ArgSize) -> A.Expr:
        locs = self.locations(e.arg)
        if locs is not None:
            e.ty = A.Type("int", 32)
        return e

    def visit_DropEntries(self, s: A.DropEntries) -> A.DropEntries:
        req = self.request
        if req.phase != "post" or any(op != "readdir" for op in req.ops):
            self.diags.error("'drop entries' is only allowed in 'on readdir post' rules", s.span)
        s.pred = self.check(s.pred, Request(req.ops, req.phase, req.where, entry=True))
        return s

    # ----------------------------------------------------------- writes
    def visit_Assign(self, s: A.Assign) -> A.Assign:
        s.value = self.visit(s.value)
        target, req = s.target, self.request
        dotted = ".".join(target.path)
        if len(target.path) == 1 and target.path[0] in BUILTIN_TYPES:
            self.diags.error(f"cannot assign to '{dotted}': it is a property of the request", target.span)
            return s
        locs = self.locations(target)
        if locs is None:
            return s
        if any(loc.is_string or loc.ctype == "buffer" for loc in locs.values()):
            self.diags.error(f"cannot assign to '{dotted}': strings and buffers are read-only", target.span)
            return s
        readonly = [op for op, loc in locs.items() if not loc.writable]
        if readonly:
            hint = "POST rules may write out.* fields only" if req.phase == "post" else None
            self.diags.error(f"'{dotted}' is read-only in {', '.join(readonly)} {req.phase}",
                             target.span, hint)
            return s
        ignored = [op for op, loc in locs.items() if not loc.effective]
        if ignored and req.phase is not None:
            column = "honoured" if req.phase == "pre" else "finalize"
            honoured = sorted({p for op in ignored for p in kernel_uses(op, req.phase)})
            hint = f"the kernel uses: {', '.join(honoured)}" if honoured else \
                "the kernel uses no modified fields of this operation"
            self.diags.warn(f"the kernel ignores writes to '{dotted}' in {', '.join(ignored)} {req.phase} "
                            f"(ABI spec section 9, '{column}' column)", target.span, hint)
        target.ty = field_type(next(iter(locs.values())))
        return s


def kernel_uses(op: str, phase: str) -> frozenset[str]:
    spec = abi.OPS[op]
    return spec.honoured if phase == "pre" else spec.finalized


def field_hint(dotted: str, op: str, phase: str) -> str:
    names = [loc.path for loc in abi.fields_of(op, phase)]
    guess = similar(dotted, names)
    if guess:
        return guess
    if dotted.startswith("out.") and phase == "pre":
        return "out.* fields exist in post rules only"
    if not names:
        return f"{op} {phase} has no fields"
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    return f"{op} {phase} has: {shown}"
