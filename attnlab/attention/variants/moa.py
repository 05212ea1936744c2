"""moa: Mixture of Sparse Attention (Fu et al., 2024, "MoA: Mixture of Sparse Attention for
Automatic Large Language Model Compression", Sec. 3).

Each head h has its own sliding-window span, and the span follows an elastic
length-scaling rule (the paper's Eq. for the span of head h at input length N):

    span_h(L) = alpha_h + beta_h * L        (rounded, clipped to [1, L])

so some heads stay local at every length and others widen with the input. MoA keeps the
first tokens visible to every query (StreamingLLM-style initial tokens); `num_sinks`
sets how many (0 = none). MoA finds alpha_h, beta_h by a profiling search on a calibrated
model; here they are hyperparameters (`alphas`, `betas`, cycled over the heads), the search
itself is not part of the layer.

Cost: heads are grouped by span and each group gathers its window per query tile
(`sparse_base.window_key_table`, the same table as longformer's), O(T * span) per head;
never a [T, T] mask. With any beta_h > 0 the span grows with L and the cost becomes
O(beta T^2): the declared class ("T*w") holds at the default betas = 0.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from attnlab.attention.registry import register
from attnlab.attention.variants.base import window_extents
from attnlab.attention.variants.sparse_base import (SELF_PATTERNS, KeyPlan, SparseConfig, StaticSparseAttention,
                                                    check_nonnegative, check_positive, window_key_table)


@dataclasses.dataclass(frozen=True)
class MoAConfig(SparseConfig):
  """alphas, betas: per-head span rule span_h(L) = alphas[h % len] + betas[h % len] * L (keys,
  the query's own included; `variants.base.window_extents`: causal keys t - span + 1 .. t,
  non-causal centred); num_sinks: initial positions visible to every query; block_size:
  the gather's query tile (no effect on the result)."""
  alphas: tuple = (16, 32, 64, 128)
  betas: tuple = (0.0, 0.0, 0.0, 0.0)
  num_sinks: int = 0
  block_size: int = 64


@register("moa", family="sparse", config=MoAConfig, patterns=SELF_PATTERNS,
          paper="Fu et al., 2024 (MoA: Mixture of Sparse Attention)", cost=("T*w", "T"))
class MoAAttention(StaticSparseAttention):
  """Per-head elastic sliding windows plus optional sinks (see the module docstring)."""

  def check_hparams(self):
    cfg = self.cfg
    check_positive(block_size=cfg.block_size)
    check_nonnegative(num_sinks=cfg.num_sinks)
    if not cfg.alphas or len(cfg.alphas) != len(cfg.betas):
      raise ValueError(f"moa: alphas and betas must be non-empty and of equal length, got {cfg.alphas}, {cfg.betas}")
    if any(a < 0 for a in cfg.alphas) or any(b < 0 for b in cfg.betas):
      raise ValueError(f"moa: alphas and betas must be >= 0, got {cfg.alphas}, {cfg.betas}")

  def spans(self, length: int) -> np.ndarray:
    """int [num_heads]: span_h(length) = round(alpha_h + beta_h * length), clipped to [1, length]."""
    cfg, n = self.cfg, len(self.cfg.alphas)
    s = [round(cfg.alphas[h % n] + cfg.betas[h % n] * length) for h in range(cfg.num_heads)]
    return np.clip(np.asarray(s, np.int64), 1, max(length, 1))

  def _extents(self, length: int, heads):
    """(left [H], right [H]) numpy: each head's window extents at this length."""
    ext = [window_extents(int(s), self.cfg.causal) for s in self.spans(length)[np.asarray(heads)]]
    return np.asarray([e[0] for e in ext]), np.asarray([e[1] for e in ext])

  def allowed(self, heads, tk):
    left, right = (jnp.asarray(e).reshape(-1, 1, 1, 1) for e in self._extents(tk, heads))
    sinks, causal = self.cfg.num_sinks, self.cfg.causal

    def fn(qp, kp):
      dist = qp - kp
      ok = ((dist >= -right) & (dist <= left)) | (kp < sinks)
      return ok & (dist >= 0) if causal else ok
    return fn

  def key_plans(self, tq, tk):
    bs, heads = self.cfg.block_size, np.arange(self.cfg.num_heads)
    left, right = self._extents(tk, heads)
    sinks = jnp.arange(min(self.cfg.num_sinks, tk)) if self.cfg.num_sinks else None
    plans = []
    for lo, hi in sorted(set(zip(left.tolist(), right.tolist()))):  # one gather per distinct span
      group = tuple(int(h) for h in heads[(left == lo) & (right == hi)])
      plans.append(KeyPlan(group, bs, window_key_table(bs, lo, hi, sinks)))
    return plans
