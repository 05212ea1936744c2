"""kernels_pallas.neighborhood (neighborhood attention by the block-sparse kernel) in
interpret mode against the variant's gathered reference.

The reference is `attnlab.attention.variants.neighborhood.neighborhood_attention` (each
query's keys gathered from NATTEN's key table `neighborhood_layout`, softmax over them);
its gradients by autodiff. Cases: 1-D border-shifted with dilation, 1-D causal, 2-D
dilated, 2-D causal along rows only with key padding; T = 40 / 48 over blocks of 16 (with
padding). Tolerances (fp32): forward |err| <= 1e-5 + 1e-5 |ref|, gradients <= 5e-5 + 5e-5 |ref|.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.attention.variants.neighborhood import neighborhood_attention, neighborhood_layout
from kernels_pallas.block_sparse_flash import kernel_work
from kernels_pallas.neighborhood import KeyTableMask, neighborhood_block_metadata, neighborhood_flash_attention

BLOCK = 16
FWD_TOL = dict(atol=1e-5, rtol=1e-5)
GRAD_TOL = dict(atol=5e-5, rtol=5e-5)
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
CASES = {  # name: (axis sizes, window, dilation, causal per axis, key padding)
    "1d_dilated": ((40,), 5, 2, (False,), False),
    "1d_causal": ((40,), 7, 1, (True,), False),
    "2d_dilated": ((6, 8), 3, 2, (False, False), False),
    "2d_causal_rows_padded": ((5, 8), 3, 1, (True, False), True),
}


def _data(t, seed=0, heads=2, d=8):
  rng = np.random.default_rng(seed)
  return tuple(jnp.asarray(rng.standard_normal((1, t, heads, d), np.float32)) for _ in range(4))


def _fwd_bwd(fn, q, k, v, ct):
  def both(q, k, v, ct):
    out, vjp = jax.vjp(fn, q, k, v)
    return out, vjp(ct)

  return jax.jit(both).lower(q, k, v, ct).compile(FAST_COMPILE)(q, k, v, ct)


def _case(name, keys_fn=None):
  """(kernel (out, grads), reference (out, grads)) for a case; keys_fn edits the kernel's table."""
  shape, window, dilation, causal, padded = CASES[name]
  t = int(np.prod(shape))
  keys, valid, _ = neighborhood_layout(shape, window, dilation, causal)
  q, k, v, ct = _data(t)
  kv_valid = jnp.asarray(np.arange(t) < t - 5)[None] if padded else None
  key_valid = None if kv_valid is None else jnp.take(kv_valid, jnp.asarray(keys), axis=1)
  kk, kvld = (keys, valid) if keys_fn is None else keys_fn(keys, valid)
  meta = neighborhood_block_metadata(kk, kvld, BLOCK, BLOCK)
  got = _fwd_bwd(lambda q, k, v: neighborhood_flash_attention(q, k, v, None, meta=meta, kv_valid=kv_valid,
                                                              interpret=True), q, k, v, ct)
  want = _fwd_bwd(lambda q, k, v: neighborhood_attention(q, k, v, keys, valid, key_valid=key_valid), q, k, v, ct)
  return got, want


@pytest.mark.parametrize("name", list(CASES))
def test_forward_and_gradients_match_the_neighborhood_reference(name):
  (out, grads), (ref, ref_grads) = _case(name)
  np.testing.assert_allclose(out, ref, **FWD_TOL)
  for g, r in zip(grads, ref_grads):
    np.testing.assert_allclose(g, r, **GRAD_TOL)


def test_key_table_mask_is_the_table_and_its_blocks_are_sparse():
  """allowed() is exactly the table's pairs (scattered densely here, for the check only);
  block_map marks exactly the tiles holding a pair; a long 1-D window visits few tiles."""
  keys, valid, _ = neighborhood_layout((6, 8), 3, 2, (False, True))
  mask = KeyTableMask(keys, valid)
  dense = np.zeros((48, 48), bool)
  dense[np.nonzero(valid)[0], keys[valid]] = True
  pos = np.arange(48)
  np.testing.assert_array_equal(mask.allowed(pos[:, None], pos[None, :]), dense)
  tiles = dense.reshape(3, BLOCK, 3, BLOCK).any(axis=(1, 3))
  np.testing.assert_array_equal(mask.block_map(48, 48, BLOCK, BLOCK) != 0, tiles)
  keys, valid, _ = neighborhood_layout((2048,), 7, 1, (False,))
  work = kernel_work(neighborhood_block_metadata(keys, valid, 64, 64))
  assert work["fwd"] <= 3 * 32 and work["dense"] == 32 * 32  # at most 3 key blocks per query block


def test_canary_a_dropped_window_column_fails_the_comparison():
  """The comparison bites: the kernel's table without each query's last window key differs."""
  (out, _), (ref, _) = _case("1d_dilated", keys_fn=lambda keys, valid: (keys[:, :-1], valid[:, :-1]))
  assert not np.allclose(out, ref, **FWD_TOL)
