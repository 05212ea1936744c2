"""attnlab: a JAX/Flax research framework for attention mechanisms."""

__version__ = "0.1.0"
__all__ = ["build_attention", "list_variants", "__version__"]


def __getattr__(name: str):
  """`attnlab.build_attention` / `attnlab.list_variants`, imported on first use, so that
  `import attnlab.data` or `attnlab.config_lib` (configs) does not import jax or flax."""
  if name in ("build_attention", "list_variants"):
    from attnlab import attention
    return attention.build if name == "build_attention" else attention.list_variants
  raise AttributeError(f"module 'attnlab' has no attribute {name!r}")
