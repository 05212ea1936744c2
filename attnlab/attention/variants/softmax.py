"""Dense softmax attention and its masked/head-sharing forms.

mha: Vaswani et al., 2017, "Attention Is All You Need".
mqa: Shazeer, 2019, "Fast Transformer Decoding: One Write-Head is All You Need".
gqa: Ainslie et al., 2023, "GQA: Training Generalized Multi-Query Transformer Models".
sliding_window: local attention as in Longformer / Mistral (Beltagy et al., 2020; Jiang et al., 2023).
sink_window: StreamingLLM (Xiao et al., 2024, "Efficient Streaming Language Models with
  Attention Sinks"): a few always-visible sink tokens plus a sliding window.

The configs and the `SoftmaxAttention` module they share with other families live in
variants/softmax_base.py.
"""

from __future__ import annotations

from attnlab.attention import masks as M
from attnlab.attention.registry import PATTERNS, register
from attnlab.attention.state_size import kv_cache, window_kv
from attnlab.attention.variants.base import window_extents
from attnlab.attention.variants.softmax_base import SinkWindowConfig, SoftmaxAttention, SoftmaxConfig, WindowConfig

register("mha", family="softmax", config=SoftmaxConfig, patterns=PATTERNS,
         paper="Vaswani et al., 2017", cost=("T^2", "T"), state_size=kv_cache)(SoftmaxAttention)
register("mqa", family="softmax", config=SoftmaxConfig, patterns=PATTERNS,
         paper="Shazeer, 2019", num_kv_heads=1, cost=("T^2", "T"), state_size=kv_cache)(SoftmaxAttention)
register("gqa", family="softmax", config=SoftmaxConfig, patterns=PATTERNS,
         paper="Ainslie et al., 2023", num_kv_heads=2, cost=("T^2", "T"), state_size=kv_cache)(SoftmaxAttention)


def sliding_window_state_size(cfg: WindowConfig, d_model: int):
  """The decode ring buffer: the window's `left` earlier keys and values [H_kv, D]."""
  return window_kv(cfg, d_model, window_extents(cfg.window, cfg.causal)[0])


def sink_window_state_size(cfg: SinkWindowConfig, d_model: int):
  """The window's ring buffer (window - 1 keys and values) plus the num_sinks sink keys and values."""
  return window_kv(cfg, d_model, window_extents(cfg.window, True)[0], cfg.num_sinks)


@register("sliding_window", family="local", config=WindowConfig, cost=("T*w", "T"),
          state_size=sliding_window_state_size,
          patterns=("causal-self", "noncausal-self", "decode"), paper="Beltagy et al., 2020")
class SlidingWindowAttention(SoftmaxAttention):
  """Softmax attention restricted to a sliding window of keys."""

  def structure_mask(self):
    left, right = window_extents(self.cfg.window, self.cfg.causal)
    return M.SlidingWindow(left=left, right=right)

  def cache_window(self):
    """Decode keeps the window's `left` keys in a ring buffer: O(w) per token."""
    return window_extents(self.cfg.window, self.cfg.causal)[0], 0


@register("sink_window", family="local", config=SinkWindowConfig, cost=("T*(w+s)", "T"),
          state_size=sink_window_state_size,
          patterns=("causal-self", "decode"), paper="Xiao et al., 2024 (StreamingLLM)")
class SinkWindowAttention(SoftmaxAttention):
  """Sliding window plus `num_sinks` always-visible initial tokens (causal)."""

  def structure_mask(self):
    left, _ = window_extents(self.cfg.window, True)
    return (M.SlidingWindow(left=left, right=0) | M.Sinks(self.cfg.num_sinks)) & M.Causal()

  def cache_window(self):
    """Decode keeps the window in a ring buffer and the sinks apart: O(w + s) per token."""
    return window_extents(self.cfg.window, True)[0], self.cfg.num_sinks
