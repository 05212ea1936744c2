"""TimeXer (Wang et al., NeurIPS 2024): endogenous patches + a global token, exogenous variate tokens.

The endogenous series (every variate for features "M"; the target, the last column,
when the task forecasts fewer targets than inputs, "MS" / "S") is cut into
non-overlapping patches (length 16) embedded by Linear(P -> d, no bias) + sin-cos
positions, followed by one learned global token per endogenous variate. Exogenous
tokens are inverted embeddings (Linear(L -> d)) of the exogenous variates (all of them
for "M", the non-target ones otherwise) and of the time features. Each layer:
self-attention over [patches, global]; cross-attention from each global token (query)
to the exogenous tokens (context), both any registered variant; an FFN; post-norm.
A flatten head Linear((N + 1) d -> H) per endogenous variate; series normalisation.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from attnlab.attention import build
from attnlab.models.adapters import sincos_embedding
from attnlab.models.forecasting.encoder import (FeedForward, check_encoder, dense, model_options,
                                                normalize_series)
from attnlab.models.forecasting.patching import make_patches
from attnlab.models.registry import register_model
from attnlab.models.transformer import TransformerConfig


class TimeXerLayer(nn.Module):
  """x [B n, N + 1, d] (last token global), exo [B, E, d] -> [B n, N + 1, d]; n endogenous variates."""
  cfg: TransformerConfig
  layer: int

  @nn.compact
  def __call__(self, x, exo, *, deterministic=True):
    cfg, b = self.cfg, exo.shape[0]
    hp = cfg.layer_hparams(self.layer)
    drop = lambda h: nn.Dropout(cfg.dropout)(h, deterministic=deterministic)  # noqa: E731
    self_attn = build(cfg.layer_variants[self.layer], **hp)
    cross_attn = build(cfg.layer_variants[self.layer], **hp)
    x = nn.LayerNorm(name="norm1")(x + drop(self_attn(x, deterministic=deterministic)))
    glb = x[:, -1, :].reshape(b, -1, x.shape[-1])  # [B, n, d]
    glb = glb + drop(cross_attn(glb, context=exo, deterministic=deterministic))
    glb = nn.LayerNorm(name="norm2")(glb).reshape(-1, 1, x.shape[-1])
    x = jnp.concatenate([x[:, :-1], glb], axis=1)
    ffn = FeedForward(cfg.hidden_dim(), cfg.dropout, cfg.dtype, name="ffn")
    return nn.LayerNorm(name="norm3")(x + drop(ffn(x, deterministic=deterministic)))


class TimeXer(nn.Module):
  """inputs {"series" [B, L, C], "marks" [B, L, F]} -> [B, H, C] ("M") or [B, H, 1] (target only)."""
  cfg: TransformerConfig
  num_features: int
  horizon: int
  target_only: bool = False
  patch_len: int = 16
  normalize: bool = True

  @nn.compact
  def __call__(self, inputs, *, deterministic=True):
    cfg = self.cfg
    x = inputs["series"].astype(jnp.float32)
    if self.normalize:
      x, mean, std = normalize_series(x)
    b, length, c = x.shape
    endo = x[:, :, -1:] if self.target_only else x
    exo = x[:, :, :-1] if self.target_only else x
    n = endo.shape[-1]
    p = make_patches(jnp.swapaxes(endo, 1, 2), self.patch_len, self.patch_len, False)  # [B, n, N, P]
    num = p.shape[2]
    h = dense(cfg.d_model, "patch_embed", use_bias=False, dtype=cfg.dtype)(p)
    h = h + sincos_embedding(num, cfg.d_model)
    glb = self.param("global_token", nn.initializers.normal(1.0), (1, n, 1, cfg.d_model))
    h = jnp.concatenate([h, jnp.broadcast_to(glb, (b, n, 1, cfg.d_model)).astype(h.dtype)], axis=2)
    h = nn.Dropout(cfg.dropout)(h, deterministic=deterministic).reshape(b * n, num + 1, cfg.d_model)
    ex_tokens = jnp.swapaxes(exo, 1, 2)
    if "marks" in inputs:
      ex_tokens = jnp.concatenate(
          [ex_tokens, jnp.swapaxes(inputs["marks"].astype(jnp.float32), 1, 2)], axis=1)
    if ex_tokens.shape[1] == 0:
      raise ValueError("timexer needs exogenous tokens: exogenous variates or time features")
    e = dense(cfg.d_model, "exo_embed", dtype=cfg.dtype)(ex_tokens)
    e = nn.Dropout(cfg.dropout)(e, deterministic=deterministic)
    for i in range(cfg.num_layers):
      h = TimeXerLayer(cfg, i, name=f"layer_{i}")(h, e, deterministic=deterministic)
    h = nn.LayerNorm(name="final_norm")(h).reshape(b, n, (num + 1) * cfg.d_model)
    y = jnp.swapaxes(dense(self.horizon, "head", dtype=cfg.dtype)(h), 1, 2).astype(jnp.float32)
    if self.normalize:
      y = y * std[:, :, -n:] + mean[:, :, -n:]
    del length
    return y


@register_model("timexer")
def build_timexer(backbone: TransformerConfig, model_cfg, *, num_features: int, horizon: int,
                  num_targets: int | None = None) -> TimeXer:
  """TimeXer; the target alone is endogenous when num_targets < num_features. Reads model.patch_len (16)."""
  opts = model_options(model_cfg)
  check_encoder(backbone, opts["norm"])
  if opts["norm"] != "post":
    raise ValueError("timexer has post-norm layers only (config.model.norm='post')")
  target_only = num_targets is not None and num_targets < num_features
  return TimeXer(backbone, num_features, horizon, target_only,
                 int(model_cfg.get("patch_len", 16)), opts["normalize"])
