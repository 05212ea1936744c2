"""Shared pieces of the forecasting models: torch-style dense layers, the series
normalisation, and an encoder whose attention is any registered variant.

`Encoder` follows Time-Series-Library's `EncoderLayer` (post-norm by default):
  x = LN(x + drop(attn(x)));  x = LN(x + drop(W2 drop(act(W1 x))))
and a final LayerNorm; `norm="pre"` gives x + drop(attn(LN(x))) instead. Each layer's
attention is `attnlab.attention.build(variant, **cfg.layer_hparams(i))`, so any
registered variant (and per-layer hybrids and overrides) works by name; the FFN width
is `cfg.hidden_dim()` (model.mlp_dim) and its activation GELU (exact erf, as torch).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from attnlab.attention import build
from attnlab.models.layers import partitioned
from attnlab.models.transformer import TransformerConfig

NORMS = ("post", "pre")
# torch.nn.Linear's default weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
TORCH_KERNEL_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def dense(features: int, name: str, *, use_bias: bool = True, dtype: str = "float32") -> nn.Dense:
  """nn.Dense with torch.nn.Linear's weight initialisation (replicated parameters)."""
  return nn.Dense(features, use_bias=use_bias, dtype=jnp.dtype(dtype), name=name,
                  kernel_init=partitioned(TORCH_KERNEL_INIT, (None, None)),
                  bias_init=partitioned(nn.initializers.zeros, (None,)))


def normalize_series(x: jnp.ndarray, eps: float = 1e-5):
  """x [B, L, C] -> ((x - mean) / std, mean [B, 1, C], std [B, 1, C]); std = sqrt(var + eps) over time."""
  mean = jnp.mean(x, axis=1, keepdims=True)
  std = jnp.sqrt(jnp.var(x, axis=1, keepdims=True) + eps)
  return (x - mean) / std, mean, std


def check_encoder(cfg: TransformerConfig, norm: str) -> None:
  """One-line ValueErrors: forecasting encoders are non-causal; norm in NORMS."""
  if cfg.causal:
    raise ValueError("forecasting models are encoders: set config.model.causal=False")
  if norm not in NORMS:
    raise ValueError(f"config.model.norm must be one of {NORMS}, got {norm!r}")


class FeedForward(nn.Module):
  """x [..., d] -> W2 drop(gelu(W1 x)), hidden width `hidden`."""
  hidden: int
  dropout: float = 0.0
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x, *, deterministic=True):
    h = nn.gelu(dense(self.hidden, "wi", dtype=self.dtype)(x), approximate=False)
    h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
    return dense(x.shape[-1], "wo", dtype=self.dtype)(h)


class EncoderLayer(nn.Module):
  """One layer: attention (variant of layer `layer`) then FFN, each residual + LayerNorm. x [B, T, d]."""
  cfg: TransformerConfig
  layer: int
  norm: str = "post"

  @nn.compact
  def __call__(self, x, *, deterministic=True):
    cfg = self.cfg
    attn = build(cfg.layer_variants[self.layer], **cfg.layer_hparams(self.layer))
    drop = lambda h: nn.Dropout(cfg.dropout)(h, deterministic=deterministic)  # noqa: E731
    ffn = FeedForward(cfg.hidden_dim(), cfg.dropout, cfg.dtype, name="ffn")
    n1, n2 = nn.LayerNorm(name="norm1"), nn.LayerNorm(name="norm2")
    if self.norm == "post":
      x = n1(x + drop(attn(x, deterministic=deterministic)))
      return n2(x + drop(ffn(x, deterministic=deterministic)))
    x = x + drop(attn(n1(x), deterministic=deterministic))
    return x + drop(ffn(n2(x), deterministic=deterministic))


class Encoder(nn.Module):
  """cfg.num_layers `EncoderLayer`s and a final LayerNorm: x [B, T, d] -> [B, T, d]."""
  cfg: TransformerConfig
  norm: str = "post"

  @nn.compact
  def __call__(self, x, *, deterministic=True):
    for i in range(self.cfg.num_layers):
      x = EncoderLayer(self.cfg, i, self.norm, name=f"layer_{i}")(x, deterministic=deterministic)
    return nn.LayerNorm(name="final_norm")(x)


def model_options(model_cfg) -> dict:
  """The forecasting keys of config.model: norm ("post"), normalize (True)."""
  return {"norm": str(model_cfg.get("norm", "post")),
          "normalize": bool(model_cfg.get("normalize", True))}
