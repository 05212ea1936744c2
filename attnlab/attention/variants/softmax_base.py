"""Base classes of the softmax-attention variants: configs and the `SoftmaxAttention` module.

Shared by variants/softmax.py (mha, mqa, gqa, sliding_window, sink_window),
softmax_like.py, heads.py and routed.py, so that those family files do not import each
other. Registers nothing.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn

from attnlab.attention import masks as M
from attnlab.attention.ops.softmax import softmax_attention
from attnlab.attention.ops.softmax.reference import softmax_attention_reference
from attnlab.attention.positional import AlibiBias
from attnlab.attention.variants.base import AttentionConfig, AttentionModule, remap_cache_slots
from attnlab.attention.variants.common import POSITIONAL


@dataclasses.dataclass(frozen=True)
class SoftmaxConfig(AttentionConfig):
  """num_kv_heads: key/value heads (0 = num_heads; 1 = MQA; else GQA, must divide num_heads).
  positional: "rope" | "alibi" | "none"; rope_base: RoPE's base; impl: op implementation
  ("auto" | "reference" | "xla" | "cudnn" | "pallas")."""
  num_kv_heads: int = 0
  positional: str = "rope"
  rope_base: float = 10000.0
  impl: str = "auto"


@dataclasses.dataclass(frozen=True)
class WindowConfig(SoftmaxConfig):
  """window: w keys per query, its own position included (flash-linear-attention's and
  Mistral's convention, `variants.base.window_extents`): keys t - w + 1 .. t when
  causal; non-causal, centred: t - floor(w/2) .. t + w - 1 - floor(w/2)."""
  window: int = 64


@dataclasses.dataclass(frozen=True)
class SinkWindowConfig(WindowConfig):
  """num_sinks: the first num_sinks positions stay visible to every query."""
  num_sinks: int = 4


class SoftmaxAttention(AttentionModule):
  """Multi-head softmax attention with optional KV-head sharing, RoPE or ALiBi and a KV cache.

  Subclasses change only `structure_mask` (the positions each query may see) and, when
  that mask is a window, `cache_window` (decode then keeps a ring buffer of the window,
  `AttentionModule.window_cache`, instead of the whole sequence).
  """

  def structure_mask(self) -> M.Mask | None:
    """The variant's own mask (and-ed with the caller's)."""
    return M.Causal() if self.cfg.causal else None

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    cfg = self.cfg
    self.check_pattern(context, decode)
    if cfg.positional not in POSITIONAL:
      raise ValueError(f"positional must be one of {POSITIONAL}, got {cfg.positional!r}")
    b, t, d_model = x.shape
    hd = self.head_dim_for(d_model)
    src = x if context is None else context
    q = self.project_heads(x, cfg.num_heads, hd, "query")
    k = self.project_heads(src, self.num_kv_heads(), hd, "key", "kv_heads")
    v = self.project_heads(src, self.num_kv_heads(), hd, "value", "kv_heads")

    rope_base = cfg.rope_base if cfg.positional == "rope" else None
    q, k, v, q_offset = self.rope_and_cache(q, k, v, context=context, positions=positions,
                                            decode=decode, rope_base=rope_base)
    bias = AlibiBias(cfg.num_heads) if cfg.positional == "alibi" else None
    mask, bias, q_offset = remap_cache_slots(q_offset, M.combine(self.structure_mask(), mask), bias)
    if self.capturing():  # analysis call: the materialised weights, sown (base.attend_captured)
      y = self.attend_captured(self.attention_weights(q, k, v, mask=mask, bias=bias, q_offset=q_offset), v)
    else:
      y = self.attend(q, k, v, mask=mask, bias=bias, q_offset=q_offset)
    return self.project_out(y, d_model)

  @property
  def weights_unavailable(self):
    """None when this class's weights come from `attention_weights` (its `attend` is
    softmax's, or it defines `attention_weights` beside its own `attend`, and it keeps this
    `__call__`); else the reason (a subclass with its own `__call__` or weight map)."""
    cls = type(self)
    if cls.__call__ is not SoftmaxAttention.__call__:
      return "it does not implement the attention-weights hook (own __call__)"
    if cls.attend is not SoftmaxAttention.attend and cls.attention_weights is SoftmaxAttention.attention_weights:
      return "it does not implement the attention-weights hook (own attend without attention_weights)"
    return None

  def attention_weights(self, q, k, v, *, mask, bias, q_offset):
    """The weights `attend` applies, materialised in fp32: [B, Hq, Tq, Tk] (analysis only).
    A variant that overrides `attend` overrides this with its op's reference."""
    return softmax_attention_reference(q, k, v, mask=mask, bias=bias, q_offset=q_offset, return_weights=True)[1]

  def attend(self, q, k, v, *, mask, bias, q_offset):
    """The score -> weight -> output op: q [B, Tq, Hq, D], k/v [B, Tk, Hkv, D] -> [B, Tq, Hq, D].

    Softmax here; variants that change only the weight map override this (and may
    create parameters in it).
    """
    return softmax_attention(q, k, v, mask=mask, bias=bias, impl=self.cfg.impl, q_offset=q_offset)


__all__ = ["POSITIONAL", "SinkWindowConfig", "SoftmaxAttention", "SoftmaxConfig", "WindowConfig"]
