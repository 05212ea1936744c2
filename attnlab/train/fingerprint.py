"""A cheap checksum of a pytree of arrays, stored with each checkpoint and checked on restore.

Orbax's OCDBT/zarr storage keeps raw array chunks without a checksum: garbage bytes in a
chunk file restore without any error, as different numbers (measured with orbax 0.12.8).
The trainer therefore saves `fingerprint(state)` beside the state and compares it after
restoring, so a silently corrupted checkpoint is detected and skipped.

Per leaf, the array's bits are read as uint32 words w_1..w_n (narrower dtypes widened,
wider ones split) and two sums mod 2^32 are kept, Fletcher-style: A = Σ w_i and
B = Σ i·w_i. A changed word changes A; two words swapped change B.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _words(x: jax.Array) -> jax.Array:
  """The bits of `x` as a flat uint32 vector (bool/8/16-bit widened, 64-bit split in two)."""
  x = jnp.asarray(x)
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32).ravel()
  size = x.dtype.itemsize
  if size == 4:
    return jax.lax.bitcast_convert_type(x, jnp.uint32).ravel()
  if size < 4:
    unsigned = {1: jnp.uint8, 2: jnp.uint16}[size]
    return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32).ravel()
  return jax.lax.bitcast_convert_type(x, jnp.uint32).ravel()  # [..., size // 4] words


@jax.jit
def _sums(tree: Any) -> list[jax.Array]:
  """[2] uint32 (A, B) per leaf, in `jax.tree.leaves` order."""
  out = []
  for leaf in jax.tree.leaves(tree):
    w = _words(leaf)
    i = jnp.arange(1, w.size + 1, dtype=jnp.uint32)
    out.append(jnp.stack([jnp.sum(w, dtype=jnp.uint32), jnp.sum(w * i, dtype=jnp.uint32)]))
  return out


def fingerprint(tree: Any) -> dict[str, list[int]]:
  """{leaf path (jax keystr): [A, B]} for every array leaf of `tree` (see module docstring).

  One jitted reduction over the tree; the result is small and JSON-serialisable.
  """
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
  sums = jax.device_get(_sums(tree))
  return {p: [int(v) for v in np.asarray(s)] for p, s in zip(paths, sums)}


def first_mismatch(saved: dict[str, list[int]], restored: dict[str, list[int]]) -> str | None:
  """The first leaf path (sorted) whose fingerprint differs or is missing on either side; None if equal."""
  for path in sorted(set(saved) | set(restored)):
    if saved.get(path) != restored.get(path):
      return path
  return None
