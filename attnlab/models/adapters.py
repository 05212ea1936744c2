"""Input adapters: turn a task's inputs into backbone embeddings [B, T, d_model] and positions.

The backbone knows nothing of vocabularies, images or series; these modules do.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from attnlab.models.layers import partitioned

POSITION_EMBEDDINGS = ("none", "learned", "sincos")


def sincos_embedding(length: int, dim: int) -> jnp.ndarray:
  """The fixed sinusoidal table of Vaswani et al. (2017): float32 [length, dim].

  Even columns sin(t / 10000^(2i/dim)), odd columns cos of the same angle.
  """
  pos = jnp.arange(length, dtype=jnp.float32)[:, None]
  freq = jnp.exp(-jnp.log(10000.0) * jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)
  table = jnp.zeros((length, dim), jnp.float32)
  table = table.at[:, 0::2].set(jnp.sin(pos * freq))
  return table.at[:, 1::2].set(jnp.cos(pos * freq)[:, :dim // 2])


class PositionEmbedding(nn.Module):
  """Adds an absolute position embedding to x [B, T, d]: "none", "learned" ([T, d] table,
  sized by the input it is initialised on) or "sincos" (fixed)."""
  kind: str = "none"

  @nn.compact
  def __call__(self, x):
    if self.kind not in POSITION_EMBEDDINGS:
      raise ValueError(f"model.position_embedding must be one of {POSITION_EMBEDDINGS}, got {self.kind!r}")
    t, d = x.shape[-2:]
    if self.kind == "learned":
      table = self.param("table", partitioned(nn.initializers.normal(0.02), ("length", "embed")),
                         (t, d))
      return x + table.astype(x.dtype)
    if self.kind == "sincos":
      return x + sincos_embedding(t, d).astype(x.dtype)
    return x


class TokenEmbedding(nn.Module):
  """tokens int [B, T] -> embeddings [B, T, d_model] (+ an optional absolute position embedding)."""
  vocab_size: int
  d_model: int
  dtype: str = "float32"
  position_embedding: str = "none"

  @nn.compact
  def __call__(self, tokens):
    embed = nn.Embed(self.vocab_size, self.d_model, dtype=jnp.dtype(self.dtype),
                     embedding_init=partitioned(nn.initializers.normal(1.0), ("vocab", "embed")),
                     name="embed")
    x = PositionEmbedding(self.position_embedding, name="positions")(embed(tokens))
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class SeriesEmbedding(nn.Module):
  """series float [B, L, C] -> embeddings [B, L, d_model]: a linear map of each time step's
  C values (one token per step) plus an optional absolute position embedding."""
  d_model: int
  dtype: str = "float32"
  position_embedding: str = "sincos"

  @nn.compact
  def __call__(self, series):
    x = nn.Dense(self.d_model, dtype=jnp.dtype(self.dtype),
                 kernel_init=partitioned(nn.initializers.lecun_normal(), (None, "embed")),
                 bias_init=partitioned(nn.initializers.zeros, ("embed",)), name="proj")(series)
    x = PositionEmbedding(self.position_embedding, name="positions")(x)
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))
