"""Value maps (`map NAME[KEY] -> VALUE`): every stage, run on the interpreter and the JIT.

The compiled programs run through `FilterSet` with field-level requests, and
the tests look at the map contents afterwards (`FilterSet.maps`), which are
also what the daemon and `fdsl stats` read.
"""
from __future__ import annotations

import json

import pytest

from fdsl import abi
from fdsl.lang import ast as A
from fdsl.lang.checker import check
from fdsl.lang.diagnostics import Severity
from fdsl.compile.metadata import CachingHints, Metadata
from fdsl.lang.parser import parse_source
from fdsl.vm.userspace import LocalMaps, Request, TableMaps, evaluate

from backend_util import compile_text, elf

B, PF, U = abi.BACKING, abi.POST_FILTER, abi.USER_FILTER
BACKENDS = ["interp", "jit"]

POLICY = """
map last_uid[u64] -> u32 max 4096
map last_err[u32] -> u32 array max 64
map small[u32] -> u8
counter by_uid[u32]
on all pre { last_uid[nodeid] = uid; count by_uid[uid] }
on mkdir post { if error != 0 { last_err[op] = error } }
on lookup pre {
  if name == "probe" and last_uid[nodeid + 1] == 0 { deny ENOENT }
  if name == "busy" and by_uid[uid] > 3 { deny EBUSY }
}
on unlink pre { small[uid] = 0x1ff; if small[uid] != 0xff { deny EIO } }
on rmdir pre { if name matches "^x" { small[uid] = last_uid[nodeid] } }
on rename pre { if name matches "^x" and small[uid] == 3 { deny EPERM } }
"""


def checked(text: str):
    policy, sources, diags = parse_source(text, "t.fdsl")
    assert not diags, diags
    diags = check(policy, sources)
    return policy, [d for d in diags if d.severity is Severity.ERROR], diags


@pytest.fixture(scope="module")
def result():
    policy, errors, _ = checked(POLICY)
    assert not errors, errors
    from fdsl.compile.driver import compile_policy

    return compile_policy(policy)


def load(result, backend):
    from fdsl.vm.filterset import FilterSet

    return FilterSet.load(result.obj, backend=backend)


def run(fs, op, phase, **fields):
    from fdsl.vm.simulate import prepare

    p = prepare(op, phase, fields)
    return fs.run("fuse/root", p.context, p.caller)


def entries(fs, name):
    return dict(fs.maps.by_name(name).int_items())


# ------------------------------------------------------------------ front end

def test_parse_map_declaration():
    policy, _, _ = parse_source("map m[u64] -> u16 array max 8\ncounter c[u32]\n")
    decl, counter = policy.items
    assert (decl.kind, decl.map_type, decl.key_type, decl.value_type, decl.value_type_name) == \
        ("map", "array", A.Type("int", 64), A.Type("int", 16), "u16")
    assert decl.max_expr.value == 8
    assert (counter.kind, counter.value_type) == ("counter", A.Type("int", 64))


def test_parse_store_and_read():
    policy, _, diags = parse_source("map m[u32] -> u32\non lookup pre { m[uid] = m[gid] + 1 }\n")
    assert not diags
    store = policy.items[1].body[0]
    assert isinstance(store, A.MapStore) and store.map == "m" and store.op == "="
    assert isinstance(store.value.left, A.MapRead) and store.value.left.map == "m"


@pytest.mark.parametrize("text", ["let map = 1", "const map = 1", "on lookup pre { let map = 2 }"])
def test_map_is_reserved(text):
    _, _, diags = parse_source(text + "\n")
    assert diags and diags[0].severity is Severity.ERROR


def test_other_keywords_and_minus_still_work():
    _, errors, _ = checked("counter mapped[u32] hash max 4\nconst mapping = 3 - 1\n"
                           "on lookup pre { count mapped[uid]; if uid - 1 > mapping { deny EPERM } }\n")
    assert not errors


def test_checker_types_and_refs():
    policy, errors, diags = checked(POLICY)
    assert not errors
    warnings = [d.message for d in diags if d.severity is Severity.WARNING]
    assert warnings == ["a fuse-bpf kernel answers this deny EBUSY of lookup as ENOENT",
                        "511 does not fit in the u8 value of map 'small': it is stored as 255",
                        "the u32 value is truncated to the u8 value of map 'small'"]
    rule = policy.items[6]
    read = rule.body[0].cond.right.left
    assert isinstance(read, A.MapRead) and read.ref.name == "last_uid"
    assert read.ty == A.Type("int", 32)


def test_truncation_warnings():
    _, errors, diags = checked("map m[u8] -> u16\non lookup pre { m[uid] = 1; m[1] = 65536 }\n")
    assert not errors
    messages = [d.message for d in diags]
    assert any("u32 value is truncated to the u8 key" in m for m in messages)
    assert any("65536 does not fit in the u16 value" in m for m in messages)


def test_test_block_entries_must_be_constants():
    _, errors, _ = checked('map m[u32] -> u32\ntest "t" { lookup pre { m[1] = uid }\n expect allow }\n')
    assert errors


# -------------------------------------------------------------------- planner

def test_traits_and_metadata(result):
    traits = result.metadata.caching.traits("", "lookup")
    assert traits.side_effects and traits.reads_maps and not traits.cacheable
    mkdir = result.metadata.caching.traits("", "mkdir")
    assert mkdir.side_effects and not mkdir.reads_maps
    rename = result.metadata.caching.traits("", "rename")
    assert rename.reads_maps and rename.pre_user
    meta = Metadata.from_json(result.metadata.to_json())
    assert meta.caching.traits("", "lookup").reads_maps


def test_reads_alone_make_results_uncacheable():
    r = compile_text("map m[u64] -> u32\non getattr post { if m[nodeid] == 1 { deny EIO } }\n")
    g = r.metadata.caching.traits("", "getattr")
    assert g.reads_maps and not g.side_effects and not g.identity and not g.cacheable


def test_old_traits_without_reads_maps_still_read():
    old = {"scopes": {"": {"getattr": {"pre_bpf": True, "identity": False, "side_effects": False}}}}
    traits = CachingHints.from_dict(old).traits("", "getattr")
    assert not traits.reads_maps and traits.cacheable


def test_map_metadata(result):
    maps = {m.name: m for m in result.metadata.maps}
    assert (maps["last_uid"].kind, maps["last_uid"].key_size, maps["last_uid"].value_size) == ("map", 8, 4)
    assert (maps["last_uid"].max_entries, maps["last_uid"].key) == (4096, "nodeid")
    assert (maps["last_err"].map_type, maps["last_err"].key) == ("array", "op")
    assert (maps["small"].value_size, maps["small"].key) == (1, "uid")


def test_key_meaning_of_userspace_only_map():
    r = compile_text('map seen[u32] -> u8\non lookup pre { if name matches "x" { seen[uid] = 1 } }\n')
    assert r.metadata.maps[0].key == "uid"


# ---------------------------------------------------------------- object file

def test_map_records(result):
    e = elf(result.obj)
    data = e.get_section_by_name(abi.MAPS_SECTION).data()
    symbols = {s.name: s for s in e.get_section_by_name(".symtab").iter_symbols()}
    want = {"last_uid": (abi.BPF_MAP_TYPE_HASH, 8, 4, 4096),
            "last_err": (abi.BPF_MAP_TYPE_ARRAY, 4, 4, 64),
            "small": (abi.BPF_MAP_TYPE_HASH, 4, 1, 1024),
            "by_uid": (abi.BPF_MAP_TYPE_HASH, 4, 8, 1024)}
    for name, expected in want.items():
        offset = symbols[name]["st_value"]
        record = abi.MAP_RECORD.unpack(data[offset:offset + 32])
        got = (record["map_type"], record["key_size"], record["value_size"], record["max_entries"])
        assert got == expected, name


def test_fdsl_verify_accepts_it(result, tmp_path, capsys):
    from fdsl.cli import main

    path = tmp_path / "maps.bpf.o"
    path.write_bytes(result.obj)
    assert main(["verify", str(path)]) == 0
    assert "fuse/root: ok" in capsys.readouterr().out


# --------------------------------------------------------------- running it

@pytest.mark.parametrize("backend", BACKENDS)
def test_store_with_bpf_any_replaces(result, backend):
    fs = load(result, backend)
    assert run(fs, "getattr", "pre", uid=1000, nodeid=42) == B
    assert run(fs, "getattr", "pre", uid=7, nodeid=43) == B
    assert run(fs, "getattr", "pre", uid=1001, nodeid=42) == B
    assert entries(fs, "last_uid") == {42: 1001, 43: 7}
    assert entries(fs, "by_uid") == {1000: 1, 7: 1, 1001: 1}


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_key_reads_zero(result, backend):
    fs = load(result, backend)
    assert run(fs, "lookup", "pre", name="probe", uid=5, nodeid=10) == -abi.ERRNOS["ENOENT"]
    run(fs, "getattr", "pre", uid=5, nodeid=11)
    assert run(fs, "lookup", "pre", name="probe", uid=5, nodeid=10) == B


@pytest.mark.parametrize("backend", BACKENDS)
def test_counter_read(result, backend):
    fs = load(result, backend)
    results = [run(fs, "lookup", "pre", name="busy", uid=9, nodeid=1) for _ in range(5)]
    assert results == [B, B, B, -abi.ERRNOS["EBUSY"], -abi.ERRNOS["EBUSY"]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_post_store_into_array(result, backend):
    fs = load(result, backend)
    assert run(fs, "mkdir", "post", name="d", error="EEXIST") == 0
    assert run(fs, "mkdir", "post", name="e") == 0
    got = entries(fs, "last_err")
    assert got[abi.OPS["mkdir"].number] == abi.ERRNOS["EEXIST"]
    assert sum(1 for v in got.values() if v) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_value_is_cut_to_its_width(result, backend):
    fs = load(result, backend)
    assert run(fs, "unlink", "pre", name="f", uid=3) == B   # stored 0x1ff, read back 0xff
    assert entries(fs, "small") == {3: 0xFF}


@pytest.mark.parametrize("backend", BACKENDS)
def test_userspace_rules_share_the_programs_maps(result, backend):
    fs = load(result, backend)
    meta = result.metadata
    maps = TableMaps(fs.maps)
    run(fs, "getattr", "pre", uid=7, nodeid=5)                      # BPF: last_uid[5] = 7
    assert maps.load("last_uid", 5) == 7
    ret = run(fs, "rmdir", "pre", name="xd", uid=3, nodeid=5)         # BPF: last_uid[5] = 3
    assert ret == B | U
    out = evaluate(meta.rules_for("", "rmdir", "pre"),
                   Request("rmdir", "pre", {"name": "xd"}, uid=3, nodeid=5), maps=maps)
    assert out.stores == [("small", 3, 3)]                            # read what BPF stored
    assert entries(fs, "small")[3] == 3                                # userspace wrote the real map
    rules = meta.rules_for("", "rename", "pre")
    deny = evaluate(rules, Request("rename", "pre", {"name": "xa", "newname": "b"}, uid=3), maps=maps)
    assert deny.decision == "deny"
    other = evaluate(rules, Request("rename", "pre", {"name": "xa", "newname": "b"}, uid=4), maps=maps)
    assert other.decision is None


def test_evaluator_without_maps_keeps_private_state():
    r = compile_text('map m[u32] -> u32\non lookup pre { if name matches "." { m[uid] = 5 '
                     '\n if m[uid] != 5 { deny EIO } } }\n')
    local = LocalMaps()
    out = evaluate(r.metadata.rules_for("", "lookup", "pre"),
                   Request("lookup", "pre", {"name": "a"}, uid=1), maps=local)
    assert out.decision is None and local.load("m", 1) == 5
    assert evaluate(r.metadata.rules_for("", "lookup", "pre"),
                    Request("lookup", "pre", {"name": "a"}, uid=1)).decision is None


def test_policy_test_blocks_with_maps(tmp_path):
    from fdsl import testing

    text = POLICY + """
test "preset and check" {
    lookup pre { name = "probe"; nodeid = 10; uid = 4; last_uid[11] = 1 }
    expect allow
    expect last_uid[10] == 4 and last_uid[11] == 1 and small[4] == 0
}
test "maps start empty" {
    lookup pre { name = "probe"; nodeid = 10; uid = 4 }
    expect deny ENOENT
    expect last_uid[11] == 0
}
"""
    policy, errors, _ = checked(text)
    assert not errors
    from fdsl.compile.driver import compile_policy

    runner = testing.Runner(compile_policy(policy).obj, backend="interp")
    results = testing.run_tests(testing.policy_tests(policy), runner)
    assert [r.failures for r in results] == [[], []]


def test_json_trees(result):
    rule = result.metadata.rules_for("", "rmdir", "pre")[0]
    text = json.dumps(rule.body)
    assert '"s": "store"' in text and '"e": "mapget"' in text
