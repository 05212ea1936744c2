"""twins, channel (DaViT), inline, shvit: each equals an independent oracle from its paper's
definition, forward and gradients, with a canary (the same rules as test_vision2d.py).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.attention import VARIANTS, build
from tests.attention.contract import check_patterns
from tests.attention.vision2d_common import D, compare, coords_of, dense_attention, init_params, project


# ---- twins ----------------------------------------------------------------------------


def twins_gsa_oracle(params, x, shape, r, column_major=False):
  """GSA from the definition: the sub-sampled token of cell c (coordinates // r) is the
  conv of kernel r, stride r at c (the features of the cell's r^nd pixels, row-major in
  the cell, times the "sr" kernel, plus its bias), then LayerNorm (eps 1e-6), then the
  key / value projections; every query attends to all sub-sampled tokens. column_major:
  the canary that flattens each cell's pixels in the wrong order."""
  b, t, d = x.shape
  cells = {}
  for ti, cc in enumerate(coords_of(shape)):
    cell = tuple(c // r for c in cc)
    inner = tuple(c % r for c in cc)
    cells.setdefault(cell, {})[inner[::-1] if column_major else inner] = ti
  order = [[members[key] for key in sorted(members)] for _, members in sorted(cells.items())]
  patches = x[:, np.array(order)].reshape(b, len(order), -1)        # [B, cells, r^nd * d]
  z = patches @ params["sr"]["kernel"] + params["sr"]["bias"]
  mu, var = z.mean(-1, keepdims=True), z.var(-1, keepdims=True)
  z = (z - mu) / jnp.sqrt(var + 1e-6) * params["sr_norm"]["scale"] + params["sr_norm"]["bias"]
  q = jnp.einsum("btd,dhk->bthk", x, params["query"]["kernel"])
  k = jnp.einsum("bsd,dhk->bshk", z, params["key"]["kernel"])
  v = jnp.einsum("bsd,dhk->bshk", z, params["value"]["kernel"])
  s = jnp.einsum("bqhd,bkhd->bhqk", q, k) * q.shape[-1] ** -0.5
  y = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, -1), v)
  return jnp.einsum("bthk,hkd->btd", y, params["out"]["kernel"])


def window_mask(shape, s):
  """bool [T, T]: same s-window per axis (coordinates // s equal)."""
  coords = coords_of(shape)
  return np.array([[all(a // s == c // s for a, c in zip(qc, kc)) for kc in coords] for qc in coords])


@pytest.mark.parametrize("shape,s,r", [((12, 12), 4, 3), ((8,), 2, 4)])
def test_twins_lsa_and_gsa_match_oracles(shape, s, r):
  t = int(np.prod(shape))
  x = jax.random.normal(jax.random.key(1), (2, t, D))
  grid = shape if len(shape) == 2 else ()
  lsa = build("twins", num_heads=2, window_size=s, sr_ratio=r, grid=grid, causal=False, layer_index=0, num_layers=2)
  params = init_params(lsa, x)
  compare("twins", lsa, params, x, jax.jit(lambda p, x: dense_attention(p, x, window_mask(shape, s))))
  wrong = dense_attention(params, x, window_mask(shape, 2 * s))     # canary: a window twice as wide
  assert np.abs(np.asarray(lsa.apply({"params": params}, x) - wrong)).max() > 1e-2
  gsa = build("twins", num_heads=2, window_size=s, sr_ratio=r, grid=grid, causal=False, layer_index=1, num_layers=2)
  params = init_params(gsa, x)
  params = dict(params, sr_norm={"scale": 1 + jax.random.normal(jax.random.key(5), (D,)),
                                 "bias": jax.random.normal(jax.random.key(6), (D,))})
  compare("twins", gsa, params, x, jax.jit(lambda p, x: twins_gsa_oracle(p, x, shape, r)), atol=5e-5)
  if len(shape) == 2:  # canary: the cell's pixels flattened column-major
    wrong = twins_gsa_oracle(params, x, shape, r, column_major=True)
    assert np.abs(np.asarray(gsa.apply({"params": params}, x) - wrong)).max() > 1e-2


@pytest.mark.slow
def test_twins_gsa_layer_within_declared_class():
  from attnlab.bench import cost as C
  C.assert_cost(C.measure("twins", layer_index=1, num_layers=2), VARIANTS.get("twins").cost)


def test_twins_patterns_and_errors():
  check_patterns("twins", {"window_size": 4, "sr_ratio": 2, "num_heads": 2}, length=16)
  with pytest.raises(ValueError, match="not a multiple"):
    build("twins", window_size=3, grid=(4, 4), causal=False).init(jax.random.key(0), jnp.zeros((1, 16, D)))


# ---- channel (DaViT) ------------------------------------------------------------------


def channel_oracle(params, x, roles=("key", "value", "query")):
  """DaViT channel attention as plain softmax attention on the transposed arrays: per
  head, the "tokens" are the C_g channels; queries' = k^T, keys' = v^T, values' = q^T
  ([C_g, T] each, the T tokens as features), scale C_g^-0.5; the result transposed back.
  `roles` names which projection plays queries', keys', values' (a permutation: canary)."""
  proj = dict(zip(("query", "key", "value"), project(params, x)))
  qt, kt, vt = (jnp.transpose(proj[r], (0, 2, 3, 1)) for r in roles)  # [B, heads, C_g, T]
  s = jnp.einsum("bhit,bhjt->bhij", qt, kt) * qt.shape[2] ** -0.5
  y = jnp.transpose(jnp.einsum("bhij,bhjt->bhit", jax.nn.softmax(s, -1), vt), (0, 3, 1, 2))  # [B, T, heads, C_g]
  return jnp.einsum("bthk,hkd->btd", y, params["out"]["kernel"])


def test_channel_matches_transposed_attention_oracle():
  x = jax.random.normal(jax.random.key(1), (2, 36, D)) * 0.5
  module = build("channel", num_heads=2, causal=False)
  params = init_params(module, x)
  compare("channel", module, params, x, jax.jit(channel_oracle))
  # canary: the paper's naming taken literally (softmax(q^T k) applied to v) is a different map
  wrong = channel_oracle(params, x, roles=("query", "key", "value"))
  assert np.abs(np.asarray(module.apply({"params": params}, x) - wrong)).max() > 1e-2
  check_patterns("channel", {"num_heads": 2}, length=16)
  assert VARIANTS.get("channel").subquadratic


# ---- inline ---------------------------------------------------------------------------


def inline_weights(q, k):
  """InLine's [B, H, T, T] weights from the definition: (scale/T)(q_i.k_j - q_i.mean_s k_s) + 1/T."""
  t, d = k.shape[1], q.shape[-1]
  qk = jnp.einsum("bihd,bjhd->bhij", q, k)
  return (d ** -0.5 / t) * (qk - qk.mean(-1, keepdims=True)) + 1.0 / t


def inline_oracle(params, x, shape, size, tap_major=False):
  """Dense InLine weights times v, plus the local residual: per example, per channel
  kernels from mean_t x (head-wise linear, exact GELU, head-wise linear; channel c's k^nd
  taps contiguous, or tap-major for the canary) applied by lax's depthwise SAME conv."""
  q, k, v = project(params, x)
  b, t, h, d = q.shape
  y = jnp.einsum("bhij,bjhd->bihd", inline_weights(q, k), v)
  if size:
    nd, taps = len(shape), size ** len(shape)
    xm = x.mean(1).reshape(b, h, -1)
    hid = jax.nn.gelu(jnp.einsum("bhi,hio->bho", xm, params["residual_1"]) + params["residual_1_bias"], approximate=False)
    out = jnp.einsum("bhi,hio->bho", hid, params["residual_2"]) + params["residual_2_bias"]
    w = out.reshape(b, taps, h * d).swapaxes(1, 2) if tap_major else out.reshape(b, h * d, taps)
    spatial = "HW" if nd == 2 else "W"
    res = []
    for bi in range(b):
      kern = w[bi].T.reshape(*(size,) * nd, 1, h * d)
      res.append(jax.lax.conv_general_dilated(v[bi:bi + 1].reshape(1, *shape, h * d), kern, (1,) * nd, "SAME",
                                              feature_group_count=h * d,
                                              dimension_numbers=(f"N{spatial}C", f"{spatial}IO", f"N{spatial}C")))
    y = y + jnp.concatenate(res).reshape(b, t, h, d)
  return jnp.einsum("bthk,hkd->btd", y, params["out"]["kernel"])


@pytest.mark.parametrize("shape,local", [((6, 6), 3), ((12,), 3), ((6, 6), 0)])
def test_inline_matches_dense_oracle(shape, local):
  t = int(np.prod(shape))
  x = jax.random.normal(jax.random.key(1), (2, t, D))
  module = build("inline", num_heads=2, local=local, grid=shape if len(shape) == 2 else (), causal=False)
  params = init_params(module, x)
  for i, name in enumerate([n for n in params if n.endswith("_bias")]):
    params = dict(params, **{name: 0.3 * jax.random.normal(jax.random.key(10 + i), params[name].shape)})
  compare("inline", module, params, x, jax.jit(lambda p, x: inline_oracle(p, x, shape, local)), atol=5e-5)
  if local:  # canary: the predicted taps read tap-major instead of channel-major
    wrong = inline_oracle(params, x, shape, local, tap_major=True)
    assert np.abs(np.asarray(module.apply({"params": params}, x) - wrong)).max() > 1e-3


def test_inline_is_injective_where_relu_linear_attention_is_not():
  q = jax.random.normal(jax.random.key(0), (1, 1, 1, 8))
  k = jax.random.normal(jax.random.key(1), (1, 10, 1, 8))

  def relu_linear(q):  # normalised weights of ReLU linear attention
    s = jnp.einsum("bihd,bjhd->bhij", jax.nn.relu(q), jax.nn.relu(k))
    return s / s.sum(-1, keepdims=True)
  np.testing.assert_allclose(relu_linear(q), relu_linear(3.0 * q), rtol=1e-6)   # q and 3q: the same weights
  w1, w3 = inline_weights(q, k), inline_weights(3.0 * q, k)
  np.testing.assert_allclose(w1.sum(-1), 1.0, rtol=1e-6)
  assert np.abs(np.asarray(w1 - w3)).max() > 1e-3                               # InLine tells them apart
  # and the module computes these weights: its attention output equals w @ v without the residual
  from attnlab.attention.variants.inline import inline_attention
  v = jax.random.normal(jax.random.key(2), (1, 10, 1, 8))
  for c in (1.0, 3.0):
    want = jnp.einsum("bhij,bjhd->bihd", inline_weights(c * q, k), v)
    np.testing.assert_allclose(inline_attention(jnp.broadcast_to(c * q, (1, 10, 1, 8)), k, v)[:, :1], want, atol=1e-5)
  check_patterns("inline", {"num_heads": 2}, length=16)


# ---- shvit ----------------------------------------------------------------------------


def shvit_oracle(params, x, p, from_end=False):
  """SHSA from the definition: the first p channels (the last p with from_end: the canary)
  normalised over all their T x p entries per example (eps 1e-5, per-channel affine),
  one softmax head with scale qk_dim^-0.5, concatenated with the untouched channels,
  ReLU, the output linear map."""
  d = x.shape[-1]
  x1, x2 = (x[..., d - p:], x[..., :d - p]) if from_end else (x[..., :p], x[..., p:])
  z = (x1 - x1.mean((1, 2), keepdims=True)) / jnp.sqrt(x1.var((1, 2), keepdims=True) + 1e-5)
  z = z * params["pre_norm_scale"] + params["pre_norm_bias"]
  q = z @ params["query"]["kernel"][:, 0]
  k = z @ params["key"]["kernel"][:, 0]
  v = z @ params["value"]["kernel"][:, 0]
  a = jax.nn.softmax(q @ jnp.swapaxes(k, 1, 2) / np.sqrt(q.shape[-1]), -1)
  y = jax.nn.relu(jnp.concatenate([a @ v, x2], -1))
  return y @ params["out"]["kernel"][0]


def test_shvit_matches_oracle_and_is_single_head():
  x = jax.random.normal(jax.random.key(1), (2, 20, D)) + 0.5
  module = build("shvit", partial=0.25, qk_dim=8, causal=False)
  params = init_params(module, x)
  params = dict(params, pre_norm_scale=1 + jax.random.normal(jax.random.key(7), (4,)),
                pre_norm_bias=jax.random.normal(jax.random.key(8), (4,)))
  compare("shvit", module, params, x, jax.jit(lambda p, x: shvit_oracle(p, x, 4)))
  wrong = shvit_oracle(params, x, 4, from_end=True)  # canary: attending with the last channels
  assert np.abs(np.asarray(module.apply({"params": params}, x) - wrong)).max() > 1e-2
  check_patterns("shvit", {}, length=16)
  with pytest.raises(ValueError, match="single-head"):
    build("shvit", num_heads=4, causal=False).init(jax.random.key(0), x)
