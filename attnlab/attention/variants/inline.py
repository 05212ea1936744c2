"""InLine attention: `inline` (Han et al., 2024, "Bridging the Divide: Reconsidering Softmax and
Linear Attention"), 1-D and 2-D.

Injective linear attention: with q, k, v [B, T, H, D], scale = D^-0.5 and the identity
kernel, the weight of key j for query i is

    w_ij = (scale / T) * (q_i . k_j - q_i . mean_s k_s) + 1 / T        (sum_j w_ij = 1)

(the paper's InL_K(Q_i, K_j) = phi(Q_i)^T phi(K_j) - (1/N) sum_s phi(Q_i)^T phi(K_s) + 1/N
with phi(x) = x (scale / T)^(1/2), as in the released inline_deit.py). Unlike ReLU or
ELU+1 linear attention, whose normalised weights are unchanged when q is scaled (q and
c * q give the same distribution: not injective), these weights change with |q|.
Computed without the [T, T] weights: y_i = q_i (scale / T) k^T v + (1 - scale q_i . k_mean) v_mean.

Local residual (`local` = kernel size k, 0 = off): a depthwise k x k convolution (k in
1-D) of v over the token grid (grid=(H, W); () = a 1-D sequence), 'same' zero padding,
whose per-channel weights are predicted per example from the token mean of x by two
head-wise (block-diagonal per head) linear maps with a GELU between (the paper's
`residual`: Conv1d(groups=heads) -> GELU -> Conv1d(groups=heads) to k^2 weights per
channel), added to the attention output before the output projection. Departure: the
DeiT class token (which the paper keeps out of the convolution) does not exist here.

Compute and memory O(T * H * D^2): linear in T, no [T, T] array. Non-causal self-attention.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnlab.attention.registry import register
from attnlab.attention.variants.grid import GridAttentionModule, GridConfig, depthwise_same


@dataclasses.dataclass(frozen=True)
class InLineConfig(GridConfig):
  """local: kernel size of the local residual (the paper's 3; 0 = off); grid: () or (H, W)
  (-1 entries inferred, as in `neighborhood`)."""
  local: int = 3

  def __post_init__(self):
    super().__post_init__()
    if isinstance(self.local, bool) or not isinstance(self.local, int) or self.local < 0:
      raise ValueError(f"local must be an integer >= 0, got {self.local!r}")


def inline_attention(q, k, v):
  """InLine attention (module docstring): q, k, v [B, T, H, D] -> [B, T, H, D], in O(T D^2)."""
  t, d = q.shape[1], q.shape[-1]
  scale = d ** -0.5
  q, k, v = (a.astype(jnp.float32) for a in (q, k, v))
  kv = jnp.einsum("bthd,bthe->bhde", k, v) * (scale / t)
  k_mean, v_mean = jnp.mean(k, axis=1), jnp.mean(v, axis=1)      # [B, H, D]
  first = jnp.einsum("bthd,bhde->bthe", q, kv)
  return first + (1.0 - scale * jnp.einsum("bthd,bhd->bth", q, k_mean))[..., None] * v_mean[:, None]


def inline_weights(q, k):
  """The [B, H, T, T] fp32 matrix w_ij of the module docstring (analysis only: O(T^2)).
  Signed; every row sums to 1."""
  t, d = q.shape[1], q.shape[-1]
  scale = d ** -0.5
  q, k = q.astype(jnp.float32), k.astype(jnp.float32)
  qk = jnp.einsum("bihd,bjhd->bhij", q, k)
  return (scale / t) * (qk - jnp.mean(qk, axis=-1, keepdims=True)) + 1.0 / t  # mean_j q.k_j = q.k_mean


@register("inline", family="linear2d", config=InLineConfig, cost=("T", "T"),
          patterns=("noncausal-self",), paper="Han et al., 2024 (InLine attention)")
class InLineAttention(GridAttentionModule):
  """Injective linear attention plus a predicted local depthwise residual (see the module docstring).

  Analysis hook: sows the InLine matrix w [B, H, T, T] (`inline_weights`; signed, rows sum
  to 1). The local residual (a depthwise convolution of v whose kernel differs per
  channel, so no one scalar per query-key pair) is added outside the sown matrix."""
  weight_kind = "signed"
  weights_unavailable = None

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    cfg = self.cfg
    shape, q, k, v = self.grid_qkv(x, context, mask, decode)
    y = self.attend_captured(inline_weights(q, k), v) if self.capturing() else inline_attention(q, k, v)
    if cfg.local:
      y = y + self.local_residual(x, v, shape)
    return self.project_out(y.astype(q.dtype), x.shape[-1])

  def local_residual(self, x, v, shape):
    """The paper's local residual: per-example depthwise kernels [B, k^nd, H*D] predicted from
    mean_t x by head-wise linear -> GELU -> head-wise linear, applied to v [B, T, H, D]."""
    b, t, h, d = v.shape
    size, nd = self.cfg.local, len(shape)
    taps = size ** nd
    xm = jnp.mean(x, axis=1).reshape(b, h, -1)                      # [B, H, d_model / H]
    init = nn.initializers.lecun_normal(in_axis=1, out_axis=2, batch_axis=(0,))
    w1 = self.param("residual_1", nn.with_logical_partitioning(init, ("heads", None, "head_dim")), (h, xm.shape[-1], d))
    b1 = self.param("residual_1_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("heads", "head_dim")), (h, d))
    w2 = self.param("residual_2", nn.with_logical_partitioning(init, ("heads", "head_dim", None)), (h, d, d * taps))
    b2 = self.param("residual_2_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("heads", None)), (h, d * taps))
    hidden = jax.nn.gelu(jnp.einsum("bhi,hio->bho", xm, w1) + b1, approximate=False)
    weights = (jnp.einsum("bhi,hio->bho", hidden, w2) + b2).reshape(b, h * d, taps)  # channel-major, as the paper
    kernel = jnp.moveaxis(weights, 1, 2).reshape(b, *(size,) * nd, h * d)
    return depthwise_same(v.reshape(b, t, h * d).astype(jnp.float32), shape, kernel).reshape(b, t, h, d)
