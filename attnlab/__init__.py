"""attnlab: a JAX/Flax research framework for attention mechanisms."""

from attnlab.attention import build as build_attention
from attnlab.attention import list_variants

__version__ = "0.1.0"
__all__ = ["build_attention", "list_variants", "__version__"]
