"""`fdsl run OBJ_OR_FDSL --op OP --phase PHASE [fields...]`: one simulated request.

Builds the context for one request from field values (`fdsl.vm.simulate`), runs
the program of one section on the chosen backend and prints the decision
(allow with the result decoded in the object's ABI: ACK's return bits or RFC
v1's return code; or deny ERRNO), the fields the program rewrote, and the
trace_printk lines.  When the program asks for the userspace filter and the
object's metadata has userspace rules for that op/phase, they are evaluated
too, as the daemon would.  The ABI is the object's metadata's, else `--abi`.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from fdsl.commands import abi_choice, add_abi_option, add_include_option


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run",
        help="run one simulated request through a compiled policy",
        description="Run one simulated FUSE request through a compiled object (.bpf.o) or a "
        "policy (.fdsl, compiled first) and print the decision and the rewritten fields.",
        epilog="example: fdsl run policy.fdsl --op lookup --phase pre --name secret.key --uid 1000",
    )
    p.add_argument("object", metavar="OBJ_OR_FDSL", help="compiled object or .fdsl policy")
    add_include_option(p)
    p.add_argument("--op", required=True, help="FUSE opcode name (lookup, open, mkdir, ...)")
    p.add_argument("--phase", choices=("pre", "post"), default="pre", help="filter phase (default pre)")
    p.add_argument("--name", help="the request's name argument")
    p.add_argument("--newname", help="RENAME/RENAME2's new name")
    p.add_argument("--field", action="append", default=[], metavar="PATH=VALUE",
                   help="set a field, e.g. in.flags=0x8000 or out.attr.mode=0o100644 (repeatable)")
    p.add_argument("--error", help="POST: the backing operation's result (ENOENT, 2, -2)")
    p.add_argument("--uid", type=_u32, default=0, help="caller's uid (default 0)")
    p.add_argument("--gid", type=_u32, default=0, help="caller's gid (default 0)")
    p.add_argument("--pid", type=_u32, default=0, help="caller's thread id (default 0)")
    p.add_argument("--tgid", type=_u32, help="caller's process id (default: the pid)")
    p.add_argument("--nodeid", type=_u64, default=0, help="the context's nodeid")
    p.add_argument("--backend", choices=("jit", "interp"), default="jit")
    p.add_argument("--section", help="program section (default: fuse/root, or the only one)")
    add_abi_option(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_run)


def _ranged(bits: int):
    """An argparse type: an integer in any base (0x, 0o, 0b) that fits `bits` unsigned."""
    def parse(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not 0 <= value < 1 << bits:
            raise argparse.ArgumentTypeError(f"{text} is out of range (0 .. {(1 << bits) - 1})")
        return value
    parse.__name__ = f"u{bits}"
    return parse


_u32 = _ranged(32)
_u64 = _ranged(64)


def _value(text: str) -> Any:
    """Field values: integers in any base (0x, 0o, 0b), otherwise the string itself."""
    try:
        return int(text, 0)
    except ValueError:
        return text


def _load_bytes(args: argparse.Namespace) -> bytes:
    """The object to run: a .fdsl policy is compiled for `--abi` (ACK without it)."""
    from fdsl.commands import target_abi
    from fdsl.errors import UsageError
    from fdsl.files import MAX_OBJECT_BYTES, InputFileError, read_regular_file

    path = args.object
    if path.endswith(".fdsl"):
        from fdsl.compile.driver import compile_file

        return compile_file(path, want_asm=False, include_dirs=args.include_dirs,
                            abi_record=target_abi(args)).obj
    try:
        return read_regular_file(path, MAX_OBJECT_BYTES).data
    except InputFileError as err:
        raise UsageError(f"{path}: {err.reason}") from None


def _pick_section(fs, wanted: str | None) -> str:
    from fdsl.errors import UsageError

    sections = fs.sections
    if wanted:
        if wanted not in sections:
            raise UsageError(f"no program section {wanted!r} (sections: {', '.join(sections) or 'none'})")
        return wanted
    if "fuse/root" in sections:
        return "fuse/root"
    if len(sections) == 1:
        return sections[0]
    raise UsageError(f"several program sections, pick one with --section: {', '.join(sections)}")


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    from fdsl.errors import UsageError

    fields: dict[str, Any] = {}
    if args.name is not None:
        fields["name"] = args.name
    if args.newname is not None:
        fields["newname"] = args.newname
    for item in args.field:
        path, sep, value = item.partition("=")
        if not sep or not path:
            raise UsageError(f"--field expects PATH=VALUE, got {item!r}")
        fields[path.strip()] = _value(value.strip())
    if args.error is not None:
        if args.phase != "post":
            raise UsageError("--error only makes sense with --phase post")
        fields["error"] = args.error
    fields.update(uid=args.uid, gid=args.gid, pid=args.pid,
                  tgid=args.pid if args.tgid is None else args.tgid, nodeid=args.nodeid)
    return fields


def cmd_run(args: argparse.Namespace) -> int:
    from fdsl import abi
    from fdsl.vm import simulate, userspace
    from fdsl.vm.filterset import FilterSet
    from fdsl.errors import UsageError, VmFault

    with abi_choice(args.object):
        fs = FilterSet.load(_load_bytes(args), backend=args.backend,
                            abi_name=args.abi)
    section = _pick_section(fs, args.section)
    fields = _fields(args)
    try:
        prepared = simulate.prepare(args.op, args.phase, fields, fs.abi)
    except (simulate.RequestError, ValueError, KeyError) as err:
        # a KeyError's str() is the repr of its message; show the message itself
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        raise UsageError(str(message)) from None
    meta = fs.object.meta
    scope = meta.scope_by_section(section) if meta is not None else None
    rules = simulate.rule_filter(meta, userspace.TableMaps(fs.maps))
    try:
        run = simulate.run_phase(lambda ctx, who: fs.run(section, ctx, who), prepared, rules,
                                 scope.path if scope else "", args.nodeid)
    except VmFault as fault:
        print(f"fdsl run: {section}: fault at insn {fault.index}: {fault.reason}", file=sys.stderr)
        return 1
    result = prepared.result(run.bpf_ret if run.bpf_ret is not None else run.ret)
    result.ret = run.ret
    user: dict[str, Any] | None = None
    if run.user is not None:
        outcome = run.user
        user = {"rules": run.user_rules, "decision": outcome.decision or "allow",
                "value": outcome.value, "writes": outcome.writes, "logs": outcome.logs}
    logs = fs.log_sink.recent()
    note = None
    if run.hidden_name:
        note = "the VFS looks the new name up first and a lookup rule refuses it: ENOENT"
    elif run.program_errno is not None and run.ret != -run.program_errno:
        note = (f"the program denied {abi.errno_name(run.program_errno)}; a fuse-bpf kernel's "
                f"{args.op} finalize answers {abi.errno_name(-run.ret)}")

    if args.json:
        print(json.dumps({
            "section": section, "backend": args.backend, "abi": fs.abi.id,
            "op": args.op, "phase": args.phase,
            "ret": result.ret, "decision": result.decision, "errno": result.errno_name,
            "bits": result.bits, "changed": {k: list(v) for k, v in result.changed.items()},
            "userspace": user, "log": logs, "note": note,
        }, indent=2))
        return 0

    opcode = abi.OPS[args.op].number | abi.PHASE_BITS[args.phase]
    print(f"{section} [{args.backend}, {fs.abi.name}] {args.op} {args.phase} "
          f"(opcode {opcode:#x})")
    if result.ret < 0:
        print(f"result: {result.ret} = deny {result.errno_name or -result.ret}")
        if note:
            print(f"  ({note})")
    else:
        print(f"result: {result.ret} = allow {'|'.join(result.bits) or '0'}")
        if args.phase == "post" and result.error_in < 0:
            print(f"  (the backing error {abi.errno_name(-result.error_in)} stands: "
                  f"a postfilter cannot turn a failure into success)")
    for path, (before, after) in sorted(result.changed.items()):
        print(f"rewrote {path}: {_show(before)} -> {_show(after)}")
    if user is not None:
        verdict = user["decision"]
        if verdict == "deny":
            verdict += f" {abi.errno_name(user['value'])}"
        print(f"userspace ({user['rules']} rules): {verdict}")
        for path, value in sorted(user["writes"].items()):
            print(f"  userspace rewrote {path} -> {_show(value)}")
        for line in user["logs"]:
            print(f"  userspace log: {line}")
    for line in logs:
        print(f"log: {line}")
    return 0


def _show(value: Any) -> str:
    return f"{value:#x}" if isinstance(value, int) and value > 9 else str(value)
