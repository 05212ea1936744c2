"""Linear attention with a fixed per-head exponential decay.

retention: Sun et al., 2023, "Retentive Network: A Successor to Transformer for Large
  Language Models" (multi-scale retention, eq. 5-9).
lightning: Qin et al., 2024, "Lightning Attention-2: A Free Lunch for Handling Unlimited
  Sequence Lengths in Large Language Models" (intra-block masked attention plus an
  inter-block state, Alg. 1), in the TransNormerLLM layer it was built for (Qin et al.,
  2023, "TransNormerLLM": silu q/k, per-head ALiBi-slope decay, simple RMSNorm, output gate).

Both imply the attention matrix A[i, j] = (q_i . k_j) lambda_h^(i - j) for j <= i and run
through the shared core `attnlab.attention.ops.linear.core` with log_decay [H]:
"chunked" is exactly Lightning Attention-2's tiling (intra-chunk [C, C] masked part plus
the decayed inter-chunk state), "parallel" the materialised oracle, "recurrent" the
decode path (state in the "cache" collection). Causal only: the decay is directional.
Only key-padding masks are honoured (see `variants.linear`).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from attnlab.attention.positional import alibi_slopes, apply_rope
from attnlab.attention.registry import register
from attnlab.attention.state_size import head_dim, linear_state
from attnlab.attention.variants.linear_base import LinearAttentionBase, LinearFamilyConfig

DECAY_PATTERNS = ("causal-self", "decode")


@dataclasses.dataclass(frozen=True)
class RetentionConfig(LinearFamilyConfig):
  """positional: "rope" (RetNet's rotation Theta on q and k, eq. 3; xPos's extra length
  scaling is not applied) | "none"; rope_base: its base; value_factor: v / gate head size
  as a multiple of head_dim (the paper uses 2); norm_eps: GroupNorm's epsilon."""
  positional: str = "rope"
  rope_base: float = 10000.0
  value_factor: int = 2
  norm_eps: float = 1e-5


LIGHTNING_SCHEDULES = ("paper", "official")


@dataclasses.dataclass(frozen=True)
class LightningConfig(LinearFamilyConfig):
  """decay_schedule: the per-head, per-layer decay lambda (see `lightning_log_decay`):
  "paper" (TransNormerLLM Eq. 10) | "official" (the released code's ALiBi-slope form);
  both read layer_index / num_layers (set by the backbone). norm_eps: epsilon of the
  simple RMSNorm."""
  decay_schedule: str = "paper"
  norm_eps: float = 1e-6


def retention_log_decay(num_heads: int):
  """log gamma_h with gamma_h = 1 - 2^(-5 - h), h = 0..H-1 (RetNet sec. 2.2). -> [H] fp32."""
  return jnp.log1p(-(2.0 ** (-5.0 - np.arange(num_heads)))).astype(jnp.float32)


def lightning_log_decay(num_heads: int, layer_index: int = 0, num_layers: int = 1,
                        schedule: str = "paper"):
  """log lambda_h of head h in layer l (l = layer_index, 0-based, of L = num_layers). [H] fp32.

  "paper": TransNormerLLM (Qin et al., 2023/2024), Eq. 10:
      lambda = exp(-(8h / H) * (1 - l / L)),  h = 1..H
    (h is 1-based as in ALiBi and l 0-based, so no head of any layer loses its decay;
    lower layers decay faster: smaller receptive fields, as the paper intends).
  "official": OpenNLPLab's released TransNormerLLM / Lightning code:
      lambda = exp(-s_h * (1 - l / (L - 1) + 1e-5)),  s_h the ALiBi slopes (2^(-8h/H) for H
    a power of two); the factor is 1 + 1e-5 when L == 1.
  """
  if schedule not in LIGHTNING_SCHEDULES:
    raise ValueError(f"decay_schedule must be one of {LIGHTNING_SCHEDULES}, got {schedule!r}")
  if num_layers < 1 or not 0 <= layer_index < num_layers:
    raise ValueError(f"need 0 <= layer_index < num_layers, got {layer_index}, {num_layers}")
  if schedule == "paper":
    rate = 8.0 * np.arange(1, num_heads + 1) / num_heads * (1.0 - layer_index / num_layers)
    return jnp.asarray(-rate, jnp.float32)
  factor = 1.0 - (layer_index / (num_layers - 1) if num_layers > 1 else 0.0) + 1e-5
  return (-alibi_slopes(num_heads) * factor).astype(jnp.float32)


def retention_state_size(cfg: RetentionConfig, d_model: int):
  """S [H, D, value_factor * D]; no normaliser (GroupNorm replaces it)."""
  hd = head_dim(cfg, d_model)
  return linear_state(cfg.num_heads, hd, hd * cfg.value_factor, normalizer=False)


def lightning_state_size(cfg: LightningConfig, d_model: int):
  """S [H, D, D]; no normaliser (SRMSNorm replaces it)."""
  hd = head_dim(cfg, d_model)
  return linear_state(cfg.num_heads, hd, hd, normalizer=False)


@register("retention", family="decay", config=RetentionConfig, patterns=DECAY_PATTERNS,
          paper="Sun et al., 2023", cost=("T*c", "T"), state_size=retention_state_size)
class Retention(LinearAttentionBase):
  """Multi-scale retention (RetNet eq. 8-9).

  head_h = (Q_h K_h^T / sqrt(d) . D_h) V_h with D_h[n, m] = gamma_h^(n - m) (n >= m);
  Y = GroupNorm_h(head_h) per head (mean/variance over the head's value channels,
  learnable per-channel scale and bias); out = W_O (swish(X W_G) * Y).
  The paper's extra normalisations of D and of the score rows (sec. 2.2, "Retention
  Score Normalization") are left out: GroupNorm is invariant to them up to its epsilon.
  """
  weight_kind = "signed"  # q . k (retention) and silu features (lightning) can be negative

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    cfg = self.cfg
    self.check_call(context, decode)
    if cfg.positional not in ("rope", "none"):
      raise ValueError(f"positional must be 'rope' or 'none', got {cfg.positional!r}")
    if cfg.value_factor < 1:
      raise ValueError(f"value_factor must be >= 1, got {cfg.value_factor}")
    b, t, d_model = x.shape
    hd = self.head_dim_for(d_model)
    dv = hd * cfg.value_factor
    h = cfg.num_heads
    q, k, v = self.qkv(x, x, hd, dv)
    offset = self.cache_offset(decode)
    if cfg.positional == "rope":
      if positions is None:
        positions = self.default_positions(b, t, offset)
      q, k = apply_rope(q, positions, cfg.rope_base), apply_rope(k, positions, cfg.rope_base)
    k = self.mask_keys(k, mask, offset)
    y = self.run_linear(q, k, v, decode=decode, normalize=False, log_decay=retention_log_decay(h),
                        scale=hd ** -0.5)
    y = group_norm(self, y, cfg.norm_eps)
    gate = nn.swish(self.project_heads(x, h, dv, "gate"))
    return self.project_out(gate * y, d_model)


def group_norm(module: nn.Module, y, eps):
  """Per-head GroupNorm over the value channels: y [B, T, H, Dv] -> same, with params
  `norm_scale`, `norm_bias` [H, Dv] (logically partitioned ("heads", "head_dim"))."""
  h, dv = y.shape[-2:]
  scale = module.param("norm_scale", nn.with_logical_partitioning(nn.initializers.ones, ("heads", "head_dim")),
                       (h, dv), jnp.float32)
  bias = module.param("norm_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("heads", "head_dim")),
                      (h, dv), jnp.float32)
  yf = y.astype(jnp.float32)
  mean = yf.mean(-1, keepdims=True)
  var = jnp.square(yf - mean).mean(-1, keepdims=True)
  return ((yf - mean) * jax.lax.rsqrt(var + eps) * scale + bias).astype(y.dtype)


@register("lightning", family="decay", config=LightningConfig, patterns=DECAY_PATTERNS,
          paper="Qin et al., 2024", cost=("T*c", "T"), state_size=lightning_state_size)
class LightningAttention(LinearAttentionBase):
  """TransNormerLLM's NormLinearAttention computed the Lightning Attention-2 way.

  Q = silu(X W_Q), K = silu(X W_K), V = X W_V, U = X W_U (per head, head_dim each);
  O = ((Q K^T) . M) V with M[i, j] = lambda_h^(i - j) (j <= i), lambda_h per head and
  layer by cfg.decay_schedule (`lightning_log_decay`);
  out = W_O (U * SRMSNorm(O)), SRMSNorm(o) = o / sqrt(mean(o^2) + eps) over all heads'
  channels (no affine). No score scaling, as in the paper. LRPE (used in TransNormerLLM's
  first layer only) is not included.
  """
  weight_kind = "signed"  # q . k (retention) and silu features (lightning) can be negative

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    cfg = self.cfg
    self.check_call(context, decode)
    b, t, d_model = x.shape
    hd = self.head_dim_for(d_model)
    h = cfg.num_heads
    q, k, v = self.qkv(x, x, hd, hd)
    q, k = nn.silu(q), nn.silu(k)
    k = self.mask_keys(k, mask, self.cache_offset(decode))
    y = self.run_linear(q, k, v, decode=decode, normalize=False,
                        log_decay=lightning_log_decay(h, cfg.layer_index, cfg.num_layers, cfg.decay_schedule))
    yf = y.astype(jnp.float32)
    yf = yf * jax.lax.rsqrt(jnp.square(yf).mean(axis=(-2, -1), keepdims=True) + cfg.norm_eps)
    u = self.project_heads(x, h, hd, "gate")
    return self.project_out(u * yf.astype(y.dtype), d_model)
