"""Softmax-like weight maps: quadratic attention with softmax replaced by another row map.

cog: Lv et al., 2024, "More Expressive Attention with Negative Weights" (arXiv:2411.07176):
  weights sign(p) * softmax(|p|) (ops/softmax/signed.py).
sigmoid: Ramapuram et al., 2024, "Theory, Analysis, and Best Practices for Sigmoid
  Self-Attention" (arXiv:2409.04431): sigmoid(q k^T / sqrt(d) - log n), unnormalised
  (ops/softmax/sigmoid.py).
softmax_off_by_one: Miller, 2023, "Attention Is Off By One" and gpt-oss's learned
  attention sinks (OpenAI, 2025): softmax over [scores, sink_h], sink column dropped
  (ops/softmax/sink.py).
scalable_softmax: Nakanishi, 2025, "Scalable-Softmax Is Superior for Attention"
  (arXiv:2501.19399): logits times s_h * log(n) (ops/softmax/scalable.py).
logn_scaling: Chiang & Cholak, 2022, "Overcoming a Theoretical Limitation of
  Self-Attention" (ACL), and Su, 2021 (kexue.fm/archives/8823): logits times
  log(n) / log(n_train), a fixed (not learned) SSMax factor (ops/softmax/scalable.py).
gatv2: Brody, Alon & Yahav, 2022, "How Attentive are Graph Attention Networks?" (ICLR):
  scores a_h^T LeakyReLU(q_i + k_j) instead of q_i . k_j (ops/softmax/gatv2.py).

All reuse `SoftmaxAttention`'s projections, GQA (num_kv_heads), RoPE / ALiBi and KV
cache; only the op that turns scores into weights differs (`attend`).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from attnlab.attention.ops.common import repeat_kv
from attnlab.attention.ops.softmax.gatv2 import gatv2_attention, gatv2_weights
from attnlab.attention.ops.softmax.scalable import scalable_softmax_attention, scalable_softmax_attention_reference
from attnlab.attention.ops.softmax.sigmoid import sequence_bias, sigmoid_attention, sigmoid_attention_reference
from attnlab.attention.ops.softmax.signed import signed_softmax_attention, signed_softmax_attention_reference
from attnlab.attention.ops.softmax.sink import sink_softmax_attention, sink_softmax_attention_reference
from attnlab.attention.registry import PATTERNS, register
from attnlab.attention.variants.common import heads_param
from attnlab.attention.variants.softmax_base import SoftmaxAttention, SoftmaxConfig


class WeightMapAttention(SoftmaxAttention):
  """SoftmaxAttention (projections, GQA, RoPE/ALiBi, KV cache, structure masks) with the
  score -> weight map replaced: subclasses override `SoftmaxAttention.attend`."""


# ---- cog ---------------------------------------------------------------------------

@register("cog", family="softmax_like", config=SoftmaxConfig, patterns=PATTERNS,
          paper="Lv et al., 2024 (Cog Attention)", cost=("T^2", "T"))
class CogAttention(WeightMapAttention):
  """Cog attention: signed weights sign(p) * exp(|p|) / sum exp(|p|), p = q k^T / sqrt(d).

  Lv et al., 2024, "More Expressive Attention with Negative Weights", Sec. 3 (as in the
  official code, trestad/CogAttn). The paper's Cogformer keeps softmax attention in the
  first and last layers; that is a model-level choice (mix `mha` and `cog` per layer).
  impl: "auto"/"xla" (blocked, masked tiles skipped, O(T * block) memory) or "reference".
  """

  weight_kind = "signed"

  def attend(self, q, k, v, *, mask, bias, q_offset):
    return signed_softmax_attention(q, k, v, mask=mask, bias=bias, q_offset=q_offset, impl=self.cfg.impl)

  def attention_weights(self, q, k, v, *, mask, bias, q_offset):
    return signed_softmax_attention_reference(q, k, v, mask=mask, bias=bias, q_offset=q_offset,
                                              return_weights=True)[1]


# ---- sigmoid -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SigmoidConfig(SoftmaxConfig):
  """bias_n: n in the bias b = -log(n). 0 = the number of key positions attended: the
  sequence length in a full pass, the cache capacity (max length) when decoding, the
  context length in cross-attention. Set it to the training length to keep b fixed when
  decoding with a longer cache."""
  bias_n: int = 0


@register("sigmoid", family="softmax_like", config=SigmoidConfig, patterns=PATTERNS,
          paper="Ramapuram et al., 2024", cost=("T^2", "T"))
class SigmoidAttention(WeightMapAttention):
  """Sigmoid attention: sigmoid(q k^T / sqrt(d) + b) v with b = -log(n), no normalisation.

  Ramapuram et al., 2024, "Theory, Analysis, and Best Practices for Sigmoid
  Self-Attention", Eq. (2) with the b = -log(n) bias of Sec. 3.2. (The paper's other
  stabilisers, hybrid-norm and LayerScale, live outside the attention layer.)
  """

  weight_kind = "nonnegative"

  def attend(self, q, k, v, *, mask, bias, q_offset):
    n = self.cfg.bias_n or k.shape[1]
    return sigmoid_attention(q, k, v, mask=mask, bias=bias, q_offset=q_offset, seq_bias=sequence_bias(n),
                             impl=self.cfg.impl)

  def attention_weights(self, q, k, v, *, mask, bias, q_offset):
    n = self.cfg.bias_n or k.shape[1]
    return sigmoid_attention_reference(q, k, v, mask=mask, bias=bias, q_offset=q_offset,
                                       seq_bias=sequence_bias(n), return_weights=True)[1]


# ---- softmax_off_by_one ------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SinkSoftmaxConfig(SoftmaxConfig):
  """sink_init: initial value of the learned per-head sink logit (0 = Miller's softmax_1,
  i.e. "+1" in the denominator)."""
  sink_init: float = 0.0


@register("softmax_off_by_one", family="softmax_like", config=SinkSoftmaxConfig, patterns=PATTERNS,
          paper="Miller, 2023; OpenAI, 2025 (gpt-oss sinks)", cost=("T^2", "T"))
class SinkSoftmaxAttention(WeightMapAttention):
  """Softmax with a learned per-head sink logit: w = exp(s) / (exp(sink_h) + sum exp(s)).

  Miller, 2023, "Attention Is Off By One" (softmax_1, sink = 0) with the sink learned per
  head as in gpt-oss. Parameter `sinks` [num_heads].
  """

  weight_kind = "nonnegative"  # rows sum to less than 1 (the sink takes the rest)

  def attend(self, q, k, v, *, mask, bias, q_offset):
    sinks = heads_param(self, "sinks", self.cfg.num_heads, self.cfg.sink_init)
    return sink_softmax_attention(q, k, v, sinks, mask=mask, bias=bias, q_offset=q_offset, impl=self.cfg.impl)

  def attention_weights(self, q, k, v, *, mask, bias, q_offset):
    sinks = heads_param(self, "sinks", self.cfg.num_heads, self.cfg.sink_init)
    return sink_softmax_attention_reference(q, k, v, sinks, mask=mask, bias=bias, q_offset=q_offset,
                                            return_weights=True)[1]


# ---- scalable_softmax -----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ScalableSoftmaxConfig(SoftmaxConfig):
  """s_init: initial per-head scale s (0.43, the value public reimplementations take from
  the paper); ssmax_bias: also learn b_h in (s_h log n + b_h) (the paper's "with bias"
  variant, which it reports hurts length generalisation)."""
  s_init: float = 0.43
  ssmax_bias: bool = False


@register("scalable_softmax", family="softmax_like", config=ScalableSoftmaxConfig, patterns=PATTERNS,
          paper="Nakanishi, 2025 (SSMax)", cost=("T^2", "T"))
class ScalableSoftmaxAttention(WeightMapAttention):
  """Scalable-Softmax: softmax((s_h log n) q k^T / sqrt(d)), n = keys visible to the query.

  Nakanishi, 2025, "Scalable-Softmax Is Superior for Attention", Eq. (3). Causal: n =
  position + 1; non-causal: n = number of keys (a padding mask reduces it). Parameters
  `ssmax_s` (and `ssmax_b`) [num_heads]. Runs as softmax_attention on scaled queries, so
  cfg.impl selects the softmax implementation.
  """

  def attend(self, q, k, v, *, mask, bias, q_offset):
    cfg = self.cfg
    s = heads_param(self, "ssmax_s", cfg.num_heads, cfg.s_init)
    b = heads_param(self, "ssmax_b", cfg.num_heads, 0.0) if cfg.ssmax_bias else None
    return scalable_softmax_attention(q, k, v, s, b=b, mask=mask, bias=bias, q_offset=q_offset, impl=cfg.impl)

  def attention_weights(self, q, k, v, *, mask, bias, q_offset):
    cfg = self.cfg
    s = heads_param(self, "ssmax_s", cfg.num_heads, cfg.s_init)
    b = heads_param(self, "ssmax_b", cfg.num_heads, 0.0) if cfg.ssmax_bias else None
    return scalable_softmax_attention_reference(q, k, v, s, b=b, mask=mask, bias=bias, q_offset=q_offset,
                                                return_weights=True)[1]


# ---- logn_scaling -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LognScalingConfig(SoftmaxConfig):
  """n_train: the training length n_train in the factor log(n) / log(n_train) (>= 2)."""
  n_train: int = 512

  def __post_init__(self):
    super().__post_init__()
    if isinstance(self.n_train, bool) or not isinstance(self.n_train, int) or self.n_train < 2:
      raise ValueError(f"logn_scaling: n_train must be an integer >= 2, got {self.n_train!r}")


@register("logn_scaling", family="softmax_like", config=LognScalingConfig, patterns=PATTERNS,
          paper="Chiang & Cholak, 2022; Su, 2021 (log-n scaling)", cost=("T^2", "T"))
class LognScalingAttention(WeightMapAttention):
  """Entropy-aware log-n scaling: softmax((log n_i / log n_train) q k^T / sqrt(d)), n_i the
  keys query i sees (causal: position + 1; padding reduces it).

  Chiang & Cholak, 2022, Sec. 5 (scale logits by log n) in Su's normalised form log_{n_train} n,
  so that at n = n_train it is plain softmax attention. No clamp: for n < n_train the
  logits are scaled down (Su's form; some LLM reimplementations use max(1, .)). This is
  SSMax with a fixed per-head s = 1 / log(n_train) and no parameters, so it runs through
  `scalable_softmax_attention` (cfg.impl selects the softmax implementation).
  """

  def _s(self):
    """s = 1 / log(n_train) for every query head, [num_heads]."""
    return jnp.full((self.cfg.num_heads,), 1.0 / np.log(self.cfg.n_train), jnp.float32)

  def attend(self, q, k, v, *, mask, bias, q_offset):
    return scalable_softmax_attention(q, k, v, self._s(), mask=mask, bias=bias, q_offset=q_offset,
                                      impl=self.cfg.impl)

  def attention_weights(self, q, k, v, *, mask, bias, q_offset):
    return scalable_softmax_attention_reference(q, k, v, self._s(), mask=mask, bias=bias, q_offset=q_offset,
                                                return_weights=True)[1]


# ---- gatv2 -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class GATv2Config(SoftmaxConfig):
  """negative_slope: LeakyReLU's slope (paper: 0.2); q_chunk: queries per tile (memory
  knob, no effect on the result); positional: "none" (default) or "alibi" (an additive
  bias; "rope" raises: it is a dot-product encoding and GATv2's score is not a product)."""
  positional: str = "none"
  negative_slope: float = 0.2
  q_chunk: int = 64

  def __post_init__(self):
    super().__post_init__()
    if self.impl not in ("auto", "xla"):
      raise ValueError(f"gatv2: impl must be 'auto' or 'xla' (its one form), got {self.impl!r}")
    if self.positional == "rope":
      raise ValueError("gatv2: positional='rope' is a dot-product encoding; use 'none' or 'alibi'")
    if isinstance(self.q_chunk, bool) or not isinstance(self.q_chunk, int) or self.q_chunk < 1:
      raise ValueError(f"gatv2: q_chunk must be an integer >= 1, got {self.q_chunk!r}")
    if not 0.0 <= self.negative_slope < 1.0:
      raise ValueError(f"gatv2: negative_slope must be in [0, 1), got {self.negative_slope!r}")


@register("gatv2", family="softmax_like", config=GATv2Config, patterns=PATTERNS,
          paper="Brody, Alon & Yahav, 2022 (GATv2)", cost=("T^2", "T"))
class GATv2Attention(WeightMapAttention):
  """GATv2 attention: e_ij = a_h^T LeakyReLU(q_i + k_j), softmax over the allowed j.

  Brody et al., 2022, Eq. 7, with the graph's neighbourhoods replaced by the sequence's
  mask (causal / padding) and W [x_i || x_j] split into the query and key projections
  (W_q x_i + W_k x_j). Parameter `gatv2_a` [num_heads, head_dim]. Departure: the paper
  shares one W for values and keys (it sums W x_j); we keep a separate value projection, as
  an attention layer does. cfg.impl does not apply (one XLA form, query-tiled); the
  analysis hook materialises the weights (`gatv2_weights`).
  """

  def _a(self, head_dim):
    """The per-head score vector a [num_heads, head_dim]."""
    init = nn.with_logical_partitioning(nn.initializers.normal(head_dim ** -0.5), ("heads", "head_dim"))
    return self.param("gatv2_a", init, (self.cfg.num_heads, head_dim))

  def attend(self, q, k, v, *, mask, bias, q_offset):
    return gatv2_attention(q, k, v, self._a(q.shape[-1]), mask=mask, bias=bias, q_offset=q_offset,
                           negative_slope=self.cfg.negative_slope, q_chunk=self.cfg.q_chunk)

  def attention_weights(self, q, k, v, *, mask, bias, q_offset):
    k = repeat_kv(k.astype(jnp.float32), q.shape[2])
    return gatv2_weights(q.astype(jnp.float32), k, self._a(q.shape[-1]), mask=mask, bias=bias,
                         q_offset=q_offset, negative_slope=self.cfg.negative_slope)
