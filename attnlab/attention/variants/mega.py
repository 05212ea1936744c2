"""Mega: moving-average equipped gated attention (Ma et al., 2023, "Mega: Moving Average
Equipped Gated Attention", ICLR 2023), with Mega-chunk's chunked attention by default.

One Mega layer (Sec. 3 of the paper; details as the official fairseq code,
`MovingAverageGatedAttention`):

    X'  = SiLU(EMA(X) + omega * X)                      damped multi-dim EMA (Sec. 3.1) + skip
    Z   = SiLU(X' W_z + b_z)                            shared representation [T, z]
    Q   = kappa_q * Z + mu_q,  K = kappa_k * Z + mu_k   per-dim scale and offset
    V   = SiLU(X W_v + b_v)                             [T, v]
    O   = softmax(Q K^T / sqrt(z) + b_rel) V            single head; within chunks of c (Mega-chunk)
    gamma = SiLU(X' W_gamma + b_gamma)                  reset gate [T, v]
    phi   = sigmoid(X' W_phi + b_phi)                   update gate [T, d]
    H   = SiLU(X' W_h + (gamma * O) U_h + b_h)
    Y   = phi * H + (1 - phi) * X

b_rel is the "simple" learned relative-position bias over offsets in (-L, L) with L the
chunk size (or `max_positions` for full attention). With `chunk_size > 0` (default 128:
Mega-chunk) attention is restricted to non-overlapping chunks, so the layer is linear in
T; the EMA still carries information across chunks. Non-causal Mega uses a bidirectional
EMA (a forward and a backward EMA with separate parameters, summed) and non-causal
attention within the chunk.

The EMA (attnlab/attention/ops/linear/mega_ema.py) has three forms selected by `form`:
"chunked" (default; O(T)), "parallel" (the convolution kernel materialised, FFT
convolution) and "recurrent" (token by token). Decoding uses the recurrent EMA with its
state [B, d, n] in the "cache" collection, and a key/value cache for the attention: with
chunk_size c > 0 a ring buffer of the c - 1 keys a query's chunk can hold before it, so a
decode step costs O(c) whatever the sequence length (the whole sequence when c = 0).

Deviations: no dropout, no normalisation inside the layer (the backbone's pre-norm is
used), and softmax attention only (the paper's laplace/relu^2 alternatives are not offered).
Mask: only masks.KeyPadding (padded tokens are zeroed before the EMA, as fairseq does,
and masked as keys); other masks raise. `positions` must be None (relative positions
come from the token order).

Analysis hook (an `apply` with the "attention" collection mutable, not decoding): the
attention part's weights, the single head's softmax(Q K^T / sqrt(z) + b_rel) within the
chunks (zero across chunks), [B, 1, T, T], read off the attention path run with the
reference softmax and the identity as values (`ops.implied`); "probability". It is the
matrix applied to V before the reset gate gamma and the rest of the layer.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnlab.attention import masks as M
from attnlab.attention.ops.linear.common import pad_time
from attnlab.attention.ops.linear.mega_ema import ema
from attnlab.attention.ops.softmax import softmax_attention
from attnlab.attention.registry import register
from attnlab.attention.state_size import StateSize
from attnlab.attention.variants.base import AttentionConfig, AttentionModule
from attnlab.attention.variants.common import attend_or_capture, check_recurrent_call, key_valid_from_mask


@dataclasses.dataclass(frozen=True)
class MegaConfig(AttentionConfig):
  """Mega hyperparameters (num_heads must be 1: Mega is single-headed; head_dim unused).

  z_dim: shared Q/K dimension (0 = d_model // 4); v_dim: value / gate dimension
  (0 = 2 * d_model; the paper's expansion); ema_dim: EMA expansion n per channel (paper
  16); chunk_size: Mega-chunk attention chunk c (0 = full attention, quadratic);
  max_positions: relative-bias range for full attention; form: the EMA's form
  ("chunked" | "parallel" | "recurrent"); ema_chunk: chunk of the chunked EMA;
  impl: softmax_attention implementation.
  """
  ZERO_ALLOWED = ("chunk_size",)  # chunk_size=0: full attention
  num_heads: int = 1
  z_dim: int = 0
  v_dim: int = 0
  ema_dim: int = 16
  chunk_size: int = 128
  max_positions: int = 2048
  form: str = "chunked"
  ema_chunk: int = 64
  impl: str = "auto"


def _logical(init, axes):
  return nn.with_logical_partitioning(init, axes)


class MegaEMA(nn.Module):
  """The damped multi-dimensional EMA with its skip: SiLU(EMA(x) + omega * x).

  x [B, T, d] -> [B, T, d]. Bidirectional (forward + backward EMA) when not causal.
  Parameters as fairseq's MultiHeadEMA (logits of alpha and delta, beta, eta, omega);
  eta is scaled by sqrt(1 / n) as there.
  """
  ema_dim: int
  causal: bool = True
  form: str = "chunked"
  ema_chunk: int = 64

  def coeffs(self, d: int, direction: str):
    n = self.ema_dim
    normal = nn.initializers.normal

    def beta_init(key, shape):  # +-1 alternating over n, plus noise (fairseq)
      sign = jnp.where(jnp.arange(n) % 2 == 0, 1.0, -1.0)
      return sign + 0.02 * jax.random.normal(key, shape)

    axes = ("embed", None)
    alpha = jax.nn.sigmoid(self.param(f"alpha_{direction}", _logical(normal(0.2), axes), (d, n)))
    delta = jax.nn.sigmoid(self.param(f"delta_{direction}", _logical(normal(0.2), axes), (d, n)))
    beta = self.param(f"beta_{direction}", _logical(beta_init, axes), (d, n))
    eta = self.param(f"eta_{direction}", _logical(normal(1.0), axes), (d, n)) * (1.0 / n) ** 0.5
    return alpha, delta, beta, eta

  @nn.compact
  def __call__(self, x, *, decode=False):
    b, _, d = x.shape
    fwd = self.coeffs(d, "fwd")
    if decode:
      is_init = not self.has_variable("cache", "ema_state")
      state = self.variable("cache", "ema_state", jnp.zeros, (b, d, self.ema_dim), jnp.float32)
      if is_init:
        y, _ = ema(x, *fwd, form="recurrent")
      else:
        y, state.value = ema(x, *fwd, form="recurrent", initial_state=state.value)
    else:
      y, _ = ema(x, *fwd, form=self.form, chunk_size=self.ema_chunk)
      if not self.causal:
        bwd = self.coeffs(d, "bwd")
        y_b, _ = ema(x[:, ::-1], *bwd, form=self.form, chunk_size=self.ema_chunk)
        y = y + y_b[:, ::-1]
    omega = self.param("omega", _logical(nn.initializers.normal(1.0), ("embed",)), (d,))
    return nn.silu(y + x.astype(jnp.float32) * omega)


def relative_bias(table, q_pos, k_pos, span: int):
  """Simple relative-position bias [1, 1, Tq, Tk]: table[k - q + span - 1] (offsets clipped
  to (-span, span)). table [2 * span - 1]; q_pos [Tq], k_pos [Tk] ints."""
  rel = jnp.clip(k_pos[None, :] - q_pos[:, None] + span - 1, 0, 2 * span - 2)
  return table[rel][None, None]


def mega_state_size(cfg: MegaConfig, d_model: int):
  """The EMA state [d, n], plus the attention's cache of z-dim keys and v-dim values: a
  ring of chunk_size - 1 slots (Mega-chunk), or the whole sequence when chunk_size = 0."""
  zd, vd = cfg.z_dim or max(d_model // 4, 1), cfg.v_dim or 2 * d_model
  ema_floats = d_model * cfg.ema_dim
  if not cfg.chunk_size:
    return StateSize(ema_floats, zd + vd, f"EMA {d_model}x{cfg.ema_dim} + k {zd}, v {vd} per token")
  ring = max(cfg.chunk_size - 1, 1)
  return StateSize(ema_floats + ring * (zd + vd), 0,
                   f"EMA {d_model}x{cfg.ema_dim} + k, v ring {ring}x({zd}+{vd})")


@register("mega", family="ema", config=MegaConfig,
          patterns=("causal-self", "noncausal-self", "decode"), paper="Ma et al., 2023",
          cost=("T*c", "T"), state_size=mega_state_size)
class Mega(AttentionModule):
  """Mega / Mega-chunk layer (see the module docstring for the equations)."""
  weights_unavailable = None

  def dims(self, d_model: int):
    cfg = self.cfg
    if cfg.num_heads != 1:
      raise ValueError(f"mega is single-headed: num_heads must be 1, got {cfg.num_heads}")
    if cfg.head_dim:
      raise ValueError("mega: head_dim is unused; set z_dim / v_dim instead")
    return cfg.z_dim or max(d_model // 4, 1), cfg.v_dim or 2 * d_model

  def span(self) -> int:
    return self.cfg.chunk_size or self.cfg.max_positions

  def _dense(self, x, features: int, name: str):
    return nn.DenseGeneral(features, use_bias=True, dtype=self.compute_dtype, name=name,
                           kernel_init=_logical(nn.initializers.lecun_normal(), ("embed", "mlp")),
                           bias_init=_logical(nn.initializers.zeros_init(), ("mlp",)))(x)

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    cfg = check_recurrent_call(self, context, decode, positions)
    if cfg.chunk_size < 0:
      raise ValueError(f"mega: chunk_size must be >= 0, got {cfg.chunk_size}")
    b, t, d = x.shape
    zd, vd = self.dims(d)
    offset = self.cache_offset(decode)
    valid = key_valid_from_mask(self.variant, mask, b, t, offset)
    xin = x if valid is None else x * valid[..., None].astype(x.dtype)

    mx = MegaEMA(cfg.ema_dim, cfg.causal, cfg.form, cfg.ema_chunk, name="ema")(xin, decode=decode)
    mx = mx.astype(self.compute_dtype)
    u = jax.nn.sigmoid(self._dense(mx, d, "update_gate"))  # phi
    z = nn.silu(self._dense(mx, zd, "z"))
    r = nn.silu(self._dense(mx, vd, "reset_gate"))  # gamma
    hx = self._dense(mx, d, "h")
    v = nn.silu(self._dense(x, vd, "value"))
    normal = nn.initializers.normal
    kappa = self.param("qk_scale", _logical(normal(0.02), (None, "mlp")), (2, zd))
    mu = self.param("qk_offset", _logical(nn.initializers.zeros_init(), (None, "mlp")), (2, zd))
    q = z * kappa[0] + mu[0]
    k = z * kappa[1] + mu[1]
    table = self.param("rel_bias", _logical(normal(0.02), (None,)), (2 * self.span() - 1,))

    if decode:
      o = self._attend_cached(q, k, v, table, mask)
    else:  # the single head as a heads axis of 1 for the hook: [B, T, 1, v]
      attend = self._attend_chunked if cfg.chunk_size else self._attend_full
      o = attend_or_capture(self, lambda vals, impl: attend(q, k, vals[:, :, 0], table, valid, impl)[:, :, None],
                            v[:, :, None], impl=cfg.impl)[:, :, 0]
    h = nn.silu(hx + self.project_out((o * r)[:, :, None, :], d, name="h_from_attention"))
    return (x + u * (h - x)).astype(x.dtype)

  # ---- attention paths --------------------------------------------------------------
  def _mask(self, valid):
    return M.combine(M.Causal() if self.cfg.causal else None,
                     None if valid is None else M.KeyPadding(valid))

  def _attend_chunked(self, q, k, v, table, valid, impl):
    """Mega-chunk: softmax attention inside non-overlapping chunks (O(T c) memory).

    q, k [B, T, z]; v [B, T, v]; valid [B, T] or None. Returns [B, T, v]."""
    b, t, zd = q.shape
    c = min(self.cfg.chunk_size, t)
    n = -(-t // c)
    if valid is None and t % c:
      valid = jnp.ones((b, t), bool)
    if valid is not None:
      valid = pad_time(valid, c).reshape(b * n, c)  # padding keys are invalid

    def split(a):  # [B, T, F] -> [B * n, c, 1, F]
      return pad_time(a, c).reshape(b * n, c, 1, a.shape[-1])

    pos = jnp.arange(c)
    o = softmax_attention(split(q), split(k), split(v), mask=self._mask(valid),
                          bias=relative_bias(table, pos, pos, self.span()), scale=zd ** -0.5, impl=impl)
    return o.reshape(b, n * c, -1)[:, :t]

  def _attend_full(self, q, k, v, table, valid, impl):
    """Full (quadratic) softmax attention with the relative bias. Returns [B, T, v]."""
    t = q.shape[1]
    if t > self.cfg.max_positions:
      raise ValueError(f"mega: sequence length {t} exceeds max_positions {self.cfg.max_positions}")
    pos = jnp.arange(t)
    o = softmax_attention(q[:, :, None], k[:, :, None], v[:, :, None], mask=self._mask(valid),
                          bias=relative_bias(table, pos, pos, self.span()),
                          scale=q.shape[-1] ** -0.5, impl=impl)
    return o[:, :, 0]

  def _attend_cached(self, q, k, v, table, mask):
    """Decode step, q, k [B, t, z], v [B, t, v] -> [B, t, v]: softmax attention with the
    relative bias under Causal (& Chunked) masks.

    Mega-chunk (chunk_size c > 0): a query sees only the keys of its own chunk, at most
    c - 1 before it, so the cache is a ring buffer of c - 1 slots
    (`AttentionModule.window_cache`) and a step costs O(c), not O(cache length); the
    mask and the bias are evaluated at the slots' absolute positions. Full attention
    (chunk_size 0) caches the whole sequence."""
    cfg = self.cfg
    structure = M.Causal() if not cfg.chunk_size else M.Causal() & M.Chunked(cfg.chunk_size)
    mask = M.combine(structure, mask)
    if cfg.chunk_size:
      k_all, v_all, slots = self.window_cache(k[:, :, None], v[:, :, None], left=cfg.chunk_size - 1)
      q_pos, k_pos = slots
      mask = M.AtPositions(mask, q_pos, k_pos)
      start = 0
    else:
      k_all, v_all, start = self.kv_cache(k[:, :, None], v[:, :, None])
      q_pos, k_pos = start + jnp.arange(q.shape[1]), jnp.arange(k_all.shape[1])
    bias = relative_bias(table, q_pos, k_pos, self.span())
    o = softmax_attention(q[:, :, None], k_all, v_all, mask=mask, bias=bias,
                          scale=q.shape[-1] ** -0.5, impl=cfg.impl, q_offset=start)
    return o[:, :, 0]
