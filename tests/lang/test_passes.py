"""Each checker pass on its own: run the pipeline up to it and look at what it did."""
from __future__ import annotations

from fdsl.lang import ast as A
from fdsl.lang.diagnostics import Diagnostics, Severity, Span
from fdsl.lang.parser import parse_source
from fdsl.lang.passes import (binder, desugar, fields, placement, postfilter, reachability,
                              structure, testblocks, types)
from fdsl.lang.passes.visitor import Unit, Visitor, reachable_nodes

ORDER = ["structure", "desugar", "binder", "fields", "types", "reachability", "placement",
         "postfilter", "testblocks"]


def run_until(text: str, last: str) -> tuple[A.Policy, list[str]]:
    """The policy after the passes up to and including `last`, and the messages so far."""
    policy, sources, diags = parse_source(text, "t.fdsl")
    assert diags == [], [d.message for d in diags]
    unit = Unit(policy, sources, Diagnostics())
    symbols = None
    for name in ORDER[:ORDER.index(last) + 1]:
        if name == "structure":
            structure.run(unit)
        elif name == "desugar":
            desugar.run(unit)
            structure.resolve_all_ops(unit)
        elif name == "binder":
            symbols = binder.run(unit)
        elif name == "testblocks":
            assert symbols is not None
            testblocks.run(unit, symbols)
        else:
            {"fields": fields, "types": types, "reachability": reachability,
             "placement": placement, "postfilter": postfilter}[name].run(unit)
    return policy, [d.message for d in unit.diags.ordered(policy.files)]


def rules(policy: A.Policy) -> list[A.Rule]:
    return [i for i in policy.items if isinstance(i, A.Rule)]


# ------------------------------------------------------------ shared pieces

def test_visitor_replaces_what_a_visit_returns() -> None:
    class Double(Visitor):
        def visit_IntLit(self, e: A.IntLit) -> A.Expr:
            return A.IntLit(e.span, e.value * 2)

    span = Span.unknown()
    tree = A.Binary(span, "+", A.IntLit(span, 1), A.Unary(span, "-", A.IntLit(span, 3)))
    Double(Diagnostics()).visit(tree)
    assert tree.left.value == 2 and tree.right.operand.value == 6


def test_diagnostics_keep_one_copy_and_order_by_position() -> None:
    diags = Diagnostics()
    late, early = Span("a", 3, 1, 3, 2), Span("a", 1, 5, 1, 6)
    diags.error("x", late)
    diags.error("x", late)
    diags.warn("y", early)
    assert [d.message for d in diags.ordered(["a"])] == ["y", "x"]
    assert diags.error_count() == 1
    assert diags.has_error_within(Span("a", 2, 1, 4, 1)) and not diags.has_error_within(early)


def test_reachable_nodes_enter_each_declaration_once() -> None:
    policy, _ = run_until('predicate p(n) = n == "a"\non lookup pre { if p(name) or p(name) { deny EIO } }',
                          "binder")
    strings = [n for n in reachable_nodes(rules(policy)[0].body) if isinstance(n, A.StrLit)]
    assert len(strings) == 1


# ------------------------------------------------------------------ passes

def test_structure_drops_misplaced_items_and_resolves_groups() -> None:
    policy, messages = run_until('under "a" { const X = 1\non xattr pre { deny EPERM } }', "desugar")
    under = policy.items[0]
    assert isinstance(under, A.Under) and len(under.items) == 1
    assert messages == ["'const' is only allowed at the top level, not inside 'under'"]
    assert rules(A.Policy(policy.span, under.items))[0].resolved_ops == [
        "setxattr", "getxattr", "listxattr", "removexattr"]


def test_desugar_keeps_source_order_and_marks_origin() -> None:
    policy, _ = run_until('on mkdir pre { allow }\nhide name == "x"\non rmdir pre { allow }', "desugar")
    origins = [r.origin for r in rules(policy)]
    assert origins[0] is None and origins[-1] is None
    assert set(origins[1:-1]) == {"hide"}


def test_binder_gives_every_name_a_typed_meaning() -> None:
    policy, messages = run_until('''
const C = 1
set S = {1}
predicate top = uid == 0
on lookup pre {
    let l = C
    if l in S and top and name == "a" and error_free() { deny ENOENT }
    if O_RDONLY == 0 { deny EIO }
}''', "binder")
    assert messages == ["unknown predicate 'error_free'"]
    let, first, second = rules(policy)[0].body
    assert isinstance(let.value.ref, A.ConstRef)
    ands = first.cond
    inset, pred_name = ands.left.left.left, ands.left.left.right
    assert isinstance(inset.subject.ref, A.LetRef) and inset.subject.ref.decl is let
    assert isinstance(inset.members.ref, A.SetRef) and isinstance(pred_name.ref, A.PredRef)
    assert isinstance(ands.left.right.left, A.FieldRef)          # bare `name` became a field
    assert ands.right.ref is None                                # unknown: left unbound
    assert first.then[0].errno.ref == A.ErrnoRef(2)
    assert isinstance(second.cond.left.ref, A.AbiConstRef)


def test_binder_cuts_recursion_and_bad_arity_so_nobody_inlines_them() -> None:
    policy, messages = run_until('predicate a(n) = b(n)\npredicate b(n) = a(n)\n'
                                 'predicate c(n) = n == "x"\non lookup pre { if c(name, name) { deny EIO } }',
                                 "binder")
    a, b = policy.items[0], policy.items[1]
    assert isinstance(a.body, A.Call) and a.body.ref is b
    assert b.body.ref is None
    assert rules(policy)[0].body[0].cond.ref is None
    assert messages == ["predicate 'a' is recursive (a -> b -> a)",
                        "predicate 'c' takes 1 argument(s), got 2"]


def test_binder_turns_opcode_names_into_numbers() -> None:
    policy, messages = run_until('on all pre { if op == "mkdir" or op == "mkdri" { deny EIO } }', "binder")
    cond = rules(policy)[0].body[0].cond
    assert isinstance(cond.left.right, A.IntLit) and cond.left.right.value == 9
    assert messages == ["unknown opcode 'mkdri'"]


def test_fields_type_request_values_per_opcode() -> None:
    policy, messages = run_until('on mkdir, create pre { if in.mode == 1 or error == 2 { deny EIO } }\n'
                                 'on getattr, open post { if out.fh == 1 { deny EIO } }', "fields")
    mode = rules(policy)[0].body[0].cond.left.left
    assert mode.ty == A.Type("int", 32)
    error = rules(policy)[0].body[0].cond.right.left
    assert error.ty is None
    assert messages == ["'error' is only defined in post rules",
                        "field 'out.fh' is not available for getattr post"]


def test_types_fold_constants_and_find_const_cycles() -> None:
    policy, messages = run_until("const A = B\nconst B = A + 1\nconst C = (1 << 4) | 3", "types")
    assert policy.items[2].value.const_value == 19
    assert messages == ["const 'A' is defined in terms of itself"]


def test_types_check_predicate_bodies_with_the_arguments_types() -> None:
    _, messages = run_until('predicate big(n) = n > 3\non unlink pre { if big(name) { deny EIO } }', "types")
    assert messages == ["cannot compare a string with a number"]


def test_reachability_warns_after_a_decision() -> None:
    _, messages = run_until("on unlink pre { if uid == 0 { allow } else { deny EIO }\ndeny EPERM }",
                            "reachability")
    assert messages == ["unreachable statement"]


def test_placement_decides_once_with_reasons() -> None:
    policy, _ = run_until('on lookup pre { if name matches "^a+$" { deny EIO } }\n'
                          'on lookup pre { if name like "*.key" { deny EIO } }\n'
                          'on lookup pre { if name endswith {' +
                          ", ".join(f'"{"x" * 60}{i}"' for i in range(20)) + '} { deny EIO } }',
                          "placement")
    regex, glob, suffixes = rules(policy)
    assert regex.userspace and regex.userspace_reasons == [placement.REGEX_REASON]
    assert not glob.userspace and glob.userspace_reasons == []
    assert suffixes.userspace and "unroll" in suffixes.userspace_reasons[0]


def test_postfilter_warns_once_per_allow_with_the_ops_of_every_scope() -> None:
    _, messages = run_until('on lookup, mkdir pre { if uid == 0 { allow } }\n'
                            'on lookup, mkdir pre { return BACKING }\n'
                            'under "a" { on mkdir post { allow } }\n'
                            'on lookup post { if error != 0 { deny EIO } }', "postfilter")
    assert messages == ["this 'allow' also asks for the post phase of lookup, mkdir "
                        "(BACKING | POST_FILTER): post rules exist for them"]


def test_testblocks_check_requests_and_dirents() -> None:
    policy, messages = run_until('''
test "t" {
    readdir post { dirents = {"a", "b"}; uid = 5 }
    expect dirents == {"a"}
}
test "u" {
    lookup pre { name = uid }
    expect allow
}''', "testblocks")
    first = policy.items[0]
    assert isinstance(first, A.TestBlock) and first.expects[0].check.left.ty == A.STRSET
    assert messages == ["'uid' describes a request and cannot be used in a test request value"]


def test_whole_pipeline_reports_in_file_order() -> None:
    from fdsl.lang.checker import check

    policy, sources, _ = parse_source('on lookup pre { deny ENOPE }\non mkdir pre { count nothing }', "t")
    diags = check(policy, sources)
    assert [d.span.line for d in diags] == [1, 2]
    assert all(d.severity is Severity.ERROR for d in diags)
