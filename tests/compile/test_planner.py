"""The planner's decision tables, checked on small policies (no codegen, no VM):
return bits per scope/op/phase, scope structure and fallback, BPF/userspace placement."""
from __future__ import annotations

import pytest

from fdsl import abi
from fdsl.compile.driver import load_checked
from fdsl.compile.planner import Plan, build_plan

B, PF, U = abi.BACKING, abi.POST_FILTER, abi.USER_FILTER


@pytest.fixture
def plan_of(tmp_path):
    def plan(text: str) -> Plan:
        path = tmp_path / "p.fdsl"
        path.write_text(text)
        policy, _, diags = load_checked(str(path))
        assert not [d for d in diags if d.severity.name == "ERROR"], diags
        return build_plan(policy)
    return plan


def test_pre_allow_is_backing_alone_without_post_or_userspace_rules(plan_of):
    plan = plan_of('on lookup pre { if name == "x" { deny ENOENT } }\n')
    entry = plan.scopes[0].entry("lookup", "pre")
    assert entry is not None and entry.allow_bits == B
    assert entry.opcode == abi.OPS["lookup"].number | abi.PREFILTER


def test_pre_allow_gains_post_filter_when_post_rules_exist(plan_of):
    plan = plan_of('on getattr pre { if uid == 5 { deny EACCES } }\n'
                   'on getattr post { out.attr.mode = out.attr.mode & 0o777 }\n')
    assert plan.scopes[0].entry("getattr", "pre").allow_bits == B | PF
    assert plan.scopes[0].entry("getattr", "post").allow_bits == 0


def test_userspace_rules_add_user_filter_and_are_placed_once(plan_of):
    plan = plan_of('on lookup pre { if name matches "^a[0-9]+$" { deny ENOENT } }\n')
    entry = plan.scopes[0].entry("lookup", "pre")
    assert entry.allow_bits == B | U
    [rule] = entry.rules
    assert rule.userspace and rule.reason
    assert entry.user_rules == [rule] and entry.bpf_rules == []


def test_scopes_nest_under_the_root_and_fall_back_outward(plan_of):
    plan = plan_of('on mkdir pre { deny EROFS }\n'
                   'under "private" { on lookup pre { if uid != 0 { deny EACCES } } }\n'
                   'under "vendor" passthrough\n')
    root, private, vendor = plan.scopes
    assert (root.path, root.section, root.parent) == ("", "fuse/root", None)
    assert private.path == "private" and private.parent == "" and private.kind == "rules"
    assert vendor.kind == "passthrough"
    # the scope's program keeps the enclosing scope's rules (mkdir still refused inside)
    assert private.entry("mkdir", "pre") is not None
    assert [r.scope for r in private.entry("lookup", "pre").rules] == ["private"]


def test_default_deny_applies_where_no_rule_decides(plan_of):
    plan = plan_of('default deny EACCES\non lookup pre { if name == "ok" { allow } }\n')
    assert plan.scopes[0].entry("lookup", "pre").default.__class__.__name__ == "Deny"


def test_identity_and_side_effect_traits_for_caching(plan_of):
    plan = plan_of('counter hits[u32]\n'
                   'on getattr pre { if uid == 7 { deny EACCES } }\n'
                   'on open pre { count hits[uid] }\n')
    [traits] = plan.op_traits().values()       # one scope: the root
    assert traits["getattr"]["identity"] is True
    assert traits["open"]["side_effects"] is True
    assert "lookup" not in traits
