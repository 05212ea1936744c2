"""Output heads: map backbone states [B, T, d_model] to a task's outputs."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from attnlab.models.layers import partitioned

POOLINGS = ("mean", "cls")


def masked_mean(x: jnp.ndarray, valid: jnp.ndarray | None) -> jnp.ndarray:
  """Mean of x [B, T, d] over the positions where valid [B, T] is True (all when None) -> [B, d]."""
  if valid is None:
    return jnp.mean(x, axis=1)
  w = valid.astype(x.dtype)[..., None]
  return jnp.sum(x * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)


class VocabHead(nn.Module):
  """x [B, T, d] -> float32 logits [B, T, vocab_size] (untied)."""
  vocab_size: int
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x):
    logits = nn.Dense(self.vocab_size, use_bias=False, dtype=jnp.dtype(self.dtype),
                      kernel_init=partitioned(nn.initializers.lecun_normal(), ("embed", "vocab")),
                      name="lm_head")(x)
    return logits.astype(jnp.float32)


class ClassHead(nn.Module):
  """pooled [B, d] -> float32 logits [B, num_classes]."""
  num_classes: int
  dtype: str = "float32"

  @nn.compact
  def __call__(self, pooled):
    logits = nn.Dense(self.num_classes, dtype=jnp.dtype(self.dtype),
                      kernel_init=partitioned(nn.initializers.lecun_normal(), ("embed", "classes")),
                      bias_init=partitioned(nn.initializers.zeros, ("classes",)), name="classes")(pooled)
    return logits.astype(jnp.float32)


class HorizonHead(nn.Module):
  """x [B, L, d] -> float32 forecasts [B, horizon, num_features]: the flattened states mapped
  linearly to the horizon (the "flatten head" of PatchTST-style forecasters)."""
  horizon: int
  num_features: int
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x):
    b = x.shape[0]
    y = nn.Dense(self.horizon * self.num_features, dtype=jnp.dtype(self.dtype),
                 kernel_init=partitioned(nn.initializers.lecun_normal(), (None, None)),
                 name="horizon")(x.reshape(b, -1))
    return y.reshape(b, self.horizon, self.num_features).astype(jnp.float32)
