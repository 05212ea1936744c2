"""iTransformer (Liu et al., ICLR 2024): attention across variates.

Each variate's whole look-back window is one token (Linear(L -> d)); the L-step time
features are C_mark more tokens; the encoder attends across these C + C_mark tokens;
Linear(d -> H) maps each variate token to its forecast. With model.normalize (default,
the paper's `use_norm`) each series is standardised over time and the forecast
de-standardised. inputs {"series" [B, L, C], "marks" [B, L, F]} -> [B, H, C].
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from attnlab.models.forecasting.encoder import (Encoder, check_encoder, dense, model_options,
                                                normalize_series)
from attnlab.models.registry import register_model
from attnlab.models.transformer import TransformerConfig


class ITransformer(nn.Module):
  """Inverted Transformer forecaster."""
  cfg: TransformerConfig
  horizon: int
  norm: str = "post"
  normalize: bool = True
  use_marks: bool = True

  @nn.compact
  def __call__(self, inputs, *, deterministic=True):
    x = inputs["series"].astype(jnp.float32)
    c = x.shape[-1]
    if self.normalize:
      x, mean, std = normalize_series(x)
    tokens = jnp.swapaxes(x, 1, 2)  # [B, C, L]
    if self.use_marks and "marks" in inputs:
      tokens = jnp.concatenate([tokens, jnp.swapaxes(inputs["marks"].astype(jnp.float32), 1, 2)], 1)
    h = dense(self.cfg.d_model, "embed", dtype=self.cfg.dtype)(tokens)
    h = nn.Dropout(self.cfg.dropout)(h, deterministic=deterministic)
    h = Encoder(self.cfg, self.norm, name="encoder")(h, deterministic=deterministic)
    y = jnp.swapaxes(dense(self.horizon, "project", dtype=self.cfg.dtype)(h), 1, 2)[:, :, :c]
    y = y.astype(jnp.float32)
    return y * std + mean if self.normalize else y


@register_model("itransformer")
def build_itransformer(backbone: TransformerConfig, model_cfg, *, num_features: int,
                       horizon: int,
    num_targets: int | None = None) -> ITransformer:
  """iTransformer; reads model.norm, model.normalize and model.use_marks (default True)."""
  opts = model_options(model_cfg)
  check_encoder(backbone, opts["norm"])
  del num_features
  return ITransformer(backbone, horizon, opts["norm"], opts["normalize"],
                      bool(model_cfg.get("use_marks", True)))
