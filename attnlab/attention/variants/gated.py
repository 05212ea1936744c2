"""Gated and magnitude-aware linear attention: GLA, DeltaNet, Gated DeltaNet, MALA.

gla: Yang et al., 2024, "Gated Linear Attention Transformers with Hardware-Efficient
  Training" (ICML 2024).
deltanet: Schlag et al., 2021, "Linear Transformers Are Secretly Fast Weight Programmers";
  Yang et al., 2024, "Parallelizing Linear Transformers with the Delta Rule over Sequence
  Length" (NeurIPS 2024).
gated_deltanet: Yang, Kautz & Hatamizadeh, 2024, "Gated Delta Networks: Improving Mamba2
  with Delta Rule" (ICLR 2025).
mala: Fan et al., 2025, "Rectifying Magnitude Neglect in Linear Attention" (ICCV 2025).

Each has three forms chosen by the `form` hyperparameter: "chunked" (default; O(T)
memory, the sub-quadratic XLA path), "parallel" (the materialised [T, T] form: the
oracle) and "recurrent" (token by token). Incremental decoding (decode=True) always uses
the recurrent form with a constant-size state kept in the "cache" collection. The math
lives in attnlab/attention/ops/linear/{gla,delta_rule,mala}.py; these modules own projections,
gates and norms.

Masks: these variants accept `mask=None` or a `masks.KeyPadding` (invalid keys write
nothing to the state: GLA zeroes their key (its data-dependent decay still applies at
that step), MALA zeroes key and value and does not count them in N, DeltaNet sets
beta = 0, i.e. an identity transition, and Gated DeltaNet also alpha = 1, no decay); any other mask raises ValueError (their causal structure is built
in). `positions` must be None: they have no positional encoding (order enters through the
recurrence), so a passed `positions` would be ignored and raises instead.

Analysis hook (an `apply` with the "attention" collection mutable, not decoding): each
op's output is linear in the values with one scalar per (query, key) pair (GLA's gates
act on the key dimension, the delta rule's state is linear in V for fixed k and beta,
MALA's offset is gamma_i times the value sum), so the sown matrix is read off the
materialised reference op with the identity as values (`ops.implied`): GLA
sum_c q_tc k_jc prod_{s=j+1..t} alpha_sc / sqrt(Dk), the (gated) delta rule's implied
matrix, MALA's beta_i a_ij - gamma_i. All "signed". It is the matrix applied before the
output path (norm, output gate, W_o), which then runs unchanged.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnlab.attention.ops.linear.delta_rule import delta_rule_attention
from attnlab.attention.ops.linear.gla import gla_attention
from attnlab.attention.ops.linear.mala import init_state as mala_init_state
from attnlab.attention.ops.linear.mala import mala_attention, mala_recurrent
from attnlab.attention.registry import register
from attnlab.attention.state_size import head_dim, linear_state
from attnlab.attention.variants.base import AttentionConfig, AttentionModule, Projection
from attnlab.attention.variants.common import attend_or_capture, check_recurrent_call, key_valid_from_mask


def _logical(init, axes):
  return nn.with_logical_partitioning(init, axes)


def _dense_heads(x, heads, dim, name, use_bias, dtype, in_axis="embed"):
  """x [..., F] -> [..., heads, dim] with a logically partitioned kernel [F, heads, dim]."""
  return Projection((heads, dim), (in_axis, "heads", "head_dim"), "...d,dhk->...hk",
                    use_bias, dtype, name=name)(x)


class HeadNorm(nn.Module):
  """Per-head normalisation over the last axis (GroupNorm with one group per head), with a
  scale (and, for LayerNorm, a bias) of shape [D] shared by the heads, as fla's g_norm.

  kind: "layer" (LayerNorm) or "rms" (RMSNorm). x [..., H, D] -> same shape (fp32 stats).
  """
  kind: str = "layer"
  eps: float = 1e-5

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    xf = x.astype(jnp.float32)
    if self.kind == "layer":
      xf = xf - jnp.mean(xf, -1, keepdims=True)
    elif self.kind != "rms":
      raise ValueError(f"norm kind must be 'layer' or 'rms', got {self.kind!r}")
    y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, -1, keepdims=True) + self.eps)
    y = y * self.param("scale", _logical(nn.initializers.ones_init(), ("head_dim",)), (d,))
    if self.kind == "layer":
      y = y + self.param("bias", _logical(nn.initializers.zeros_init(), ("head_dim",)), (d,))
    return y.astype(x.dtype)


class _StatefulLinear(AttentionModule):
  """Decode plumbing shared by the recurrent variants: a constant-size state and the
  position index in the "cache" collection."""
  weight_kind = "signed"  # q . k (GLA, the delta rule) and MALA's offset -gamma_i can be negative
  weights_unavailable = None

  def form_for(self, impl: str) -> str:
    """The form an `attend_or_capture` impl runs: "reference" (analysis) the materialised
    "parallel" form, else cfg.form."""
    return "parallel" if impl == "reference" else self.cfg.form

  def recurrent_state(self, zeros):
    """(is_first_init, state variable, index variable). `zeros` is the state pytree.

    Flax convention (as base.kv_cache): the first `init(..., decode=True)` only
    allocates; later decode calls read and advance the state.
    """
    is_init = not self.has_variable("cache", "state")
    var = self.variable("cache", "state", lambda: zeros)
    pos = self.variable("cache", "index", lambda: jnp.array(0, jnp.int32))
    return is_init, var, pos

  def cache_offset(self, decode: bool):
    """Absolute position of this call's first token (the cache index when decoding)."""
    if decode and self.has_variable("cache", "index"):
      return self.get_variable("cache", "index")
    return 0


# ---- GLA ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class GLAConfig(AttentionConfig):
  """form: "chunked" | "parallel" | "recurrent"; chunk_size / sub_chunk: chunk and
  secondary-chunk lengths of the chunked form (sub_chunk divides chunk_size);
  expand_k / expand_v: key and value head sizes as multiples of head_dim (paper: 0.5, 1);
  gate_rank: rank of the gate projection W1 W2 (paper: 16); gate_tau: the gate temperature
  tau in alpha = sigmoid(x W1 W2 + b)^(1/tau) (paper: 16); norm: per-head "layer" (the
  paper's LayerNorm/GroupNorm) or "rms" (fla's default)."""
  form: str = "chunked"
  chunk_size: int = 64
  sub_chunk: int = 16
  expand_k: float = 0.5
  expand_v: float = 1.0
  gate_rank: int = 16
  gate_tau: float = 16.0
  norm: str = "layer"


def gla_state_size(cfg: GLAConfig, d_model: int):
  """S [H, expand_k * D, expand_v * D]; no normaliser."""
  hd = head_dim(cfg, d_model)
  return linear_state(cfg.num_heads, int(hd * cfg.expand_k), int(hd * cfg.expand_v), normalizer=False)


@register("gla", family="gated", config=GLAConfig, patterns=("causal-self", "decode"),
          paper="Yang et al., 2024", cost=("T*c", "T"), state_size=gla_state_size)
class GLA(_StatefulLinear):
  """Gated Linear Attention (Yang et al., 2024), Sec. 4 of the paper:

      S_t = diag(alpha_t) S_{t-1} + k_t^T v_t,   o_t = q_t S_t / sqrt(Dk)
      alpha_t = sigmoid(x_t W1 W2 + b)^(1/tau)   (low-rank, data-dependent, per key channel)
      y = (GroupNorm(o) * swish(x W_r)) W_o       (per-head norm, output gate)

  The gate is computed in log space (log alpha = log_sigmoid(.) / tau), never as alpha
  itself. Causal only (the recurrence has no non-causal form).
  """

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    cfg = check_recurrent_call(self, context, decode, positions)
    b, t, d_model = x.shape
    hd = self.head_dim_for(d_model)
    dk, dv = int(hd * cfg.expand_k), int(hd * cfg.expand_v)
    if dk < 1 or dv < 1:
      raise ValueError(f"gla: head_dim {hd} x expand_k/expand_v gives empty heads ({dk}, {dv})")
    h = cfg.num_heads
    q = self.project_heads(x, h, dk, "query")
    k = self.project_heads(x, h, dk, "key")
    v = self.project_heads(x, h, dv, "value")
    low = nn.Dense(cfg.gate_rank, use_bias=False, dtype=self.compute_dtype, name="gate_down",
                   kernel_init=_logical(nn.initializers.lecun_normal(), ("embed", None)))(x)
    g_logit = _dense_heads(low, h, dk, "gate_up", True, self.compute_dtype, in_axis=None)
    # log alpha_t = log(sigmoid(.)^(1/tau)) = log_sigmoid(.) / tau  (<= 0)
    g = jax.nn.log_sigmoid(g_logit.astype(jnp.float32)) / cfg.gate_tau
    offset = self.cache_offset(decode)
    valid = key_valid_from_mask(self.variant, mask, b, t, offset)
    if valid is not None:
      k = k * valid[:, :, None, None].astype(k.dtype)

    if decode:
      is_init, state, pos = self.recurrent_state(jnp.zeros((b, h, dk, dv), jnp.float32))
      if is_init:
        o, _ = gla_attention(q, k, v, g, form="recurrent")
      else:
        o, state.value = gla_attention(q, k, v, g, form="recurrent", initial_state=state.value)
        pos.value = pos.value + t
    else:
      o = attend_or_capture(self, lambda vv, impl: gla_attention(
          q, k, vv, g, form=self.form_for(impl), chunk_size=cfg.chunk_size, sub_chunk=cfg.sub_chunk, impl=impl)[0], v)
    o = HeadNorm(cfg.norm, name="head_norm")(o.astype(self.compute_dtype))
    r = _dense_heads(x, h, dv, "out_gate", cfg.use_bias, self.compute_dtype)
    return self.project_out(o * nn.swish(r), d_model)


# ---- DeltaNet -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DeltaNetConfig(AttentionConfig):
  """form: "chunked" | "parallel" | "recurrent"; chunk_size: the chunked form's chunk
  (WY representation per chunk); norm: per-head output norm "rms" (fla's default) or
  "layer"."""
  form: str = "chunked"
  chunk_size: int = 64
  norm: str = "rms"


def _l2norm(x, eps=1e-6):
  xf = x.astype(jnp.float32)
  return (xf * jax.lax.rsqrt(jnp.sum(xf * xf, -1, keepdims=True) + eps)).astype(x.dtype)


def deltanet_state_size(cfg: DeltaNetConfig, d_model: int):
  """S [H, D, D] (the fast weights); no normaliser and no short-convolution buffer (this
  DeltaNet has no short convolution)."""
  hd = head_dim(cfg, d_model)
  return linear_state(cfg.num_heads, hd, hd, normalizer=False)


@register("deltanet", family="gated", config=DeltaNetConfig, patterns=("causal-self", "decode"),
          paper="Schlag et al., 2021; Yang et al., 2024", cost=("T*c", "T"),
          state_size=deltanet_state_size)
class DeltaNet(_StatefulLinear):
  """DeltaNet: the delta rule S_t = S_{t-1}(I - beta_t k_t k_t^T) + beta_t v_t k_t^T,
  o_t = S_t q_t (Schlag et al., 2021; chunked with the WY representation of Yang et al., 2024).

  Feature map as Yang et al. (2024) / fla: q, k = L2norm(SiLU(x W)); beta_t = sigmoid(x W_beta)
  per head; per-head output RMSNorm, then W_o. Deviation: no short convolution on q/k/v
  (the paper's architecture adds a depthwise conv of width 4; it is a separate mixing layer,
  left to the backbone). Causal only.
  """

  def log_gate(self, x):
    """log alpha [B, T, H] of the decay gate, or None (DeltaNet is ungated)."""
    del x
    return None

  def finish(self, x, o, d_model):
    """Per-head output norm, then W_o. o [B, T, H, D] -> [B, T, d_model]."""
    del x
    return self.project_out(HeadNorm(self.cfg.norm, name="head_norm")(o), d_model)

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    cfg = check_recurrent_call(self, context, decode, positions)
    b, t, d_model = x.shape
    hd = self.head_dim_for(d_model)
    h = cfg.num_heads
    q = _l2norm(nn.silu(self.project_heads(x, h, hd, "query")))
    k = _l2norm(nn.silu(self.project_heads(x, h, hd, "key")))
    v = self.project_heads(x, h, hd, "value")
    beta = jax.nn.sigmoid(self.project_heads(x, h, 1, "beta")[..., 0].astype(jnp.float32))
    g = self.log_gate(x)
    offset = self.cache_offset(decode)
    valid = key_valid_from_mask(self.variant, mask, b, t, offset)
    if valid is not None:
      beta = beta * valid[:, :, None]  # beta = 0: identity transition, nothing written
      if g is not None:
        g = g * valid[:, :, None]  # and no decay at a padded step

    if decode:
      is_init, state, pos = self.recurrent_state(jnp.zeros((b, h, hd, hd), jnp.float32))
      if is_init:
        o, _ = delta_rule_attention(q, k, v, beta, form="recurrent", log_alpha=g)
      else:
        o, state.value = delta_rule_attention(q, k, v, beta, form="recurrent",
                                              initial_state=state.value, log_alpha=g)
        pos.value = pos.value + t
    else:
      o = attend_or_capture(self, lambda vv, impl: delta_rule_attention(
          q, k, vv, beta, form=self.form_for(impl), chunk_size=cfg.chunk_size, log_alpha=g, impl=impl)[0], v)
    return self.finish(x, o.astype(self.compute_dtype), d_model)


# ---- Gated DeltaNet -----------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class GatedDeltaNetConfig(DeltaNetConfig):
  """DeltaNet's (form, chunk_size, norm) plus the Mamba2-style gate's initial ranges:
  A ~ U[a_init_range] (decay rate per head), dt ~ logU[dt_min, dt_max] (its bias)."""
  a_init_range: tuple = (1.0, 16.0)
  dt_min: float = 1e-3
  dt_max: float = 0.1

  def __post_init__(self):
    super().__post_init__()
    lo, hi = self.a_init_range
    if not 0 < lo <= hi:
      raise ValueError(f"gated_deltanet: a_init_range must satisfy 0 < lo <= hi, got {self.a_init_range}")
    if not 0 < self.dt_min <= self.dt_max:
      raise ValueError(f"gated_deltanet: need 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}")


@register("gated_deltanet", family="gated", config=GatedDeltaNetConfig,
          patterns=("causal-self", "decode"),
          paper="Yang, Kautz & Hatamizadeh, 2024, Gated Delta Networks (ICLR 2025)",
          cost=("T*c", "T"), state_size=deltanet_state_size)
class GatedDeltaNet(DeltaNet):
  """Gated DeltaNet (Yang, Kautz & Hatamizadeh, 2024, Eq. 10): the gated delta rule

      S_t = alpha_t S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T,   o_t = S_t q_t

  with DeltaNet's q, k = L2norm(SiLU(x W)), beta_t = sigmoid(x W_beta), and the paper's
  (Mamba2) gate per head: log alpha_t = -exp(A_log) softplus(x W_a + dt_bias) (so alpha_t
  in (0, 1)); output y = (RMSNorm(o) * SiLU(x W_g)) W_o (the paper's output gate). Same
  chunked / parallel / recurrent forms as DeltaNet (attnlab/attention/ops/linear/delta_rule.py).
  Deviation, as DeltaNet here: no short convolution on q/k/v. With alpha = 1 this is DeltaNet
  plus the output gate.
  """

  def log_gate(self, x):
    cfg, h = self.cfg, self.cfg.num_heads
    lo, hi = cfg.a_init_range
    a_log = self.param("A_log", _logical(
        lambda key, shape: jnp.log(jax.random.uniform(key, shape, jnp.float32, lo, hi)), ("heads",)), (h,))

    def dt_init(key, shape):
      dt = jnp.exp(jax.random.uniform(key, shape, jnp.float32, jnp.log(cfg.dt_min), jnp.log(cfg.dt_max)))
      return dt + jnp.log(-jnp.expm1(-dt))  # inverse softplus

    dt_bias = self.param("dt_bias", _logical(dt_init, ("heads",)), (h,))
    a = self.project_heads(x, h, 1, "gate_a")[..., 0].astype(jnp.float32)
    return -jnp.exp(a_log) * jax.nn.softplus(a + dt_bias)

  def finish(self, x, o, d_model):
    hd = o.shape[-1]
    gate = _dense_heads(x, self.cfg.num_heads, hd, "out_gate", self.cfg.use_bias, self.compute_dtype)
    o = HeadNorm(self.cfg.norm, name="head_norm")(o) * nn.silu(gate)
    return self.project_out(o, d_model)


# ---- MALA -----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class MALAConfig(AttentionConfig):
  """form: "chunked" (causal: chunked scan; non-causal: the O(T) global-sum form) |
  "parallel" | "recurrent" (causal only); chunk_size: the causal chunked form's chunk."""
  form: str = "chunked"
  chunk_size: int = 64


def mala_state_size(cfg: MALAConfig, d_model: int):
  """S [H, D, D] + z [H, D] + the value sum [H, D] + the key count N (1 float)."""
  hd, h = head_dim(cfg, d_model), cfg.num_heads
  return linear_state(h, hd, hd, normalizer=True, extra=h * hd + 1, extra_note=f"vsum {h}x{hd} + count 1")


@register("mala", family="linear", config=MALAConfig,
          patterns=("causal-self", "noncausal-self", "decode"), paper="Fan et al., 2025",
          cost=("T", "T"), state_size=mala_state_size)
class MALA(_StatefulLinear):
  """Magnitude-Aware Linear Attention (Fan et al., 2025): phi = elu + 1 features,
  o_i = beta_i phi(q_i) S - gamma_i sum_j v_j with beta_i = 1 + 1/Z_i, gamma_i = Z_i / N
  (see attnlab/attention/ops/linear/mala.py for the equations), then an output gate (a linear
  projection multiplied in, as the official code's `o`) and W_o.

  Deviations from the official (vision) block: no LePE depthwise-conv branch and no RoPE
  on the kv product (both 2-D vision positional add-ons, not part of the MALA equation;
  the official code applies RoPE to the numerator only, which breaks the sum-to-one
  property). Causal MALA (ours) normalises by the number of visible keys N_i = i + 1.
  """

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    cfg = check_recurrent_call(self, context, decode, positions)
    b, t, d_model = x.shape
    hd = self.head_dim_for(d_model)
    h = cfg.num_heads
    qf = nn.elu(self.project_heads(x, h, hd, "query")) + 1.0
    kf = nn.elu(self.project_heads(x, h, hd, "key")) + 1.0
    v = self.project_heads(x, h, hd, "value")
    offset = self.cache_offset(decode)
    valid = key_valid_from_mask(self.variant, mask, b, t, offset)

    if decode:
      is_init, state, pos = self.recurrent_state(mala_init_state(b, h, hd, hd))
      if is_init:
        o = mala_recurrent(qf, kf, v, key_valid=valid)[0]
      else:
        o, state.value = mala_recurrent(qf, kf, v, key_valid=valid, initial_state=state.value)
        pos.value = pos.value + t
    else:
      o = attend_or_capture(self, lambda vv, impl: mala_attention(
          qf, kf, vv, causal=cfg.causal, form=self.form_for(impl), key_valid=valid, chunk_size=cfg.chunk_size,
          impl=impl), v)
    gate = self.project_heads(x, h, hd, "out_gate")
    return self.project_out(o.astype(self.compute_dtype) * gate, d_model)


__all__ = ["GLA", "DeltaNet", "GatedDeltaNet", "MALA", "GLAConfig", "DeltaNetConfig", "GatedDeltaNetConfig",
           "MALAConfig", "HeadNorm"]
