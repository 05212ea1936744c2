"""Variants that change what a head is: routed heads, differential heads, mixed heads,
and unequal Q/K/V heads.

moh: Jin et al., 2024, "MoH: Multi-Head Attention as Mixture-of-Head Attention"
  (arXiv:2410.11842): always-on shared heads plus per-token top-k routed heads, outputs
  weighted by a two-stage router.
diff: Ye et al., 2024, "Differential Transformer" (arXiv:2410.05258): the difference of
  two softmax maps, per-head RMS norm and (1 - lambda_init) scaling.
talking_heads: Shazeer et al., 2020, "Talking-Heads Attention" (arXiv:2003.02436):
  learned mixing across heads of the logits and of the weights.
diffqkv: Lin et al., 2025, "Sigma: Differential Rescaling of Query, Key and Value for
  Efficient Language Models" (arXiv:2501.13629): separate head counts and head sizes for
  Q/K and V (differentially compressed KV).

All reuse SoftmaxAttention's pieces (structure masks, GQA check) and the shared
RoPE/ALiBi/KV-cache plumbing of variants/softmax_like.py.

Analysis hook (an `apply` with the "attention" collection mutable, not decoding): the
sown matrix is read off the reference op with the identity as values (`ops.implied`):
moh's softmax weights times each query token's head gate g_h(x_t) ("nonnegative");
diff's softmax_1 - lambda softmax_2 ("signed", before the per-head RMSNorm); talking
heads' weights after the post-softmax head mixing, one matrix per value head ("signed":
the mixing matrices are unconstrained); diffqkv's softmax weights.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnlab.attention import masks as M
from attnlab.attention.ops.softmax import differential_attention, softmax_attention, talking_heads_attention
from attnlab.attention.registry import PATTERNS, register
from attnlab.attention.variants.common import alibi_bias, attend_or_capture, check_positional, rope_and_cache
from attnlab.attention.variants.softmax_base import SoftmaxAttention, SoftmaxConfig


def _kernel_init(axes):
  return nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes)


def _no_kv_heads(cfg, variant: str, instead: str) -> None:
  if cfg.num_kv_heads:
    raise ValueError(f"{variant} does not use num_kv_heads (got {cfg.num_kv_heads}); set {instead}")


# ---- moh -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class MoHConfig(SoftmaxConfig):
  """num_shared: always-active heads (the first num_shared heads); top_k: routed heads
  each token activates among the other num_heads - num_shared (must be 0 when every head
  is shared)."""
  num_shared: int = 1
  top_k: int = 2


def moh_gates(x, w_shared, w_routed, w_type, num_shared: int, top_k: int):
  """MoH's two-stage router (Jin et al., 2024, Eqs. 5-6; scaling as in the official code).

  x [B, T, d]; w_shared [d, hs] or None (hs <= 1); w_routed [d, hr] or None (hr = 0);
  w_type [d, 2] or None (needed when hs > 0 and hr > 0). Returns (gates [B, T, hs + hr]
  fp32, aux) where aux = (P [B, T, hr] routed softmax, sel [B, T, hr] 0/1 selections) or
  None. Gates:
    shared  g_i = 2 a_1 * hs * softmax(W_s x)_i
    routed  g_i = 2 a_2 * k  * p_i / sum_{j in topk} p_j   if i in topk(p), else 0,
            p = softmax(W_r x)
    [a_1, a_2] = softmax(W_h x)
  The factors hs, k and 2 (official code) make zero router weights give unit gates, so
  MoH with zero routers is multi-head attention.
  """
  xf = x.astype(jnp.float32)
  b, t = x.shape[:2]
  parts, aux = [], None
  if num_shared:
    if w_shared is None:
      g_s = jnp.ones((b, t, num_shared), jnp.float32)
    else:
      g_s = jax.nn.softmax(xf @ w_shared, axis=-1) * num_shared
    parts.append(g_s)
  if w_routed is not None:
    hr = w_routed.shape[1]
    p = jax.nn.softmax(xf @ w_routed, axis=-1)  # [B, T, hr]
    _, idx = jax.lax.top_k(p, top_k)
    sel = jnp.sum(jax.nn.one_hot(idx, hr, dtype=jnp.float32), axis=-2)  # [B, T, hr]
    kept = p * sel
    g_r = kept / jnp.maximum(jnp.sum(kept, axis=-1, keepdims=True), jnp.finfo(jnp.float32).eps) * top_k
    parts.append(g_r)
    aux = (p, sel)
  if w_type is not None:
    alpha = jax.nn.softmax(xf @ w_type, axis=-1) * 2.0  # [B, T, 2]
    parts = [parts[0] * alpha[..., :1], parts[1] * alpha[..., 1:]]
  return jnp.concatenate(parts, axis=-1), aux


def moh_load_balance_loss(p, sel):
  """MoH's load-balance loss over the routed heads (Jin et al., 2024, Eq. 7):

  L_b = sum_{i routed} f_i P_i,  f_i = (1/T) sum_t 1[token t selects head i] (mean of sel_i),
  P_i = (1/T) sum_t softmax(W_r x_t)_i (mean of p_i), T every token of the batch.
  p, sel [B, T, hr] -> fp32 scalar. Equals top_k / hr when routing is uniform. f_i is
  piecewise constant (top-k), so the gradient reaches the router through P_i. (The
  Switch-Transformer-style hr * sum f_i P_i is this loss with an hr-times larger weight.)
  """
  hr = p.shape[-1]
  f = jnp.mean(sel.reshape(-1, hr).astype(jnp.float32), axis=0)
  pm = jnp.mean(p.reshape(-1, hr).astype(jnp.float32), axis=0)
  return jnp.sum(f * pm)


@register("moh", family="heads", config=MoHConfig, patterns=PATTERNS, paper="Jin et al., 2024 (MoH)",
          cost=("T^2", "T"))
class MoHAttention(SoftmaxAttention):
  """Mixture-of-Head attention: per-token weighted sum over shared + top-k routed heads.

  Jin et al., 2024, "MoH: Multi-Head Attention as Mixture-of-Head Attention":
  y = sum_i g_i(x_t) head_i W_O^i with the two-stage gates of `moh_gates`, computed from
  the query token (so decoding and cross-attention work as for mha). Router params
  `router_shared` [d, hs] (only when hs > 1), `router_routed` [d, hr], `router_type`
  [d, 2]. The load-balance loss (`moh_load_balance_loss`, unweighted) is sown as
  `losses/load_balance` (flax's sow: a tuple, one entry per call) whenever the "losses"
  collection is mutable (`apply(..., mutable=["losses"])`; not during init); the trainer
  adds `config.train.aux_loss_weights["load_balance"]` times its sum over layers (the
  paper uses 0.01). It averages over every query token in the batch (padding queries
  included: a Mask only describes keys). The XLA path computes every head and zeroes unselected ones, so there is no
  compute saving here (a kernel could skip them).
  """
  weight_kind = "nonnegative"  # g_h(x_t) * softmax: rows sum to the gate, not to 1
  weights_unavailable = None

  def check_routing(self) -> tuple[int, int]:
    cfg = self.cfg
    hs, hr = cfg.num_shared, cfg.num_heads - cfg.num_shared
    if not 0 <= hs <= cfg.num_heads:
      raise ValueError(f"num_shared must be in [0, num_heads={cfg.num_heads}], got {hs}")
    if hr == 0 and cfg.top_k != 0:
      raise ValueError(f"top_k must be 0 when every head is shared (num_shared == num_heads), got {cfg.top_k}")
    if hr > 0 and not 1 <= cfg.top_k <= hr:
      raise ValueError(f"top_k must be in [1, {hr}] (the routed heads), got {cfg.top_k}")
    return hs, hr

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    cfg = self.cfg
    self.check_pattern(context, decode)
    check_positional(cfg)
    hs, hr = self.check_routing()
    d_model = x.shape[-1]
    hd = self.head_dim_for(d_model)
    src = x if context is None else context
    q = self.project_heads(x, cfg.num_heads, hd, "query")
    k = self.project_heads(src, self.num_kv_heads(), hd, "key", "kv_heads")
    v = self.project_heads(src, self.num_kv_heads(), hd, "value", "kv_heads")
    q, k, v, q_offset = rope_and_cache(self, q, k, v, positions=positions, context=context, decode=decode)

    router = lambda n, name: self.param(name, _kernel_init(("embed", "heads")), (d_model, n), jnp.float32)  # noqa: E731
    w_shared = router(hs, "router_shared") if hs > 1 else None
    w_routed = router(hr, "router_routed") if hr > 0 else None
    w_type = router(2, "router_type") if hs > 0 and hr > 0 else None
    gates, aux = moh_gates(x, w_shared, w_routed, w_type, hs, cfg.top_k)
    if aux is not None and not self.is_initializing():  # init's variables stay params (+ cache)
      self.sow("losses", "load_balance", moh_load_balance_loss(*aux))

    def gated_heads(vals, impl):  # g_h(x_t) * head_h: linear in the values
      o = softmax_attention(q, k, vals, mask=M.combine(self.structure_mask(), mask),
                            bias=alibi_bias(self, cfg.num_heads), impl=impl, q_offset=q_offset)
      return (o.astype(jnp.float32) * gates[..., None]).astype(o.dtype)

    return self.project_out(attend_or_capture(self, gated_heads, v, impl=cfg.impl, decode=decode), d_model)


# ---- diff ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DiffConfig(SoftmaxConfig):
  """lambda_init: < 0 (default) = the paper's per-layer schedule from `layer_index` (see
  `diff_lambda_init`); a value in [0, 1) fixes it for this layer. lambda_std: init std of
  the lambda vectors; norm_eps: the per-head RMSNorm epsilon. num_heads counts
  differential heads (each has two query/key heads of head_dim and one value head of
  2 * head_dim; head_dim 0 = d_model // (2 * num_heads)). layer_index is 0-based (the
  backbone sets it; AttentionConfig)."""
  lambda_init: float = -1.0
  lambda_std: float = 0.1
  norm_eps: float = 1e-5


def diff_lambda_init(layer_index: int) -> float:
  """lambda_init = 0.8 - 0.6 exp(-0.3 (l - 1)) with l = layer_index + 1 the 1-based depth
  (Ye et al., 2024, Sec. 2.1; the official code's `lambda_init_fn(depth)` with 0-based
  depth). layer_index >= 0; 0.2 at the first layer, -> 0.8 deep in the stack."""
  if layer_index < 0:
    raise ValueError(f"layer_index is 0-based and must be >= 0, got {layer_index}")
  return 0.8 - 0.6 * math.exp(-0.3 * layer_index)


def diff_layer_lambda_init(cfg: DiffConfig) -> float:
  """cfg.lambda_init when set (>= 0, must be < 1), else the schedule at cfg.layer_index."""
  if cfg.lambda_init < 0:
    return diff_lambda_init(cfg.layer_index)
  if cfg.lambda_init >= 1:
    raise ValueError(f"diff: lambda_init must be in [0, 1) (or < 0 for the per-layer schedule), "
                     f"got {cfg.lambda_init}")
  return float(cfg.lambda_init)


@register("diff", family="heads", config=DiffConfig, patterns=PATTERNS,
          paper="Ye et al., 2024 (Differential Transformer)", cost=("T^2", "T"))
class DiffAttention(SoftmaxAttention):
  """Differential attention (Ye et al., 2024, Eqs. 1-3):

    head_i = (softmax(Q1 K1^T / sqrt(d)) - lambda softmax(Q2 K2^T / sqrt(d))) V
    lambda = exp(lq1 . lk1) - exp(lq2 . lk2) + lambda_init       (shared by the layer's heads)
    out    = W_O concat_i (1 - lambda_init) RMSNorm(head_i)

  As in the official code (microsoft/unilm, Diff-Transformer): query/key heads come in
  pairs (2i, 2i+1) of one projection, values are 2 * head_dim wide, the RMSNorm
  ("subln", GroupNorm per head) has one learned scale of size 2 * head_dim shared by the
  heads. GQA: key pairs have num_kv_heads heads; query head i uses key pair
  i // (num_heads / num_kv_heads) for both maps (the official code's repeat interleaves
  the pairs instead).
  """
  weight_kind = "signed"
  weights_unavailable = None

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    cfg = self.cfg
    self.check_pattern(context, decode)
    check_positional(cfg)
    b, t, d_model = x.shape
    h, hkv = cfg.num_heads, self.num_kv_heads()
    if cfg.head_dim:
      hd = cfg.head_dim
    elif d_model % (2 * h):
      raise ValueError(f"diff: d_model ({d_model}) is not divisible by 2 * num_heads ({2 * h})")
    else:
      hd = d_model // (2 * h)
    lam_init = diff_layer_lambda_init(cfg)
    src = x if context is None else context
    q = self.project_heads(x, 2 * h, hd, "query")  # heads (2i, 2i+1) = (Q1, Q2) of head i
    k = self.project_heads(src, 2 * hkv, hd, "key", "kv_heads")
    v = self.project_heads(src, hkv, 2 * hd, "value", "kv_heads")
    q, k, v, q_offset = rope_and_cache(self, q, k, v, positions=positions, context=context, decode=decode)

    lam_param = lambda name: self.param(  # noqa: E731
        name, nn.with_logical_partitioning(nn.initializers.normal(cfg.lambda_std), ("head_dim",)), (hd,),
        jnp.float32)
    lq1, lk1, lq2, lk2 = (lam_param(n) for n in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"))
    # Eq. (2): re-parameterised lambda, one scalar per layer.
    lam = jnp.exp(jnp.sum(lq1 * lk1)) - jnp.exp(jnp.sum(lq2 * lk2)) + lam_init

    o = attend_or_capture(self, lambda vals, impl: differential_attention(
        q[:, :, 0::2], q[:, :, 1::2], k[:, :, 0::2], k[:, :, 1::2], vals, lam,
        mask=M.combine(self.structure_mask(), mask), bias=alibi_bias(self, h), impl=impl, q_offset=q_offset),
        v, impl=cfg.impl, decode=decode)  # [B, T, H, 2 hd]
    # Eq. (3): per-head RMSNorm (subln) then (1 - lambda_init).
    scale = self.param("subln_scale", nn.with_logical_partitioning(nn.initializers.ones, ("head_dim",)),
                       (2 * hd,), jnp.float32)
    of = o.astype(jnp.float32)
    of = of * jax.lax.rsqrt(jnp.mean(of * of, axis=-1, keepdims=True) + cfg.norm_eps) * scale
    y = (of * (1.0 - lam_init)).astype(o.dtype)
    return self.project_out(y, d_model)


# ---- talking_heads -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TalkingHeadsConfig(SoftmaxConfig):
  """num_heads is h, the softmax heads; num_qk_heads is h_k (query/key heads, 0 = h);
  num_v_heads is h_v (value heads, 0 = h). num_kv_heads is not used."""
  num_qk_heads: int = 0
  num_v_heads: int = 0


def _mix_init(key, shape, dtype=jnp.float32):
  """Identity when square (the layer starts as multi-head attention), else lecun normal."""
  if shape[0] == shape[1]:
    return jnp.eye(shape[0], dtype=dtype)
  return nn.initializers.lecun_normal()(key, shape, dtype)


@register("talking_heads", family="heads", config=TalkingHeadsConfig, patterns=PATTERNS,
          paper="Shazeer et al., 2020", cost=("T^2", "T"))
class TalkingHeadsAttention(SoftmaxAttention):
  """Talking-heads attention (Shazeer et al., 2020, Alg. 1): logits of h_k query/key heads
  are mixed into h softmax heads by `logits_mix` [h_k, h]; the weights are mixed into h_v
  value heads by `weights_mix` [h, h_v]. Mixing matrices start as the identity when square
  (our choice; the paper does not fix an init), so at init with h_k = h = h_v this is mha.
  ALiBi slopes are per softmax head. impl: "auto"/"xla" (blocked, masked tiles skipped;
  two passes each way, ~1.5x mha's FLOPs: see ops/softmax/talking_heads.py) or "reference".
  """
  weight_kind = "signed"  # weights_mix is unconstrained
  weights_unavailable = None

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    cfg = self.cfg
    self.check_pattern(context, decode)
    check_positional(cfg)
    _no_kv_heads(cfg, "talking_heads", "num_qk_heads / num_v_heads")
    d_model = x.shape[-1]
    hd = self.head_dim_for(d_model)
    h, hk, hv = cfg.num_heads, cfg.num_qk_heads or cfg.num_heads, cfg.num_v_heads or cfg.num_heads
    src = x if context is None else context
    q = self.project_heads(x, hk, hd, "query")
    k = self.project_heads(src, hk, hd, "key", "kv_heads")
    v = self.project_heads(src, hv, hd, "value", "kv_heads")
    q, k, v, q_offset = rope_and_cache(self, q, k, v, positions=positions, context=context, decode=decode)
    p_l = self.param("logits_mix", nn.with_logical_partitioning(_mix_init, (None, None)), (hk, h),
                     jnp.float32)
    p_w = self.param("weights_mix", nn.with_logical_partitioning(_mix_init, (None, None)), (h, hv),
                     jnp.float32)
    y = attend_or_capture(self, lambda vals, impl: talking_heads_attention(
        q, k, vals, p_l, p_w, mask=M.combine(self.structure_mask(), mask), bias=alibi_bias(self, h),
        q_offset=q_offset, impl=impl), v, impl=cfg.impl, decode=decode)
    return self.project_out(y, d_model)


# ---- diffqkv -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DiffQKVConfig(SoftmaxConfig):
  """num_k_heads / num_v_heads: key and value heads (each divides num_heads; 0 = num_heads);
  k_head_dim: query/key head size; v_head_dim: value head size (0 = d_model // num_heads).
  num_kv_heads is not used."""
  num_k_heads: int = 1
  num_v_heads: int = 2
  k_head_dim: int = 0
  v_head_dim: int = 0


def _expand_heads(x, heads: int):
  """[B, T, h, D] -> [B, T, heads, D] repeating each head heads/h times (h divides heads)."""
  return jnp.repeat(x, heads // x.shape[2], axis=2) if heads != x.shape[2] else x


@register("diffqkv", family="heads", config=DiffQKVConfig, patterns=PATTERNS,
          paper="Lin et al., 2025 (Sigma, DiffQKV)", cost=("T^2", "T"))
class DiffQKVAttention(SoftmaxAttention):
  """DiffQKV attention (Lin et al., 2025, Sigma, Sec. 2): Q, K and V with their own head
  counts and sizes ("differentially compressed KV": typically fewer and smaller K heads
  than V heads). Query head i scores against key head i // (Hq / Hk) and reads value head
  i // (Hq / Hv); the output projection maps the Hq x v_head_dim head outputs to d_model.
  The KV cache stores the compressed K [B, T, Hk, dk] and V [B, T, Hv, dv]; they are
  expanded to lcm(Hk, Hv) heads only for the softmax_attention call (cfg.impl selects it).
  Not implemented: the paper's "augmented Q" and selective V-cache fetching.
  """
  weights_unavailable = None

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    cfg = self.cfg
    self.check_pattern(context, decode)
    check_positional(cfg)
    _no_kv_heads(cfg, "diffqkv", "num_k_heads / num_v_heads")
    d_model = x.shape[-1]
    h = cfg.num_heads
    hk, hv = cfg.num_k_heads or h, cfg.num_v_heads or h
    for name, n in (("num_k_heads", hk), ("num_v_heads", hv)):
      if n < 1 or h % n:
        raise ValueError(f"diffqkv: {name} ({n}) must divide num_heads ({h})")
    dk = cfg.k_head_dim or self.head_dim_for(d_model)
    dv = cfg.v_head_dim or self.head_dim_for(d_model)
    src = x if context is None else context
    q = self.project_heads(x, h, dk, "query")
    k = self.project_heads(src, hk, dk, "key", "kv_heads")
    v = self.project_heads(src, hv, dv, "value", "kv_heads")
    q, k, v, q_offset = rope_and_cache(self, q, k, v, positions=positions, context=context, decode=decode)
    # Shared head count for the op: L = lcm(Hk, Hv) divides Hq, and group g of L uses key
    # head g // (L / Hk) and value head g // (L / Hv), i.e. query head i gets i // (Hq / Hk)
    # and i // (Hq / Hv) as required.
    groups = math.lcm(hk, hv)
    y = attend_or_capture(self, lambda vals, impl: softmax_attention(
        q, _expand_heads(k, groups), _expand_heads(vals, groups), mask=M.combine(self.structure_mask(), mask),
        bias=alibi_bias(self, h), impl=impl, q_offset=q_offset), v, impl=cfg.impl, decode=decode)  # [B, T, Hq, dv]
    return self.project_out(y, d_model)
