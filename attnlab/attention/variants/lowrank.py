"""Low-rank and compressed attention (family "lowrank"); both are non-causal.

linformer: Wang et al., 2020, "Linformer: Self-Attention with Linear Complexity".
  Keys and values are projected along the length with learned E, F [k_proj, max_len]
  (one pair per layer shared by all heads: the paper's "headwise sharing"); a sequence
  shorter than max_len uses the leading T columns. O(T * k_proj) time and memory.
nystromformer: Xiong et al., 2021, "Nystromformer: A Nystrom-Based Algorithm for
  Approximating Self-Attention" (AAAI). Segment-mean landmarks and the iterative
  Moore-Penrose pseudo-inverse (6 iterations by default, as in the paper), optionally
  plus the official code's depthwise convolution skip on the values. O(T * m) time and memory.

Math in `attnlab.attention.ops.lowrank`. Neither applies a positional encoding inside.

Analysis hook (an `apply` with the "attention" collection mutable): both outputs are
linear in the values, so the implied [Tq, Tk] matrix is read off the reference op with
the identity as values (`ops.implied`): Linformer's softmax(Q (E K)^T / sqrt(d)) F, the
projected weights mapped back onto the tokens; Nystromformer's three-factor product
F~ A~^+ B~ (plus the conv skip's band when conv_kernel > 0). Both "signed" (F and the
pseudo-inverse have negative entries).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from attnlab.attention import masks as M
from attnlab.attention.ops import lowrank as L
from attnlab.attention.registry import register
from attnlab.attention.variants.base import AttentionConfig, AttentionModule
from attnlab.attention.variants.common import attend_or_capture


@dataclasses.dataclass(frozen=True)
class LinformerConfig(AttentionConfig):
  """k_proj: projected length k (Wang et al., 2020, Sec. 4); max_len: longest key
  sequence E, F can project (their width). causal defaults to False (causal is an error)."""
  k_proj: int = 64
  max_len: int = 512
  causal: bool = False


@register("linformer", family="lowrank", config=LinformerConfig, cost=("T*k", "T"),
          patterns=("noncausal-self", "noncausal-cross"), paper="Wang et al., 2020")
class LinformerAttention(AttentionModule):
  """Linformer: softmax(Q (E K)^T / sqrt(d)) (F V) per head (Wang et al., 2020, eq. 7).

  E, F: params "e_proj", "f_proj" [k_proj, max_len], init N(0, 1/k_proj) (the paper's
  Sec. 4 takes E, F with i.i.d. N(0, 1/k) entries for its JL argument). Causal attention
  is a ValueError (E K mixes future keys into every projected key). `mask` may be a
  masks.KeyPadding: padded keys and values are zeroed before the length projection, so
  they contribute nothing; other masks raise ValueError.
  """
  weight_kind = "signed"
  weights_unavailable = None

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    self.check_pattern(context, decode)  # causal: ValueError (E K mixes future keys into every projected key)
    cfg = self.cfg
    d_model = x.shape[-1]
    hd = self.head_dim_for(d_model)
    src = x if context is None else context
    tk = src.shape[1]
    if tk > cfg.max_len:
      raise ValueError(f"linformer: key length {tk} exceeds max_len={cfg.max_len}")
    q = self.project_heads(x, cfg.num_heads, hd, "query")
    k = self.project_heads(src, cfg.num_heads, hd, "key")
    v = self.project_heads(src, cfg.num_heads, hd, "value")
    valid = 1.0
    if mask is not None:
      if not isinstance(mask, M.KeyPadding):
        raise ValueError(f"linformer only honours masks.KeyPadding as an extra mask, got {type(mask).__name__}")
      valid = jnp.asarray(mask.kv_valid)[:, :, None, None].astype(k.dtype)
      k = k * valid
    init = nn.with_logical_partitioning(nn.initializers.normal(stddev=cfg.k_proj ** -0.5), (None, None))
    e = self.param("e_proj", init, (cfg.k_proj, cfg.max_len), jnp.float32)
    f = self.param("f_proj", init, (cfg.k_proj, cfg.max_len), jnp.float32)
    # padded values are zeroed inside the op's argument, so the implied matrix has zero columns there
    y = attend_or_capture(self, lambda vals, impl: L.linformer_attention(
        q, k, vals * valid, e[:, :tk], f[:, :tk], impl=impl), v)
    return self.project_out(y, d_model)


@dataclasses.dataclass(frozen=True)
class NystromConfig(AttentionConfig):
  """num_landmarks: m segment-mean landmarks (query and key lengths must be divisible by m);
  pinv_iterations: iterations of the Moore-Penrose iteration (paper: 6);
  conv_kernel: odd width of the depthwise conv skip on values (official code: 33; 0 = off,
  self-attention only). causal defaults to False (causal is an error)."""
  num_landmarks: int = 32
  pinv_iterations: int = 6
  conv_kernel: int = 0
  causal: bool = False


@register("nystromformer", family="lowrank", config=NystromConfig, cost=("T*m", "T"),
          patterns=("noncausal-self", "noncausal-cross"), paper="Xiong et al., 2021")
class NystromAttention(AttentionModule):
  """Nystromformer attention (Xiong et al., 2021, eq. 14-16), computed right to left.

  With conv_kernel > 0 the output adds a per-head depthwise convolution of V along the
  sequence (param "conv" [conv_kernel, H]), the skip connection of the official
  implementation. The extra `mask` argument is not supported (ValueError).
  """
  weight_kind = "signed"
  weights_unavailable = None

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    self.check_pattern(context, decode)  # causal: ValueError (landmarks average future tokens)
    if mask is not None:
      raise ValueError("variant 'nystromformer' does not take an extra mask: landmarks average over "
                       "every position")
    cfg = self.cfg
    d_model = x.shape[-1]
    hd = self.head_dim_for(d_model)
    src = x if context is None else context
    q = self.project_heads(x, cfg.num_heads, hd, "query")
    k = self.project_heads(src, cfg.num_heads, hd, "key")
    v = self.project_heads(src, cfg.num_heads, hd, "value")
    if cfg.conv_kernel:
      if cfg.conv_kernel % 2 == 0:
        raise ValueError(f"conv_kernel must be odd, got {cfg.conv_kernel}")
      if context is not None:
        raise ValueError("nystromformer's conv skip on values needs self-attention (Tq == Tk); "
                         "use conv_kernel=0 for cross-attention")
      w = self.param("conv", nn.with_logical_partitioning(nn.initializers.lecun_normal(), (None, "heads")),
                     (cfg.conv_kernel, cfg.num_heads), jnp.float32)

    def attend(vals, impl):  # the Nystrom product, plus the conv skip (also linear in the values)
      y = L.nystrom_attention(q, k, vals, num_landmarks=cfg.num_landmarks, pinv_iterations=cfg.pinv_iterations,
                              impl=impl)
      return y + L.depthwise_conv_seq(vals, w) if cfg.conv_kernel else y

    y = attend_or_capture(self, attend, v)
    return self.project_out(y, d_model)
