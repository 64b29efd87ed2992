"""Runs a policy's `test` blocks through the compiled object, as the kernel and daemon would.

Each block becomes one simulated request (`fdsl.vm.simulate`) run by the program of
the scope the block names (`at "path"`), taken from the object's own metadata,
on the interpreter or the JIT.  When the program asks for the userspace filter
(USER_FILTER) the policy's userspace rules from the metadata run through
`fdsl.vm.userspace.evaluate`, the daemon's entry point, so a test checks the real
bytes plus the real userspace half, never a second implementation of either.

Decisions: PRE `allow` means the operation goes to the backing filesystem
(ACK: BACKING set; RFC v1: a code that runs the backing step); POST `allow`
means a non-negative result; `deny E` means -E; `return N` (an ACK value in
the language) is compared with what the object's ABI returns for it.  The
ABI is the compiled object's own (`FilterSet.abi`).
`expect COND` is evaluated (with the userspace evaluator) on the fields after
both halves ran: the modified inputs in PRE, the outputs in POST.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import Any

from fdsl import abi
from fdsl.lang import ast as A
from fdsl.compile import userspace as rules
from fdsl.vm import sequence, simulate, userspace
from fdsl.lang.passes.common import const_str
from fdsl.lang.diagnostics import Sources
from fdsl.compile.metadata import Metadata, ScopeMeta



@dataclass
class Outcome:
    """What one request did, after the BPF program and the userspace rules."""

    ret: int                               # final result: bits, or -errno
    phase: str
    section: str | None                    # None: no program (passthrough)
    fields: dict[str, Any] = field(default_factory=dict)     # after the filters
    changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    bpf_ret: int | None = None
    user: userspace.Outcome | None = None
    user_rules: int = 0
    entries: list[str] | None = None       # readdir post: names left in the listing
    error: int = 0                         # POST: positive errno of the backing op
    logs: list[str] = field(default_factory=list)
    request: dict[str, Any] = field(default_factory=dict)   # op, uid, gid, pid, tgid, nodeid
    maps: userspace.MapAccess | None = None   # the maps after the request (`expect m[k] == v`)
    program_errno: int | None = None       # a deny's errno as the program returned it
    hidden_name: bool = False              # refused by the VFS lookup of the new name
    abi: abi.Abi = abi.ACK                 # the object's ABI: how `ret` reads

    def describe(self) -> str:
        text = describe_ret(self.ret, self.phase, self.abi)
        if self.hidden_name:
            return text + " (the VFS looks the new name up first and a lookup rule hides it)"
        if self.program_errno is not None and self.ret != -self.program_errno:
            return (text + f" (the program denied {abi.errno_name(self.program_errno)}; the "
                    f"kernel's {self.request.get('op')} finalize answers "
                    f"{abi.errno_name(-self.ret)})")
        return text


@dataclass
class TestResult:
    name: str
    location: str                          # "file:line"
    failures: list[str] = field(default_factory=list)
    outcome: Outcome | None = None

    @property
    def passed(self) -> bool:
        return not self.failures


def describe_ret(ret: int, phase: str, record: abi.Abi = abi.ACK) -> str:
    if ret < 0:
        return f"deny {abi.errno_name(-ret)}"
    name = sequence.describe(record, ret)
    if not sequence.allows(record, phase, ret):
        return f"return {name} (no backing step: a classic FUSE request)"
    return f"allow {name}"


def scope_for(meta: Metadata | None, path: str | None) -> ScopeMeta | None:
    """The innermost scope whose subtree contains `path` (None/"" = the mount root)."""
    if meta is None:
        return None
    target = (path or "").strip("/")
    best = None
    for scope in meta.scopes:
        inside = scope.path == "" or target == scope.path or target.startswith(scope.path + "/")
        if inside and (best is None or len(scope.path) > len(best.path)):
            best = scope
    return best


def pack_dirents(names: list[str]) -> bytes:
    """fuse_dirent records, as the backing readdir leaves them in the buffer."""
    data, _ = abi.pack_dirents([(n.encode(), i + 1, i + 1, abi.DT_REG)
                                for i, n in enumerate(names)], 1 << 20)
    return data


def setup_values(test: A.TestBlock) -> tuple[dict[str, Any], list[str] | None]:
    """The request's field values (constants, checked by the front end) and readdir names."""
    fields: dict[str, Any] = {}
    entries = None
    for a in test.setup:
        if isinstance(a, A.MapStore):      # a map entry, not a request field (see Runner.preset)
            continue
        path = ".".join(a.target.path)
        if path == "dirents":
            entries = [const_str(m) or "" for m in a.value.members]  # type: ignore[attr-defined]
            fields[path] = pack_dirents(entries)
            continue
        text = const_str(a.value)
        fields[path] = text if text is not None else a.value.const_value
    if entries is None and test.op == "readdir" and test.phase == "post":
        entries = []
    return fields, entries


def argument_sizes(prepared: simulate.Prepared) -> dict[str, int]:
    """in_args[i].size of every whole argument (names, data buffers), for `sizeof`."""
    ctx, sizes = prepared.context, {}
    for loc in simulate.fields_of(ctx.abi, prepared.op, prepared.phase):
        if loc.ctype in ("string", "buffer") and loc.read_slot < len(ctx.in_args):
            sizes[loc.path] = ctx.in_args[loc.read_slot].length
    return sizes


def read_fields(prepared: simulate.Prepared) -> dict[str, Any]:
    """Every readable field's current value (what the daemon decodes from the payload)."""
    ctx = prepared.context
    values: dict[str, Any] = {}
    for loc in simulate.fields_of(ctx.abi, prepared.op, prepared.phase):
        slots = ctx.in_args if loc.read_args == "in" else ctx.out_args
        if loc.ctype == "buffer" or loc.read_slot >= len(slots):
            continue
        raw = ctx.read_arg(slots[loc.read_slot])
        if raw is None:
            continue
        if loc.is_string:
            values[loc.path] = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
        else:
            member = loc.arg.layout.member(loc.path.split(".", 1)[1])
            values[loc.path] = int.from_bytes(raw[loc.offset:loc.offset + loc.size], "little",
                                              signed=member.signed)
    values.update(prepared.read_fields())   # writable fields, read where they are written
    return values


class Runner:
    """One loaded object plus its metadata; runs test blocks against it."""

    def __init__(self, obj: bytes, backend: str = "jit") -> None:
        from fdsl.vm.filterset import FilterSet

        self.logs: list[str] = []
        self.filters = FilterSet.load(obj, backend=backend, log_callback=self.logs.append)
        self.meta: Metadata | None = self.filters.object.meta
        # Userspace rules and `expect m[k] == v` use the programs' own maps.
        self.maps = userspace.TableMaps(self.filters.maps)
        self.rules = simulate.rule_filter(self.meta, self.maps, self.logs.append)

    def preset(self, test: A.TestBlock) -> None:
        """Every test starts from empty maps plus the entries its request line gives."""
        for m in self.filters.maps:
            if hasattr(m, "delete"):
                for key, _ in m.items():
                    m.delete(key)
            else:   # an array: every element exists; zero them all at once
                ctypes.memset(m.base, 0, m.elem_size * m.max_entries)
        for a in test.setup:
            if isinstance(a, A.MapStore):
                self.maps.store(a.map, a.key.const_value or 0, a.value.const_value or 0)

    def section_for(self, path: str | None) -> tuple[str | None, str]:
        """(program section or None for no program, scope path) for a test's `at`."""
        scope = scope_for(self.meta, path)
        if scope is None:
            if path:
                raise simulate.RequestError("the object has no scope metadata for 'at'")
            return ("fuse/root" if "fuse/root" in self.filters.sections else None), ""
        if scope.kind == "passthrough" or scope.section not in self.filters.sections:
            return None, scope.path
        return scope.section, scope.path

    def request(self, test: A.TestBlock) -> Outcome:
        """Run one test's request through the daemon's steps (`simulate.run_phase`)."""
        fields, entries = setup_values(test)
        section, scope_path = self.section_for(test.path)
        prepared = simulate.prepare(test.op, test.phase, fields, self.filters.abi)
        error = -prepared.error_in
        caller = prepared.caller
        nodeid = int(fields.get("nodeid", 0))
        request = {"op": test.op, "uid": caller.uid, "gid": caller.gid, "pid": caller.pid,
                   "tgid": caller.tgid, "nodeid": nodeid, "sizes": argument_sizes(prepared)}
        self.logs.clear()
        self.preset(test)
        if section is None:   # no program: plain backing access (spec 3: like returning BACKING)
            ret = self.filters.abi.from_ack_return(abi.BACKING if test.phase == "pre" else 0,
                                                   test.phase) or 0
            return Outcome(ret, test.phase, None, read_fields(prepared), entries=entries,
                           error=error, request=request, abi=self.filters.abi)
        filters = self.filters

        def program(ctx: Any, who: Any) -> int:
            return filters.run(section, ctx, who)

        run = simulate.run_phase(program, prepared, self.rules, scope_path, nodeid)
        after = read_fields(prepared)
        changed = {p: (prepared.before.get(p), v) for p, v in after.items()
                   if p in prepared.before and prepared.before.get(p) != v}
        outcome = Outcome(run.ret, test.phase, section, after, changed, run.bpf_ret,
                          user=run.user, user_rules=run.user_rules,
                          entries=run.entries if run.entries is not None else entries,
                          error=error, request=request, program_errno=run.program_errno,
                          hidden_name=run.hidden_name, abi=self.filters.abi)
        outcome.logs = list(self.logs)
        outcome.maps = self.maps
        return outcome


def user_request(outcome: Outcome, entries: list[str] | None) -> userspace.Request:
    """The request as the daemon decodes it: every field of the payload, the caller, error."""
    r = outcome.request
    return userspace.Request(r["op"], outcome.phase, dict(outcome.fields), uid=r["uid"],
                             gid=r["gid"], pid=r["pid"], tgid=r["tgid"], nodeid=r["nodeid"],
                             error=outcome.error,
                             entries=list(entries) if entries is not None else None,
                             sizes=dict(r.get("sizes", {})))


# ------------------------------------------------------------------ expectations

def check(test: A.TestBlock, outcome: Outcome, sources: Sources | None = None) -> list[str]:
    """Failure messages for every expectation `outcome` does not meet."""
    failures = []
    for x in test.expects:
        if x.decision is not None:
            want = expected_decision(x.decision)
            if not decision_matches(x.decision, outcome):
                failures.append(f"expected {want}, got {outcome.describe()}")
        if x.check is not None:
            message = check_condition(x.check, outcome, sources)
            if message:
                failures.append(message)
        if x.log is not None and x.log not in all_logs(outcome):
            shown = ", ".join(f'"{line}"' for line in all_logs(outcome)) or "no log lines"
            failures.append(f'expected log "{x.log}", got {shown}')
        if x.error is not None:
            want_errno, got_errno = x.error.const_value or 0, final_errno(outcome)
            if got_errno != want_errno:
                failures.append(f"expected error {abi.errno_name(want_errno)}, got "
                                + (f"error {abi.errno_name(got_errno)}" if got_errno else "no error"))
    return failures


def all_logs(outcome: Outcome) -> list[str]:
    """Trace lines the request printed: BPF's trace_printk lines, then the daemon's."""
    return outcome.logs + (outcome.user.logs if outcome.user is not None else [])


def final_errno(outcome: Outcome) -> int:
    """The errno the operation ends with: a deny's, else (POST) the backing error kept."""
    if outcome.ret < 0:
        return -outcome.ret
    return outcome.error if outcome.phase == "post" else 0


def expected_decision(d: A.Stmt) -> str:
    if isinstance(d, A.Deny):
        return f"deny {abi.errno_name(abs(d.errno.const_value or 0))}"
    if isinstance(d, A.Return):
        return f"return {d.value.const_value}"
    return "allow"


def decision_matches(d: A.Stmt, outcome: Outcome) -> bool:
    ret = outcome.ret
    if isinstance(d, A.Deny):
        return ret == -abs(d.errno.const_value or 0)
    if isinstance(d, A.Return):
        value = d.value.const_value
        return value is not None and ret == outcome.abi.from_ack_return(value, outcome.phase)
    return sequence.allows(outcome.abi, outcome.phase, ret)


def check_condition(cond: A.Expr, outcome: Outcome, sources: Sources | None) -> str | None:
    """None when `cond` holds on the fields after the filters, else a message."""
    text = source_text(cond, sources)
    if isinstance(cond, A.Binary) and isinstance(cond.left, A.FieldRef) \
            and cond.left.path == ("dirents",):
        want = {const_str(m) for m in cond.right.members}  # type: ignore[attr-defined]
        got = set(outcome.entries or [])
        if (got == want) == (cond.op == "=="):
            return None
        return f"expected {text}, got dirents = {show_set(outcome.entries or [])}"
    request = user_request(outcome, None)
    try:
        tree = rules.Serializer().expr(cond)
        holds = bool(userspace.Evaluator(request, maps=outcome.maps).eval(tree, {}))
    except (KeyError, ValueError, rules.NotSerializable) as err:
        return f"cannot evaluate {text}: {err}"
    if holds:
        return None
    shown = [f"{p} = {show(outcome.fields.get(p), p)}" for p in referenced_fields(cond)]
    shown += map_entries(cond, outcome, request)
    return f"expected {text}, got {', '.join(shown) or 'false'}"


def map_entries(cond: A.Expr, outcome: Outcome, request: userspace.Request) -> list[str]:
    """'m[k] = v' for the map entries an expectation reads, for the 'got' part."""
    found: list[str] = []
    stack: list[Any] = [cond]
    while stack:
        node = stack.pop()
        if isinstance(node, A.MapRead):
            try:
                key = userspace.Evaluator(request).eval(rules.Serializer().expr(node.key), {})
                value = outcome.maps.load(node.map, key) if outcome.maps else 0
            except (KeyError, ValueError, rules.NotSerializable):
                continue
            found.append(f"{node.map}[{key}] = {value}")
        elif isinstance(node, A.Expr):   # children reversed: entries come out in source order
            children = [v for value in vars(node).values()
                        for v in (value if isinstance(value, list) else [value])
                        if isinstance(v, A.Expr)]
            stack.extend(reversed(children))
    return found


def referenced_fields(e: A.Expr) -> list[str]:
    """Field paths an expectation reads, for the 'got' part of a failure."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, A.FieldRef):
            path = ".".join(node.path)
            if path not in found:
                found.append(path)
        elif isinstance(node, A.Node):
            for value in vars(node).values():
                for item in value if isinstance(value, list) else [value]:
                    if isinstance(item, A.Expr):
                        walk(item)

    walk(e)
    return found


def source_text(node: A.Node, sources: Sources | None) -> str:
    span = node.span
    line = sources.line(span.file, span.line) if sources else None
    if line is None:
        return "the condition"
    end = span.end_col - 1 if span.end_line == span.line else len(line)
    return line[span.col - 1:end].strip() or "the condition"


def show(value: Any, path: str = "") -> str:
    if isinstance(value, int) and path.endswith("mode"):
        return oct(value)
    if isinstance(value, int) and value > 9:
        return hex(value)
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def show_set(names: list[str]) -> str:
    return "{" + ", ".join(f'"{n}"' for n in names) + "}"


# ------------------------------------------------------------------ whole files

def run_tests(tests: list[A.TestBlock], runner: Runner,
              sources: Sources | None = None) -> list[TestResult]:
    """Run every block; a request that cannot be built or faults is a failure, not a crash."""
    from fdsl.errors import VmFault

    results = []
    for test in tests:
        result = TestResult(test.name, f"{test.span.file}:{test.span.line}")
        try:
            result.outcome = runner.request(test)
            result.failures = check(test, result.outcome, sources)
        except simulate.RequestError as err:
            result.failures = [f"cannot build the request: {err}"]
        except VmFault as fault:
            result.failures = [f"the program faulted at insn {fault.index}: {fault.reason}"]
        except Exception as err:  # a bug elsewhere must not hide the other tests' results
            result.failures = [f"internal error: {type(err).__name__}: {err}"]
        results.append(result)
    return results


def policy_tests(policy: A.Policy) -> list[A.TestBlock]:
    return [item for item in policy.items if isinstance(item, A.TestBlock)]
