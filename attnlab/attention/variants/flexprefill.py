"""flexprefill: FlexPrefill's training-free query-aware block selection (Lai et al., 2025,
"FlexPrefill: A Context-Aware Sparse Attention Mechanism for Efficient Long-Sequence
Inference"): per head, a pooled block-attention estimate, then per query block the fewest
key blocks whose estimated mass reaches gamma, exact softmax over them. The op and its
departures (no vertical-slash heads) are in `ops.sparse.flexprefill`.

Causal self-attention (prefill) only: the estimate pools whole query blocks, so there is
no decode form. Cost: the estimate is a [T/b, T/b] block matrix per head (O(T^2 / b^2)),
the attention O(T * max_blocks * b): quadratic in T through the estimate, with a small
constant (every score of the [T, T] matrix is never formed).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn

from attnlab.attention.ops.sparse.flexprefill import flexprefill_attention, flexprefill_attention_reference
from attnlab.attention.registry import register
from attnlab.attention.variants.base import AttentionConfig, AttentionModule
from attnlab.attention.variants.common import attend_or_capture, selection_qkv


@dataclasses.dataclass(frozen=True)
class FlexPrefillConfig(AttentionConfig):
  """block_size: query and key block; gamma: the estimated attention mass each query block's
  selection must reach (top-p; 1.0 keeps every past block, up to max_blocks); max_blocks:
  the most key blocks a query block keeps (its diagonal included); positional: "rope" |
  "none"; rope_base. Queries run in tiles of one query block (`ops.sparse.flexprefill`)."""
  block_size: int = 64
  gamma: float = 0.9
  max_blocks: int = 16
  positional: str = "rope"
  rope_base: float = 10000.0
  POSITIVE_SIZES = AttentionConfig.POSITIVE_SIZES + ("max_blocks",)

  def __post_init__(self):
    super().__post_init__()
    if not 0.0 < self.gamma <= 1.0:
      raise ValueError(f"flexprefill: gamma must be in (0, 1], got {self.gamma!r}")
    if self.positional not in ("rope", "none"):
      raise ValueError(f"flexprefill: positional must be 'rope' or 'none', got {self.positional!r}")


@register("flexprefill", family="routed", config=FlexPrefillConfig, patterns=("causal-self",),
          paper="Lai et al., 2025 (FlexPrefill, query-aware top-p block selection)",
          cost=("T^2/b^2 + T*k*b", "T"))
class FlexPrefillAttention(AttentionModule):
  """Pooled block estimate -> cumulative-mass (top-p) block selection -> exact block-sparse softmax."""
  weights_unavailable = None

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    """x [B, T, d_model] -> [B, T, d_model] (causal self only)."""
    self.check_pattern(context, decode)
    cfg = self.cfg
    q, k, v, _ = selection_qkv(self, x, mask=mask, positions=positions, decode=False, pattern="the block selection")
    kw = dict(block_size=cfg.block_size, gamma=cfg.gamma, max_blocks=cfg.max_blocks)
    op = lambda vv, impl: (flexprefill_attention_reference if impl == "reference" else flexprefill_attention)(  # noqa: E731
        q, k, vv, **kw)
    y = attend_or_capture(self, op, v)
    return self.project_out(y, x.shape[-1])
