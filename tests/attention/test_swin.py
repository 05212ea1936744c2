"""window / shifted_window: equal an explicit roll -> window-attend -> unroll oracle (oracle rule).

The oracle rolls the token image with jnp.roll, loops over the windows one by one, builds
each window's region mask from Swin's img_mask slices (0:-M, -M:-s, -s:) and relative
position bias from the tokens' coordinates, attends with plain softmax, writes the window
back and rolls the image back.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.attention import VARIANTS, build
from tests.attention.contract import assert_oracle, check_patterns, init_variables


def swin_oracle(params, x, grid, window, shift, heads):
  """Explicit roll -> per-window attention with the 9-region mask -> unroll."""
  b, t, _ = x.shape
  h, w = grid
  m = window
  q = jnp.einsum("btd,dhk->bthk", x, params["query"]["kernel"]).reshape(b, h, w, heads, -1)
  k = jnp.einsum("btd,dhk->bthk", x, params["key"]["kernel"]).reshape(b, h, w, heads, -1)
  v = jnp.einsum("btd,dhk->bthk", x, params["value"]["kernel"]).reshape(b, h, w, heads, -1)
  if shift:
    q, k, v = (jnp.roll(a, (-shift, -shift), axis=(1, 2)) for a in (q, k, v))
  img = np.zeros((h, w), int)
  if shift:
    cnt = 0
    for hs in (slice(0, -m), slice(-m, -shift), slice(-shift, None)):
      for ws in (slice(0, -m), slice(-m, -shift), slice(-shift, None)):
        img[hs, ws] = cnt
        cnt += 1
  table = params["rel_pos_bias"]  # [heads, (2m-1)^2]
  out = jnp.zeros_like(v)
  for wy in range(0, h, m):
    for wx in range(0, w, m):
      coords = [(y, xx) for y in range(wy, wy + m) for xx in range(wx, wx + m)]
      qs = jnp.stack([q[:, y, xx] for y, xx in coords], 1)  # [B, K, heads, D]
      ks = jnp.stack([k[:, y, xx] for y, xx in coords], 1)
      vs = jnp.stack([v[:, y, xx] for y, xx in coords], 1)
      bias = jnp.stack([jnp.stack([table[:, (ky - qy + m - 1) * (2 * m - 1) + (kx - qx + m - 1)]
                                   for ky, kx in coords], -1) for qy, qx in coords], -2)  # [heads, K, K]
      same = np.array([[img[qy, qx] == img[ky, kx] for ky, kx in coords] for qy, qx in coords])
      s = jnp.einsum("bqhd,bkhd->bhqk", qs, ks) * qs.shape[-1] ** -0.5 + bias[None]
      s = jnp.where(same[None, None], s, -jnp.inf)
      o = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, -1), vs)
      for i, (y, xx) in enumerate(coords):
        out = out.at[:, y, xx].set(o[:, i])
  if shift:
    out = jnp.roll(out, (shift, shift), axis=(1, 2))
  return jnp.einsum("bthk,hkd->btd", out.reshape(b, t, heads, -1), params["out"]["kernel"])


@pytest.mark.parametrize("name,layer,grid,window,expect_shift", [
    ("window", 1, (4, 6), 2, 0),
    ("shifted_window", 0, (4, 4), 2, 0),      # even layers are not shifted
    ("shifted_window", 1, (4, 6), 2, 1),
    ("shifted_window", 1, (6, 6), 3, 1),
])
def test_matches_roll_window_unroll_oracle(name, layer, grid, window, expect_shift):
  heads, t = 2, grid[0] * grid[1]
  x = jax.random.normal(jax.random.key(1), (2, t, 16))
  module = build(name, num_heads=heads, window=window, grid=grid, causal=False,
                 layer_index=layer, num_layers=2)
  params = init_variables(module, x)["params"]
  params = dict(params, rel_pos_bias=jax.random.normal(jax.random.key(2), params["rel_pos_bias"].shape))
  assert params["rel_pos_bias"].shape == (heads, (2 * window - 1) ** 2)
  oracle = jax.jit(lambda p, x: swin_oracle(p, x, grid, window, expect_shift, heads))
  assert_oracle(name, "fwd", jax.jit(lambda p, x: module.apply({"params": p}, x))(params, x),
                oracle(params, x), atol=2e-5)
  gm = jax.jit(jax.grad(lambda p, x: jnp.sum(module.apply({"params": p}, x)  ** 2), argnums=(0, 1)))(params, x)
  go = jax.jit(jax.grad(lambda p, x: jnp.sum(oracle(p, x) ** 2), argnums=(0, 1)))(params, x)
  assert_oracle(name, "grad", gm, go, atol=1e-4, rtol=1e-4)


def test_shift_mixes_windows_and_small_resolution_has_no_shift():
  x = jax.random.normal(jax.random.key(1), (1, 16, 16))
  shifted = build("shifted_window", window=2, grid=(4, 4), causal=False, layer_index=1, num_layers=2,
                  num_heads=2)
  p = init_variables(shifted, x)
  # After the shift, token 5 = (1, 1) shares a window with (1, 2), (2, 1), (2, 2): tokens 6, 9, 10.
  grad = jax.jit(jax.grad(lambda x: shifted.apply(p, x)[0, 5].sum()))(x)
  assert float(jnp.abs(grad[0, 10]).sum()) > 0 and float(jnp.abs(grad[0, 0]).sum()) == 0.0
  plain = build("window", window=2, grid=(4, 4), causal=False, num_heads=2)
  gp = jax.jit(jax.grad(lambda x: plain.apply(p, x)[0, 5].sum()))(x)  # window of tokens 0, 1, 4, 5
  assert float(jnp.abs(gp[0, 0]).sum()) > 0 and float(jnp.abs(gp[0, 10]).sum()) == 0.0
  # Resolution <= window: one window, no shift, i.e. full attention over the grid.
  full = build("shifted_window", window=8, grid=(4, 4), causal=False, layer_index=1, num_layers=2,
               num_heads=2)
  pf = init_variables(full, x)
  gf = jax.jit(jax.grad(lambda x: full.apply(pf, x)[0, 0].sum()))(x)
  assert bool(jnp.all(jnp.abs(gf[0]).sum(-1) > 0))


def test_patterns_and_errors():
  check_patterns("window", {"window": 4, "num_heads": 2}, length=16)
  assert VARIANTS.get("window").subquadratic and VARIANTS.get("shifted_window").subquadratic
  with pytest.raises(ValueError, match="not a multiple"):
    m = build("window", window=3, grid=(4, 4), causal=False)
    m.init(jax.random.key(0), jnp.zeros((1, 16, 16)))
