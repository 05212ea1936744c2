"""Gateformer (Lan et al., 2025): per-variate temporal embedding, then cross-variate attention,
each stage gated.

Our reading of the paper, stated here since it has no reference code in this repo:
1. temporal stage, each variate separately: patches (length 16, stride 8, end padded)
   embedded by Linear(P -> d) + sin-cos positions, `model.temporal_layers` encoder
   layers (any variant) over them, flattened and mapped Linear(N d -> d) to a temporal
   embedding e_t; beside it the global embedding e_g = Linear(L -> d) of the whole
   window; gate g = sigmoid(W [e_t, e_g]), variate token h0 = g e_t + (1 - g) e_g;
2. variate stage: the forecasting `Encoder` across the C variate tokens (plus
   inverted time-feature tokens, as iTransformer), output h1; gate
   g' = sigmoid(W' [h0, h1]), h = g' h1 + (1 - g') h0;
3. Linear(d -> H) per variate; series normalisation undone.
inputs {"series" [B, L, C], "marks" [B, L, F]} -> [B, H, C].
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnlab.models.adapters import sincos_embedding
from attnlab.models.forecasting.encoder import (Encoder, check_encoder, dense, model_options,
                                                normalize_series)
from attnlab.models.forecasting.patching import make_patches
from attnlab.models.registry import register_model
from attnlab.models.transformer import TransformerConfig


def gate(a: jnp.ndarray, b: jnp.ndarray, name: str) -> jnp.ndarray:
  """sigmoid(W [a, b]) a + (1 - sigmoid(W [a, b])) b, for a, b [..., d] (call inside a compact module)."""
  g = jax.nn.sigmoid(dense(a.shape[-1], name)(jnp.concatenate([a, b], axis=-1)))
  return g * a + (1.0 - g) * b


class Gateformer(nn.Module):
  """Gated temporal-then-variate forecaster."""
  cfg: TransformerConfig
  temporal_cfg: TransformerConfig
  horizon: int
  patch_len: int = 16
  stride: int = 8
  norm: str = "post"
  normalize: bool = True

  @nn.compact
  def __call__(self, inputs, *, deterministic=True):
    cfg = self.cfg
    x = inputs["series"].astype(jnp.float32)
    if self.normalize:
      x, mean, std = normalize_series(x)
    b, _, c = x.shape
    series = jnp.swapaxes(x, 1, 2)  # [B, C, L]
    p = make_patches(series, self.patch_len, self.stride, True)  # [B, C, N, P]
    n = p.shape[2]
    t = dense(cfg.d_model, "patch_embed", dtype=cfg.dtype)(p.reshape(b * c, n, self.patch_len))
    t = nn.Dropout(cfg.dropout)(t + sincos_embedding(n, cfg.d_model), deterministic=deterministic)
    t = Encoder(self.temporal_cfg, self.norm, name="temporal")(t, deterministic=deterministic)
    e_t = dense(cfg.d_model, "temporal_out", dtype=cfg.dtype)(t.reshape(b, c, n * cfg.d_model))
    e_g = dense(cfg.d_model, "global_embed", dtype=cfg.dtype)(series)
    h0 = gate(e_t, e_g, "temporal_gate")
    tokens = h0
    if "marks" in inputs:
      marks = dense(cfg.d_model, "marks_embed", dtype=cfg.dtype)(
          jnp.swapaxes(inputs["marks"].astype(jnp.float32), 1, 2))
      tokens = jnp.concatenate([h0, marks], axis=1)
    h1 = Encoder(cfg, self.norm, name="variate")(tokens, deterministic=deterministic)[:, :c]
    h = gate(h1, h0, "variate_gate")
    y = jnp.swapaxes(dense(self.horizon, "project", dtype=cfg.dtype)(h), 1, 2).astype(jnp.float32)
    return y * std + mean if self.normalize else y


@register_model("gateformer")
def build_gateformer(backbone: TransformerConfig, model_cfg, *, num_features: int, horizon: int,
                     num_targets: int | None = None) -> Gateformer:
  """Gateformer; reads model.temporal_layers (1), model.patch_len (16), model.stride (8), model.norm."""
  del num_features, num_targets
  opts = model_options(model_cfg)
  check_encoder(backbone, opts["norm"])
  temporal_layers = int(model_cfg.get("temporal_layers", 1))
  if temporal_layers < 1:
    raise ValueError(f"config.model.temporal_layers must be >= 1, got {temporal_layers}")
  temporal = dataclasses.replace(
      backbone, num_layers=temporal_layers, layer_variants=backbone.layer_variants[:1] * temporal_layers,
      layer_attn=())
  return Gateformer(backbone, temporal, horizon, int(model_cfg.get("patch_len", 16)),
                    int(model_cfg.get("stride", 8)), opts["norm"], opts["normalize"])
