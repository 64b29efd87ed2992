"""Scope boundaries: renames and hard links never move an inode between scopes.

A node's program is chosen once, when the kernel first looks it up, from
the path it was found at (`FilterPolicy.child_attachment`, spec 3.2), and
an inode never changes program afterwards.  So a rule such as
`under "private" { ... }` holds for as long as every path leading to an
inode lies in the scope it was attached in.  Renames and hard links are the
only operations that make a new path to an existing inode; they are refused
with EXDEV (as overlayfs refuses directory renames it cannot represent, and
as rename(2)/link(2) do across mounts; `mv` then copies and deletes, which
runs every rule of both scopes) when

* the source or the destination name is a scope *anchor*: the path of an
  `under` scope itself or a directory on the way to one (renaming
  `private/` to `x` would take the scope's whole subtree out of it, renaming
  something onto `private` would put a foreign subtree in), or
* the object would be attached differently at its new path (other program
  or other userspace-rules scope): moving or linking a file out of or into
  `private/`, into or out of a `readonly` subtree.

Renames inside one scope, of anything that is not an anchor, behave as on
the backing filesystem.  Policies without scopes (and no policy at all)
never see EXDEV from here.
"""
from __future__ import annotations

from typing import Any

from .nodes import Node


def _placement(attachment: Any) -> tuple[bool, Any, str] | None:
    """(is an anchor, program, userspace-rules scope) of a `child_attachment` result."""
    if attachment is None:
        return None
    _action, scope, program = attachment[0], attachment[1], attachment[2]
    anchored = getattr(scope, "trie", None) is not None
    return anchored, program, getattr(scope, "rules_scope", "")


def _node_placement(node: Node) -> tuple[bool, Any, str]:
    scope = node.scope
    return (getattr(scope, "trie", None) is not None, node.program,
            getattr(scope, "rules_scope", ""))


def _differ(a: tuple[bool, Any, str] | None, b: tuple[bool, Any, str] | None) -> bool:
    if a is None and b is None:
        return False          # the policy has no scope table at all
    if a is None or b is None or a[0] or b[0]:
        return True           # an anchor on either side
    return a[1:] != b[1:]


def rename_crosses(policy: Any, parent: Node, name: bytes, new_parent: Node,
                   new_name: bytes) -> bool:
    """Would renaming parent/name to new_parent/new_name move something across a scope
    boundary?  (Symmetric, so it covers RENAME_EXCHANGE too.)"""
    return _differ(_placement(policy.child_attachment(parent, name)),
                   _placement(policy.child_attachment(new_parent, new_name)))


def link_crosses(policy: Any, node: Node, new_parent: Node, new_name: bytes) -> bool:
    """Would a hard link new_parent/new_name to `node` give it a path in another scope?"""
    there = _placement(policy.child_attachment(new_parent, new_name))
    if there is None:
        return False
    return _differ(_node_placement(node), there)
