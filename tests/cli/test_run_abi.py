"""`fdsl run --abi`: tests/c/abi_pair.c built for RFC v1 and for ACK runs through the same
sequence; each build decides what its C says, and both builds decide every request alike
(the same errno, the same "goes to the backing step"), each in its own ABI's codes."""
from __future__ import annotations

import json

import pytest

from fdsl import abi
from fdsl.abi import rfc_v1
from fdsl.vm import sequence, simulate
from fdsl.vm.filterset import FilterSet
from mounting import EXAMPLES, fdsl

B, U, PF = abi.BACKING, abi.USER_FILTER, abi.POST_FILTER
MTIME = 1234567890

# (op, phase, fields, RFC v1 result, ACK result), as abi_pair.c says
REQUESTS = [
    ("lookup", "pre", {"name": "secret"}, -2, -2),
    ("lookup", "pre", {"name": "secrets"}, rfc_v1.CONTINUE, B),
    ("lookup", "pre", {"name": "late"}, rfc_v1.POSTFILTER, B | PF),
    ("lookup", "post", {"name": "late"}, -13, -13),
    ("lookup", "post", {"name": "other"}, rfc_v1.CONTINUE, 0),
    ("mkdir", "pre", {"name": "nope"}, -1, -1),
    ("mkdir", "pre", {"name": "user"}, rfc_v1.USER_PREFILTER, U | B),
    ("mkdir", "pre", {"name": "dir"}, rfc_v1.CONTINUE, B),
    ("mkdir", "pre", {"name": "locked", "in.mode": 0o40777}, rfc_v1.CONTINUE, B),
    ("getattr", "pre", {}, rfc_v1.POSTFILTER, B | PF),
    ("getattr", "post", {}, rfc_v1.CONTINUE, 0),
    ("open", "pre", {}, rfc_v1.USER_POSTFILTER, B | PF),
]


@pytest.fixture(scope="module")
def builds(bpf_c_object):
    return {"rfc-v1": bpf_c_object("abi_pair", "-DRFC_V1"), "ack": bpf_c_object("abi_pair")}


def run_request(data: bytes, abi_name: str, op: str, phase: str, fields: dict,
                backend: str) -> simulate.Result:
    filters = FilterSet.load(data, backend=backend, abi_name=abi_name)
    prepared = simulate.prepare(op, phase, fields, filters.abi)
    run = simulate.run_phase(lambda ctx, who: filters.run("fuse/root", ctx, who), prepared,
                             None, "")
    result = prepared.result(run.bpf_ret if run.bpf_ret is not None else run.ret)
    result.ret = run.ret
    return result


@pytest.mark.parametrize("backend", ["interp", "jit"])
@pytest.mark.parametrize("op, phase, fields, v1_ret, ack_ret", REQUESTS)
def test_both_builds_decide_what_the_c_says_and_alike(builds, backend, op, phase, fields,
                                                       v1_ret, ack_ret):
    v1 = run_request(builds["rfc-v1"], "rfc-v1", op, phase, fields, backend)
    ack = run_request(builds["ack"], "ack", op, phase, fields, backend)
    assert (v1.ret, ack.ret) == (v1_ret, ack_ret)
    assert v1.abi is abi.RFC_V1 and ack.abi is abi.ACK
    assert sequence.allows(abi.RFC_V1, phase, v1.ret) == sequence.allows(abi.ACK, phase, ack.ret)
    assert v1.changed == ack.changed
    if (op, phase) == ("getattr", "post"):      # RFC v1 through helper 209, ACK through out_args
        assert v1.changed == {"out.attr.mtime": (0, MTIME)}
    if fields.get("name") == "locked":           # RFC v1 through helper 208, ACK the alias
        assert v1.changed == {"in.mode": (0o40777, 0o40700)}


def test_the_pre_codes_ask_for_the_same_steps_where_ack_can_say_it():
    """§12.2's mapping, through the one decoder the sequence uses."""
    for ack_ret, code in ((B, rfc_v1.CONTINUE), (0, rfc_v1.USER), (U | B, rfc_v1.USER_PREFILTER),
                          (B | PF, rfc_v1.POSTFILTER)):
        assert sequence.steps(abi.ACK, "pre", ack_ret) == sequence.steps(abi.RFC_V1, "pre", code)
    only_v1 = sequence.steps(abi.RFC_V1, "pre", rfc_v1.USER_POSTFILTER)
    assert only_v1 == sequence.Steps(backing=True, user_post=True)
    assert sequence.steps(abi.RFC_V1, "post", rfc_v1.USER_POSTFILTER).user_post
    with pytest.raises(sequence.BadReturn):
        sequence.steps(abi.RFC_V1, "post", rfc_v1.POSTFILTER)




def test_run_takes_abi_for_a_clang_object(builds, tmp_path):
    obj = tmp_path / "pair.v1.o"
    obj.write_bytes(builds["rfc-v1"])
    proc = fdsl("run", str(obj), "--abi", "rfc-v1", "--op", "getattr", "--phase", "post",
                "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert (out["abi"], out["ret"], out["bits"]) == ("rfc-v1", 0, ["CONTINUE"])
    assert out["changed"] == {"out.attr.mtime": [0, MTIME]}
    text = fdsl("run", str(obj), "--abi", "rfc-v1", "--op", "lookup", "--name", "late")
    assert "RFC v1 fuse-bpf" in text.stdout and "3 = allow POSTFILTER" in text.stdout
    ack = fdsl("run", str(obj), "--op", "lookup", "--name", "late")     # no flag: ACK rules
    assert ack.returncode == 1 and "helper 209 is not available" in ack.stderr
    unknown = fdsl("run", str(obj), "--abi", "v9", "--op", "lookup")
    assert unknown.returncode == 2 and "unknown ABI 'v9'" in unknown.stderr
    for proc in (text, ack, unknown):
        assert "Traceback" not in proc.stderr, proc.stderr


def test_an_fdsl_objects_metadata_wins_and_a_contradicting_flag_is_a_usage_error(tmp_path):
    obj = tmp_path / "audit.o"
    assert fdsl("compile", str(EXAMPLES / "audit.fdsl"), "-o", str(obj)).returncode == 0
    assert fdsl("run", str(obj), "--abi", "ack", "--op", "lookup", "--name", "x").returncode == 0
    proc = fdsl("run", str(obj), "--abi", "rfc-v1", "--op", "lookup", "--name", "x")
    assert proc.returncode == 2 and "contradicts its metadata" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_policy_source_is_compiled_for_the_flags_abi():
    """The issue's example: `fdsl run --abi rfc-v1 hide_secrets.fdsl` decides in RFC v1's
    codes what the ACK build decides in ACK's (a user never compiles by hand to try it)."""
    policy = str(EXAMPLES / "hide_secrets.fdsl")
    got = {}
    for name in ("rfc-v1", "ack"):
        proc = fdsl("run", "--abi", name, policy, "--op", "lookup", "--phase", "pre",
                    "--name", ".env", "--json")
        assert proc.returncode == 0, proc.stderr
        got[name] = json.loads(proc.stdout)
    assert got["rfc-v1"]["abi"] == abi.RFC_V1.id and got["ack"]["abi"] == abi.ACK.id
    assert got["rfc-v1"]["ret"] == got["ack"]["ret"] == -2          # ENOENT under both
    unknown = fdsl("run", "--abi", "v9", policy, "--op", "lookup")
    assert unknown.returncode == 2 and "unknown ABI 'v9'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
