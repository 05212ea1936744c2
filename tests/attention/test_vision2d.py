"""halo, maxvit, biformer, hilo: each equals an independent dense oracle built from its paper's definition.

For each design the oracle decides, pixel by pixel and from the definition alone (no
helper of the modules), which keys a query sees (a dense bool [T, T] mask) and which
relative offset indexes its bias, then runs plain masked softmax attention with the
module's own projections. Forward and gradients (params and input) are compared on grids
spanning several blocks, with border padding where the design pads. A canary (a wrong
halo, a wrong grid, a wrong routing) shows that each oracle rejects a near miss.
(twins, channel, inline, shvit: test_vision2d_global.py.)
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.attention import VARIANTS, build
from tests.attention import contract
from tests.attention.contract import assert_oracle, check_patterns
from tests.attention.vision2d_common import (D, compare, coords_of, dense_attention, init_params, project,
                                             table_bias)


# ---- halo -----------------------------------------------------------------------------


def halo_oracle_mask(shape, block, halo):
  """allowed bool [T, T] and bias index int [T, T]: query q in the block whose corner is
  c = (q // b) * b per axis sees every key inside the image with c - h <= key < c + b + h;
  the bias index is the row-major flattening of (key - query) + b + h - 1 per axis, base
  2b + 2h - 1."""
  coords = coords_of(shape)
  t = len(coords)
  allowed, index = np.zeros((t, t), bool), np.zeros((t, t), np.int64)
  for qi, qc in enumerate(coords):
    corner = [(c // block) * block for c in qc]
    for ki, kc in enumerate(coords):
      if all(c0 - halo <= kk < c0 + block + halo for c0, kk in zip(corner, kc)):
        allowed[qi, ki] = True
        flat = 0
        for qq, kk in zip(qc, kc):
          flat = flat * (2 * block + 2 * halo - 1) + (kk - qq) + block + halo - 1
        index[qi, ki] = flat
  return allowed, index


@pytest.mark.parametrize("shape,block,halo", [((12, 12), 4, 1), ((12,), 4, 2)])
def test_halo_matches_per_pixel_oracle(shape, block, halo):
  t = int(np.prod(shape))
  grid = shape if len(shape) == 2 else ()
  x = jax.random.normal(jax.random.key(1), (2, t, D))
  module = build("halo", num_heads=2, block_size=block, halo=halo, grid=grid, causal=False)
  params = init_params(module, x)
  allowed, index = halo_oracle_mask(shape, block, halo)
  # an interior query sees the whole (b + 2h)^nd window; a corner one is cut by the padding
  assert allowed.sum(1).max() == (block + 2 * halo) ** len(shape) > allowed.sum(1).min()
  oracle = jax.jit(lambda p, x: dense_attention(p, x, allowed, table_bias(p["rel_pos_bias"], index, allowed)))
  compare("halo", module, params, x, oracle)
  # canary: the same oracle with halo 0 (plain blocks) is rejected
  allowed0, index0 = halo_oracle_mask(shape, block, 0)
  wrong = np.asarray(dense_attention(params, x, allowed0, table_bias(params["rel_pos_bias"], index0, allowed0)))
  assert np.abs(np.asarray(module.apply({"params": params}, x)) - wrong).max() > 1e-2


def test_halo_patterns_and_errors():
  check_patterns("halo", {"block_size": 4, "halo": 1, "num_heads": 2}, length=16)
  assert VARIANTS.get("halo").subquadratic
  with pytest.raises(ValueError, match="not a multiple"):
    build("halo", block_size=3, grid=(4, 4), causal=False).init(jax.random.key(0), jnp.zeros((1, 16, D)))
  with pytest.raises(ValueError, match="halo must be"):
    build("halo", halo=-1)


# ---- maxvit ---------------------------------------------------------------------------


def maxvit_oracle_mask(shape, block, grid, grid_layer):
  """allowed bool [T, T] and bias index int [T, T] from MaxViT's definition. Block layer:
  same P-window per axis (q // P == k // P), offsets inside the window. Grid layer: the
  image viewed as [G, n/G] per axis; same residue (q mod n/G == k mod n/G) per axis,
  offsets of the grid coordinates (q // (n/G)). An axis of at most P (G) tokens is whole."""
  coords = coords_of(shape)
  t = len(coords)
  allowed, index = np.zeros((t, t), bool), np.zeros((t, t), np.int64)
  size = [min(n, grid if grid_layer else block) for n in shape]
  stride = [n // m for n, m in zip(shape, size)]
  for qi, qc in enumerate(coords):
    for ki, kc in enumerate(coords):
      if grid_layer:
        same = all(a % s == c % s for a, c, s in zip(qc, kc, stride))
        pos_q, pos_k = [a // s for a, s in zip(qc, stride)], [c // s for c, s in zip(kc, stride)]
      else:
        same = all(a // m == c // m for a, c, m in zip(qc, kc, size))
        pos_q, pos_k = [a % m for a, m in zip(qc, size)], [c % m for c, m in zip(kc, size)]
      if same:
        allowed[qi, ki] = True
        flat = 0
        for a, c, m in zip(pos_q, pos_k, size):
          flat = flat * (2 * m - 1) + (c - a) + m - 1
        index[qi, ki] = flat
  return allowed, index


@pytest.mark.parametrize("shape,block,grid,layer", [
    ((12, 12), 4, 3, 0), ((12, 12), 4, 3, 1),   # block layer; grid layer (3 x 3 grid, stride 4)
    ((8, 12), 4, 2, 1),                          # strides 4 and 6 on a non-square image
    ((12,), 4, 3, 1),                            # 1-D
])
def test_maxvit_matches_block_and_grid_oracles(shape, block, grid, layer):
  t = int(np.prod(shape))
  x = jax.random.normal(jax.random.key(1), (2, t, D))
  module = build("maxvit", num_heads=2, block_size=block, grid_size=grid, grid=shape if len(shape) == 2 else (),
                 causal=False, layer_index=layer, num_layers=2)
  params = init_params(module, x)
  allowed, index = maxvit_oracle_mask(shape, block, grid, layer == 1)
  oracle = jax.jit(lambda p, x: dense_attention(p, x, allowed, table_bias(p["rel_pos_bias"], index, allowed)))
  compare("maxvit", module, params, x, oracle)
  if layer == 1:  # canary: grouping by residue mod G (not mod n/G) is rejected
    bad = np.array([[all(a % grid == c % grid for a, c in zip(qc, kc)) for kc in coords_of(shape)]
                    for qc in coords_of(shape)])
    wrong = np.asarray(dense_attention(params, x, bad, None))
    assert np.abs(np.asarray(module.apply({"params": params}, x)) - wrong).max() > 1e-2


def test_maxvit_block_then_grid_reaches_every_token():
  # reachability of a block layer then a grid layer: R = B @ G on the boolean masks
  blk, _ = maxvit_oracle_mask((12, 12), 4, 3, False)
  grd, _ = maxvit_oracle_mask((12, 12), 4, 3, True)
  assert not blk.all() and not grd.all()
  assert (blk.astype(int) @ grd.astype(int) > 0).all()
  # canary: with a grid stride (12 / 2 = 6) above P = 4, a block misses residues: not global
  grd2, _ = maxvit_oracle_mask((12, 12), 4, 2, True)
  assert not (blk.astype(int) @ grd2.astype(int) > 0).all()
  # and the module's own layers (their input-output Jacobians' sparsity) compose the same way
  x = jax.random.normal(jax.random.key(3), (1, 144, 8))
  reach = []
  for layer in (0, 1):
    m = build("maxvit", num_heads=1, block_size=4, grid_size=3, grid=(12, 12), causal=False,
              layer_index=layer, num_layers=2)
    p = contract.init_variables(m, x)
    jac = jax.jit(jax.jacrev(lambda x: m.apply(p, x)[0].sum(-1)))(x)[:, 0]  # [T, T, d]
    reach.append(np.asarray(jnp.abs(jac).sum(-1) > 0))
  np.testing.assert_array_equal(reach[0], blk)
  np.testing.assert_array_equal(reach[1], grd)


@pytest.mark.slow
def test_maxvit_grid_layer_within_declared_class():
  # the generic cost test measures layer 0 (block attention); this measures a grid layer
  from attnlab.bench import cost as C
  C.assert_cost(C.measure("maxvit", layer_index=1, num_layers=2), VARIANTS.get("maxvit").cost)


def test_maxvit_patterns_and_errors():
  check_patterns("maxvit", {"block_size": 4, "grid_size": 4, "num_heads": 2}, length=16)
  assert VARIANTS.get("maxvit").subquadratic
  with pytest.raises(ValueError, match="not a multiple"):
    build("maxvit", block_size=4, grid=(6, 6), causal=False).init(jax.random.key(0), jnp.zeros((1, 36, D)))


# ---- biformer -------------------------------------------------------------------------


def biformer_oracle_mask(params, x, shape, regions, topk, largest=True):
  """allowed bool [B, T, T] from the definition: region of a token = its coordinates //
  (n / S) per axis (row-major region id); Qr, Kr = mean over a region's tokens of the
  projected q, k (all heads concatenated); each region keeps the topk regions of largest
  Qr . Kr (smallest with largest=False: the canary); a query sees the tokens of its
  region's kept regions."""
  q, k, _ = (np.asarray(a) for a in project(params, x))
  b, t = q.shape[:2]
  size = [n // regions for n in shape]
  rid = np.array([int(np.ravel_multi_index([c // s for c, s in zip(cc, size)], [regions] * len(shape)))
                  for cc in coords_of(shape)])
  n_reg = regions ** len(shape)
  allowed = np.zeros((b, t, t), bool)
  for bi in range(b):
    qr = np.stack([q[bi, rid == j].mean(0).ravel() for j in range(n_reg)])
    kr = np.stack([k[bi, rid == j].mean(0).ravel() for j in range(n_reg)])
    aff = qr @ kr.T
    for i in range(n_reg):
      order = np.argsort(-aff[i] if largest else aff[i])[:topk]
      allowed[bi][np.ix_(rid == i, np.isin(rid, order))] = True
  return allowed


def lce_oracle(params, x, shape, size):
  """The LCE as the textbook depthwise convolution: lax.conv_general_dilated with one
  group per channel and SAME padding, plus the bias."""
  _, _, v = project(params, x)
  b, t, h, d = v.shape
  img = v.reshape(b, *shape, h * d)
  nd = len(shape)
  spatial = "HW"[:nd] if nd == 2 else "W"
  kernel = params["lce_kernel"][..., None, :]                 # [k(, k), 1, C]
  out = jax.lax.conv_general_dilated(img, kernel, (1,) * nd, "SAME", feature_group_count=h * d,
                                     dimension_numbers=(f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"))
  return (out + params["lce_bias"]).reshape(b, t, h, d)


@pytest.mark.parametrize("shape,regions,topk,lce", [((12, 12), 3, 2, 0), ((12, 12), 3, 3, 3), ((12,), 4, 2, 0)])
def test_biformer_matches_routing_oracle(shape, regions, topk, lce):
  t = int(np.prod(shape))
  x = jax.random.normal(jax.random.key(1), (2, t, D))
  module = build("biformer", num_heads=2, regions=regions, topk=topk, lce=lce,
                 grid=shape if len(shape) == 2 else (), causal=False)
  params = init_params(module, x)
  if lce:
    params = dict(params, lce_bias=jax.random.normal(jax.random.key(4), params["lce_bias"].shape))
  allowed = biformer_oracle_mask(params, x, shape, regions, topk)
  assert (allowed.sum(-1) == topk * t // regions ** len(shape)).all()

  def oracle(p, x, allowed=allowed):
    q, k, v = project(p, x)
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k) * q.shape[-1] ** -0.5
    s = jnp.where(allowed[:, None], s, -jnp.inf)
    y = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v)
    if lce:
      y = y + lce_oracle(p, x, shape, lce)
    return jnp.einsum("bthk,hkd->btd", y, p["out"]["kernel"])
  compare("biformer", module, params, x, oracle)
  # canary: routing to the topk *least* affine regions is rejected
  wrong = oracle(params, x, biformer_oracle_mask(params, x, shape, regions, topk, largest=False))
  assert np.abs(np.asarray(module.apply({"params": params}, x) - wrong)).max() > 1e-2


def test_biformer_with_all_regions_is_full_attention():
  x = jax.random.normal(jax.random.key(1), (2, 64, D))
  module = build("biformer", num_heads=2, regions=4, topk=16, lce=0, grid=(8, 8), causal=False)
  params = contract.init_variables(module, x)["params"]
  mha = build("mha", num_heads=2, causal=False, positional="none")
  y_mha = mha.apply({"params": params}, x)
  assert_oracle("biformer", "fwd-full", module.apply({"params": params}, x), y_mha, atol=2e-5)
  # canary: with topk < regions it is not full attention
  fewer = build("biformer", num_heads=2, regions=4, topk=8, lce=0, grid=(8, 8), causal=False)
  assert np.abs(np.asarray(fewer.apply({"params": params}, x) - y_mha)).max() > 1e-3


def test_biformer_auto_regions_patterns_and_errors():
  from attnlab.attention.variants.biformer import region_counts
  assert region_counts((4, 4), 0) == (2, 2)                  # 4^(2/3) = 2.5
  assert [region_counts((t,), 0)[0] for t in (2048, 8192, 32768)] == [128, 512, 1024]
  check_patterns("biformer", {"regions": 2, "topk": 1, "num_heads": 2}, length=16)
  assert VARIANTS.get("biformer").subquadratic
  with pytest.raises(ValueError, match="does not divide"):
    build("biformer", regions=3, grid=(4, 4), causal=False).init(jax.random.key(0), jnp.zeros((1, 16, D)))


# ---- hilo -----------------------------------------------------------------------------


def hilo_oracle(params, x, shape, s, lo, lo_first=False):
  """HiLo from the definition: window id of a token = its coordinates // s per axis; the
  Hi-Fi heads attend to the tokens of their window (dense mask), the Lo-Fi heads to the
  window means of k and v (pooling matrix P [windows, T] of 1/|window|); the last `lo`
  heads are Lo-Fi (the first with lo_first: the canary)."""
  q, k, v = project(params, x)
  h = q.shape[2]
  sizes = [min(n, s) for n in shape]
  wid = np.array([int(np.ravel_multi_index([c // m for c, m in zip(cc, sizes)], [n // m for n, m in zip(shape, sizes)]))
                  for cc in coords_of(shape)])
  same = wid[:, None] == wid[None, :]
  pool = (np.arange(wid.max() + 1)[:, None] == wid[None, :]).astype(np.float32)
  pool = pool / pool.sum(1, keepdims=True)
  lo_heads = np.arange(h) < lo if lo_first else np.arange(h) >= h - lo
  outs = []
  for head in range(h):
    qh, kh, vh = q[:, :, head], k[:, :, head], v[:, :, head]
    if lo_heads[head]:
      kh, vh = jnp.einsum("wt,btd->bwd", pool, kh), jnp.einsum("wt,btd->bwd", pool, vh)
    sc = jnp.einsum("bqd,bkd->bqk", qh, kh) * qh.shape[-1] ** -0.5
    if not lo_heads[head]:
      sc = jnp.where(same[None], sc, -jnp.inf)
    outs.append(jnp.einsum("bqk,bkd->bqd", jax.nn.softmax(sc, -1), vh))
  return jnp.einsum("bthk,hkd->btd", jnp.stack(outs, 2), params["out"]["kernel"])


@pytest.mark.parametrize("shape,s,alpha,lo", [((12, 12), 3, 0.5, 2), ((8, 12), 2, 0.9, 3), ((12,), 3, 0.5, 2)])
def test_hilo_matches_oracle(shape, s, alpha, lo):
  t = int(np.prod(shape))
  x = jax.random.normal(jax.random.key(1), (2, t, D))
  module = build("hilo", num_heads=4, window_size=s, alpha=alpha, grid=shape if len(shape) == 2 else (),
                 causal=False)
  assert module.lo_heads() == lo
  params = init_params(module, x)
  compare("hilo", module, params, x, jax.jit(lambda p, x: hilo_oracle(p, x, shape, s, lo)))
  # canary: the same heads split the other way round (Lo-Fi first) is rejected
  wrong = hilo_oracle(params, x, shape, s, lo, lo_first=True)
  assert np.abs(np.asarray(module.apply({"params": params}, x) - wrong)).max() > 1e-2


def test_hilo_patterns_and_errors():
  check_patterns("hilo", {"window_size": 2, "num_heads": 2, "alpha": 0.5}, length=16)
  assert not VARIANTS.get("hilo").subquadratic   # Lo-Fi is dense over T / s^2 pooled keys
  with pytest.raises(ValueError, match="not a multiple"):
    build("hilo", window_size=3, grid=(4, 4), causal=False).init(jax.random.key(0), jnp.zeros((1, 16, D)))
  with pytest.raises(ValueError, match="alpha"):
    build("hilo", alpha=1.5)
