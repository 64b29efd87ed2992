"""Big name sets (issue 11, item 11): a 20,000-name deny list compiles in seconds into a
small program whose set test the daemon answers with one hash lookup, and a policy whose
name tests cannot fit a BPF program is refused before LLVM runs."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fdsl import testing
from fdsl.compile import objfile
from fdsl.lang.passes import placement
from fdsl.compile.driver import compile_source
from fdsl.errors import PolicyError
from fdsl.vm import userspace


def names(count: int, prefix: str = "secret-file") -> str:
    return ", ".join(f'"{prefix}-{i:05d}.txt"' for i in range(count))


def test_a_20000_name_deny_list_runs_in_the_daemon_and_decides_right():
    text = (f"set blocked = {{{names(20000)}}}\nhide name in blocked\n"
            'test "listed" { lookup pre { name = "secret-file-19999.txt" }; expect deny ENOENT }\n'
            'test "not listed" { lookup pre { name = "secret-file-20000.txt" }; expect allow }\n'
            'test "mkdir refused" { mkdir pre { name = "secret-file-00007.txt" }; expect deny ENOENT }\n')
    result = compile_source(text, "big.fdsl", want_asm=False)
    lookup = result.plan.scopes[0].entry("lookup", "pre")
    assert lookup.user_rules and not lookup.bpf_rules
    assert "hash lookup" in lookup.user_rules[0].reason
    assert objfile.instruction_count(result.obj) < 200
    runner = testing.Runner(result.obj, backend="interp")
    outcomes = testing.run_tests(testing.policy_tests(result.plan.policy), runner, result.sources)
    assert [(r.name, r.passed) for r in outcomes] == [
        ("listed", True), ("not listed", True), ("mkdir refused", True)], [r.failures for r in outcomes]


def test_small_sets_stay_in_bpf():
    result = compile_source(f"set blocked = {{{names(20)}}}\nhide name in blocked\n", "s.fdsl",
                            want_asm=False)
    assert result.plan.scopes[0].entry("lookup", "pre").bpf_rules


def test_name_tests_that_cannot_fit_one_program_fail_before_llvm(monkeypatch):
    # twelve sets, each under the per-rule bound, together over the branch range
    prefix = "name-list-entry"
    per_set = placement.SET_CODE_BUDGET // placement.set_code_cost([f"{prefix}-00000.txt"], 1)
    sets = "".join(f"set s{k} = {{{names(per_set, f'{prefix}{k}')}}}\n" for k in range(12))
    rules = "".join(f"on lookup pre {{ if name in s{k} {{ deny ENOENT }} }}\n" for k in range(12))

    def no_llvm(*args, **kwargs):
        raise AssertionError("LLVM ran for a program the estimate already refuses")

    monkeypatch.setattr("fdsl.compile.driver.build", no_llvm)
    with pytest.raises(PolicyError) as err:
        compile_source(sets + rules, "many.fdsl")
    message = str(err.value)
    assert "many.fdsl:13:" in message and "would be more than" in message and "merge the sets" in message


def test_evaluator_set_lookup_keeps_membership_semantics():
    def run(members, value, neg=False):
        rule = {"s": "if", "c": {"e": "in", "x": {"e": "field", "path": "name"}, "neg": neg,
                                 "set": members},
                "then": [{"s": "deny", "errno": {"e": "int", "v": 2}}], "else": []}
        return userspace.evaluate([[rule]], userspace.Request("lookup", "pre", {"name": value})).decision

    strs = [{"e": "str", "v": f"n{i}"} for i in range(1000)]
    assert run(strs, "n999") == "deny" and run(strs, "n1000") is None
    assert run(strs, "n5", neg=True) is None and run(strs, "x", neg=True) == "deny"
    mixed = strs + [{"e": "field", "path": "name"}]          # not all literals: evaluated
    assert run(mixed, "anything") == "deny"


@settings(max_examples=12, deadline=None)
@given(st.sampled_from([1, 10, 150, 400, 5000]), st.integers(1, 60))
def test_fuzzed_set_sizes_compile_to_a_bounded_program(count, length):
    """Any set size and name length: the policy compiles (to BPF or the daemon) into a
    program within the branch range, never a ProgramTooLarge after LLVM."""
    members = ", ".join(f'"{str(i).rjust(length, "x")}"' for i in range(count))
    result = compile_source(f"set s = {{{members}}}\non lookup pre {{ if name in s {{ deny ENOENT }} }}\n",
                            "f.fdsl", want_asm=False)
    assert objfile.instruction_count(result.obj) <= objfile.MAX_PROGRAM_SLOTS
