"""Attention: pure ops, composable masks, and registered Flax variants."""

from attnlab.attention import masks, ops
from attnlab.attention import variants as _variants  # noqa: F401  (registration)
from attnlab.attention.registry import PATTERNS, VARIANTS, build, list_variants, register

__all__ = ["PATTERNS", "VARIANTS", "build", "list_variants", "masks", "ops", "register"]
