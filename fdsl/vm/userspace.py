"""Userspace rules: the daemon's evaluator of the JSON trees in `.fdsl.meta`.

Rules the kernel cannot run (regexes, complex globs, readdir entry hiding,
anything reading buffers) are stored in `.fdsl.meta` as small JSON trees and
evaluated here by the daemon (and by `fdsl run/test`) when the BPF program
returned `USER_FILTER`.  Node shapes:

    expressions  {"e": "int"|"str"|"bool", "v": ...}
                 {"e": "field", "path": "in.flags"}     {"e": "builtin", "name": "uid"}
                 {"e": "var", "name": x}                {"e": "un", "op": "-", "x": E}
                 {"e": "bin", "op": "+", "l": E, "r": E}
                 {"e": "in", "x": E, "set": [E...], "neg": bool}
                 {"e": "mapget", "map": m, "key": E}           (`m[key]`, 0 if absent)
                 {"e": "maphas", "map": m, "key": E, "neg": bool}   (`key in m`)
                 {"e": "argsize", "path": "value"}   (`sizeof(value)`: bytes, a name's NUL included)
                 {"e": "strtest", "kind": "glob"|"regex"|"startswith"|"endswith",
                  "x": E, "pats": [str...]}
    statements   {"s": "allow"} {"s": "deny", "errno": E} {"s": "return", "v": E}
                 {"s": "assign", "path": p, "op": "=", "v": E}
                 {"s": "if", "c": E, "then": [S...], "else": [S...]}
                 {"s": "let", "name": x, "v": E}
                 {"s": "count", "map": m, "key": E|None, "by": E|None}
                 {"s": "store", "map": m, "key": E, "v": E}   (`m[key] = v`, BPF_ANY)
                 {"s": "log", "fmt": f, "args": [E...]}
                 {"s": "drop", "where": E}   (readdir: drop entries matching E; fields
                                              "name", "ino", "type" are the entry's)

Predicate calls and constants are inlined at serialization time, so the tree
is self-contained.

Map reads and stores go through a `MapAccess`.  The daemon must pass one over
the maps its programs use (`TableMaps(filters.maps)`), so BPF and userspace
rules see one state; without one, the evaluator keeps a private `LocalMaps`.
"""
from __future__ import annotations

import errno
import fnmatch
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from fdsl import abi, regex

MASK64 = (1 << 64) - 1

# ------------------------------------------------------------------ map access

class MapAccess(Protocol):
    """What userspace rules need from the policy's maps (keys and values as integers)."""

    def load(self, name: str, key: Any) -> int: ...

    def store(self, name: str, key: Any, value: int) -> None: ...

    def add(self, name: str, key: Any, by: int) -> None: ...

    def has(self, name: str, key: Any) -> bool: ...


def encode_int(value: Any, size: int) -> bytes:
    """A key or value as the BPF code stores it: little endian, cut to `size` bytes
    (a string key, which no checked policy produces, is NUL padded)."""
    if isinstance(value, str):
        return value.encode()[:size].ljust(size, b"\0")
    return (int(value) & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


class TableMaps:
    """`MapAccess` over the maps a FilterSet's programs use (`FilterSet.maps`), so
    userspace rules read and write the very entries the BPF code does."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self._lock = threading.Lock()    # serializes userspace read-modify-write (`count`)

    def _map(self, name: str) -> Any:
        m = self.table.by_name(name)
        if m is None:
            raise KeyError(f"the object has no map {name!r}")
        return m

    def load(self, name: str, key: Any) -> int:
        m = self._map(name)
        raw = m.lookup_value(encode_int(key, m.key_size))
        return int.from_bytes(raw, "little") if raw else 0

    def has(self, name: str, key: Any) -> bool:
        m = self._map(name)
        return m.lookup_value(encode_int(key, m.key_size)) is not None

    def store(self, name: str, key: Any, value: int) -> None:
        m = self._map(name)
        # Like the BPF code, a failed update (full hash map, array index too big) is ignored.
        m.update(encode_int(key, m.key_size), encode_int(value, m.value_size), abi.BPF_ANY)

    def add(self, name: str, key: Any, by: int) -> None:
        m = self._map(name)
        with self._lock:
            current = self.load(name, key)
            m.update(encode_int(key, m.key_size), encode_int(current + by, m.value_size),
                     abi.BPF_ANY)


class LocalMaps:
    """A private `MapAccess` (a dict per map) for evaluating rules without an object."""

    def __init__(self) -> None:
        self.data: dict[str, dict[Any, int]] = {}

    def load(self, name: str, key: Any) -> int:
        return self.data.get(name, {}).get(key, 0)

    def has(self, name: str, key: Any) -> bool:
        return key in self.data.get(name, {})

    def store(self, name: str, key: Any, value: int) -> None:
        self.data.setdefault(name, {})[key] = int(value)

    def add(self, name: str, key: Any, by: int) -> None:
        self.store(name, key, self.load(name, key) + by)


# ------------------------------------------------------------------ evaluation

@dataclass(frozen=True)
class Dirent:
    """One readdir entry as `drop entries where` sees it (struct fuse_dirent)."""

    name: str
    ino: int = 0
    type: int = 0              # DT_* (d_type); 0 = DT_UNKNOWN


@dataclass
class Request:
    """One userspace filter request as the daemon sees it (decoded fields)."""

    op: str
    phase: str
    fields: dict[str, Any] = field(default_factory=dict)   # "name", "in.flags", "out.attr.mode"
    uid: int = 0
    gid: int = 0
    pid: int = 0
    tgid: int = 0
    nodeid: int = 0
    error: int = 0                     # positive errno of the backing op (POST), 0 = success
    entries: list[str | Dirent] | None = None   # readdir POST: the entries, in order
    sizes: dict[str, int] = field(default_factory=dict)   # argument byte sizes ("value": 12)


@dataclass
class Outcome:
    """What the userspace rules decided; `decision` None = no rule decided (allow)."""

    decision: str | None = None        # "allow" | "deny" | "return"
    value: int = 0                     # errno for deny, raw value for return
    writes: dict[str, int] = field(default_factory=dict)
    dropped: list[int] = field(default_factory=list)   # indices into Request.entries
    logs: list[str] = field(default_factory=list)
    counts: list[tuple[str, Any, int]] = field(default_factory=list)
    stores: list[tuple[str, Any, int]] = field(default_factory=list)   # (map, key, value)

    @property
    def failure(self) -> int:
        """The errno this outcome fails the operation with, or 0 if it lets it go.

        A userspace filter reply can only fail an operation (spec 7): `deny`
        without an errno is EPERM, and `return` of a negative value is that
        errno; anything else keeps the BPF result."""
        if self.decision == "deny":
            return self.value or errno.EPERM
        if self.decision == "return" and self.value < 0:
            return -self.value
        return 0


def reads_builtin(tree: Any, name: str) -> bool:
    """Does a serialized rule body read the builtin `name` (e.g. "tgid") anywhere?"""
    if isinstance(tree, dict):
        if tree.get("e") == "builtin" and tree.get("name") == name:
            return True
        return any(reads_builtin(v, name) for v in tree.values())
    if isinstance(tree, list):
        return any(reads_builtin(v, name) for v in tree)
    return False


class _Decided(Exception):
    pass


class Evaluator:
    """Runs serialized rules in order; the first decision wins."""

    def __init__(self, request: Request, on_count: Callable[[str, Any, int], None] | None = None,
                 maps: MapAccess | None = None):
        self.req = request
        self.out = Outcome()
        self.on_count = on_count
        self.maps: MapAccess = maps if maps is not None else LocalMaps()

    def run(self, rules: list[list[dict]]) -> Outcome:
        try:
            for body in rules:
                self.block(body, {})
        except _Decided:
            pass
        return self.out

    def block(self, body: list[dict], env: dict[str, Any]) -> None:
        env = dict(env)
        for s in body:
            self.stmt(s, env)

    def stmt(self, s: dict, env: dict[str, Any]) -> None:
        kind = s["s"]
        if kind == "allow":
            self.out.decision = "allow"
            raise _Decided
        if kind == "deny":
            self.out.decision, self.out.value = "deny", abs(int(self.eval(s["errno"], env)))
            raise _Decided
        if kind == "return":
            self.out.decision, self.out.value = "return", int(self.eval(s["v"], env))
            raise _Decided
        if kind == "let":
            env[s["name"]] = self.eval(s["v"], env)
        elif kind == "if":
            self.block(s["then"] if self.eval(s["c"], env) else s["else"], env)
        elif kind == "assign":
            self.assign(s, env)
        elif kind == "count":
            key = self.eval(s["key"], env) if s["key"] else 0
            by = int(self.eval(s["by"], env)) if s["by"] else 1
            self.out.counts.append((s["map"], key, by))
            if self.on_count:
                self.on_count(s["map"], key, by)
            else:
                self.maps.add(s["map"], key, by)
        elif kind == "store":
            key, value = self.eval(s["key"], env), int(self.eval(s["v"], env))
            self.out.stores.append((s["map"], key, value))
            self.maps.store(s["map"], key, value)
        elif kind == "log":
            self.out.logs.append(_format(s["fmt"], [self.eval(a, env) for a in s["args"]]))
        elif kind == "drop":
            self.drop(s["where"], env)
        else:
            raise ValueError(f"unknown userspace statement {kind!r}")

    def assign(self, s: dict, env: dict[str, Any]) -> None:
        path = s["path"]
        value = int(self.eval(s["v"], env))
        if s["op"] != "=":
            current = int(self.field(path))
            value = _arith(s["op"][:-1], current, value)
        self.out.writes[path] = value

    def drop(self, pred: dict, env: dict[str, Any]) -> None:
        for index, entry in enumerate(self.req.entries or []):
            if index in self.out.dropped:
                continue
            if isinstance(entry, str):
                entry = Dirent(entry)
            if self.eval(pred, {**env, "\0name": entry.name, "\0ino": entry.ino,
                                "\0type": entry.type}):
                self.out.dropped.append(index)

    def field(self, path: str, env: dict[str, Any] | None = None) -> Any:
        if path in self.out.writes:
            return self.out.writes[path]
        if env and "\0" + path in env:    # inside `drop entries where`: the entry's name, ino, type
            return env["\0" + path]
        if path not in self.req.fields:
            raise KeyError(f"field {path!r} not in the {self.req.op} {self.req.phase} request")
        return self.req.fields[path]

    def arg_size(self, path: str, env: dict[str, Any]) -> int:
        """An argument's size as in_args[i].size: given by the daemon, else a name's bytes + NUL."""
        if path in self.req.sizes:
            return self.req.sizes[path]
        value = self.field(path, env)
        data = value.encode() if isinstance(value, str) else bytes(value)
        return len(data) + (1 if isinstance(value, str) else 0)

    def eval(self, e: dict, env: dict[str, Any]) -> Any:
        kind = e["e"]
        if kind in ("int", "str", "bool"):
            return e["v"]
        if kind == "field":
            return self.field(e["path"], env)
        if kind == "builtin":
            if e["name"] == "op":   # the checker compares `op` with opcode numbers
                return abi.OPS[self.req.op].number
            if e["name"] == "opcode":   # with the phase bit, as the context holds it
                phase = abi.PREFILTER if self.req.phase == "pre" else abi.POSTFILTER
                return abi.OPS[self.req.op].number | phase
            return getattr(self.req, e["name"])
        if kind == "var":
            return env[e["name"]]
        if kind == "un":
            x = self.eval(e["x"], env)
            return {"-": lambda v: -v, "~": lambda v: ~v & MASK64,
                    "not": lambda v: not v}[e["op"]](x)
        if kind == "bin":
            return self.binary(e, env)
        if kind == "in":
            x = self.eval(e["x"], env)
            constants = _constant_set(e["set"])
            if constants is not None:
                found = x in constants
            else:
                found = any(x == self.eval(m, env) for m in e["set"])
            return found != e["neg"]
        if kind == "strtest":
            x = self.eval(e["x"], env)
            return any(_strtest(e["kind"], str(x), p) for p in e["pats"])
        if kind == "mapget":
            return self.maps.load(e["map"], self.eval(e["key"], env))
        if kind == "maphas":
            return self.maps.has(e["map"], self.eval(e["key"], env)) != e["neg"]
        if kind == "argsize":
            return self.arg_size(e["path"], env)
        raise ValueError(f"unknown userspace expression {kind!r}")

    def binary(self, e: dict, env: dict[str, Any]) -> Any:
        op = e["op"]
        if op == "and":
            return bool(self.eval(e["l"], env)) and bool(self.eval(e["r"], env))
        if op == "or":
            return bool(self.eval(e["l"], env)) or bool(self.eval(e["r"], env))
        left, right = self.eval(e["l"], env), self.eval(e["r"], env)
        compare = {"==": left == right, "!=": left != right}
        if op in compare:
            return compare[op]
        if op in ("<", "<=", ">", ">="):
            return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]
        return _arith(op, int(left), int(right))


def _arith(op: str, a: int, b: int) -> int:
    """64-bit wrapping arithmetic with BPF's division-by-zero result (0)."""
    if op in ("/", "%") and b == 0:
        return 0 if op == "/" else a
    result = {
        "+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
        "/": lambda: (a & MASK64) // (b & MASK64), "%": lambda: (a & MASK64) % (b & MASK64),
        "&": lambda: a & b, "|": lambda: a | b, "^": lambda: a ^ b,
        "<<": lambda: a << (b & 63), ">>": lambda: (a & MASK64) >> (b & 63),
    }[op]()
    result &= MASK64
    return result - (1 << 64) if result >= 1 << 63 and (a < 0 or b < 0) else result


_CONSTANT_SETS: dict[int, tuple[list, frozenset | None]] = {}
_CONSTANT_SETS_MAX = 4096
_constant_sets_lock = threading.Lock()


def _constant_set(members: list) -> frozenset | None:
    """The members of a set of literals as a frozenset (one hash lookup per test, what a
    big deny list needs), or None when a member is not a literal.  Cached per member list
    (the entry keeps the list alive, so its id stays its own)."""
    hit = _CONSTANT_SETS.get(id(members))
    if hit is not None and hit[0] is members:
        return hit[1]
    literal = all(isinstance(m, dict) and m.get("e") in ("str", "int") for m in members)
    values = frozenset(m["v"] for m in members) if literal else None
    with _constant_sets_lock:
        if len(_CONSTANT_SETS) >= _CONSTANT_SETS_MAX:
            _CONSTANT_SETS.clear()
        _CONSTANT_SETS[id(members)] = (members, values)
    return values


def _strtest(kind: str, subject: str, pattern: str) -> bool:
    if kind == "startswith":
        return subject.startswith(pattern)
    if kind == "endswith":
        return subject.endswith(pattern)
    if kind == "glob":
        return fnmatch.fnmatchcase(subject, pattern)
    if kind == "regex":
        return regex.search(pattern, subject)
    raise ValueError(f"unknown string test {kind!r}")


def _format(fmt: str, args: list[Any]) -> str:
    """Render a trace_printk-style format for the daemon's log (best effort)."""
    try:
        converted = re.sub(r"%l{0,2}[dux]", lambda m: "%" + m.group(0)[-1], fmt)
        return converted % tuple(args)
    except (TypeError, ValueError):
        return fmt + " " + " ".join(str(a) for a in args)


def evaluate(rules: list[Any], request: Request,
             on_count: Callable[[str, Any, int], None] | None = None,
             maps: MapAccess | None = None) -> Outcome:
    """Run userspace rules (metadata `UserRule`s or raw bodies) for one request.

    `maps`: the policy's maps (`TableMaps(filter_set.maps)`) for `m[key]` reads and
    stores, and for `count` when no `on_count` is given."""
    bodies = [r.body if hasattr(r, "body") else r for r in rules]
    return Evaluator(request, on_count, maps).run(bodies)
