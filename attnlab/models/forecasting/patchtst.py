"""PatchTST (Nie et al., ICLR 2023): channel-independent patches with RevIN.

Each variate separately: RevIN, patches of length 16 every 8 steps (the end padded by
repeating the last value, so L = 96 gives 12 patches), Linear(P -> d, no bias) + sin-cos
positions and dropout, the forecasting `Encoder` (any attention variant) over the
patches, then a flatten head Linear(N d -> H) followed by dropout (Time-Series-Library's
FlattenHead, head_dropout = dropout); RevIN undone. inputs {"series" [B, L, C], ...} -> [B, H, C].

Departures from Time-Series-Library's PatchTST (models/PatchTST.py): RevIN has a learned
per-channel affine (initialised to the identity; TSLib normalises without one) and the
encoder's final norm is a LayerNorm (TSLib: BatchNorm1d over d_model).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from attnlab.models.adapters import sincos_embedding
from attnlab.models.forecasting.encoder import Encoder, check_encoder, dense, model_options
from attnlab.models.forecasting.patching import RevIN, make_patches
from attnlab.models.registry import register_model
from attnlab.models.transformer import TransformerConfig


class PatchTST(nn.Module):
  """Channel-independent patch Transformer forecaster."""
  cfg: TransformerConfig
  num_features: int
  horizon: int
  patch_len: int = 16
  stride: int = 8
  norm: str = "post"
  revin: bool = True

  @nn.compact
  def __call__(self, inputs, *, deterministic=True):
    x = inputs["series"].astype(jnp.float32)
    b, _, c = x.shape
    revin = RevIN(c, name="revin")
    if self.revin:
      x, stats = revin.norm(x)
    p = make_patches(jnp.swapaxes(x, 1, 2), self.patch_len, self.stride, True)  # [B, C, N, P]
    n = p.shape[2]
    h = dense(self.cfg.d_model, "embed", use_bias=False, dtype=self.cfg.dtype)(
        p.reshape(b * c, n, self.patch_len))  # [B C, N, d]
    h = h + sincos_embedding(n, self.cfg.d_model)
    h = nn.Dropout(self.cfg.dropout)(h, deterministic=deterministic)
    h = Encoder(self.cfg, self.norm, name="encoder")(h, deterministic=deterministic)
    y = dense(self.horizon, "head", dtype=self.cfg.dtype)(h.reshape(b, c, n * self.cfg.d_model))
    y = nn.Dropout(self.cfg.dropout)(y, deterministic=deterministic)  # [B, C, H]
    y = jnp.swapaxes(y, 1, 2).astype(jnp.float32)  # [B, H, C]
    return revin.denorm(y, stats) if self.revin else y


@register_model("patchtst")
def build_patchtst(backbone: TransformerConfig, model_cfg, *, num_features: int,
                   horizon: int,
    num_targets: int | None = None) -> PatchTST:
  """PatchTST; reads model.patch_len (16), model.stride (8), model.revin (True), model.norm."""
  opts = model_options(model_cfg)
  check_encoder(backbone, opts["norm"])
  patch_len, stride = int(model_cfg.get("patch_len", 16)), int(model_cfg.get("stride", 8))
  if patch_len < 1 or stride < 1:
    raise ValueError(f"config.model.patch_len and stride must be >= 1, got {patch_len}, {stride}")
  return PatchTST(backbone, num_features, horizon, patch_len, stride, opts["norm"],
                  bool(model_cfg.get("revin", True)))
