"""superlinear: span search + span attention, O(L^1.5) causal attention.

The sequence is cut into spans of s ~ sqrt(L) keys. Span search: each query scores one
representative per past span (the mean of the span's keys, post-RoPE) and keeps its
top_k best spans. Span attention: one softmax over the union of the kept spans and the
query's local span (causal inside it). Per query that is L / s representative scores plus
(top_k + 1) s key scores, both O(sqrt(L)), so the scored pairs grow as L^1.5 in all
(tests/attention/test_zoo3_b.py counts them and fits the exponent).

The selection is discrete: no gradient flows through the span search, only through the
kept scores. The local span is the query's own aligned span (keys from its start to the
query), not a sliding window, so span search and span attention share one tiling; with
top_k >= the number of spans every past key is kept and the layer is dense causal
attention (the reduction test). The search and the attention are MoBA's block-selected
attention (`ops.sparse.block_select.moba_attention`, Lu et al., 2025) run at a
length-dependent block size s = ceil(sqrt(L)) with top_k + 1 blocks: the span length is
what makes the cost superlinear rather than quadratic (MoBA's fixed block gives
O(L^2 / b)). In a decode step L is the cache length, so a decode pass with a cache of the
sequence's length equals the full pass.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn

from attnlab.attention.ops.sparse import block_select as BS
from attnlab.attention.registry import register
from attnlab.attention.variants.base import AttentionConfig, AttentionModule
from attnlab.attention.variants.common import attend_or_capture, selection_qkv


@dataclasses.dataclass(frozen=True)
class SuperlinearConfig(AttentionConfig):
  """span: keys per span (0 = ceil(sqrt(L)) at sequence or cache length L); top_k: spans
  kept by the search besides the local one; positional: "rope" | "none"; rope_base;
  q_chunk: queries per tile of the blocked op (memory knob)."""
  span: int = 0
  top_k: int = 2
  positional: str = "rope"
  rope_base: float = 10000.0
  q_chunk: int = 128
  POSITIVE_SIZES = AttentionConfig.POSITIVE_SIZES + ("top_k", "q_chunk")

  def __post_init__(self):
    super().__post_init__()
    if isinstance(self.span, bool) or not isinstance(self.span, int) or self.span < 0:
      raise ValueError(f"superlinear: span must be an integer >= 0 (0 = sqrt(L)), got {self.span!r}")
    if self.positional not in ("rope", "none"):
      raise ValueError(f"superlinear: positional must be 'rope' or 'none', got {self.positional!r}")


@register("superlinear", family="routed", config=SuperlinearConfig, patterns=("causal-self", "decode"),
          paper="span search + span attention (spans of sqrt(L), top-k spans + the local span)",
          cost=("T^1.5", "T"))
class SuperlinearAttention(AttentionModule):
  """Top-k span search over sqrt(L) spans, one softmax over the kept spans and the local span."""
  weights_unavailable = None

  def span_for(self, length: int) -> int:
    """The span length at sequence (or cache) length `length`: cfg.span, or ceil(sqrt(length))."""
    return self.cfg.span or max(1, math.isqrt(max(length - 1, 0)) + 1)

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    """x [B, T, d_model] -> [B, T, d_model] (causal self; decode reads the KV cache)."""
    self.check_pattern(context, decode)
    cfg = self.cfg
    q, k, v, q_offset = selection_qkv(self, x, mask=mask, positions=positions, decode=decode, pattern="the span search")
    span = self.span_for(k.shape[1])
    y = attend_or_capture(self, lambda vv, impl: BS.moba_attention(
        q, k, vv, block_size=span, top_k=cfg.top_k + 1, q_offset=q_offset, q_chunk=cfg.q_chunk, impl=impl),
        v, decode=decode)
    return self.project_out(y, x.shape[-1])
