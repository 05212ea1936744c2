"""Pre-norm Transformer backbone with a per-layer list of attention variants.

A hybrid (e.g. linear layers with a few softmax layers) is one config line:
`config.model.variant = "based,based,mha"`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn

from attnlab.attention import VARIANTS, build
from attnlab.attention.variants.base import ATTENTION
from attnlab.models.layers import MLP, RMSNorm, ShortConv

MLP_KINDS = ("swiglu", "gelu", "none")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """The backbone's own configuration (it knows nothing of vocabularies, images or series).

  d_model, num_layers, num_heads; layer_variants: one variant name per layer; attn:
  hyperparameters as (key, value) pairs, each passed to every layer whose variant takes
  it; layer_attn: per-layer overrides, one tuple of (key, value) pairs per layer (applied
  after `attn`); mlp: "swiglu" | "gelu" | "none" (no MLP sublayer: Zoology's
  attention-only MQAR models use an identity state mixer); mlp_dim (0 = 4 d_model, or 8/3
  d_model rounded for swiglu); short_conv: kernel size of a causal depthwise convolution
  applied to each attention layer's input (`ShortConv`; 0 = none); dropout on residual
  branches; causal: causal self-attention.
  """
  d_model: int = 128
  num_layers: int = 2
  num_heads: int = 4
  layer_variants: tuple[str, ...] = ("mha", "mha")
  attn: tuple[tuple[str, Any], ...] = ()
  layer_attn: tuple[tuple[tuple[str, Any], ...], ...] = ()
  mlp: str = "swiglu"
  mlp_dim: int = 0
  short_conv: int = 0
  dropout: float = 0.0
  causal: bool = True
  dtype: str = "float32"

  def hidden_dim(self) -> int:
    """The MLP's hidden width."""
    if self.mlp_dim:
      return self.mlp_dim
    if self.mlp == "swiglu":  # keeps the parameter count of a 4x GELU MLP
      return 8 * ((8 * self.d_model // 3 + 7) // 8)
    return 4 * self.d_model

  def layer_hparams(self, layer: int) -> dict[str, Any]:
    """Hyperparameters of layer `layer`'s variant: the shared ones, its layer index and the
    layer count, the `attn` keys it takes, then that layer's overrides."""
    variant = self.layer_variants[layer]
    fields = {f.name for f in dataclasses.fields(VARIANTS.get(variant).config)}
    hp = {"num_heads": self.num_heads, "causal": self.causal, "dtype": self.dtype,
          "layer_index": layer, "num_layers": self.num_layers}
    hp = {k: v for k, v in hp.items() if k in fields}
    hp.update({k: v for k, v in self.attn if k in fields})
    if layer < len(self.layer_attn):
      hp.update(dict(self.layer_attn[layer]))
    return hp


def expand_layer_variants(variant: str, num_layers: int) -> tuple[str, ...]:
  """"mha" -> ("mha",) * L; "a,b" -> the pattern repeated to L layers (L must be a multiple)."""
  names = tuple(v.strip() for v in variant.split(",") if v.strip())
  if not names:
    raise ValueError("config.model.variant is empty")
  for n in names:
    VARIANTS.get(n)  # raises UnknownNameError listing the registered variants
  if num_layers % len(names):
    raise ValueError(f"model.variant lists {len(names)} layers, which does not divide "
                     f"model.num_layers={num_layers}")
  return names * (num_layers // len(names))


def check_attn_keys(cfg: TransformerConfig) -> None:
  """Every key in cfg.attn must be a hyperparameter of at least one layer's variant, and every
  per-layer override one of that layer's variant; builds every layer once (bad values fail
  here, before compiling)."""
  def fields(v):
    return {f.name for f in dataclasses.fields(VARIANTS.get(v).config)}
  taken = set().union(*(fields(v) for v in set(cfg.layer_variants)))
  unknown = sorted(k for k, _ in cfg.attn if k not in taken)
  if unknown:
    raise ValueError(f"config.model.attn has {', '.join(map(repr, unknown))}, which no layer's variant "
                     f"({', '.join(sorted(set(cfg.layer_variants)))}) takes")
  for i, overrides in enumerate(cfg.layer_attn):
    bad = sorted(k for k, _ in overrides if k not in fields(cfg.layer_variants[i]))
    if bad:
      raise ValueError(f"config.model.layers.{i} has {', '.join(map(repr, bad))}, which layer {i}'s "
                       f"variant {cfg.layer_variants[i]!r} does not take")
  for i in range(cfg.num_layers):
    build(cfg.layer_variants[i], **cfg.layer_hparams(i))


class Block(nn.Module):
  """x + attn(conv(norm(x))); x + mlp(norm(x)). x [B, T, d].

  conv is `ShortConv` when cfg.short_conv > 0 (else identity); the MLP step is left out
  when cfg.mlp == "none"."""
  cfg: TransformerConfig
  layer: int

  @nn.compact
  def __call__(self, x, *, mask=None, positions=None, decode=False, deterministic=True):
    cfg = self.cfg
    attn = build(cfg.layer_variants[self.layer], **cfg.layer_hparams(self.layer))
    h = RMSNorm(name="attn_norm")(x)
    if cfg.short_conv:
      if not cfg.causal:
        raise ValueError("model.short_conv is a causal convolution; it needs a causal model")
      h = ShortConv(cfg.short_conv, cfg.dtype, name="short_conv")(h, decode=decode)
    h = attn(h, mask=mask, positions=positions, decode=decode,
             deterministic=deterministic)
    x = x + nn.Dropout(cfg.dropout)(h, deterministic=deterministic)
    if cfg.mlp != "none":
      h = MLP(cfg.hidden_dim(), cfg.mlp, cfg.dtype, name="mlp")(RMSNorm(name="mlp_norm")(x))
      x = x + nn.Dropout(cfg.dropout)(h, deterministic=deterministic)
    if not self.is_initializing() and self.is_mutable_collection(ATTENTION):
      self.sow(ATTENTION, "hidden", x)  # analysis call only: the residual stream [B, T, d] after this block
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class Transformer(nn.Module):
  """Stack of `Block`s, one per entry of cfg.layer_variants, and a final RMSNorm.

  x [B, T, d_model] embeddings -> [B, T, d_model]. `positions` int [B, T] (from the input
  adapter; None = arange) and `mask` (an `attention.masks.Mask`, e.g. key padding) are
  passed to every attention layer.
  """
  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x, *, mask=None, positions=None, decode=False, deterministic=True):
    for i in range(self.cfg.num_layers):
      x = Block(self.cfg, i, name=f"layer_{i}")(
          x, mask=mask, positions=positions, decode=decode, deterministic=deterministic)
    return RMSNorm(name="final_norm")(x)
