"""`fdsl compile --abi rfc-v1`: every example compiles for both ABIs and passes `fdsl verify`
under its ABI's rules (read from the metadata); llvm-objdump is the oracle for the RFC v1
code's shape (spec §8.2, §12): exact-width context loads, no store through the context or
an argument pointer, writes only through the pointer helpers 208/209 return after a NULL
check, POST outputs read from `out_args`; what RFC v1 cannot express is a diagnostic at
the source."""
from __future__ import annotations

import pathlib
import re

import pytest

from fdsl import abi, cli
from fdsl.abi import rfc_v1
from fdsl.compile.driver import compile_file, compile_source
from fdsl.errors import PolicyError, VerifierError
from fdsl.vm.loader import load_object
from fdsl.vm.verifier import verify_object

from backend_util import memory_accesses, objdump

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.fdsl"))
V1 = abi.RFC_V1
ABIS = [abi.ACK, V1]
RFC_HELPERS = {1, 2, 6, 14, 15, 208, 209}


@pytest.fixture(scope="module")
def compiled():
    """(example, abi id) -> object bytes."""
    assert EXAMPLES
    return {(p.name, record.id): compile_file(str(p), want_asm=False, abi_record=record).obj
            for p in EXAMPLES for record in ABIS}


@pytest.mark.parametrize("record", ABIS, ids=lambda r: r.id)
@pytest.mark.parametrize("example", [p.name for p in EXAMPLES])
def test_example_compiles_and_passes_fdsl_verify(compiled, example, record, tmp_path, capsys):
    obj = compiled[(example, record.id)]
    path = tmp_path / "p.bpf.o"
    path.write_bytes(obj)
    objdump(obj, tmp_path)                        # llvm-objdump parses it
    loaded = load_object(obj)
    assert loaded.abi() is record                 # the metadata names the ABI
    assert cli.main(["verify", "-v", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{record.name} rules" in out and "rejected" not in out


def test_the_two_abis_give_different_code(compiled):
    for example in (p.name for p in EXAMPLES):
        assert compiled[(example, "ack-fuse-bpf-1")] != compiled[(example, V1.id)], example


def test_rfc_v1_objects_fail_ack_rules_and_a_contradicting_flag_is_a_usage_error(compiled, tmp_path):
    """The ABI really is in the code: ACK's verifier reads RFC v1's slot layout wrongly."""
    obj = load_object(compiled[("hide_secrets.fdsl", V1.id)])
    with pytest.raises(VerifierError):
        verify_object(obj, abi_record=abi.ACK)
    path = tmp_path / "h.o"
    path.write_bytes(compiled[("hide_secrets.fdsl", V1.id)])
    assert cli.main(["verify", "--abi", "ack", str(path)]) == 2


@pytest.mark.parametrize("example", [p.name for p in EXAMPLES])
def test_rfc_v1_code_shape_by_objdump(compiled, example, tmp_path):
    obj = compiled[(example, V1.id)]
    text = objdump(obj, tmp_path)
    ctx_loads, ctx_stores, arg_reads, arg_writes = memory_accesses(text)
    assert not ctx_stores and not arg_writes      # no store but through 208/209's pointer
    for offset, bits in ctx_loads:
        field = V1.ctx_field_at(offset)
        assert field is not None and field.size * 8 == bits, (offset, bits)
    value_fields = {V1.slot_offset(args, i, "value") for args, n in
                    (("in", V1.max_in_args), ("out", V1.max_out_args)) for i in range(n)}
    assert {slot for slot, _, _ in arg_reads} <= value_fields   # never through end_offset
    calls = [int(m) for m in re.findall(r"\tcall (\d+)", text)]
    assert set(calls) <= RFC_HELPERS, calls


WRITES = """
on mkdir pre { in.mode &= 0o755 }
on open post { out.fh = 0x1234 }
on getattr post { if out.attr.uid == 0 { out.attr.mode |= 0o4 } }
"""


def null_checked_before_store(after_call: list[str]) -> bool:
    """r0 (or a copy) is compared with 0 before anything is stored through it."""
    holders = {0}
    for line in after_call:
        copy = re.match(r"^r(\d+) = r(\d+)$", line)
        if copy and int(copy[2]) in holders:
            holders.add(int(copy[1]))
            continue
        check = re.match(r"^if r(\d+) [!=]= 0 goto", line)
        if check and int(check[1]) in holders:
            return True
        store = re.match(r"^\*\(u\d+ \*\)\(r(\d+) [+-] \d+\) = ", line)
        if (store and int(store[1]) in holders) or line.startswith(("call", "exit", "goto")):
            return False
    return False


def test_writes_go_through_writeable_helpers_after_a_null_check(tmp_path):
    obj = compile_source(WRITES, "w.fdsl", want_asm=False, abi_record=V1).obj
    text = objdump(obj, tmp_path)
    lines = [line.split("\t")[-1].strip() for line in text.splitlines() if "\t" in line]
    calls = [i for i, line in enumerate(lines) if line in ("call 208", "call 209")]
    assert {lines[i] for i in calls} == {"call 208", "call 209"}   # PRE input, POST output
    for i in calls:
        assert null_checked_before_store(lines[i + 1:]), lines[i:i + 6]
    ctx_loads, _, _, _ = memory_accesses(text)
    # POST reads the outputs in out_args, not appended to in_args (spec §12.1)
    assert (V1.slot_offset("out", 0, "value"), 64) in ctx_loads
    assert (V1.slot_offset("in", 1, "value"), 64) not in ctx_loads
    verify_object(load_object(obj))


@pytest.mark.parametrize("source", [
    'on open, create post { out.fh = 5; if out.fh == 5 { deny EPERM } }',
    'on open, create post { out.fh |= 1; out.fh |= 2; log "%d", out.fh }',
    'on lookup, mkdir pre { if name == "a" { deny EPERM }; log "%s %d", name, uid }',
])
def test_code_shared_by_opcodes_with_different_slots_verifies(source):
    """out.fh is out_args[0] of open and out_args[1] of create, name in_args[0] of lookup
    and in_args[1] of mkdir: the shared code reloads the slot after helper 209 moved it."""
    verify_object(load_object(compile_source(source, "s.fdsl", want_asm=False, abi_record=V1).obj))


def test_maps_and_relocations_survive_in_rfc_v1(tmp_path):
    source = 'counter per_uid[u32] max 16\non lookup pre { count per_uid[uid]; log "%s", name }\n'
    text = objdump(compile_source(source, "m.fdsl", want_asm=False, abi_record=V1).obj, tmp_path)
    assert "R_BPF_64_64\tper_uid" in text
    assert "call 1" in text and "call 6" in text


@pytest.mark.parametrize("source, where, words", [
    ('on canonical_path pre { deny EPERM }\n', "1:4", "no opcode 'canonical_path'"),
    ('on lookup pre { return uid }\n', "1:17", "computed value"),
    ('on open pre { return 5 }\n', "1:15", "has no RFC v1 fuse-bpf return code"),
    ('on lookup pre { if name matches "^a.*b$" { deny EPERM } }\n'
     'on lookup post { if error == 0 { deny EIO } }\n', "1:1", "USER_PREFILTER only continues"),
])
def test_what_rfc_v1_cannot_express_is_a_diagnostic(source, where, words):
    compile_source(source, "p.fdsl", want_asm=False)            # fine for ACK
    with pytest.raises(PolicyError) as err:
        compile_source(source, "p.fdsl", want_asm=False, abi_record=V1)
    text = str(err.value)
    assert f"p.fdsl:{where}: error:" in text and words in text and "^" in text


def test_cli_compile_records_the_abi_and_usage_errors(tmp_path, capsys):
    out = tmp_path / "h.v1.o"
    policy = str(ROOT / "examples" / "hide_secrets.fdsl")
    assert cli.main(["compile", "--abi", "rfc-v1", policy, "-o", str(out)]) == 0
    assert load_object(out.read_bytes()).meta.abi == V1.id
    assert cli.main(["verify", str(out)]) == 0
    assert cli.main(["compile", policy, "-o", str(out)]) == 0
    assert load_object(out.read_bytes()).meta.abi == abi.ACK.id       # default stays ACK
    capsys.readouterr()
    assert cli.main(["compile", "--abi", "rfc-v2", policy, "-o", str(out)]) == 2
    assert "unknown ABI 'rfc-v2'" in capsys.readouterr().err
    bad = tmp_path / "bad.fdsl"
    bad.write_text("on canonical_path pre { deny EPERM }\n")
    assert cli.main(["check", "--abi", "rfc-v1", str(bad)]) == 1
    assert "bad.fdsl:1:4: error:" in capsys.readouterr().err
    assert cli.main(["check", str(bad)]) == 0
    assert cli.main(["explain", "--abi", "rfc-v1", policy]) == 0
    report = capsys.readouterr().out
    assert "abi: RFC v1 fuse-bpf" in report and "CONTINUE" in report and "BACKING" not in report


def test_help_mentions_abi(capsys):
    for command in ("compile", "check", "explain"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        assert "--abi" in capsys.readouterr().out


HIDE_NAMES = ("a", ".env", ".git", ".gitx", "id_rsa", "id_rsb", "x.key", ".key", "key",
              "server.key", "server.keys", "k" * 200 + ".key", "README.md")
HIDE_OPS = ("lookup", "symlink", "mknod", "mkdir", "link", "create", "rename", "rename2",
            "readdir", "open", "getattr", "unlink")


def test_hide_secrets_decides_like_the_rfc_v1_c(tmp_path):
    """clang's build of bench/c/hide_secrets_rfc_v1.c (RFC v1 C written from the spec) is
    the oracle: the fdsl RFC v1 object returns what it returns for every request."""
    import ctypes
    import shutil
    import subprocess

    from fdsl.vm import simulate
    from fdsl.vm.context_rfc_v1 import build_rfc_v1_context
    from fdsl.vm.helpers import Caller
    from fdsl.vm.interpreter import Interpreter, Runtime

    assert shutil.which("clang"), "clang -target bpf is the oracle here"
    c_obj = tmp_path / "c.o"
    subprocess.run(["clang", "-target", "bpf", "-mcpu=v3", "-O2", "-c", "-I", str(ROOT / "tests" / "c"),
                    "-o", str(c_obj), str(ROOT / "bench" / "c" / "hide_secrets_rfc_v1.c")], check=True)
    programs = []
    for data, flag in ((c_obj.read_bytes(), "rfc-v1"),
                       (compile_file(str(ROOT / "examples" / "hide_secrets.fdsl"), want_asm=False,
                                     abi_record=V1).obj, None)):
        loaded = load_object(data)
        record = loaded.abi(flag)
        assert record is V1
        verify_object(loaded, abi_record=record)
        programs.append(Interpreter(loaded.programs["fuse/root"].insns, Runtime()))
    runs, decisions = 0, set()
    for op in HIDE_OPS:
        for phase in ("pre", "post"):
            for name in HIDE_NAMES:
                fields = {loc.path: name for loc in abi.fields_of(op, phase) if loc.is_string}
                inputs, outputs = simulate.request_args(op, phase, fields)
                got = []
                for vm in programs:
                    ctx = build_rfc_v1_context(op, phase, inputs, outputs, nodeid=1)
                    got.append(ctypes.c_int32(vm.execute(ctx.address, ctx.regions, Caller())).value)
                assert got[0] == got[1], (op, phase, name, got)
                decisions.add(got[0])
                runs += 1
    assert runs == len(HIDE_OPS) * 2 * len(HIDE_NAMES)
    assert decisions == {-abi.ERRNOS["ENOENT"], rfc_v1.CONTINUE, rfc_v1.POSTFILTER,
                         rfc_v1.USER_POSTFILTER}
