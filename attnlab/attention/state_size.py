"""Decode-state sizes: how many floats one layer carries between decode steps.

Zoology / Based (Arora et al., 2024) compare recurrent models by their "recurrent state
size": the floats one layer keeps per sequence while generating. A variant declares its
formula at registration (`registry.register(..., state_size=fn)`), `fn(cfg, d_model) ->
StateSize`, and `attnlab list` prints it. A recurrent variant's state is a constant
(`per_token == 0`: linear attention's H·D_k·D_v matrix and its H·D_k normaliser, a
window's ring buffer, Mega's EMA state); a KV cache grows by `per_token` floats a token
(2·H_kv·D for standard attention). What is counted: every float array in the variant's
"cache" collection, per sequence (its batch dimension divided out); integer position
counters (`cache_index`) are not floats and are not counted. Tests check each formula
against the element count of the cache the variant's own decode form allocates.

Short convolutions: no registered variant keeps one (DeltaNet's is left to the backbone);
a backbone block with `model.short_conv = k` (`models.layers.ShortConv`) adds its own
(k - 1)·d_model floats beside the variant's state (`short_conv_state`).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class StateSize:
  """Floats one layer carries between decode steps for one sequence: fixed + per_token * T.

  fixed: floats independent of the sequence length T; per_token: floats added per cached
  token (0 for a recurrent state); counted: the terms, in words (e.g. "S H·Dk·Dv + z H·Dk").
  """
  fixed: int
  per_token: int = 0
  counted: str = ""

  @property
  def bounded(self) -> bool:
    """True when the state does not grow with T (a recurrent / windowed state)."""
    return self.per_token == 0

  def at(self, seq_len: int) -> int:
    """Floats at sequence length `seq_len`."""
    return self.fixed + self.per_token * seq_len

  def __str__(self) -> str:
    if self.bounded:
      return str(self.fixed)
    return f"{self.per_token}·T" + (f" + {self.fixed}" if self.fixed else "")


def head_dim(cfg, d_model: int) -> int:
  """cfg.head_dim, or d_model // num_heads (the variants' own rule, `AttentionModule.head_dim_for`)."""
  return cfg.head_dim or d_model // cfg.num_heads


def kv_heads(cfg) -> int:
  """Key/value heads of a softmax-style variant: cfg.num_kv_heads, 0 meaning num_heads."""
  return getattr(cfg, "num_kv_heads", 0) or cfg.num_heads


def linear_state(heads: int, dk: int, dv: int, *, normalizer: bool, extra: int = 0,
                 extra_note: str = "") -> StateSize:
  """A linear-attention state: S [H, Dk, Dv], plus the normaliser z [H, Dk] when it has one
  (stored as an extra value column: H·Dk·(Dv + 1)), plus `extra` floats described by
  `extra_note`."""
  floats = heads * dk * (dv + (1 if normalizer else 0)) + extra
  note = f"S {heads}x{dk}x{dv}" + (f" + z {heads}x{dk}" if normalizer else "")
  return StateSize(floats, 0, note + (f" + {extra_note}" if extra_note else ""))


def window_kv(cfg, d_model: int, left: int, sinks: int = 0) -> StateSize:
  """A ring-buffer KV cache (`AttentionModule.window_cache`): max(left, 1) keys and values of
  H_kv·D each, plus `sinks` sink keys and values."""
  hkv, hd = kv_heads(cfg), head_dim(cfg, d_model)
  ring = max(left, 1)
  note = f"k, v ring {ring}x{hkv}x{hd}" + (f" + {sinks} sink k, v" if sinks else "")
  return StateSize(2 * (ring + sinks) * hkv * hd, 0, note)


def kv_cache(cfg, d_model: int) -> StateSize:
  """A full KV cache (`AttentionModule.kv_cache`): 2·H_kv·D floats per token."""
  hkv, hd = kv_heads(cfg), head_dim(cfg, d_model)
  return StateSize(0, 2 * hkv * hd, f"k, v {hkv}x{hd} per token")


def short_conv_state(kernel_size: int, d_model: int) -> StateSize:
  """The backbone's causal short convolution (`models.layers.ShortConv`): the last
  kernel_size - 1 inputs of width d_model (0 when kernel_size is 0: no convolution)."""
  return StateSize(max(kernel_size - 1, 0) * d_model, 0, f"conv inputs {max(kernel_size - 1, 0)}x{d_model}")


__all__ = ["StateSize", "head_dim", "kv_cache", "kv_heads", "linear_state", "short_conv_state", "window_kv"]
