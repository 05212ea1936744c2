"""The `forecaster` model: a multivariate series [B, L, C] -> a forecast [B, H, C].

One token per time step (a linear embedding of its C values plus a sin-cos position
embedding), the Transformer backbone, then a linear head from the flattened states to
the horizon. With model.normalize (default True) each series is standardised over its
look-back window and the forecast de-standardised (the series normalisation of
Non-stationary Transformers / RevIN without affine parameters).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from attnlab.models.adapters import SeriesEmbedding
from attnlab.models.heads import HorizonHead
from attnlab.models.registry import register_model
from attnlab.models.transformer import Transformer, TransformerConfig


class Forecaster(nn.Module):
  """series float [B, L, C] -> forecast float32 [B, horizon, C]."""
  cfg: TransformerConfig
  num_features: int
  horizon: int
  normalize: bool = True
  position_embedding: str = "sincos"

  @nn.compact
  def __call__(self, series, *, deterministic=True):
    series = series.astype(jnp.float32)
    if self.normalize:
      mean = jnp.mean(series, axis=1, keepdims=True)
      std = jnp.sqrt(jnp.var(series, axis=1, keepdims=True) + 1e-5)
      series = (series - mean) / std
    x = SeriesEmbedding(self.cfg.d_model, self.cfg.dtype, self.position_embedding,
                        name="embedding")(series)
    x = Transformer(self.cfg, name="backbone")(x, deterministic=deterministic)
    y = HorizonHead(self.horizon, self.num_features, self.cfg.dtype, name="head")(x)
    return y * std + mean if self.normalize else y


@register_model("forecaster")
def build_forecaster(backbone: TransformerConfig, model_cfg, *, num_features: int,
                     horizon: int) -> Forecaster:
  """A one-token-per-step forecaster; reads model.normalize and model.position_embedding."""
  if num_features < 1 or horizon < 1:
    raise ValueError(f"a forecaster needs num_features >= 1 and horizon >= 1, got "
                     f"{num_features} and {horizon}")
  return Forecaster(backbone, num_features, horizon, bool(model_cfg.get("normalize", True)),
                    str(model_cfg.get("position_embedding", "sincos")))
