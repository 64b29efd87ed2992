"""The userspace-rule evaluator on hand-written rule trees (the node shapes of
`fdsl/vm/userspace.py`), independent of the compiler that normally writes them."""
from __future__ import annotations

import errno

import pytest

from fdsl import abi
from fdsl.vm.userspace import LocalMaps, Request, evaluate


def lit(v):
    return {"e": "int" if isinstance(v, int) else "str", "v": v}


def fld(path):
    return {"e": "field", "path": path}


def bi(name):
    return {"e": "builtin", "name": name}


def binop(op, left, right):
    return {"e": "bin", "op": op, "l": left, "r": right}


def when(cond, *then, otherwise=()):
    return {"s": "if", "c": cond, "then": list(then), "else": list(otherwise)}


ALLOW = {"s": "allow"}


def deny(code):
    return {"s": "deny", "errno": lit(code)}


def lookup(name="x", **kw):
    return Request("lookup", "pre", {"name": name}, **kw)


def test_first_decision_wins_and_undecided_rules_fall_through():
    rules = [[when(binop("==", fld("name"), lit("a")), deny(errno.EACCES))],   # does not decide for "b"
             [deny(errno.ENOENT)],
             [ALLOW]]
    out = evaluate(rules, lookup("b"))
    assert (out.decision, out.value, out.failure) == ("deny", errno.ENOENT, errno.ENOENT)
    assert evaluate(rules, lookup("a")).value == errno.EACCES


def test_no_decision_lets_the_operation_go():
    out = evaluate([[when(binop("==", bi("uid"), lit(0)), deny(errno.EPERM))]], lookup(uid=1000))
    assert out.decision is None and out.failure == 0


def test_return_fails_only_with_a_negative_value():
    assert evaluate([[{"s": "return", "v": lit(-errno.EROFS)}]], lookup()).failure == errno.EROFS
    assert evaluate([[{"s": "return", "v": lit(2)}]], lookup()).failure == 0


def test_deny_without_an_errno_is_eperm():
    assert evaluate([[{"s": "deny", "errno": lit(0)}]], lookup()).failure == errno.EPERM


def test_writes_and_compound_assignment_read_earlier_writes():
    req = Request("getattr", "post", {"out.attr.mode": 0o100644})
    body = [{"s": "assign", "path": "out.attr.mode", "op": "&=", "v": lit(~0o022 & (2**64 - 1))},
            {"s": "assign", "path": "out.attr.mode", "op": "|=", "v": lit(0o400)}]
    assert evaluate([body], req).writes == {"out.attr.mode": 0o100644 & ~0o022 | 0o400}


def test_builtins_see_the_caller_and_the_opcode_number():
    req = Request("mkdir", "pre", {}, uid=1001, gid=100, pid=7, tgid=5)
    body = [when(binop("and", binop("==", bi("op"), lit(abi.OPS["mkdir"].number)),
                       binop("==", bi("tgid"), lit(5))), deny(errno.EPERM))]
    assert evaluate([body], req).failure == errno.EPERM


@pytest.mark.parametrize("kind, pattern, name, hit", [
    ("startswith", ".", ".env", True), ("endswith", ".key", "a.key", True),
    ("glob", "*.pem", "cert.pem", True), ("glob", "*.pem", "cert.pem.bak", False),
    ("regex", "^(a+)+$", "a" * 40 + "b", False),      # linear time (RE2), no backtracking blow-up
    ("regex", "^sec.*t$", "secret", True),
])
def test_string_tests(kind, pattern, name, hit):
    test = {"e": "strtest", "kind": kind, "x": fld("name"), "pats": [pattern]}
    assert (evaluate([[when(test, deny(errno.ENOENT))]], lookup(name)).decision == "deny") is hit


def test_set_membership_and_its_negation():
    member = {"e": "in", "x": fld("name"), "set": [lit("a"), lit("b")], "neg": False}
    assert evaluate([[when(member, ALLOW)]], lookup("b")).decision == "allow"
    assert evaluate([[when({**member, "neg": True}, ALLOW)]], lookup("b")).decision is None


def test_readdir_drop_removes_matching_entries_by_index():
    req = Request("readdir", "post", {}, entries=[".", "..", "secret", "notes", "secret2"])
    where = {"e": "strtest", "kind": "startswith", "x": fld("name"), "pats": ["secret"]}
    assert evaluate([[{"s": "drop", "where": where}]], req).dropped == [2, 4]


def test_counts_and_stores_land_in_the_maps_and_reads_see_them():
    maps = LocalMaps()
    count = {"s": "count", "map": "hits", "key": bi("uid"), "by": None}
    evaluate([[count]], lookup(uid=3), maps=maps)
    evaluate([[count]], lookup(uid=3), maps=maps)
    evaluate([[{"s": "store", "map": "last", "key": lit(0), "v": bi("uid")}]], lookup(uid=9), maps=maps)
    read = {"e": "mapget", "map": "hits", "key": lit(3)}
    assert evaluate([[when(binop("==", read, lit(2)), ALLOW)]], lookup(), maps=maps).decision == "allow"
    assert maps.load("last", 0) == 9 and maps.load("hits", 4) == 0


def test_division_by_zero_follows_bpf():
    def value(op):
        out = evaluate([[{"s": "return", "v": binop(op, lit(7), lit(0))}]], lookup())
        return out.value
    assert (value("/"), value("%")) == (0, 7)


def test_missing_field_is_a_clear_error():
    with pytest.raises(KeyError, match="not in the lookup pre request"):
        evaluate([[when(binop("==", fld("in.flags"), lit(0)), ALLOW)]], lookup())
