"""Convolutional token mixers (attention-free).

baseconv: Zoology's BaseConv (Arora et al., 2023, "Zoology: Measuring and Improving Recall
  in Efficient Language Models", Sec. 4 / App. "BaseConv"), the gated long-convolution
  baseline of the MQAR figures:

      y = (x W1 + b1) ⊙ (h * (x W2 + b2))

  with h a long causal per-channel filter, applied by FFT (`ops.conv.causal_conv_fft`,
  O(T log T)). The paper writes y = (u W + b1) ⊙ (h * u + b2); here (as in the issue's
  statement of it) an input projection W2, b2 precedes the filter, which with W2 = I, b2 = 0
  and b2 moved after the filter is the paper's equation. There is no output projection
  (the paper has none; the backbone's residual follows). Filters:
  * "implicit" (default; Zoology's ImplicitLongConvolution, after Hyena): h_t = MLP(z_t)
    with z_t = [t / s, cos(2 pi f_k t / s), sin(2 pi f_k t / s)], f_k = 0 .. bands - 1
    (f_0 = 1e-4, Hyena's), MLP = Linear -> ReLU -> Linear [.., d_model]. Departure: Zoology
    and Hyena normalise t by the training l_max; here by a fixed `filter_scale` s, so the
    filter of a position does not change with the sequence length.
  * "explicit" (Zoology's LongConvolution): a learned h [filter_len, d_model]; lags beyond
    filter_len are zero.
  `num_heads` is unused (one filter per channel). Key padding zeroes the padded tokens'
  inputs to the filter, so they reach no later output.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from attnlab.attention.ops.conv import causal_conv_fft
from attnlab.attention.registry import register
from attnlab.attention.variants.base import AttentionConfig, AttentionModule, Projection
from attnlab.attention.variants.common import check_no_positions, key_valid_from_mask

FILTERS = ("implicit", "explicit")


@dataclasses.dataclass(frozen=True)
class BaseConvConfig(AttentionConfig):
  """filter: "implicit" (MLP of positional features) | "explicit" (a learned [filter_len, d]);
  filter_len: the explicit filter's length; filter_hidden: the implicit MLP's width;
  filter_bands: its sin/cos frequency bands; filter_scale: positions are t / filter_scale."""
  filter: str = "implicit"
  filter_len: int = 1024
  filter_hidden: int = 32
  filter_bands: int = 4
  filter_scale: float = 1024.0
  POSITIVE_SIZES = AttentionConfig.POSITIVE_SIZES + ("filter_len", "filter_hidden", "filter_bands")

  def __post_init__(self):
    super().__post_init__()
    if self.filter not in FILTERS:
      raise ValueError(f"baseconv: filter must be one of {FILTERS}, got {self.filter!r}")
    if not self.filter_scale > 0:
      raise ValueError(f"baseconv: filter_scale must be > 0, got {self.filter_scale!r}")


def implicit_features(length: int, bands: int, scale: float):
  """z [length, 1 + 2 bands]: [t / s, cos(2 pi f t / s), sin(2 pi f t / s)], f = 1e-4, 1, .., bands - 1."""
  t = np.arange(length, dtype=np.float32)[:, None]
  freqs = np.maximum(np.arange(bands, dtype=np.float32), 1e-4)[None]
  angle = 2 * np.pi * freqs * t / scale
  return jnp.asarray(np.concatenate([t / scale, np.cos(angle), np.sin(angle)], axis=1))


@register("baseconv", family="conv", config=BaseConvConfig, patterns=("causal-self",),
          paper="Arora et al., 2023 (Zoology, BaseConv)", cost=("T*log T", "T"))
class BaseConv(AttentionModule):
  """y = (x W1 + b1) ⊙ (h * (x W2 + b2)), h a long causal filter (see the module docstring)."""
  weights_unavailable = "attention-free: a gated long convolution has no attention weights"

  def filter_taps(self, length: int, d_model: int):
    """h [min(length, L), d_model]: the filter's first taps (explicit: L = filter_len)."""
    cfg = self.cfg
    if cfg.filter == "explicit":
      init = nn.with_logical_partitioning(nn.initializers.normal(cfg.filter_len ** -0.5), (None, "embed"))
      return self.param("filter", init, (cfg.filter_len, d_model), jnp.float32)[:length]
    z = implicit_features(length, cfg.filter_bands, cfg.filter_scale)
    hidden = nn.relu(nn.Dense(cfg.filter_hidden, name="filter_in")(z))
    return nn.Dense(d_model, name="filter_out")(hidden)

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    """x [B, T, d_model] -> y [B, T, d_model] (causal self only)."""
    self.check_pattern(context, decode)
    check_no_positions(self.variant, positions)
    b, t, d_model = x.shape
    dense = lambda name: Projection((d_model,), ("embed", "mlp"), "btd,de->bte", True,  # noqa: E731
                                    self.compute_dtype, name=name)
    gate, u = dense("proj")(x), dense("conv_in")(x)
    valid = key_valid_from_mask(self.variant, mask, b, t)
    if valid is not None:
      u = jnp.where(valid[:, :, None], u, 0.0)
    y = gate.astype(jnp.float32) * causal_conv_fft(u, self.filter_taps(t, d_model))
    return y.astype(x.dtype)
