"""Patching and RevIN for the channel-independent forecasters (PatchTST, TimeXer, Gateformer)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


def num_patches(seq_len: int, patch_len: int, stride: int, pad_end: bool) -> int:
  """Patches of length `patch_len` every `stride` steps ((L [+ stride] - P) // S + 1)."""
  return (seq_len + (stride if pad_end else 0) - patch_len) // stride + 1


def make_patches(x: jnp.ndarray, patch_len: int, stride: int, pad_end: bool) -> jnp.ndarray:
  """x [..., L] -> patches [..., N, patch_len]; pad_end repeats the last value `stride` times
  (PatchTST's ReplicationPad1d((0, stride)))."""
  if pad_end:
    x = jnp.concatenate([x, jnp.repeat(x[..., -1:], stride, axis=-1)], axis=-1)
  length = x.shape[-1]
  if length < patch_len:
    raise ValueError(f"seq_len {length} is shorter than the patch length {patch_len}")
  n = (length - patch_len) // stride + 1
  idx = jnp.arange(n)[:, None] * stride + jnp.arange(patch_len)[None]
  return x[..., idx]


class RevIN(nn.Module):
  """Reversible instance normalisation (Kim et al., 2022) with a learned affine per channel.

  `norm(x)` x [B, L, C] -> (x - mean) / std * w + b; `denorm(y)` y [B, H, C] undoes it
  with the same statistics ((y - b) / (w + eps^2) * std + mean, as PatchTST's RevIN).
  """
  num_features: int
  eps: float = 1e-5

  def setup(self):
    self.weight = self.param("weight", nn.initializers.ones, (self.num_features,))
    self.bias = self.param("bias", nn.initializers.zeros, (self.num_features,))

  def norm(self, x):
    """Returns (normalised x, (mean, std))."""
    mean = jnp.mean(x, axis=1, keepdims=True)
    std = jnp.sqrt(jnp.var(x, axis=1, keepdims=True) + self.eps)
    return (x - mean) / std * self.weight + self.bias, (mean, std)

  def denorm(self, y, stats):
    """The inverse of `norm` for forecasts y [B, H, C]."""
    mean, std = stats
    return (y - self.bias) / (self.weight + self.eps * self.eps) * std + mean

  def __call__(self, x):
    """Same as `norm` (lets `init` create the parameters)."""
    return self.norm(x)
