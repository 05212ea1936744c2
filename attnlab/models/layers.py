"""Backbone building blocks: RMSNorm, MLPs (SwiGLU, GELU), token embedding."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def partitioned(init, axes):
  """An initializer tagged with logical axis names (for sharding rules)."""
  return nn.with_logical_partitioning(init, axes)


class RMSNorm(nn.Module):
  """Root-mean-square layer norm (Zhang & Sennrich, 2019): x / rms(x) * scale. x [..., d]."""
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", partitioned(nn.initializers.ones, ("embed",)), (x.shape[-1],))
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
    return (y * scale).astype(x.dtype)


class MLP(nn.Module):
  """Position-wise feed-forward block. x [B, T, d] -> [B, T, d].

  kind="swiglu": W2 (silu(x W1) * x W3) (Shazeer, 2020, "GLU Variants Improve Transformer");
  kind="gelu": W2 gelu(x W1).
  """
  hidden: int
  kind: str = "swiglu"
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x):
    if self.kind not in ("swiglu", "gelu"):
      raise ValueError(f"mlp must be 'swiglu' or 'gelu', got {self.kind!r}")
    d = x.shape[-1]
    dense = lambda feats, axes, name: nn.Dense(  # noqa: E731
        feats, use_bias=False, dtype=jnp.dtype(self.dtype),
        kernel_init=partitioned(nn.initializers.lecun_normal(), axes), name=name)
    h = dense(self.hidden, ("embed", "mlp"), "wi")(x)
    if self.kind == "swiglu":
      h = nn.silu(h) * dense(self.hidden, ("embed", "mlp"), "wg")(x)
    else:
      h = nn.gelu(h)
    h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
    return dense(d, ("mlp", "embed"), "wo")(h)


class ShortConv(nn.Module):
  """Causal depthwise convolution over time, added to its input: y_t = x_t + sum_i w_i ⊙ x_{t-i}.

  x [B, T, d] -> [B, T, d]; w [kernel_size, d], i = 0..kernel_size-1, x_{t<0} = 0. The short
  convolution of H3 (Fu et al., 2023), Based (Arora et al., 2024) and Zoology's BaseConv
  gives every attention variant a previous-token path, which associative recall needs.
  With decode=True it keeps the last kernel_size-1 inputs in the "cache" collection (Flax
  convention: the first init(..., decode=True) call only allocates).
  """
  kernel_size: int
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x, *, decode: bool = False):
    k = self.kernel_size
    b, t, d = x.shape
    w = self.param("kernel", partitioned(nn.initializers.normal(0.1), (None, "embed")), (k, d),
                   jnp.float32).astype(x.dtype)
    if decode:
      is_init = not self.has_variable("cache", "conv_state")
      state = self.variable("cache", "conv_state", jnp.zeros, (b, k - 1, d), x.dtype)
      padded = jnp.concatenate([state.value, x], axis=1)  # [B, k-1+T, d]
      if not is_init:
        state.value = padded[:, t:]
    else:
      padded = jnp.pad(x, ((0, 0), (k - 1, 0), (0, 0)))
    # padded[:, k-1+t-i] is x_{t-i}
    return x + sum(w[i] * padded[:, k - 1 - i:k - 1 - i + t] for i in range(k))
