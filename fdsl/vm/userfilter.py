"""The userspace half of a policy, served on argument frames (spec §7).

When a program returns USER_FILTER the kernel sends the arguments to the
daemon (`OP | 0x10000` with the inputs, `OP | 0x20000` with inputs + outputs)
and the reply replaces the inputs or the outputs.  `RuleFilter` is that
daemon side for the policy's userspace rules (`fdsl.vm.userspace`): it
decodes the fields from the frame, evaluates the rules, writes their field
assignments back into the frame and rewrites the dirent buffer for `drop`.
The daemon, `fdsl run`, `fdsl test` and a fuse-bpf kernel's filter requests
all go through it.

READDIR|POSTFILTER is always answered with data: a failure there (a deny,
an evaluation error) empties the page, which ends the listing, instead of
failing the request (ACK 6.1 would then list every entry unfiltered, forever).
"""
from __future__ import annotations

import errno
import logging
import os
from typing import Any, Callable

from fdsl import abi
from fdsl.vm import userspace
from fdsl.vm.frame import Frame, read_struct, write_struct_fields
from fdsl.vm.helpers import Caller

log = logging.getLogger("fdsl.runtime")


def decode_fields(frame: Frame, phase: str) -> dict[str, Any]:
    """Every field of the frame's arguments by language path (inputs first)."""
    shape = frame.shape
    fields: dict[str, Any] = {}
    groups = [("in", shape.inputs)] + ([("out", shape.outputs)] if phase == "post" else [])
    for direction, args in groups:
        for i, arg in enumerate(args):
            if arg.kind == "struct":
                for name, value in read_struct(frame, direction, i).items():
                    fields.setdefault(f"{arg.alias}.{name}", value)
            elif arg.kind == "string":
                raw = frame.input_string(i) if direction == "in" else frame.output_bytes(i)
                fields[arg.alias] = os.fsdecode(raw)
            elif arg.null_value:
                fields[arg.alias] = frame.in_size[i]
            else:
                fields[arg.alias] = (frame.input_bytes(i) if direction == "in"
                                     else frame.output_bytes(i))
    return fields


def argument_sizes(frame: Frame, phase: str) -> dict[str, int]:
    """in_args[i].size of every name and buffer argument, for `sizeof(ARG)`."""
    shape = frame.shape
    sizes = {arg.alias: frame.in_size[i] for i, arg in enumerate(shape.inputs)
             if arg.kind != "struct"}
    if phase == "post":
        sizes.update({arg.alias: frame.out_size[j] for j, arg in enumerate(shape.outputs)
                      if arg.kind != "struct"})
    return sizes


def apply_writes(frame: Frame, phase: str, writes: dict[str, int]) -> None:
    """Field assignments into the frame: the inputs in PRE, the outputs in POST."""
    direction = "in" if phase == "pre" else "out"
    args = frame.shape.inputs if phase == "pre" else frame.shape.outputs
    for path, value in writes.items():
        alias, _, member = path.partition(".")
        for i, arg in enumerate(args):
            if arg.alias == alias and arg.struct is not None and arg.struct.field(member):
                write_struct_fields(frame, direction, i, {member: value})
                break


def dirent_index(frame: Frame) -> int | None:
    """Output index of READDIR's dirent buffer in this frame (None for other ops)."""
    for j, arg in enumerate(frame.shape.outputs):
        if arg.alias == "dirents":
            return j
    return None


class RuleFilter:
    """The userspace rules of one object, keyed by (scope, op, phase)."""

    def __init__(self, rules: dict[tuple[str, str, str], list], maps: userspace.MapAccess | None,
                 emit: Callable[[str], None] | None = None) -> None:
        self.rules = rules
        self.maps = maps
        self.emit = emit
        self.ops = {(scope, op) for scope, op, _ in rules}
        self._reads_tgid = {key for key, rs in rules.items()
                            if any(userspace.reads_builtin(r.body if hasattr(r, "body") else r,
                                                           "tgid") for r in rs)}

    def has_rules(self, scope: str, op: str) -> bool:
        return (scope, op) in self.ops

    def half(self, scope: str, caller: Caller, nodeid: int,
             tgid: Callable[[Caller], Caller] | None = None) -> "UserHalf":
        return UserHalf(self, scope, caller, nodeid, tgid)


class UserHalf:
    """The userspace filter of one request; keeps the last outcome for `fdsl test`."""

    __slots__ = ("filter", "scope", "caller", "nodeid", "tgid", "outcome", "entries", "rules")

    def __init__(self, rule_filter: RuleFilter, scope: str, caller: Caller, nodeid: int,
                 tgid: Callable[[Caller], Caller] | None) -> None:
        self.filter = rule_filter
        self.scope = scope
        self.caller = caller
        self.nodeid = nodeid
        self.tgid = tgid
        self.outcome: userspace.Outcome | None = None
        self.entries: list[str] | None = None
        self.rules = 0

    def __call__(self, phase: str, frame: Frame, error_in: int) -> None:
        op = frame.shape.spec.name
        key = (self.scope, op, phase)
        rules = self.filter.rules.get(key, [])
        self.rules = len(rules)
        listing = dirent_index(frame) if phase == "post" else None
        records = None
        try:
            dirents: list[str | userspace.Dirent] | None = None
            if listing is not None:
                records = abi.parse_dirents(frame.output_view(listing))
                self.entries = [os.fsdecode(r[0]) for r in records]
                dirents = [userspace.Dirent(os.fsdecode(name), ino, dtype)
                           for name, ino, _off, dtype in records]
            caller = self.caller
            if self.tgid is not None and key in self.filter._reads_tgid:
                caller = self.tgid(caller)
            request = userspace.Request(op, phase, decode_fields(frame, phase), caller.uid,
                                        caller.gid, caller.pid, caller.tgid or caller.pid,
                                        self.nodeid, -error_in, dirents,
                                        argument_sizes(frame, phase))
            outcome = userspace.evaluate(rules, request, maps=self.filter.maps)
        except (KeyError, ValueError, TypeError) as err:
            log.error("userspace filter of %s %s failed: %s", op, phase, err)
            if listing is not None:
                self._end_listing(frame, listing)
                return
            raise OSError(errno.EIO, "userspace filter failed") from None
        self.outcome = outcome
        if self.filter.emit is not None:
            for line in outcome.logs:
                self.filter.emit(line)
        if outcome.failure:
            if listing is not None:   # always answered with data: the listing ends here
                log.warning("userspace readdir filter denied (%s): the listing ends",
                            abi.errno_name(outcome.failure))
                self._end_listing(frame, listing)
                return
            raise OSError(outcome.failure, f"{op} denied by userspace rule")
        apply_writes(frame, phase, outcome.writes)
        if listing is not None and records is not None and outcome.dropped:
            dropped = set(outcome.dropped)
            kept = [r for i, r in enumerate(records) if i not in dropped]
            data, _ = abi.pack_dirents(kept, frame.shape.out_window[listing])
            frame.set_output(listing, data)
            self.entries = [os.fsdecode(r[0]) for r in kept]
            if not kept:   # a page with every entry dropped must not end the listing
                write_struct_fields(frame, "out", 0, {"again": 1})

    def _end_listing(self, frame: Frame, listing: int) -> None:
        frame.set_output_length(listing, 0)
        self.entries = []
