"""sink_calibrated: softmax attention with ACT's post-softmax sink calibration.

Yu et al., 2024, "Unveiling and Harnessing Hidden Attention Sinks" (ACT): the softmax
weights of each head are edited after the softmax (ops/softmax/sink_calibration.py:
sinks, keys whose mean received attention exceeds `threshold`, keep `factor` of their
weight; the rest goes to the other visible keys in proportion), then applied to V.

Why a variant and not an option of the blocked path: the sink test needs each key's
attention summed over all queries before any output row is formed, a column statistic of
the full [Tq, Tk] matrix that the one-pass online softmax never has. So this is mha
(SoftmaxAttention's projections, GQA, RoPE/ALiBi, structure masks) with its `attend`
replaced by the calibrated reference weights; the same op edits any softmax-family
variant's materialised weights (its `attention_weights`). Cost: dense, T^2 compute and
T^2 memory. Self-attention only: no decode (a step's sink test would need the attention of
later queries), and cross-attention is not declared (untested against the oracle).
"""

from __future__ import annotations

import dataclasses

from attnlab.attention.ops.softmax.common import weighted_values
from attnlab.attention.ops.softmax.reference import softmax_attention_reference
from attnlab.attention.ops.softmax.sink_calibration import calibrate_sinks
from attnlab.attention.registry import register
from attnlab.attention.variants.softmax_base import SoftmaxAttention, SoftmaxConfig


@dataclasses.dataclass(frozen=True)
class SinkCalibratedConfig(SoftmaxConfig):
  """threshold: a key is a sink when its mean received attention exceeds this (above 1:
  never, plain mha); factor: beta, the share of a sink's weight it keeps (in [0, 1])."""
  threshold: float = 0.3
  factor: float = 0.5

  def __post_init__(self):
    super().__post_init__()
    if not 0.0 <= self.factor <= 1.0:
      raise ValueError(f"sink_calibrated: factor must be in [0, 1], got {self.factor!r}")
    if self.threshold < 0.0:
      raise ValueError(f"sink_calibrated: threshold must be >= 0, got {self.threshold!r}")


@register("sink_calibrated", family="softmax_like", config=SinkCalibratedConfig,
          patterns=("causal-self", "noncausal-self"),
          paper="Yu et al., 2024 (ACT sink calibration)", cost=("T^2", "T^2"))
class SinkCalibratedAttention(SoftmaxAttention):
  """mha whose softmax weights are sink-calibrated before they meet V (see the module
  docstring); no parameters beyond mha's."""

  def attention_weights(self, q, k, v, *, mask, bias, q_offset):
    w = softmax_attention_reference(q, k, v, mask=mask, bias=bias, q_offset=q_offset, return_weights=True)[1]
    allowed = True if mask is None else mask.dense(q.shape[1], k.shape[1], q_offset)[:, None]
    return calibrate_sinks(w, allowed, threshold=self.cfg.threshold, factor=self.cfg.factor)[0]

  def attend(self, q, k, v, *, mask, bias, q_offset):
    return weighted_values(self.attention_weights(q, k, v, mask=mask, bias=bias, q_offset=q_offset), v, q.dtype)


__all__ = ["SinkCalibratedAttention", "SinkCalibratedConfig"]
