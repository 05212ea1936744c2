"""aggregated: TransNeXt's aggregated attention (Shi, 2024, "TransNeXt: Robust Foveal Visual
Perception for Vision Transformers", Sec. 3.1, "pixel-focused attention"), 1-D form over
tokens.

Each query attends, in one softmax, to two key sets: the fine tokens of its sliding window
(w keys, centred, `variants.base.window_extents`) and P coarse tokens pooled from the whole
sequence (adaptive average pooling to a fixed P, as TransNeXt pools its feature map to a
fixed size; then the paper's 1x1 projection, LayerNorm and GELU). Both sets go through the
same key/value projections. As in the paper, scores are cosine-like:

    q_hat = (normalize(q) + e_h) * softplus(tau_h) * log(w + P),   k_hat = normalize(k)

with a learned query embedding e [H, D] and temperature tau [H] (initialised so that
softplus(tau) = 1 / 0.24, the released code's), and a learned relative-position bias per
head and window offset on the fine keys (the paper's local relative position bias).

Departures (and why): the 2-D form (a k x k window on an image) is not here, only the
1-D token form (the issue's scope: it trains on ListOps); the paper's learnable-key-value
tokens (LKV) and its log-spaced continuous position bias (CPB) on the pooled keys are
omitted (pooled keys get no position bias), which keeps the layer the paper's core, one
softmax over a fine window and pooled context. Non-causal self-attention only: pooled
tokens summarise the future, as in the image model.

Cost: the fine window is gathered per query tile (`ops.sparse.static`: the key table is
`sparse_base.window_key_table` with the P pooled keys appended after the T tokens), so
compute is O(T (w + P)) and the pooling O(T P): linear in T at fixed w, P; never a [T, T]
mask. Key padding: padded tokens are masked as fine keys and left out of the pools (a
pool with no valid token is masked).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from attnlab.attention import masks as M
from attnlab.attention.ops.sparse.static import sparse_attention
from attnlab.attention.registry import register
from attnlab.attention.variants.base import AttentionConfig, AttentionModule, Projection, window_extents
from attnlab.attention.variants.common import key_valid_from_mask
from attnlab.attention.variants.sparse_base import check_positive, window_key_table

TAU_INIT = float(np.log(np.expm1(1 / 0.24)))  # softplus(TAU_INIT) = 1 / 0.24


@dataclasses.dataclass(frozen=True)
class AggregatedConfig(AttentionConfig):
  """window: fine keys per query (centred, the query's own included); num_pools: P pooled
  coarse tokens (adaptive average pooling); block_size: the gather's query tile (no effect
  on the result); query_chunk: queries per step of the rematerialised loop; impl: the
  "sparse" op family's implementation ("xla" | "auto" | "reference")."""
  window: int = 15
  num_pools: int = 16
  block_size: int = 64
  query_chunk: int = 256
  impl: str = "xla"
  POSITIVE_SIZES = AttentionConfig.POSITIVE_SIZES + ("num_pools", "query_chunk")


def pool_matrix(length: int, pools: int) -> np.ndarray:
  """[P, T] 0/1: token t belongs to pool p iff floor(p T / P) <= t < ceil((p + 1) T / P)
  (PyTorch's adaptive pooling bounds; pools overlap by one token when P does not divide T)."""
  p = np.arange(pools)[:, None]
  t = np.arange(length)[None, :]
  return ((t >= (p * length) // pools) & (t < -(-((p + 1) * length) // pools))).astype(np.float32)


def _normalize(x):
  """x / sqrt(||x||^2 + 1e-12) over the last axis: torch's F.normalize up to the eps, but
  with a finite gradient at x = 0 (an empty pool's key is 0; it is masked, and a NaN
  gradient through the norm would still reach the parameters)."""
  return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + 1e-12)


@register("aggregated", family="local", config=AggregatedConfig, patterns=("noncausal-self",),
          paper="Shi, 2024 (TransNeXt, aggregated attention)", cost=("T*(w+p)", "T"), causal=False)
class AggregatedAttention(AttentionModule):
  """Fine sliding window + pooled coarse tokens in one softmax (see the module docstring)."""
  weights_unavailable = ("its keys are the T tokens plus P pooled tokens: the weights are "
                         "[T, T + P], not a map over tokens")

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    """x [B, T, d_model] -> [B, T, d_model] (non-causal self only)."""
    cfg = self.cfg
    self.check_pattern(context, decode)
    check_positive(window=cfg.window, block_size=cfg.block_size)
    if positions is not None:
      raise ValueError("aggregated: positions are not used (a learned relative bias on the window); pass None")
    b, t, d_model = x.shape
    h, hd, p_count = cfg.num_heads, self.head_dim_for(d_model), cfg.num_pools
    valid = key_valid_from_mask(self.variant, mask, b, t)
    valid = jnp.ones((b, t), bool) if valid is None else valid

    # Coarse tokens: masked adaptive average pool -> 1x1 projection -> LayerNorm -> GELU.
    members = jnp.asarray(pool_matrix(t, p_count))[None] * valid[:, None, :]  # [B, P, T]
    count = members.sum(-1, keepdims=True)
    pooled = jnp.einsum("bpt,btd->bpd", members, x.astype(jnp.float32)) / jnp.maximum(count, 1.0)
    pooled = Projection((d_model,), ("embed", "mlp"), "btd,de->bte", True, self.compute_dtype, name="pool_proj")(pooled)
    pooled = nn.gelu(nn.LayerNorm(name="pool_norm")(pooled), approximate=False)

    tokens = jnp.concatenate([x.astype(pooled.dtype), pooled], axis=1)  # [B, T + P, d]: keys T.. are pools
    q = self.project_heads(x, h, hd, "query")
    k = _normalize(self.project_heads(tokens, h, hd, "key").astype(jnp.float32))
    v = self.project_heads(tokens, h, hd, "value")
    e = self.param("query_embedding", nn.with_logical_partitioning(nn.initializers.normal(0.02), ("heads", "head_dim")),
                   (h, hd))
    tau = self.param("temperature", nn.with_logical_partitioning(nn.initializers.constant(TAU_INIT), ("heads",)),
                     (h,))
    q = (_normalize(q.astype(jnp.float32)) + e) * (jax.nn.softplus(tau) * np.log(cfg.window + p_count))[:, None]

    left, right = window_extents(cfg.window, causal=False)
    rel = self.param("rel_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("heads", None)),
                     (h, cfg.window))

    def allowed(qp, kp):  # a window key, or any pooled key (positions >= T)
      return ((qp - kp >= -right) & (qp - kp <= left)) | (kp >= t)

    def bias(qp, kp):  # rel_bias[h, offset] on window keys (offset = left - (i - j)), 0 on pools
      off = jnp.clip(left - (qp - kp), 0, cfg.window - 1)
      return jnp.where(kp < t, rel[jnp.arange(h)[:, None, None, None], off], 0.0)

    # The pooled keys sit after the tokens; a tile whose window runs past T reads some of
    # them as window slots, and window_key_table drops those from the appended list, so
    # each key is read once.
    key_valid = jnp.concatenate([valid, count[..., 0] > 0], axis=1)
    y = sparse_attention(q, k, v, window_key_table(cfg.block_size, left, right, t + jnp.arange(p_count)),
                         block_q=cfg.block_size, allowed=allowed, mask=M.KeyPadding(key_valid), bias=bias,
                         scale=1.0, query_chunk=cfg.query_chunk, impl=cfg.impl)
    return self.project_out(y.astype(self.compute_dtype), d_model)
