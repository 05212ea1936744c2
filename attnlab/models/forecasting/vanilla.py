"""`vanilla`: one token per time step, encoder-only, a linear head from the flattened states.

The step embedding and head are the `forecaster` model's (`SeriesEmbedding`: Linear(C -> d)
plus a sin-cos position embedding; `HorizonHead`: Linear(L d -> H C)); the time features
are added as TSLib's `TimeFeatureEmbedding` (Linear(F -> d), no bias); the encoder is the
forecasting `Encoder` (post-norm, any attention variant), the same as iTransformer's, so
that `vanilla` vs `itransformer` isolates the inversion. Series normalisation as iTransformer.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from attnlab.models.adapters import SeriesEmbedding
from attnlab.models.forecasting.encoder import (Encoder, check_encoder, dense, model_options,
                                                normalize_series)
from attnlab.models.heads import HorizonHead
from attnlab.models.registry import register_model
from attnlab.models.transformer import TransformerConfig


class VanillaForecaster(nn.Module):
  """inputs {"series" [B, L, C], "marks" [B, L, F]} -> forecast [B, H, C]."""
  cfg: TransformerConfig
  num_features: int
  horizon: int
  norm: str = "post"
  normalize: bool = True

  @nn.compact
  def __call__(self, inputs, *, deterministic=True):
    x = inputs["series"].astype(jnp.float32)
    if self.normalize:
      x, mean, std = normalize_series(x)
    h = SeriesEmbedding(self.cfg.d_model, self.cfg.dtype, "sincos", name="embedding")(x)
    if "marks" in inputs:
      h = h + dense(self.cfg.d_model, "marks", use_bias=False, dtype=self.cfg.dtype)(
          inputs["marks"].astype(jnp.float32))
    h = nn.Dropout(self.cfg.dropout)(h, deterministic=deterministic)
    h = Encoder(self.cfg, self.norm, name="encoder")(h, deterministic=deterministic)
    y = HorizonHead(self.horizon, self.num_features, self.cfg.dtype, name="head")(h)
    return y * std + mean if self.normalize else y


@register_model("vanilla")
def build_vanilla(backbone: TransformerConfig, model_cfg, *, num_features: int,
                  horizon: int,
    num_targets: int | None = None) -> VanillaForecaster:
  """The one-token-per-step forecaster; reads model.norm and model.normalize."""
  opts = model_options(model_cfg)
  check_encoder(backbone, opts["norm"])
  return VanillaForecaster(backbone, num_features, horizon, opts["norm"], opts["normalize"])
