"""Per scope x opcode traits in the metadata (what the daemon's caching decides on)."""
from __future__ import annotations

import json
import pathlib

from fdsl.compile import driver as compiler
from fdsl.compile.metadata import CachingHints, Metadata

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent


def _meta(source: str, tmp_path: pathlib.Path) -> Metadata:
    path = tmp_path / "p.fdsl"
    path.write_text(source)
    return compiler.compile_file(str(path)).metadata


def test_private_subtree_reads_uid_through_a_predicate():
    """`if not trusted` names a predicate without calling it: it still reads uid."""
    meta = compiler.compile_file(str(ROOT / "examples" / "private_subtree.fdsl")).metadata
    assert meta.caching.identity_dependent
    getattr_traits = meta.caching.traits("private", "getattr")
    assert getattr_traits.has_rules and getattr_traits.pre_bpf and getattr_traits.identity
    assert not getattr_traits.cacheable
    assert not meta.caching.traits("", "getattr").has_rules      # root: no rules at all
    assert not meta.caching.traits("vendor", "lookup").has_rules  # passthrough scope


def test_traits_per_phase_side_effects_and_userspace(tmp_path):
    meta = _meta('counter n\n'
                 'on getattr post { if out.attr.size > 10 { deny EFBIG } }\n'
                 'on lookup pre { count n }\n'
                 'on lookup pre { if name matches "^x[0-9]+$" { deny ENOENT } }\n'
                 'under "d" { on open pre { if gid == 7 { deny EPERM } } }\n', tmp_path)
    g = meta.caching.traits("", "getattr")
    assert (g.pre_bpf, g.post_bpf, g.identity, g.side_effects) == (False, True, False, False)
    assert g.cacheable
    lk = meta.caching.traits("", "lookup")
    assert lk.side_effects and lk.pre_user and not lk.identity and not lk.cacheable
    op = meta.caching.traits("d", "open")
    assert op.identity and not op.side_effects
    assert meta.caching.traits("d", "getattr").post_bpf  # inherited from the root scope
    assert not meta.caching.traits("", "open").has_rules


def test_metadata_without_traits_still_reads(tmp_path):
    """Objects compiled before the traits existed: traits() is None (unknown)."""
    meta = _meta('on getattr pre { if uid == 1 { deny EPERM } }\n', tmp_path)
    raw = json.loads(meta.to_json())
    del raw["caching"]["scopes"]
    old = Metadata.from_json(json.dumps(raw))
    assert old.caching.identity_dependent and old.caching.traits("", "getattr") is None
    raw["caching"]["future_field"] = 1
    assert Metadata.from_json(json.dumps(raw)).caching.scopes is None
    assert CachingHints().traits("", "lookup") is None
