"""rcmha: softmax attention over depthwise-convolved Q, K, V with a learned relative-position bias.

Sugiharto et al., 2023, "RCMHA: Relative Convolutional Multi-Head Attention for Natural
Language Modelling" (arXiv:2308.03429): each of the projected queries, keys and values
goes through a depthwise 1-D convolution along the sequence before the scores, and the
scores carry a relative-position term. Here:

  q~_t = sum_{i<k} w^q_i ⊙ q_{t-i}   (likewise k~, v~; per head and channel, causal: x_{t<0} = 0)
  y_i  = sum_j softmax_j(q~_i . k~_j / sqrt(D) + b_h[clip(j - i, -K, K)]) v~_j

Departures from the paper, and why: the convolution is causal (taps on the current and
the k - 1 previous positions, also in non-causal mode) so that the same layer decodes
token by token; the relative term is a learned scalar per head and clipped distance
(Raffel et al.'s / Shaw et al.'s clipped table) rather than the paper's Transformer-XL
content-position term. The taps start as the identity (w_0 = 1, others 0) and the table at
zero, so at init the layer is mha without RoPE (the reduction the tests check).

Cost: the learned bias enters the blocked softmax op as an array [1, H, Tq, Tk] (the op's
callable, per-tile bias is treated as a constant and would not train the table), so the
fwd+bwd program holds O(H T^2) bias and bias-gradient memory; compute is T^2 as mha's.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnlab.attention import masks as M
from attnlab.attention.ops.softmax import softmax_attention
from attnlab.attention.ops.softmax.reference import softmax_attention_reference
from attnlab.attention.registry import register
from attnlab.attention.variants.base import AttentionConfig, AttentionModule


@dataclasses.dataclass(frozen=True)
class RCMHAConfig(AttentionConfig):
  """kernel_size: taps k of the causal depthwise convolutions (1 = no mixing across
  positions); max_distance: K, relative distances clipped to [-K, K] (2K + 1 learned
  biases per head); impl: the softmax op's implementation ("auto" | "xla" | "reference" ...)."""
  kernel_size: int = 3
  max_distance: int = 16
  impl: str = "auto"

  POSITIVE_SIZES = AttentionConfig.POSITIVE_SIZES + ("kernel_size", "max_distance")


def causal_depthwise_conv(x, taps, state=None):
  """y_t = sum_i taps[i] ⊙ x_{t-i}, x_{t<0} taken from `state` (zeros when None).

  x [B, T, H, D]; taps [k, H, D]; state [B, k-1, H, D] (the k - 1 inputs before x).
  Returns (y [B, T, H, D] in fp32, the new state: the last k - 1 of [state, x])."""
  k, t = taps.shape[0], x.shape[1]
  x = x.astype(jnp.float32)
  if state is None:
    state = jnp.zeros((x.shape[0], k - 1) + x.shape[2:], jnp.float32)
  padded = jnp.concatenate([state.astype(jnp.float32), x], axis=1)  # padded[:, k-1+t] = x_t
  # Tap i reads x_{t-i}, the slice starting at k-1-i.
  y = sum(taps[i].astype(jnp.float32) * jax.lax.dynamic_slice_in_dim(padded, k - 1 - i, t, axis=1)
          for i in range(k))
  return y, padded[:, t:]


def relative_bias(table, q_pos, k_pos):
  """The clipped relative-position bias: table [H, 2K+1], q_pos [Tq], k_pos [Tk] ->
  [1, H, Tq, Tk] with entry table[h, clip(k_pos - q_pos, -K, K) + K]."""
  r = (table.shape[1] - 1) // 2
  idx = jnp.clip(k_pos[None, :] - q_pos[:, None], -r, r) + r
  return table[:, idx][None]


@register("rcmha", family="softmax", config=RCMHAConfig, patterns=("causal-self", "noncausal-self", "decode"),
          paper="Sugiharto et al., 2023 (RCMHA)", cost=("T^2", "T^2"))
class RCMHAAttention(AttentionModule):
  """Relative convolutional MHA (see the module docstring for the definition, departures
  and cost). Parameters: query/key/value/out projections, `conv_{query,key,value}` taps
  [k, H, D] and `rel_bias` [H, 2K+1]. Decode keeps the last k - 1 projected q, k, v per
  convolution and a KV cache of the convolved keys and values."""

  weights_unavailable = None

  def _conv(self, name, x, decode):
    cfg = self.cfg
    shape = (cfg.kernel_size,) + x.shape[2:]
    identity = lambda key, s: jnp.zeros(s, jnp.float32).at[0].set(1.0)  # noqa: E731
    taps = self.param(f"conv_{name}", nn.with_logical_partitioning(identity, (None, "heads", "head_dim")), shape)
    if not decode:
      return causal_depthwise_conv(x, taps)[0]
    is_init = not self.has_variable("cache", f"conv_{name}_state")
    state = self.variable("cache", f"conv_{name}_state", jnp.zeros,
                          (x.shape[0], cfg.kernel_size - 1) + x.shape[2:], jnp.float32)
    y, new_state = causal_depthwise_conv(x, taps, state.value)
    if not is_init:
      state.value = new_state
    return y

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    cfg = self.cfg
    self.check_pattern(context, decode)
    if positions is not None:
      raise ValueError("rcmha: positions are not taken (the relative bias uses sequence order)")
    b, t, d_model = x.shape
    hd = self.head_dim_for(d_model)
    q, k, v = (self._conv(n, self.project_heads(x, cfg.num_heads, hd, n), decode) for n in ("query", "key", "value"))
    dtype = self.compute_dtype
    q, k, v = q.astype(dtype), k.astype(dtype), v.astype(dtype)
    q_offset = 0
    if decode:
      k, v, q_offset = self.kv_cache(k, v)
    init = nn.with_logical_partitioning(nn.initializers.zeros, ("heads", None))
    table = self.param("rel_bias", init, (cfg.num_heads, 2 * cfg.max_distance + 1), jnp.float32)
    bias = relative_bias(table, q_offset + jnp.arange(t), jnp.arange(k.shape[1]))
    mask = M.combine(M.Causal() if cfg.causal else None, mask)
    if self.capturing() and not decode:
      w = softmax_attention_reference(q, k, v, mask=mask, bias=bias, return_weights=True)[1]
      y = self.attend_captured(w, v)
    else:
      y = softmax_attention(q, k, v, mask=mask, bias=bias, q_offset=q_offset, impl=cfg.impl)
    return self.project_out(y, d_model)


__all__ = ["RCMHAAttention", "RCMHAConfig", "causal_depthwise_conv", "relative_bias"]
