"""Linear attention: kernel feature maps phi with phi(q) . phi(k) in place of exp(q . k).

linear: Katharopoulos et al., 2020, "Transformers are RNNs: Fast Autoregressive
  Transformers with Linear Attention" (feature maps elu+1 / relu / identity, optional
  normaliser phi(q) . sum_j phi(k_j)).
performer: Choromanski et al., 2021, "Rethinking Attention with Performers" (FAVOR+
  positive orthogonal random features approximating the softmax kernel).
cosformer: Qin et al., 2022, "cosFormer: Rethinking Softmax in Attention" (ReLU features
  with cos-based re-weighting cos(pi/2 (i - j) / M)).
based: Arora et al., 2024, "Simple linear attention language models balance the
  recall-throughput tradeoff" (2nd-order Taylor features on a small projected feature
  dim, plus a small softmax sliding window).

Every variant has three forms of the same map, chosen by `form`: "chunked" (default: the
O(T) chunk-parallel XLA path), "parallel" (the materialised [T, T] oracle) and
"recurrent" (a token scan); decoding always runs the recurrent form from the
constant-size state kept in the "cache" collection ("state" [B, H, F, Dv(+1)] and
"cache_index"). The math lives in `attnlab.attention.ops.linear.core` and
`attnlab.attention.ops.linear.feature_maps`; the modules here only project and pick
features; the config and module base they share with variants/decay.py are in
variants/linear_base.py.

`mask`: only key-padding masks (`masks.KeyPadding`, and-combinations of them) can be
honoured by a linear map (the padded keys' features are zeroed, which removes exactly
those columns of the implied attention matrix); any other mask raises ValueError
(`based` passes the mask to its softmax window as well).
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from attnlab.attention import masks as M
from attnlab.attention.ops.linear import feature_maps as fm
from attnlab.attention.ops.softmax import softmax_attention
from attnlab.attention.positional import apply_rope
from attnlab.attention.registry import register
from attnlab.attention.state_size import head_dim, linear_state, window_kv
from attnlab.attention.variants.base import layer_seed, remap_cache_slots, window_extents
from attnlab.attention.variants.linear_base import LinearAttentionBase, LinearFamilyConfig


# ---- hyperparameters ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class NormalizedConfig(LinearFamilyConfig):
  """eps: added to the normaliser's denominator phi(q) . sum_j phi(k_j)."""
  eps: float = 1e-6


@dataclasses.dataclass(frozen=True)
class LinearConfig(NormalizedConfig):
  """feature_map: "elu+1" | "relu" | "identity"; normalize: divide by phi(q) . sum phi(k)
  (Katharopoulos eq. 6; with "identity" the denominator can vanish: use normalize=False)."""
  feature_map: str = "elu+1"
  normalize: bool = True


@dataclasses.dataclass(frozen=True)
class PerformerConfig(NormalizedConfig):
  """num_features: random features M per head; feature_seed: seed of the random
  projection, mixed with layer_index (`variants.base.layer_seed`: layer 0 uses it as is)
  so each layer draws its own features. Redraw policy: the projection is a pure function
  of (feature_seed, layer_index, num_features, head_dim), identical in every call, train
  or eval; it is never redrawn (a recurrent state is only meaningful under fixed
  features). To redraw, change feature_seed (e.g. from the training loop)."""
  num_features: int = 64
  feature_seed: int = 0


@dataclasses.dataclass(frozen=True)
class CosformerConfig(NormalizedConfig):
  """max_len: M in cos(pi/2 (i - j) / M). Must be >= every position used (the
  re-weighting is only non-negative for |i - j| <= M); a full pass longer than max_len
  raises. max_len=0 means the call's length (the paper's non-causal choice: max of the
  query and key lengths); it is rejected for causal attention and decoding, whose
  weights must not depend on the final length."""
  max_len: int = 4096


@dataclasses.dataclass(frozen=True)
class BasedConfig(NormalizedConfig):
  """feature_dim: per-head q/k projection size F fed to the Taylor map (1 + F + F^2
  features); window: tokens each query sees in the softmax window branch (itself
  included; `variants.base.window_extents`: causal the last w, non-causal centred); rope_base: RoPE base of the window
  branch; impl: softmax op implementation for the window branch."""
  feature_dim: int = 16
  window: int = 64
  rope_base: float = 10000.0
  impl: str = "auto"


LINEAR_PATTERNS = ("causal-self", "noncausal-self", "noncausal-cross", "decode")


# ---- decode-state sizes (floats per sequence and layer; `attention.state_size`) ------------------
def linear_state_size(cfg: LinearConfig, d_model: int):
  """S [H, D, D] (the feature maps keep the head size), + z [H, D] when normalize."""
  hd = head_dim(cfg, d_model)
  return linear_state(cfg.num_heads, hd, hd, normalizer=cfg.normalize)


def performer_state_size(cfg: PerformerConfig, d_model: int):
  """S [H, M, D] + z [H, M] over the M random features, + the running key max [H]."""
  return linear_state(cfg.num_heads, cfg.num_features, head_dim(cfg, d_model), normalizer=True,
                      extra=cfg.num_heads, extra_note=f"key max {cfg.num_heads}")


def cosformer_state_size(cfg: CosformerConfig, d_model: int):
  """S [H, 2D, D] + z [H, 2D]: the cos and sin halves of the re-weighted features."""
  hd = head_dim(cfg, d_model)
  return linear_state(cfg.num_heads, 2 * hd, hd, normalizer=True)


def based_state_size(cfg: BasedConfig, d_model: int):
  """S [H, 1 + F + F^2, D] + z (the Taylor features of the F-dim projections), plus the
  window branch's ring-buffer KV cache of window - 1 keys and values [H, D]."""
  f = 1 + cfg.feature_dim + cfg.feature_dim ** 2
  ring = window_kv(cfg, d_model, window_extents(cfg.window, cfg.causal)[0])
  return linear_state(cfg.num_heads, f, head_dim(cfg, d_model), normalizer=True,
                      extra=ring.fixed, extra_note=ring.counted)


# ---- linear ---------------------------------------------------------------------------------------
@register("linear", family="linear", config=LinearConfig, patterns=LINEAR_PATTERNS,
          paper="Katharopoulos et al., 2020", cost=("T", "T"),
          state_size=linear_state_size)
class LinearAttention(LinearAttentionBase):
  """phi(Q) (phi(K)^T V) [/ phi(Q) phi(K)^T 1] with phi in {elu+1, relu, identity}.

  No positional encoding (as in the paper); `positions` is unused.
  """

  @property
  def weight_kind(self):
    """Normalised non-negative features give probabilities; "identity" features signed weights."""
    if self.cfg.feature_map == "identity":
      return "signed"
    return "probability" if self.cfg.normalize else "nonnegative"

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    cfg = self.cfg
    self.check_call(context, decode)
    if cfg.feature_map not in fm.SIMPLE_FEATURE_MAPS:
      raise ValueError(f"feature_map must be one of {tuple(fm.SIMPLE_FEATURE_MAPS)}, got {cfg.feature_map!r}")
    phi = fm.SIMPLE_FEATURE_MAPS[cfg.feature_map]
    d_model = x.shape[-1]
    hd = self.head_dim_for(d_model)
    q, k, v = self.qkv(x, x if context is None else context, hd, hd)
    fk = self.mask_keys(phi(k), mask, self.cache_offset(decode))
    y = self.run_linear(phi(q), fk, v, decode=decode, normalize=cfg.normalize)
    return self.project_out(y, d_model)


# ---- performer --------------------------------------------------------------------------------
@register("performer", family="linear", config=PerformerConfig, patterns=LINEAR_PATTERNS,
          paper="Choromanski et al., 2021", cost=("T*m", "T"),
          state_size=performer_state_size)
class PerformerAttention(LinearAttentionBase):
  """FAVOR+: softmax(q k^T / sqrt(D)) approximated by positive orthogonal random features.

  out_i = sum_j phi(q_i) . phi(k_j) v_j / (sum_j phi(q_i) . phi(k_j) + eps) with
  phi(x) = exp(w_r . x' - |x'|^2/2) / sqrt(M), x' = x D^(-1/4), W [M, D] from
  `ops.linear.feature_maps.orthogonal_random_features(key(layer_seed(feature_seed, layer_index)), M, D)`,
  shared by the layer's heads; fixed (see PerformerConfig for the redraw policy).

  Stabilisation (exact). The exponents spread widely: at head_dim 128 one feature's
  exponent can sit ~60 below another's, so raw features overflow or underflow fp32 and
  the gradient of the normaliser (1 / den^2) becomes infinite. Queries are divided by
  exp(c_i), c_i = max_r of their own exponents; keys by exp(m_i), m_i = the running max
  of key exponents over keys j <= i and features (over all keys when non-causal), as the
  Performer reference code does for keys, made causal. A key stored under m_j is rescaled
  to m_i by the decay exp(m_j - m_i) <= 1 of the decay-aware linear-attention op (the
  online-softmax trick), so queries see every key under the same factor, which cancels in
  the normalised output; eps is scaled by exp(-c_i - m_i) alike, so the output equals the
  textbook formula with `+ eps`. Decoding keeps m in the cache beside the state.
  """

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    cfg = self.cfg
    self.check_call(context, decode)
    if cfg.num_features <= 0:
      raise ValueError(f"num_features must be positive, got {cfg.num_features}")
    d_model = x.shape[-1]
    hd = self.head_dim_for(d_model)
    q, k, v = self.qkv(x, x if context is None else context, hd, hd)
    w = performer_projection(cfg, hd)
    q_logits, k_logits = fm.favor_logits(q, w), fm.favor_logits(k, w)
    c = jax.lax.stop_gradient(q_logits.max(-1, keepdims=True))  # [B, T, H, 1]
    m, log_decay = self.key_stabiliser(jax.lax.stop_gradient(k_logits.max(-1)), decode)
    fq = fm.favor_features(q_logits, c)
    fk = self.mask_keys(fm.favor_features(k_logits, m[..., None]), mask, self.cache_offset(decode))
    # Clipped to eps * [e^-20, e^60]: never inf, and never so small that the normaliser's
    # gradient (1 / (den + eps)^2) overflows when the stabilised den underflows to 0 (a
    # query whose features have no key mass; seen in MQAR training at head_dim 128).
    eps = cfg.eps * jnp.exp(jnp.clip(-(c + m[..., None]), -20.0, 60.0))
    y = self.run_linear(fq, fk, v, decode=decode, normalize=True, eps=eps, log_decay=log_decay)
    return self.project_out(y, d_model)

  def key_stabiliser(self, key_max, decode):
    """key_max [B, S, H] (each key's largest exponent) -> (m, log_decay).

    Non-causal: m [B, 1, H] = the max over all keys, no decay. Causal: m [B, T, H] = the
    running max, log_decay [B, T, H] = m_{t-1} - m_t (<= 0; 0 at the first position);
    decoding continues the running max from the cache ("key_max", [B, H])."""
    if not self.cfg.causal:
      return key_max.max(1, keepdims=True), None
    m = jax.lax.cummax(key_max, axis=1)
    first = m[:, :1]
    if decode:
      is_init = not self.has_variable("cache", "key_max")
      cached = self.variable("cache", "key_max", jnp.full, key_max[:, 0].shape, -1e30, jnp.float32)
      if not is_init:  # the state was built under cached.value: decay it to the new max
        m = jnp.maximum(m, cached.value[:, None])
        first = cached.value[:, None]
        cached.value = m[:, -1]
    return m, jnp.concatenate([first, m[:, :-1]], axis=1) - m


def performer_projection(cfg: PerformerConfig, head_dim: int):
  """The Performer's fixed random projection W [num_features, head_dim] for `cfg`.

  Computed when the program is traced, not inside it: a constant, and its QR (a LAPACK
  call on CPU) stays out of the compiled step. Memoised per (seed, layer, M, D): init,
  apply and every retrace of a layer reuse one host array instead of re-running the
  dozen eager ops (a QR among them) that draw it."""
  return _projection(layer_seed(cfg.feature_seed, cfg.layer_index), cfg.num_features, head_dim)


@functools.lru_cache(maxsize=256)
def _projection(seed: int, num_features: int, head_dim: int) -> np.ndarray:
  with jax.ensure_compile_time_eval():
    return np.asarray(fm.orthogonal_random_features(jax.random.key(seed), num_features, head_dim))


# ---- cosformer ----------------------------------------------------------------------------------
@register("cosformer", family="linear", config=CosformerConfig, patterns=LINEAR_PATTERNS,
          paper="Qin et al., 2022", cost=("T", "T"),
          state_size=cosformer_state_size)
class CosformerAttention(LinearAttentionBase):
  """relu(q_i) . relu(k_j) cos(pi/2 (i - j) / M), normalised by its row sum (+ eps).

  Positions i (queries) come from `positions` (default arange, offset by the cache index
  in decode); keys use the same positions in self-attention and arange(S) for a context.
  """

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    cfg = self.cfg
    self.check_call(context, decode)
    b, t, d_model = x.shape
    hd = self.head_dim_for(d_model)
    src = x if context is None else context
    s = src.shape[1]
    if cfg.max_len < 0:
      raise ValueError(f"max_len must be >= 0, got {cfg.max_len}")
    if cfg.max_len == 0 and (cfg.causal or decode):
      raise ValueError("cosformer needs a fixed max_len > 0 for causal attention and decoding")
    m = cfg.max_len or max(t, s)
    if not decode and max(t, s) > m:
      raise ValueError(f"cosformer: sequence length {max(t, s)} exceeds max_len={m}")
    q, k, v = self.qkv(x, src, hd, hd)
    offset = self.cache_offset(decode)
    if positions is None:
      positions = self.default_positions(b, t, offset)
    k_pos = positions if context is None else self.default_positions(b, s)
    fq = fm.cosformer(q, positions, m)
    fk = self.mask_keys(fm.cosformer(k, k_pos, m), mask, offset)
    y = self.run_linear(fq, fk, v, decode=decode, normalize=True)
    return self.project_out(y, d_model)


# ---- based ----------------------------------------------------------------------------------------
@register("based", family="linear", config=BasedConfig,
          patterns=("causal-self", "noncausal-self", "decode"), paper="Arora et al., 2024",
          cost=("T*d^2", "T"), state_size=based_state_size)
class BasedAttention(LinearAttentionBase):
  """Based in one layer: Taylor linear attention + softmax sliding window, summed.

  y = W_o (LA(x) + SWA(x)), where LA is normalised linear attention with the Taylor map
  on q, k projected to `feature_dim` per head (v: head_dim), and SWA is RoPE softmax
  attention over the last `window` tokens with its own q/k/v projections. (The paper
  stacks these as separate layers of a hybrid; summing them in one layer is this
  library's choice, documented here.) Decoding keeps the linear state plus a ring-buffer KV
  cache of the window for the window branch (`AttentionModule.window_cache`): O(w) per token.
  """
  # y = W_o (A_lin V + A_win V_w): the branches weight different value projections ("value",
  # "window_value"), so no one [T, T] matrix times one V gives the output (their sum would not).
  weights_unavailable = ("its two branches weight different value projections (A_lin V + A_win V_w), "
                         "so no single matrix applied to one V reproduces its output")

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    cfg = self.cfg
    self.check_call(context, decode)
    if cfg.window < 1 or cfg.feature_dim < 1:
      raise ValueError(f"window and feature_dim must be >= 1, got {cfg.window}, {cfg.feature_dim}")
    b, t, d_model = x.shape
    hd = self.head_dim_for(d_model)
    h = cfg.num_heads
    offset = self.cache_offset(decode)
    # Linear branch (Taylor features on F-dim projections).
    q, k, v = self.qkv(x, x, cfg.feature_dim, hd)
    fk = self.mask_keys(fm.taylor_exp(k), mask, offset)
    y_lin = self.run_linear(fm.taylor_exp(q), fk, v, decode=decode, normalize=True, advance_index=False)
    # Sliding-window softmax branch.
    if positions is None:
      positions = self.default_positions(b, t, offset)
    qw = apply_rope(self.project_heads(x, h, hd, "window_query"), positions, cfg.rope_base)
    kw = apply_rope(self.project_heads(x, h, hd, "window_key"), positions, cfg.rope_base)
    vw = self.project_heads(x, h, hd, "window_value")
    win_mask, q_offset = M.combine(self.window_mask(), mask), 0
    if decode:  # a ring buffer of the window (O(w) per token); also advances cache_index
      kw, vw, slots = self.window_cache(kw, vw, left=window_extents(cfg.window, cfg.causal)[0])
      win_mask, _, q_offset = remap_cache_slots(slots, win_mask, None)
    y_win = softmax_attention(qw, kw, vw, mask=win_mask, impl=cfg.impl, q_offset=q_offset)
    return self.project_out(y_lin.astype(y_win.dtype) + y_win, d_model)

  def window_mask(self) -> M.Mask:
    """The window branch's mask: `window` keys, the query's own included (window_extents)."""
    left, right = window_extents(self.cfg.window, self.cfg.causal)
    return M.SlidingWindow(left=left, right=right)
