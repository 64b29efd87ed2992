"""Differential testing: the JIT must agree with the interpreter on everything.

* every example policy (compiled with fdsl.compile.driver) over requests for every
  opcode and phase: same return value or same fault, same rewritten fields,
  same map contents, same log lines;
* hypothesis-generated programs that the verifier accepts (straight-line and
  forward-branch ALU/stack/context code);
* random and mutated object bytes never crash the loader, verifier or VMs:
  only LoadError / VerifierError / VmFault come out.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fdsl import abi
from fdsl.vm import isa, simulate
from fdsl.vm.filterset import FilterSet
from fdsl.errors import LoadError, VerifierError, VmFault
from fdsl.vm.helpers import Caller
from fdsl.vm.interpreter import Interpreter, Runtime
from fdsl.vm.isa import Insn
from fdsl.vm.jit import Jit
from fdsl.vm.context import BUFFER_WINDOW, build_context
from fdsl.vm.context_rfc_v1 import build_rfc_v1_context
from fdsl.vm.verifier import verify, verify_object

from vm_util import sample_context

EXAMPLES = sorted((Path(__file__).parent.parent.parent / "examples").glob("*.fdsl"))
HYPO = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(fs: FilterSet, section: str, op: str, phase: str, fields: dict):
    """(return value or fault, changed fields) of one request on one FilterSet."""
    prepared = simulate.prepare(op, phase, fields)
    try:
        ret = fs.run(section, prepared.context, prepared.caller)
    except VmFault as fault:
        return ("fault", fault.index, fault.reason), {}
    result = prepared.result(ret)
    return ("ret", result.ret), result.changed


# ------------------------------------------------------------------ example policies

NAMES = ("secret", ".env", "id_rsa", "server.key", "README.md", "a", "private", "x" * 40)
PATTERNS = (0, 0o100644, 0xFFFFFFFF, 0x8002)


def requests_for(op: str, phase: str):
    """A handful of field sets exercising names, uids, numeric fields and errors."""
    locs = abi.fields_of(op, phase)
    strings = [loc.path for loc in locs if loc.is_string]
    numbers = [loc for loc in locs if not loc.is_string]
    out = []
    for k, name in enumerate(NAMES):
        fields: dict = {"uid": (0, 1000, 1001)[k % 3], "gid": 100, "pid": 7 + k, "nodeid": k}
        for path in strings:
            fields[path] = name
        pattern = PATTERNS[k % len(PATTERNS)]
        for loc in numbers:
            fields[loc.path] = pattern & ((1 << (8 * loc.size)) - 1)
        if phase == "post":
            fields["error"] = (0, "ENOENT", "EEXIST", "EACCES")[k % 4]
        out.append(fields)
    return out


def dispatched_ops():
    return [name for name, spec in abi.OPS.items() if spec.number != 2016]


def example_requests(sections):
    """(section, op, phase, fields) for every section, dispatched opcode, phase and field set."""
    for section in sections:
        for op in dispatched_ops():
            for phase in ("pre", "post"):
                for fields in requests_for(op, phase):
                    yield section, op, phase, fields


@pytest.fixture(scope="module")
def compiled_examples():
    from fdsl.compile.driver import compile_file

    assert EXAMPLES, "no example policies found"
    return {path.name: compile_file(str(path)).obj for path in EXAMPLES}   # a failure fails the tests


@pytest.mark.parametrize("example", [p.name for p in EXAMPLES])
def test_examples_agree(compiled_examples, example):
    obj = compiled_examples[example]
    interp = FilterSet.load(obj, backend="interp")
    jit = FilterSet.load(obj, backend="jit")
    runs = 0
    for section, op, phase, fields in example_requests(interp.sections):
        try:
            expected = outcome(interp, section, op, phase, fields)
        except simulate.RequestError:
            continue
        got = outcome(jit, section, op, phase, fields)
        assert got == expected, (section, op, phase, fields)
        runs += 1
    assert runs > 100
    assert [m.items() for m in jit.maps] == [m.items() for m in interp.maps]
    assert jit.log_sink.recent() == interp.log_sink.recent()


# ------------------------------------------------------------------ both ABIs decide alike

class AbiRunner:
    """One example compiled for one ABI, verified, in both VMs over that ABI's context."""

    def __init__(self, obj: bytes, expected_abi: abi.Abi) -> None:
        from fdsl.vm.interpreter import Runtime
        from fdsl.vm.loader import load_object
        from fdsl.vm.helpers import LogSink
        from fdsl.vm.maps import MapTable

        loaded = load_object(obj)
        self.abi = loaded.abi()
        assert self.abi is expected_abi          # read from the metadata, no flag
        verified = verify_object(loaded)
        self.runtimes = {kind: Runtime(MapTable(loaded.maps), LogSink()) for kind in ("interp", "jit")}
        self.vms = {name: (Interpreter(loaded.programs[name].insns, self.runtimes["interp"]),
                           Jit(loaded.programs[name].insns, self.runtimes["jit"], verified=v))
                    for name, v in verified.items()}

    def context(self, op: str, phase: str, inputs, outputs, nodeid: int, error_in: int):
        if self.abi.packet:
            return build_rfc_v1_context(op, phase, [None if isinstance(i, int) else i for i in inputs],
                                        outputs, nodeid=nodeid, error_in=error_in)
        return build_context(op, phase, inputs, outputs, nodeid=nodeid, error_in=error_in)

    def run(self, section: str, op: str, phase: str, fields: dict):
        """(r0 as this ABI's code, the arguments afterwards) in both VMs, which must agree."""
        inputs, outputs = simulate.request_args(op, phase, fields)
        error_in = simulate.parse_errno(fields.get("error", 0))
        caller = Caller(uid=fields["uid"], gid=fields["gid"], pid=fields["pid"])
        seen = []
        for vm in self.vms[section]:
            ctx = self.context(op, phase, inputs, outputs, fields["nodeid"], error_in)
            try:
                r0 = ctypes.c_int32(vm.execute(ctx.address, ctx.regions, caller)).value
            except VmFault as fault:
                seen.append(("fault", fault.reason))
                continue
            args = ctx.outputs() if phase == "post" else [a for a in ctx.inputs() if a is not None]
            # The RFC v1 builder keeps one window of a big buffer (a setxattr value)
            seen.append((r0, [a[:BUFFER_WINDOW] for a in args]))
        assert seen[0] == seen[1], (section, op, phase, fields, seen)
        return seen[0]


def both_abis(obj_ack: bytes, obj_v1: bytes) -> tuple[AbiRunner, AbiRunner]:
    return AbiRunner(obj_ack, abi.ACK), AbiRunner(obj_v1, abi.RFC_V1)


def assert_same_decision(ack: AbiRunner, v1: AbiRunner, section: str, op: str, phase: str,
                         fields: dict) -> None:
    """RFC v1's result is §12.2's image of ACK's, with the same argument bytes after."""
    ack_r0, ack_args = ack.run(section, op, phase, fields)
    v1_r0, v1_args = v1.run(section, op, phase, fields)
    assert ack_r0 != "fault" and v1_r0 != "fault", (section, op, phase, fields, ack_r0, v1_r0)
    assert v1_r0 == abi.RFC_V1.from_ack_return(ack_r0, phase), (section, op, phase, fields,
                                                                 ack_r0, v1_r0)
    assert v1_args == ack_args, (section, op, phase, fields)


@pytest.fixture(scope="module")
def examples_both_abis():
    from fdsl.compile.driver import compile_file

    return {path.name: both_abis(compile_file(str(path), want_asm=False).obj,
                                 compile_file(str(path), want_asm=False, abi_record=abi.RFC_V1).obj)
            for path in EXAMPLES}


@pytest.mark.parametrize("example", [p.name for p in EXAMPLES])
def test_examples_decide_alike_under_both_abis(examples_both_abis, example):
    """Every example compiled for ACK and for RFC v1: the same decisions (in each ABI's
    codes), the same rewritten arguments, the same maps and logs, over real contexts of
    each ABI, through the loader, the verifier with that ABI's rules, and both VMs."""
    ack, v1 = examples_both_abis[example]
    assert set(ack.vms) == set(v1.vms)
    runs = 0
    for section, op, phase, fields in example_requests(ack.vms):
        try:
            simulate.request_args(op, phase, fields)
        except simulate.RequestError:
            continue                # a field set that does not fit the op
        assert_same_decision(ack, v1, section, op, phase, fields)
        runs += 1
    assert runs > 100
    for kind in ("interp", "jit"):
        assert [m.items() for m in v1.runtimes[kind].maps] == \
            [m.items() for m in ack.runtimes[kind].maps]
        assert v1.runtimes[kind].sink.recent() == ack.runtimes[kind].sink.recent()


GENERATED_POLICY = """
set secrets = {".env", ".git", "id_rsa", "a"}
counter per_uid[u32] max 64
map last[u32] -> u64 max 64
hide name in secrets or name like {"*.key", "*.pem", "x?z*", "lib*.so"} or name startswith ".cache"
on create, mkdir pre { in.mode &= 0o755 }
on mkdir pre { if in.mode & 0o002 == 0o002 { deny EPERM } }
on open pre { count per_uid[uid]; if in.flags & O_ACCMODE != O_RDONLY and uid != 0 { deny EROFS } }
on open, create post { if out.fh == 3 { out.fh = 5 }; if out.fh == 5 { count per_uid[uid] } }
on open post { out.fh = out.fh | 0x100; last[uid] = nodeid }
on lookup, mkdir, rename pre { log "%s %d", name, uid }
on getattr post { if error == 0 { out.attr.mode &= 0o7775; out.attr.uid = 1000 } }
on setattr pre { if in.valid & FATTR_MODE != 0 { in.mode = in.mode | 0o400 } }
on rename pre { if newname like "*.tmp" { deny EXDEV } }
on lookup post { if error == ENOENT and nodeid == 7 { deny EACCES } }
"""

NAME_CHARS = st.sampled_from("aexyz.klpmsoib_-0")


@pytest.fixture(scope="module")
def generated_both_abis():
    from fdsl.compile.driver import compile_source

    return both_abis(compile_source(GENERATED_POLICY, "gen.fdsl", want_asm=False).obj,
                     compile_source(GENERATED_POLICY, "gen.fdsl", want_asm=False,
                                    abi_record=abi.RFC_V1).obj)


@HYPO
@given(st.data())
def test_generated_requests_decide_alike_under_both_abis(generated_both_abis, data):
    """Random requests (names near the patterns, any numbers, errors, callers) on a
    policy with name tests, counters, maps and writes in PRE and POST."""
    ack, v1 = generated_both_abis
    op = data.draw(st.sampled_from(GENERATED_OPS + ("unlink", "readdir")))
    phase = data.draw(st.sampled_from(("pre", "post")))
    assert_same_decision(ack, v1, "fuse/root", op, phase, draw_fields(data, op, phase))


GENERATED_OPS = ("lookup", "create", "mkdir", "open", "getattr", "setattr", "rename", "symlink")
SMALL = st.sampled_from((0, 1, 2, 3, 5, 7, 0o644, 0o755, 0o777, 0x100, 0xFFFF))


def draw_fields(data, op: str, phase: str) -> dict:
    """A request: names near the policies' patterns, numbers small or any, a caller, an error."""
    fields: dict = {"uid": data.draw(st.sampled_from((0, 1000, 5))), "gid": 100,
                    "pid": 3, "nodeid": data.draw(st.sampled_from((1, 7, 99)))}
    name = data.draw(st.text(NAME_CHARS, min_size=1, max_size=12).filter(lambda n: n not in (".", "..")))
    for loc in abi.fields_of(op, phase):
        if loc.is_string:
            fields[loc.path] = data.draw(st.sampled_from((name, name + ".tmp", "lib" + name + ".so")))
        elif loc.ctype != "buffer":
            top = (1 << (8 * loc.size)) - 1
            fields[loc.path] = data.draw(st.one_of(SMALL.map(lambda v: v & top), st.integers(0, top)))
    if phase == "post":
        fields["error"] = data.draw(st.sampled_from((0, "ENOENT", "EACCES")))
    return fields


@st.composite
def generated_rules(draw) -> str:
    """One rule on a few opcodes: a test of a field all of them have, then a deny, an
    allow, a write to a writable field they share, a count or a log."""
    phase = draw(st.sampled_from(("pre", "post")))
    ops = draw(st.lists(st.sampled_from(GENERATED_OPS), min_size=1, max_size=3, unique=True))
    shared = None
    for op in ops:
        locs = {loc.path: loc for loc in abi.fields_of(op, phase) if loc.ctype != "buffer"}
        shared = locs if shared is None else {p: l for p, l in shared.items() if p in locs
                                               and (locs[p].ctype, locs[p].writable) ==
                                               (l.ctype, l.writable)}
    assert shared is not None
    names = [p for p, l in shared.items() if l.is_string]
    numbers = [p for p, l in shared.items() if not l.is_string]
    conds = ["uid == 0", "nodeid == 7"] + ([f"error == ENOENT"] if phase == "post" else [])
    for path in names:
        conds += [f'{path} == "a"', f'{path} like "*.key"', f'{path} startswith "lib"',
                  f'{path} in {{".env", "x", "id_rsa"}}']
    for path in numbers:
        conds += [f"{path} & 0o002 != 0", f"{path} > 5", f"{path} == 3"]
    actions = ["deny EPERM", "deny ENOENT", "allow", "count hits[uid]"]
    actions += [f'log "{phase} %d", {p}' for p in numbers[:1]]
    actions += [f'log "n %s", {p}' for p in names[:1]]
    writable = [p for p in numbers if shared[p].writable]
    actions += [f"{p} {op} 0o{mask:o}" for p in writable for op, mask in (("&=", 0o755), ("|=", 0o4), ("=", 0o600))]
    cond = draw(st.sampled_from(conds))
    then = draw(st.lists(st.sampled_from(actions), min_size=1, max_size=2))
    return f"on {', '.join(ops)} {phase} {{ if {cond} {{ {'; '.join(then)} }} }}"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(generated_rules(), min_size=1, max_size=4), st.data())
def test_generated_policies_decide_alike_under_both_abis(rules, data):
    """Random policies (shared rules over opcodes whose fields sit in different slots,
    writes, counters, logs) compiled for both ABIs, then random requests."""
    from fdsl.compile.driver import compile_source

    text = "counter hits[u32] max 16\n" + "\n".join(rules) + "\n"
    ack, v1 = both_abis(compile_source(text, "gen.fdsl", want_asm=False).obj,
                        compile_source(text, "gen.fdsl", want_asm=False, abi_record=abi.RFC_V1).obj)
    for _ in range(6):
        op = data.draw(st.sampled_from(GENERATED_OPS))
        phase = data.draw(st.sampled_from(("pre", "post")))
        assert_same_decision(ack, v1, "fuse/root", op, phase, draw_fields(data, op, phase))
    for kind in ("interp", "jit"):
        assert [m.items() for m in v1.runtimes[kind].maps] == \
            [m.items() for m in ack.runtimes[kind].maps], text
        assert v1.runtimes[kind].sink.recent() == ack.runtimes[kind].sink.recent(), text


# ------------------------------------------------------------------ generated verified programs

SCALARS = (0, 2, 3, 4, 5, 6, 7, 8, 9)          # r1 stays the ctx pointer, r10 the frame pointer
STACK_SLOTS = tuple(range(-64, 0, 8))           # zero-initialised at entry
ALU_OPS = (isa.BPF_ADD, isa.BPF_SUB, isa.BPF_MUL, isa.BPF_DIV, isa.BPF_OR, isa.BPF_AND, isa.BPF_LSH,
           isa.BPF_RSH, isa.BPF_MOD, isa.BPF_XOR, isa.BPF_MOV, isa.BPF_ARSH)
JMP_OPS = isa.COND_JMP_OPS
SIZES = (isa.BPF_B, isa.BPF_H, isa.BPF_W, isa.BPF_DW)
IMMS = st.one_of(st.integers(-(1 << 31), (1 << 31) - 1), st.sampled_from((0, 1, -1, 31, 32, 63, 64, 0x7FFFFFFF,
                                                                          -(1 << 31), 8, 16)))


@st.composite
def alu_insn(draw, v4: bool) -> list[Insn]:
    cls = draw(st.sampled_from((isa.BPF_ALU64, isa.BPF_ALU)))
    dst = draw(st.sampled_from(SCALARS))
    kind = draw(st.integers(0, 9))
    if kind == 2 and not v4:
        kind = 3
    if kind == 0:
        return [Insn(cls | isa.BPF_NEG, dst)]
    if kind == 1:   # byte order
        if cls == isa.BPF_ALU64 and v4:
            return [Insn(isa.BPF_ALU64 | isa.BPF_END, dst, 0, 0, draw(st.sampled_from((16, 32, 64))))]
        src = draw(st.sampled_from((isa.BPF_TO_LE, isa.BPF_TO_BE)))
        return [Insn(isa.BPF_ALU | isa.BPF_END | src, dst, 0, 0, draw(st.sampled_from((16, 32, 64))))]
    if kind == 2:   # movsx
        widths = (8, 16, 32) if cls == isa.BPF_ALU64 else (8, 16)
        return [Insn(cls | isa.BPF_MOV | isa.BPF_X, dst, draw(st.sampled_from(SCALARS)),
                     draw(st.sampled_from(widths)), 0)]
    op = draw(st.sampled_from(ALU_OPS))
    off = 1 if v4 and op in (isa.BPF_DIV, isa.BPF_MOD) and draw(st.booleans()) else 0
    if draw(st.booleans()):
        return [Insn(cls | op | isa.BPF_X, dst, draw(st.sampled_from(SCALARS)), off, 0)]
    imm = draw(IMMS)
    if op in (isa.BPF_DIV, isa.BPF_MOD) and imm == 0:
        imm = 3
    if op in (isa.BPF_LSH, isa.BPF_RSH, isa.BPF_ARSH):
        imm = draw(st.integers(0, 63 if cls == isa.BPF_ALU64 else 31))
    return [Insn(cls | op | isa.BPF_K, dst, 0, off, imm)]


@st.composite
def mem_insn(draw, v4: bool) -> list[Insn]:
    kind = draw(st.integers(0, 5))
    slot = draw(st.sampled_from(STACK_SLOTS))
    size = draw(st.sampled_from(SIZES))
    nbytes = isa.SIZE_BYTES[size]
    off = slot + draw(st.integers(0, 8 // nbytes - 1)) * nbytes
    reg = draw(st.sampled_from(SCALARS))
    if kind == 0:
        return [Insn(isa.BPF_STX | isa.BPF_MEM | size, 10, reg, off, 0)]
    if kind == 1:
        return [Insn(isa.BPF_ST | isa.BPF_MEM | size, 10, 0, off, draw(IMMS))]
    if kind == 2:
        mode = isa.BPF_MEMSX if v4 and size != isa.BPF_DW and draw(st.booleans()) else isa.BPF_MEM
        return [Insn(isa.BPF_LDX | mode | size, reg, 10, off, 0)]
    if kind == 3:   # atomics on the stack
        size = draw(st.sampled_from((isa.BPF_W, isa.BPF_DW)))
        off = slot + (draw(st.integers(0, 1)) * 4 if size == isa.BPF_W else 0)
        op = draw(st.sampled_from(sorted(isa.ATOMIC_OPS)))
        src = draw(st.sampled_from([r for r in SCALARS if r != 0]) if op == isa.BPF_CMPXCHG
                   else st.sampled_from(SCALARS))
        return [Insn(isa.BPF_STX | isa.BPF_ATOMIC | size, 10, src, off, op)]
    if kind == 4:   # context field
        width = draw(st.sampled_from(SIZES))
        n = isa.SIZE_BYTES[width]
        ctx_off = draw(st.integers(0, (abi.CTX_SIZE - n) // n)) * n
        return [Insn(isa.BPF_LDX | isa.BPF_MEM | width, reg, 1, ctx_off, 0)]
    # kind 5: a byte of the name buffer (in_args[0].value of the sample LOOKUP context)
    return [Insn(isa.BPF_LDX | isa.BPF_MEM | isa.BPF_DW, reg, 1, abi.in_arg_offset(0) + abi.ARG_VALUE, 0),
            Insn(isa.BPF_LDX | isa.BPF_MEM | isa.BPF_B, reg, reg, draw(st.integers(0, 15)), 0)]


@st.composite
def programs(draw, v4: bool = False):
    """Programs the verifier should accept (v4=False: cpu v3 only, what it allows)."""
    body: list[list[Insn]] = draw(st.lists(st.one_of(alu_insn(v4), mem_insn(v4), mem_insn(v4)),
                                           min_size=1, max_size=30))
    # forward conditional jumps between body items
    items: list[list[Insn]] = []
    for k, chunk in enumerate(body):
        if k + 1 < len(body) and draw(st.integers(0, 4)) == 0:
            items.append([("jump", draw(st.integers(k + 1, len(body) - 1)))])
        items.append(chunk)
    prologue: list[Insn] = []
    for r in SCALARS:
        if draw(st.booleans()):
            prologue += isa.ld_imm64(r, draw(st.integers(0, (1 << 64) - 1)))
        else:
            prologue.append(Insn(isa.BPF_ALU64 | isa.BPF_MOV | isa.BPF_K, r, 0, 0, draw(IMMS)))
    prologue += [Insn(isa.BPF_ST | isa.BPF_MEM | isa.BPF_DW, 10, 0, s, 0) for s in STACK_SLOTS]
    # lay out, then resolve jumps to the start slot of the target body item
    starts: dict[int, int] = {}
    flat: list = list(prologue)
    body_index = 0
    for item in items:
        if isinstance(item[0], tuple):
            flat.append(item[0])
            continue
        starts[body_index] = len(flat)
        body_index += 1
        flat.extend(item)
    epilogue_start = len(flat)
    out: list[Insn] = []
    for pc, insn in enumerate(flat):
        if isinstance(insn, tuple):
            target = starts[insn[1]]
            cls = draw(st.sampled_from((isa.BPF_JMP, isa.BPF_JMP32)))
            op = draw(st.sampled_from(JMP_OPS))
            dst = draw(st.sampled_from(SCALARS))
            if draw(st.booleans()):
                insn = Insn(cls | op | isa.BPF_X, dst, draw(st.sampled_from(SCALARS)), target - pc - 1, 0)
            else:
                insn = Insn(cls | op | isa.BPF_K, dst, 0, target - pc - 1, draw(IMMS))
        out.append(insn)
    # fold every register and stack slot into r0 so that any difference shows
    del epilogue_start
    for r in SCALARS[1:]:
        out.append(Insn(isa.BPF_ALU64 | isa.BPF_XOR | isa.BPF_X, 0, r))
        out.append(Insn(isa.BPF_ALU64 | isa.BPF_LSH | isa.BPF_K, 0, 0, 0, 1) if r % 2 else
                   Insn(isa.BPF_ALU64 | isa.BPF_ADD | isa.BPF_K, 0, 0, 0, r))
    for s in STACK_SLOTS:
        out.append(Insn(isa.BPF_LDX | isa.BPF_MEM | isa.BPF_DW, 2, 10, s, 0))
        out.append(Insn(isa.BPF_ALU64 | isa.BPF_MUL | isa.BPF_K, 0, 0, 0, 31))
        out.append(Insn(isa.BPF_ALU64 | isa.BPF_XOR | isa.BPF_X, 0, 2))
    out.append(Insn(isa.EXIT))
    return out


def run_both(program: list[Insn], verified=None, budget: int = 100_000):
    ctx = sample_context()
    results = []
    for vm in (Interpreter(program, Runtime(), budget=budget),
               Jit(program, Runtime(), verified=verified, budget=budget)):
        try:
            results.append(("ret", vm.execute(ctx.address, ctx.regions, Caller(5, 6, 7, 8))))
        except VmFault as fault:
            results.append(("fault", fault.index, fault.reason))
        ctx = sample_context()
    return results


@HYPO
@given(programs())
def test_generated_verified_programs_agree(program):
    try:
        vp = verify(program, [], section="gen")
    except VerifierError as err:
        # the generator aims at verifiable code; anything rejected is skipped, not failed
        assume(False)
        raise AssertionError(err)  # pragma: no cover
    interp, jit = run_both(vp.insns, vp)
    assert interp[0] == "ret"      # verified straight-line code cannot fault
    assert jit == interp


@HYPO
@given(programs(v4=True))
def test_generated_v4_programs_agree_unverified(program):
    """cpu v4 instructions (movsx, ldsx, sdiv/smod, bswap) the verifier refuses still agree
    when run unverified (the JIT then checks every access at run time)."""
    interp, jit = run_both(program)
    assert interp[0] == "ret"
    assert jit == interp


# ------------------------------------------------------------------ hostile bytes

def run_object_everywhere(data: bytes) -> None:
    """Load + verify + run on both VMs; only our own error types may escape."""
    for backend in ("interp", "jit"):
        try:
            fs = FilterSet.load(data, backend=backend, budget=10_000)
        except (LoadError, VerifierError):
            return
        for section in fs.sections:
            prepared = simulate.prepare("lookup", "pre", {"name": "secret"})
            try:
                fs.run(section, prepared.context, prepared.caller)
            except VmFault:
                pass


@HYPO
@given(st.binary(max_size=512))
def test_random_bytes_never_crash(data):
    run_object_everywhere(data)
    run_object_everywhere(b"\x7fELF\x02\x01\x01" + data)


@HYPO
@given(st.data())
def test_mutated_objects_never_crash(bpf_c_object, data):
    name = data.draw(st.sampled_from(("hide_name", "rewrite_error", "set_nodeid_fh", "count_uid")))
    obj = bytearray(bpf_c_object(name))
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(obj) - 1))
        obj[pos] = data.draw(st.integers(0, 255))
    run_object_everywhere(bytes(obj))


@HYPO
@given(st.binary(min_size=8, max_size=256))
def test_random_code_never_crashes_and_agrees(code):
    """Random instruction bytes: rejected by the verifier, or both VMs agree."""
    try:
        vp = verify(code, [], section="rand")
    except VerifierError:
        return
    interp, jit = run_both(vp.insns, vp, budget=10_000)
    assert jit == interp
