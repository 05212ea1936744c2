"""The attention-weights hook of the 2-D vision variants (issue 17, point 1).

Each hooked variant sows [B, H, T, T] over the row-major tokens of an 8 x 8 grid. Checks,
none importing the variants' helpers:

- reconstruction: the sown weights times the values computed here from the layer's own
  value kernel (plain einsums), then its output kernel, reproduce the normal output; the
  transposed weights (the canary) do not;
- the analysis call's output equals the normal call's; rows sum to 1 for "probability";
- structure: the support of the weights equals the 2-D definition written here (Swin's
  windows with the cyclic shift undone, NATTEN's inward-shifted neighbourhoods, HaloNet's
  haloed blocks, MaxViT's dilated grid, BiFormer's routed regions from the region means,
  HiLo's windows and pooled windows, InLine's formula); each definition with its key piece
  removed (the canary) does not match.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.attention import build
from tests.attention.contract import random_params

B, D, GH, GW = 2, 32, 8, 8
T = GH * GW
ROW, COL = np.divmod(np.arange(T), GW)  # token t sits at (ROW[t], COL[t])


def same(group_of):
  """bool [T, T]: tokens i, j share a group, group_of(row or col) applied per axis."""
  g = [np.asarray([group_of(int(r)) for r in range(n)]) for n in (GH, GW)]
  return (g[0][ROW][:, None] == g[0][ROW][None, :]) & (g[1][COL][:, None] == g[1][COL][None, :])


def neighbourhood(w, inward=True):
  """NATTEN (Hassani et al., 2023): per axis the w keys from start = clip(i - w//2, 0, n - w)
  (inward shift at the borders); without it, the clipped centred window (the canary)."""
  def axis(n):
    ok = np.zeros((n, n), bool)
    for i in range(n):
      lo = min(max(i - w // 2, 0), n - w) if inward else i - w // 2
      ok[i, max(lo, 0):lo + w] = True
    return ok
  a, b = axis(GH), axis(GW)
  return a[ROW][:, ROW] & b[COL][:, COL]


def halo_support(block, halo):
  """HaloNet (Vaswani et al., 2021): a query's keys are its b x b block plus h rows/cols around it."""
  def axis(n, h):
    blk = np.arange(n) // block
    return (np.arange(n)[None, :] >= blk[:, None] * block - h) & (np.arange(n)[None, :] < (blk[:, None] + 1) * block + h)
  return axis(GH, halo)[ROW][:, ROW] & axis(GW, halo)[COL][:, COL]


def project(params, x, name):
  """x [B, T, d] through params[name]'s kernel [d, H, K] -> numpy [B, T, H, K]."""
  return np.einsum("btd,dhk->bthk", np.asarray(x), np.asarray(params[name]["kernel"]))


def reconstruct(params, x, w):
  """y = sum_h (w_h @ (x W_v,h)) W_o,h from the layer's kernels."""
  o = np.einsum("bhqk,bkhd->bqhd", np.asarray(w), project(params, x, "value"))
  return np.einsum("bqhd,hdm->bqm", o, np.asarray(params["out"]["kernel"]))


def reconstruct_shvit(params, x, w):
  """SHViT's SHSA: GroupNorm(1) of the first p channels, v = x1 W_v, y = ReLU([w v, x2]) W_o."""
  p = params["pre_norm_scale"].shape[0]
  x = np.asarray(x)
  x1 = x[..., :p]
  mu = x1.mean(axis=(1, 2), keepdims=True)
  x1 = (x1 - mu) / np.sqrt(((x1 - mu) ** 2).mean(axis=(1, 2), keepdims=True) + 1e-5)
  x1 = x1 * np.asarray(params["pre_norm_scale"]) + np.asarray(params["pre_norm_bias"])
  y1 = np.einsum("bqk,bkd->bqd", np.asarray(w)[:, 0], project(params, x1, "value")[:, :, 0])
  y = np.maximum(np.concatenate([y1, x[..., p:]], axis=-1), 0.0)
  return np.einsum("btd,hdm->btm", y, np.asarray(params["out"]["kernel"]))


def biformer_support(params, x, regions, topk):
  """Zhu et al., 2023: region means of q and k (all heads), affinity, top-k regions per region;
  a query sees every token of its region's chosen regions. bool [B, T, T]."""
  size = GH // regions
  region = (ROW // size) * regions + COL // size
  q, k = (project(params, x, n).reshape(B, T, -1) for n in ("query", "key"))
  onehot = (region[:, None] == np.arange(regions ** 2)[None]) / size ** 2   # [T, R]
  a = np.einsum("btc,tr,bsc,sj->brj", q, onehot, k, onehot)
  chosen = np.argsort(-a, axis=-1)[..., :topk]                            # [B, R, topk]
  keep = np.zeros((B, regions ** 2, regions ** 2), bool)
  np.put_along_axis(keep, chosen, True, axis=-1)
  return keep[:, region][:, :, region]


def inline_oracle(params, x):
  """Han et al., 2024: w_ij = (D^-0.5 / T)(q_i.k_j - q_i.mean_s k_s) + 1/T."""
  q, k = project(params, x, "query"), project(params, x, "key")
  qk = np.einsum("bihd,bjhd->bhij", q, k)
  qm = np.einsum("bihd,bhd->bhi", q, k.mean(axis=1))
  return q.shape[-1] ** -0.5 / T * (qk - qm[..., None]) + 1.0 / T


def shifted_groups(win, shift):
  """Swin's shifted partition in the unshifted coordinates: windows start at `shift`, the wrapped
  edge pieces [0, shift) and [n - win + shift, n) are separate regions (they do not attend)."""
  return lambda r: 0 if r < shift else 1 + (r - shift) // win if r < GH - win + shift else 99


# id -> (variant, hyperparameters, heads)
CASES = {
    "window": ("window", dict(window=4), 2),
    "shifted_window": ("shifted_window", dict(window=4, layer_index=1, num_layers=2), 2),
    "neighborhood": ("neighborhood", dict(window=3), 2),
    "halo": ("halo", dict(block_size=4, halo=1), 2),
    "maxvit_grid": ("maxvit", dict(block_size=4, grid_size=4, layer_index=1, num_layers=2), 2),
    "hilo": ("hilo", dict(window_size=2, alpha=0.5), 4),
    "twins_lsa": ("twins", dict(window_size=4, sr_ratio=2), 2),
    "biformer": ("biformer", dict(regions=2, topk=2, lce=0), 2),
    "inline": ("inline", dict(local=0), 2),
    "shvit": ("shvit", {}, 1),
}


@functools.lru_cache(maxsize=None)
def run(case):
  """(module, params, x, y, y from the analysis call, sown weights): one jitted program."""
  name, hp, heads = CASES[case]
  module = build(name, num_heads=heads, causal=False, grid=(GH, GW), **hp) if name != "shvit" else \
      build(name, num_heads=1, causal=False)
  x = jax.random.normal(jax.random.PRNGKey(0), (B, T, D))

  params = random_params(module, x)["params"]  # no init compile; a visible relative bias (std 0.3)

  @jax.jit
  def both(params, x):
    y = module.apply({"params": params}, x)
    y_cap, state = module.apply({"params": params}, x, mutable=["attention"])
    return y, y_cap, state["attention"]["weights"][0]

  return (module, x, params) + tuple(both(params, x))


@pytest.mark.parametrize("case", list(CASES))
def test_sown_weights_times_values_reproduce_the_output(case):
  module, x, params, y, y_cap, w = run(case)
  heads = CASES[case][2]
  assert module.weights_unavailable is None
  assert w.shape == (B, heads, T, T) and w.dtype == jnp.float32
  np.testing.assert_allclose(y_cap, y, atol=2e-5, rtol=1e-4)  # analysis path == normal path
  rebuild = reconstruct_shvit if case == "shvit" else reconstruct
  err = float(np.abs(rebuild(params, x, w) - y).max())
  gap = float(np.abs(rebuild(params, x, np.swapaxes(w, -1, -2)) - y).max())
  print(f"{case}: reconstruction max error {err:.2e}, transposed-weights canary gap {gap:.2e}")
  assert err < 5e-5 and gap > 1e-2
  if module.weight_kind == "probability":
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
    assert float(w.min()) >= 0.0


# case -> (the support the 2-D definition gives, the definition with its key piece removed)
SUPPORT = {
    "window": lambda p, x: (same(lambda r: r // 4), same(lambda r: r // 2)),
    "shifted_window": lambda p, x: (same(shifted_groups(4, 2)), same(lambda r: (r - 2) % GH // 4)),  # canary: wrap kept
    "neighborhood": lambda p, x: (neighbourhood(3), neighbourhood(3, inward=False)),
    "halo": lambda p, x: (halo_support(4, 1), halo_support(4, 0)),
    "maxvit_grid": lambda p, x: (same(lambda r: r % 2), same(lambda r: r // 4)),  # G = 4: stride 8 / 4
    "twins_lsa": lambda p, x: (same(lambda r: r // 4), same(lambda r: r // 2)),
    "biformer": lambda p, x: (biformer_support(p, x, 2, 2), biformer_support(p, x, 2, 1)),
}


@pytest.mark.parametrize("case", list(SUPPORT))
def test_support_is_the_2d_definition(case):
  _, x, params, _, _, w = run(case)
  expected, broken = SUPPORT[case](params, x)
  expected, broken = (np.broadcast_to(a[:, None] if a.ndim == 3 else a, w.shape) for a in (expected, broken))
  support = np.asarray(w) > 0
  assert np.array_equal(support, expected)
  assert not np.array_equal(support, broken)  # canary
  if case == "neighborhood":  # exactly w x w keys for every query, borders included
    assert (support.sum(-1) == 9).all()


def test_hilo_branches_are_heads():
  """Hi-Fi heads (0, 1): 2 x 2 windows. Lo-Fi heads (2, 3): every token, each 2 x 2 window's
  four tokens the same weight (1/4 of the pooled key's)."""
  _, x, params, _, _, w = run("hilo")
  w = np.asarray(w)
  windows = same(lambda r: r // 2)
  assert np.array_equal(w[:, :2] > 0, np.broadcast_to(windows, w[:, :2].shape))
  lo = w[:, 2:].reshape(B, 2, T, GH // 2, 2, GW // 2, 2)
  assert (lo > 0).all()
  np.testing.assert_allclose(lo, np.broadcast_to(lo[..., :1, :, :1], lo.shape), atol=1e-7)
  assert float(np.abs(w[:, :2] - w[:, 2:]).max()) > 1e-2  # canary: the two branches differ


def test_inline_weights_are_the_formula_and_signed():
  module, x, params, _, _, w = run("inline")
  assert module.weight_kind == "signed" and float(w.min()) < 0
  np.testing.assert_allclose(w, inline_oracle(params, x), atol=1e-6)
  np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
  # canary: without the mean-key correction the rows do not sum to 1 and the matrix differs
  q, k = project(params, x, "query"), project(params, x, "key")
  plain = q.shape[-1] ** -0.5 / T * np.einsum("bihd,bjhd->bhij", q, k) + 1.0 / T
  assert float(np.abs(plain - w).max()) > 1e-3


def test_unhooked_vision_variants_say_why():
  assert "channels" in build("channel", num_heads=2).weights_unavailable
  twins = [build("twins", num_heads=2, layer_index=i, num_layers=2) for i in (0, 1)]
  assert twins[0].weights_unavailable is None and "GSA" in twins[1].weights_unavailable
  for name in ("window", "neighborhood", "halo", "maxvit", "biformer", "hilo", "inline", "shvit"):
    assert build(name).weights_unavailable is None, name

