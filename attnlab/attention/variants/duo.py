"""DuoAttention (family "routed"): Xiao et al., 2024, "DuoAttention: Efficient Long-Context
LLM Inference with Retrieval and Streaming Heads". A per-head gate alpha_h in [0, 1] mixes
full causal attention with sink + recent-window (streaming) attention; the deployment mode
gives each head one half. Cost O(T^2) (the full half of every head), memory O(T).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from attnlab.attention import masks as M
from attnlab.attention.ops.softmax import softmax_attention
from attnlab.attention.positional import AlibiBias
from attnlab.attention.registry import register
from attnlab.attention.variants.base import AttentionModule, window_extents
from attnlab.attention.variants.common import attend_or_capture, check_positional
from attnlab.attention.variants.softmax_base import SinkWindowConfig


@dataclasses.dataclass(frozen=True)
class DuoConfig(SinkWindowConfig):
  """Streaming half: `num_sinks` sink tokens + a window of the `window` most recent keys,
  the query's own included (`variants.base.window_extents`).
  alpha_init: initial gate of every head (the paper starts at 1 = full attention);
  hard_assign_threshold: < 0 trains/uses the soft mixture; >= 0 is the inference mode:
  heads with alpha >= threshold use full attention only, the rest streaming only.
  streaming_heads: the deployment mode: a static tuple of query heads that run streaming
  attention only while the others run full attention only (the gate is not read), so
  each head computes one half; `duo_streaming_heads(alpha, threshold)` turns trained
  gates into this tuple. Empty (default): the gate decides.
  Also num_kv_heads, positional ("rope" | "alibi" | "none"), rope_base, impl (softmax op)."""
  alpha_init: float = 1.0
  hard_assign_threshold: float = -1.0
  streaming_heads: tuple = ()


@register("duo", family="routed", config=DuoConfig, cost=("T^2", "T"),
          patterns=("causal-self", "decode"), paper="Xiao et al., 2024 (DuoAttention)")
class DuoAttention(AttentionModule):
  """DuoAttention: y_h = alpha_h * full_h + (1 - alpha_h) * streaming_h, alpha = clip(param, 0, 1)
  (Xiao et al., 2024, Sec. 3.2, eq. 1). Both halves are softmax attention through
  `ops.softmax_attention` (impl=cfg.impl); the streaming half's mask is
  (SlidingWindow(window) | Sinks(num_sinks)) & Causal. With hard_assign_threshold >= 0 the
  gate is a 0/1 step, but both halves are still computed for every head (the split is a
  traced parameter). With a static `streaming_heads` tuple (the paper's deployment) each
  head computes only its half: streaming heads visit only the window and sink tiles of
  the blocked softmax. Decoding keeps the full KV cache for every head.

  Analysis hook (not when decoding): alpha_h P_full,h + (1 - alpha_h) P_stream,h (each
  head's one half in the static mode), both softmax matrices from the reference op, read
  off with the identity as values (`ops.implied`): a convex mixture of probability rows.
  """
  weights_unavailable = None

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    self.check_pattern(context, decode)
    cfg = self.cfg
    check_positional(cfg)
    b, t, d_model = x.shape
    hd = self.head_dim_for(d_model)
    hkv = self.num_kv_heads()
    q = self.project_heads(x, cfg.num_heads, hd, "query")
    k = self.project_heads(x, hkv, hd, "key", "kv_heads")
    v = self.project_heads(x, hkv, hd, "value", "kv_heads")
    q, k, v, q_offset = self.rope_and_cache(
        q, k, v, context=None, positions=positions, decode=decode,
        rope_base=cfg.rope_base if cfg.positional == "rope" else None)
    streaming = (M.SlidingWindow(left=window_extents(cfg.window, True)[0], right=0)
                 | M.Sinks(cfg.num_sinks)) & M.Causal()

    def attend(structure, heads, vals, impl):  # softmax attention of query heads `heads` (all: None)
      qh, kh, vh = q, k, vals
      if heads is not None:
        kv = heads // (cfg.num_heads // hkv)  # each query head's kv head
        qh, kh, vh = q[:, :, heads], k[:, :, kv], vals[:, :, kv]
      bias = AlibiBias(cfg.num_heads, heads) if cfg.positional == "alibi" else None
      return softmax_attention(qh, kh, vh, mask=M.combine(structure, mask), bias=bias, impl=impl,
                               q_offset=q_offset)

    alpha = self.param("alpha", nn.with_logical_partitioning(nn.initializers.constant(cfg.alpha_init), ("heads",)),
                       (cfg.num_heads,), jnp.float32)
    if cfg.streaming_heads:
      stream_heads = self.static_split()
      full_heads = np.setdiff1d(np.arange(cfg.num_heads), stream_heads)
      order = np.argsort(np.concatenate([stream_heads, full_heads]))

      def mixed(vals, impl):  # each head computes only its half
        parts = [attend(streaming, stream_heads, vals, impl)]
        parts += [attend(M.Causal(), full_heads, vals, impl)] if len(full_heads) else []
        return jnp.concatenate(parts, axis=2)[:, :, order]
    else:
      gate = self.gate(alpha)[:, None]  # [H, 1]

      def mixed(vals, impl):  # eq. 1: alpha_h full_h + (1 - alpha_h) streaming_h
        y_full, y_stream = attend(M.Causal(), None, vals, impl), attend(streaming, None, vals, impl)
        y = gate * y_full.astype(jnp.float32) + (1.0 - gate) * y_stream.astype(jnp.float32)
        return y.astype(y_full.dtype)
    return self.project_out(attend_or_capture(self, mixed, v, impl=cfg.impl, decode=decode), d_model)

  def static_split(self):
    """cfg.streaming_heads as a sorted int array, checked against num_heads."""
    heads = np.unique(np.asarray(self.cfg.streaming_heads, int))
    if heads.min() < 0 or heads.max() >= self.cfg.num_heads:
      raise ValueError(f"streaming_heads must be head indices in [0, {self.cfg.num_heads}), "
                       f"got {tuple(self.cfg.streaming_heads)}")
    return heads

  def gate(self, alpha):
    """alpha param [H] -> mixing weight in [0, 1] (clipped; a 0/1 step in inference mode)."""
    a = jnp.clip(alpha, 0.0, 1.0)
    if self.cfg.hard_assign_threshold >= 0:
      return (a >= self.cfg.hard_assign_threshold).astype(jnp.float32)
    return a


def duo_streaming_heads(alpha, threshold: float = 0.5) -> tuple:
  """Trained DuoAttention gates alpha [H] (the "alpha" param) -> the static `streaming_heads`
  tuple of the deployment mode: the heads with clip(alpha, 0, 1) < threshold."""
  return tuple(int(h) for h in np.flatnonzero(np.clip(np.asarray(alpha), 0.0, 1.0) < threshold))
