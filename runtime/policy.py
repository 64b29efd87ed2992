"""Policies: the compiled filters attached to nodes (placeholder, see below)."""
from __future__ import annotations

from typing import Any

from .engine import PassthroughPolicy


def load_policy(obj: bytes | None, backend: str, backing_root: str, stats: Any) -> Any:
    if obj is None:
        return PassthroughPolicy()
    raise NotImplementedError("filters not integrated yet")
