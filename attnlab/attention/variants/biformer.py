"""Bi-level routing attention: `biformer` (Zhu et al., 2023, "BiFormer: Vision Transformer
with Bi-Level Routing Attention").

Tokens on a row-major grid (grid=(H, W); () = a 1-D sequence) are split into S x S regions
(S = `regions` per axis; S regions in 1-D) of r = (H/S) x (W/S) tokens. Per example:

1. region-level routing: Qr, Kr [S^2, H*D] are the means of each region's queries and
   keys (all heads together, as the paper's `q.mean([2, 3])` over the full qk dim); the
   affinity A = Qr Kr^T [S^2, S^2]; each region keeps the indices of its `topk` largest
   affinities (no gradient flows through the choice, as in the paper's default
   non-differentiable routing, whose routing weights are not applied);
2. token-to-token attention: every query of region i attends, per head, to the
   topk * r tokens gathered from the regions region i kept.

Local context enhancement (the paper's LCE, `lce` = kernel size k, 0 = off): a depthwise
k x k convolution (k in 1-D) of V over the token grid, 'same' zero padding, added to the
attention output before the output projection (BiFormer's `lepe`, k = 5 there).

Auto regions (regions=0): per axis of n tokens, S = the divisor of n closest (in log) to
n^(2/3), so that there are about T^(2/3) regions of about T^(1/3) tokens: the paper's
optimum (its Sec. 3.3), where routing costs (S^2)^2 = T^(4/3) and token attention
T * topk * T / S^2 = T^(4/3). At a fixed S (the paper's S = 7 per stage) token attention
is quadratic in T; `regions` sets S explicitly.

Shapes: gathered keys [B, S^2, topk * r, H, D], scores [B, S^2, H, r, topk * r], routing
[B, S^2, S^2]: compute and memory O(T * topk * r + S^4), no [T, T] array. Departures:
no key/value downsampling (the paper's kv_downsample is identity in the released
models); one top-k shared by all heads, as in the paper.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnlab.attention.registry import register
from attnlab.attention.variants.grid import GridAttentionModule, GridConfig, depthwise_same, window_index


@dataclasses.dataclass(frozen=True)
class BiFormerConfig(GridConfig):
  """regions: S, regions per axis (0 = auto, about n^(2/3) per axis of n tokens); topk:
  regions each region routes to (clipped to the number of regions); lce: kernel size of
  the local context enhancement (depthwise conv of V; 0 = off); grid: () or (H, W) (-1
  entries inferred, as in `neighborhood`)."""
  regions: int = 0
  topk: int = 4
  lce: int = 5
  POSITIVE_SIZES = GridConfig.POSITIVE_SIZES + ("topk",)

  def __post_init__(self):
    super().__post_init__()
    for name in ("regions", "lce"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")


def region_counts(shape: tuple[int, ...], regions: int) -> tuple[int, ...]:
  """Regions per axis: `regions` (which must divide every axis), or with 0 per axis of n
  the divisor of n nearest to n^(2/3) in log."""
  if regions:
    bad = [n for n in shape if n % regions]
    if bad:
      raise ValueError(f"biformer: regions={regions} does not divide the axis length {bad[0]}")
    return (regions,) * len(shape)
  out = []
  for n in shape:
    divisors = [s for s in range(1, n + 1) if n % s == 0]
    out.append(min(divisors, key=lambda s: abs(math.log(s) - 2 / 3 * math.log(n))))
  return tuple(out)


@register("biformer", family="routed2d", config=BiFormerConfig,
          cost=("T^1.33", "T^1.33", "auto regions: ~T^(2/3) regions of ~T^(1/3) tokens; "
                "routing S^4 and gathered attention T*topk*T/S^2 are both T^(4/3)"),
          patterns=("noncausal-self",), paper="Zhu et al., 2023 (BiFormer)")
class BiFormerAttention(GridAttentionModule):
  """Bi-level routing attention over a 1-D sequence or a 2-D grid (see the module docstring).

  Analysis hook: sows the token attention of step 2 scattered to [B, H, T, T] (nonzero on
  the topk routed regions of each query's region; rows sum to 1). The LCE term (a
  depthwise convolution of v with a different kernel per channel, so no one scalar per
  query-key pair) is added to the output outside the sown matrix, as a residual is."""
  weights_unavailable = None

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    cfg = self.cfg
    shape, q, k, v = self.grid_qkv(x, context, mask, decode)
    b = x.shape[0]
    counts = region_counts(shape, cfg.regions)
    regions = window_index(shape, tuple(n // s for n, s in zip(shape, counts)))  # [S^2, r] static
    n_reg, r = regions.shape
    topk = min(cfg.topk, n_reg)
    # 1. region routing on the region means (all heads together); the choice has no gradient
    qr = jnp.mean(jnp.take(q, jnp.asarray(regions), axis=1), axis=2).reshape(b, n_reg, -1)
    kr = jnp.mean(jnp.take(k, jnp.asarray(regions), axis=1), axis=2).reshape(b, n_reg, -1)
    affinity = jax.lax.stop_gradient(jnp.einsum("bic,bjc->bij", qr, kr))  # [B, S^2, S^2]
    _, chosen = jax.lax.top_k(affinity, topk)                      # [B, S^2, topk]
    k_index = jnp.asarray(regions)[chosen].reshape(b, n_reg, topk * r)
    # 2. token attention inside the gathered regions
    y = self.grouped(q, k, v, regions, k_index)
    if cfg.lce:
      y = y + self.local_context(v, shape).astype(y.dtype)
    return self.project_out(y, x.shape[-1])

  def local_context(self, v, shape):
    """BiFormer's LCE: a depthwise conv of v [B, T, H, D] over the token grid (kernel
    `lce` per axis, 'same' zero padding as lax's SAME: (k-1)//2 before, k//2 after, plus a
    bias; `depthwise_same`). -> [B, T, H, D]."""
    b, t, h, d = v.shape
    size, nd = self.cfg.lce, len(shape)
    kernel = self.param("lce_kernel", nn.with_logical_partitioning(nn.initializers.normal(size ** -nd),
                                                                   (None,) * nd + ("embed",)),
                        (size,) * nd + (h * d,))
    bias = self.param("lce_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), (h * d,))
    return depthwise_same(v.reshape(b, t, h * d), shape, kernel, bias).reshape(b, t, h, d)
