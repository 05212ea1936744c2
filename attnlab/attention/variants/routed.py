"""Dynamic, content-routed sparse attention (family "routed").

routing: Roy et al., 2021, "Efficient Content-Based Sparse Attention with Routing
  Transformers" (TACL). Online k-means over unit-normalised queries and keys; centroids
  live in the non-param collection "kmeans" and move by EMA when deterministic=False
  (apply with mutable=["kmeans"]). Balanced clusters: each centroid takes its own top-w
  nearest queries and keys, which attend to each other; half the heads (by default) are
  local sliding-window heads, as in the paper's models.
lsh: Kitaev et al., 2020, "Reformer: The Efficient Transformer" (ICLR). Shared-QK
  angular-LSH bucket attention, several hash rounds, fixed seeded random rotations.
moba: Lu et al., 2025, "MoBA: Mixture of Block Attention for Long-Context LLMs"
  (Moonshot AI). Causal; own block + top-k past blocks by q . mean-pooled block keys.
topk: exact top-k attention (Gupta et al., 2021, "Memory-efficient Transformers via
  Top-k Attention"): each query keeps its k best keys, found blockwise.
duo: Xiao et al., 2024, "DuoAttention: Efficient Long-Context LLM Inference with
  Retrieval and Streaming Heads". Per-head gate alpha_h in [0, 1] mixing full causal
  attention with sink + recent-window (streaming) attention.

The math is in `attnlab.attention.ops.sparse.routed` and `.block_select` (efficient
forms and materialised references).
Cost in the default XLA path (the declared `cost` classes, per layer, T tokens; measured
by tests/attention/test_cost_contract.py; sub-quadratic = compute and memory < T^2):
  routing  O(T * C) routing + O(C * w^2) attention (C * w ~ T at the design length) +
           O(T * local_window) local heads; memory O(T * C)            sub-quadratic
  lsh      O(R * T * chunk) time (+ sorting), memory O(T)           sub-quadratic
  moba     O(T^2 / block + T * top_k * block) time (the gate scores every past block),
           O(T * D) memory plus per-query-tile buffers             quadratic compute
  topk     O(T^2) time (every score is computed, blockwise), O(T * (block_k + k))
           memory                                                   quadratic compute
  knn      as topk, plus O(T * D) prefix means                    quadratic compute
  duo      O(T^2): the full-attention half of every head, memory O(T) quadratic compute
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from attnlab.attention import masks as M
from attnlab.attention.ops.sparse import block_select as BS
from attnlab.attention.ops.sparse import knn as KNN
from attnlab.attention.ops.sparse import routed as R
from attnlab.attention.ops.softmax import softmax_attention
from attnlab.attention.positional import AlibiBias
from attnlab.attention.registry import register
from attnlab.attention.variants.base import AttentionConfig, AttentionModule, window_extents
from attnlab.attention.variants.softmax_base import SinkWindowConfig

POSITIONAL = ("rope", "none")


def _no_mask(mask, variant):
  """Raises for an extra mask: the variant's routing cannot honour arbitrary masks."""
  if mask is not None:
    raise ValueError(f"variant {variant!r} does not take an extra mask (got {type(mask).__name__}): "
                     "its sorted/gathered key sets cannot apply an arbitrary Mask; use 'topk' or 'duo'")


def _check_positional(positional, allowed=POSITIONAL):
  if positional not in allowed:
    raise ValueError(f"positional must be one of {allowed}, got {positional!r}")


# ---- routing -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RoutingConfig(AttentionConfig):
  """Routing Transformer (Roy et al., 2021) hyperparameters.

  num_clusters: k-means centroids C per routing head.
  window: w, the queries and the keys each centroid takes (its own top-w nearest of each);
    cost O(T * C) to route plus O(C * w^2) to attend. 0: w = ceil(T / C), so that C * w
    covers the sequence (then O(T^2 / C) at fixed C). The default C * w = 512 covers
    T = 512; the paper fixes w (256 or 512) and sets C = T / w for its training length
    (official hparams: enwik8 8k C=16 w=512, wikitext-103 4k C=8 w=512).
  kmeans_decay: EMA decay lambda of the centroids (eq. 8; official default 0.999).
  num_local_heads: heads that run local (sliding-window) softmax attention instead of
    routing; -1 (default): num_heads // 2, the paper's enwik8 and wikitext-103 split
    (4 of 8, 8 of 16 heads). Routing heads come first, then the local heads.
  local_window: keys per query of the local heads, its own included (the library's
    window convention, `variants.base.window_extents`); the paper's local heads see a
    256-query block plus a 256-token flange.
  share_qk: the routing heads use the queries as keys (one projection), as the paper's
    causal language models do (official `share_qk=True` in decoder self-attention);
    then every routed query sees at least itself. Needs shared_centroids.
  shared_centroids: one set of centroids routes queries and keys (the paper and the
    official code); False: separate query and key centroids, centroid c of the queries
    meeting centroid c of the keys, each moved by its own vectors.
  """
  num_clusters: int = 8
  window: int = 64
  kmeans_decay: float = 0.999
  num_local_heads: int = -1
  local_window: int = 64
  share_qk: bool = False
  shared_centroids: bool = True

  POSITIVE_SIZES: ClassVar[tuple[str, ...]] = AttentionConfig.POSITIVE_SIZES + ("num_clusters", "local_window")
  ZERO_ALLOWED: ClassVar[tuple[str, ...]] = ("window",)

  def __post_init__(self):
    super().__post_init__()
    if isinstance(self.num_local_heads, bool) or not isinstance(self.num_local_heads, int) \
        or not -1 <= self.num_local_heads <= self.num_heads:
      raise ValueError(f"num_local_heads must be -1 (half the heads) or in [0, num_heads={self.num_heads}], "
                       f"got {self.num_local_heads!r}")
    if not 0.0 <= self.kmeans_decay <= 1.0:
      raise ValueError(f"kmeans_decay must be in [0, 1], got {self.kmeans_decay!r}")
    if self.share_qk and not self.shared_centroids:
      raise ValueError("share_qk=True routes queries and keys as one set of vectors: it needs shared_centroids=True")

  @property
  def local_heads(self) -> int:
    """The number of local heads (num_local_heads, -1 resolved to num_heads // 2)."""
    return self.num_heads // 2 if self.num_local_heads < 0 else self.num_local_heads


@register("routing", family="routed", config=RoutingConfig, cost=("T*(C+w)", "T"),
          patterns=("causal-self", "noncausal-self", "noncausal-cross"), paper="Roy et al., 2021")
class RoutingAttention(AttentionModule):
  """Routing Transformer attention (Roy et al., 2021, Sec. 4.1): routing heads plus local heads.

  Routing heads: queries and keys are unit-normalised and compared with k-means centroids
  (cosine); each centroid takes its own top-w nearest queries and top-w nearest keys
  (`ops.sparse.routed.routing_select`), and its queries attend to its keys (causal: keys
  at positions <= the query's). A query taken by several centroids gets the mean of its
  outputs, a query taken by none (or seeing no key) outputs zeros from the routing heads
  (`routing_attention`). Every attended pair therefore has both ends among one centroid's
  top-w. Local heads: sliding-window softmax attention of `local_window` keys through
  `ops.softmax_attention` (the sliding_window variant's op and mask).

  Centroids [H_routing, C, D] live in the non-param collection "kmeans" ("centroids", or
  "query_centroids" and "key_centroids" when not shared), random unit vectors at init.
  With deterministic=False they take one EMA k-means step (eq. 8) from this call's
  queries and keys, assigned to their nearest centroid, which needs apply(...,
  mutable=["kmeans"]). Sows ("intermediates", "query_index" / "key_index") [B, H_routing,
  C, w]. No positional encoding inside (the paper's relative position terms are not
  implemented); no per-layer `sparsity_skip_first` (use a hybrid stack instead).
  Cross-attention (noncausal-cross) needs num_local_heads=0 and share_qk=False.
  """

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    self.check_pattern(context, decode)
    _no_mask(mask, self.variant)
    cfg = self.cfg
    d_model = x.shape[-1]
    hd = self.head_dim_for(d_model)
    n_local = cfg.local_heads
    n_route = cfg.num_heads - n_local
    if context is not None and (n_local or cfg.share_qk):
      raise ValueError("variant 'routing' attends to a context only with routing heads and separate keys: "
                       f"set num_local_heads=0 and share_qk=False (got {cfg.num_local_heads}, {cfg.share_qk})")
    src = x if context is None else context
    q = self.project_heads(x, cfg.num_heads, hd, "query")
    v = self.project_heads(src, cfg.num_heads, hd, "value")
    if cfg.share_qk:  # routing heads' keys are their queries; only the local heads project keys
      k_local = self.project_heads(src, n_local, hd, "key") if n_local else None
      k_route = q[:, :, :n_route]
    else:
      k = self.project_heads(src, cfg.num_heads, hd, "key")
      k_route, k_local = k[:, :, :n_route], k[:, :, n_route:]
    parts = []
    if n_route:
      parts.append(self.route(q[:, :, :n_route], k_route, v[:, :, :n_route], hd, deterministic))
    if n_local:
      left, right = window_extents(cfg.local_window, cfg.causal)
      parts.append(softmax_attention(q[:, :, n_route:], k_local, v[:, :, n_route:],
                                     mask=M.SlidingWindow(left=left, right=right)))
    y = parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=2)
    return self.project_out(y, d_model)

  def route(self, q, k, v, hd, deterministic):
    """The routing heads: q [B, Tq, Hr, D], k, v [B, Tk, Hr, D] -> [B, Tq, Hr, D]."""
    cfg = self.cfg
    names = ("centroids",) if cfg.shared_centroids else ("query_centroids", "key_centroids")
    if not self.is_initializing() and not self.has_variable("kmeans", names[0]):
      raise ValueError("variant 'routing' keeps its k-means centroids in the 'kmeans' collection: "
                       "apply it with the variables from init, including 'kmeans'")
    h = q.shape[2]
    cents = [self.variable("kmeans", name, lambda: R.normalize(
        jax.random.normal(self.make_rng("params"), (h, cfg.num_clusters, hd)))) for name in names]
    cq, ck = cents[0], cents[-1]
    q_index = R.routing_select(q, cq.value, cfg.window)
    k_index = q_index if cfg.share_qk else R.routing_select(k, ck.value, cfg.window)
    self.sow("intermediates", "query_index", q_index)
    self.sow("intermediates", "key_index", k_index)
    if not deterministic and not self.is_initializing():
      if not self.is_mutable_collection("kmeans"):
        raise ValueError("variant 'routing' updates its k-means centroids when deterministic=False: "
                         "apply with mutable=['kmeans'] (or deterministic=True to freeze them)")
      vq = [q] if cfg.share_qk else [q, k]
      if cfg.shared_centroids:
        c = cq.value
        cq.value = R.kmeans_ema_update(c, vq, [R.kmeans_assign(x, c) for x in vq], cfg.kmeans_decay)
      else:
        for cent, x in ((cq, q), (ck, k)):
          cent.value = R.kmeans_ema_update(cent.value, [x], [R.kmeans_assign(x, cent.value)], cfg.kmeans_decay)
    return R.routing_attention(q, k, v, q_index, k_index, causal=cfg.causal)


# ---- LSH (Reformer) ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LSHConfig(AttentionConfig):
  """num_buckets: LSH buckets per round (even); chunk_size: sorted chunk length (each
  chunk attends to itself and the previous one); num_hashes: hash rounds; seed: base seed
  of the fixed random rotations (mixed with the module's path, so layers differ)."""
  num_buckets: int = 8
  chunk_size: int = 64
  num_hashes: int = 2
  seed: int = 0


@register("lsh", family="routed", config=LSHConfig, cost=("T*log T + T*c*R", "T"),
          patterns=("causal-self", "noncausal-self"), paper="Kitaev et al., 2020")
class LSHAttention(AttentionModule):
  """Reformer LSH attention with shared QK (keys are the length-normalised queries).

  Rotations [H, R, D, num_buckets/2] are drawn from a fixed seed (cfg.seed mixed with a
  CRC of the module path), so apply is deterministic and reproducible; unlike trax they
  are not resampled each step. Sows ("intermediates", "rotations") and ("intermediates",
  "buckets" [B, H, R, T]) for analysis and tests. No positional encoding inside.
  Self-attention only (shared QK); the extra `mask` argument is not supported.
  """

  def rotation_seed(self) -> int:
    """Seed of this layer's rotations: cfg.seed mixed with a CRC32 of the module path."""
    path = "/".join(str(p) for p in self.scope.path).encode()
    return (self.cfg.seed * 1_000_003 + zlib.crc32(path)) % (2 ** 31)

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    self.check_pattern(context, decode)
    _no_mask(mask, self.variant)
    cfg = self.cfg
    d_model = x.shape[-1]
    hd = self.head_dim_for(d_model)
    qk = self.project_heads(x, cfg.num_heads, hd, "qk")
    v = self.project_heads(x, cfg.num_heads, hd, "value")
    rot = R.lsh_rotations(self.rotation_seed(), cfg.num_heads, cfg.num_hashes, hd, cfg.num_buckets)
    buckets = R.lsh_hash(qk, rot)
    self.sow("intermediates", "rotations", rot)
    self.sow("intermediates", "buckets", buckets)
    y = R.lsh_attention(qk, v, buckets, chunk_size=cfg.chunk_size, causal=cfg.causal)
    return self.project_out(y, d_model)


# ---- MoBA and top-k: shared projection / RoPE / KV-cache plumbing ------------------------------


@dataclasses.dataclass(frozen=True)
class MobaConfig(AttentionConfig):
  """block_size: key block length; top_k: blocks per query, the query's own block
  included (Lu et al., 2025); positional: "rope" | "none"; rope_base; q_chunk: queries
  per tile in the XLA path (memory knob, no effect on the result)."""
  block_size: int = 64
  top_k: int = 3
  positional: str = "rope"
  rope_base: float = 10000.0
  q_chunk: int = 128


@dataclasses.dataclass(frozen=True)
class TopkConfig(AttentionConfig):
  """top_k: keys kept per query; block_k: key tile of the running top-k (memory knob);
  positional: "rope" | "none"; rope_base."""
  top_k: int = 32
  block_k: int = 256
  positional: str = "rope"
  rope_base: float = 10000.0


class _CachedQKV(AttentionModule):
  """Projections, RoPE and the KV cache shared by moba / topk."""

  def qkv(self, x, context, positions, decode):
    """Returns q [B, T, H, D], k, v [B, S, H, D] (the whole cache when decoding) and the
    absolute position of query 0."""
    cfg = self.cfg
    _check_positional(cfg.positional)
    hd = self.head_dim_for(x.shape[-1])
    src = x if context is None else context
    q = self.project_heads(x, cfg.num_heads, hd, "query")
    k = self.project_heads(src, cfg.num_heads, hd, "key")
    v = self.project_heads(src, cfg.num_heads, hd, "value")
    return self.rope_and_cache(q, k, v, context=context, positions=positions, decode=decode,
                               rope_base=cfg.rope_base if cfg.positional == "rope" else None)


@register("moba", family="routed", config=MobaConfig, cost=("T^2/b + T*k*b", "T"),
          patterns=("causal-self", "decode"), paper="Lu et al., 2025")
class MobaAttention(_CachedQKV):
  """Mixture of Block Attention: each query attends causally to its own block and to the
  top_k - 1 past blocks whose mean-pooled (post-RoPE) keys score highest against it.
  No gradient flows through the block selection (as in the paper). Decoding reads the
  KV cache; future cache slots are never selected. The extra `mask` is not supported."""

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    self.check_pattern(context, decode)
    _no_mask(mask, self.variant)
    cfg = self.cfg
    q, k, v, q_offset = self.qkv(x, context, positions, decode)
    y = BS.moba_attention(q, k, v, block_size=cfg.block_size, top_k=cfg.top_k, q_offset=q_offset,
                         q_chunk=cfg.q_chunk)
    return self.project_out(y, x.shape[-1])


@register("topk", family="routed", config=TopkConfig, cost=("T^2", "T"),
          patterns=("causal-self", "noncausal-self", "noncausal-cross", "decode"),
          paper="Gupta et al., 2021")
class TopkAttention(_CachedQKV):
  """Exact top-k attention: each query softmaxes over its top_k highest-scoring allowed
  keys (causal and the extra `mask` are applied before selection). Selection is a running
  top-k over key tiles, so memory is sub-quadratic; compute is still O(T^2) (every score
  is computed once). Gradients flow through the kept scores only."""

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    self.check_pattern(context, decode)
    cfg = self.cfg
    q, k, v, q_offset = self.qkv(x, context, positions, decode)
    structure = M.Causal() if cfg.causal else None
    y = BS.topk_attention(q, k, v, top_k=cfg.top_k, mask=M.combine(structure, mask), q_offset=q_offset,
                         block_k=cfg.block_k)
    return self.project_out(y, x.shape[-1])


@dataclasses.dataclass(frozen=True)
class KnnConfig(TopkConfig):
  """top_k: keys kept per query (besides the mean context key); block_k, positional,
  rope_base as `topk`."""


@register("knn", family="routed", config=KnnConfig, cost=("T^2", "T"),
          patterns=("causal-self", "noncausal-self", "decode"),
          paper="Wang et al., 2022 (KVT: k-NN Attention); mean context key: attnlab issue 18")
class KnnAttention(_CachedQKV):
  """kNN attention with a mean context key (`ops.sparse.knn.knn_mean_attention`): each
  query softmaxes over its top_k best allowed keys (the `topk` variant's selection) plus
  one extra key/value, the mean of the keys/values it may see. Departure from KVT (Wang
  et al., 2022): KVT keeps only the top-k; the mean context key is issue 18's addition (a
  summary of the unselected keys). Masks: None or `masks.KeyPadding` (the mean is over
  valid keys); any other mask raises. Compute O(T^2) as `topk`, memory O(T)."""

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    self.check_pattern(context, decode)
    cfg = self.cfg
    if mask is not None and not isinstance(mask, M.KeyPadding):
      raise ValueError(f"variant 'knn' supports only mask=None or masks.KeyPadding, got {type(mask).__name__}")
    q, k, v, q_offset = self.qkv(x, context, positions, decode)
    valid = None
    if mask is not None:
      valid = jnp.broadcast_to(jnp.asarray(mask.kv_valid, bool), (k.shape[0], k.shape[1]))
    y = KNN.knn_mean_attention(q, k, v, top_k=cfg.top_k, causal=cfg.causal, key_valid=valid,
                               q_offset=q_offset, block_k=cfg.block_k)
    return self.project_out(y, x.shape[-1])


# ---- DuoAttention ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DuoConfig(SinkWindowConfig):
  """Streaming half: `num_sinks` sink tokens + a window of the `window` most recent keys,
  the query's own included (`variants.base.window_extents`).
  alpha_init: initial gate of every head (the paper starts at 1 = full attention);
  hard_assign_threshold: < 0 trains/uses the soft mixture; >= 0 is the inference mode:
  heads with alpha >= threshold use full attention only, the rest streaming only.
  streaming_heads: the deployment mode: a static tuple of query heads that run streaming
  attention only while the others run full attention only (the gate is not read), so
  each head computes one half; `duo_streaming_heads(alpha, threshold)` turns trained
  gates into this tuple. Empty (default): the gate decides.
  Also num_kv_heads, positional ("rope" | "alibi" | "none"), rope_base, impl (softmax op)."""
  alpha_init: float = 1.0
  hard_assign_threshold: float = -1.0
  streaming_heads: tuple = ()


@register("duo", family="routed", config=DuoConfig, cost=("T^2", "T"),
          patterns=("causal-self", "decode"), paper="Xiao et al., 2024 (DuoAttention)")
class DuoAttention(AttentionModule):
  """DuoAttention: y_h = alpha_h * full_h + (1 - alpha_h) * streaming_h, alpha = clip(param, 0, 1)
  (Xiao et al., 2024, Sec. 3.2, eq. 1). Both halves are softmax attention through
  `ops.softmax_attention` (impl=cfg.impl); the streaming half's mask is
  (SlidingWindow(window) | Sinks(num_sinks)) & Causal. With hard_assign_threshold >= 0 the
  gate is a 0/1 step, but both halves are still computed for every head (the split is a
  traced parameter). With a static `streaming_heads` tuple (the paper's deployment) each
  head computes only its half: streaming heads visit only the window and sink tiles of
  the blocked softmax. Decoding keeps the full KV cache for every head."""

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    self.check_pattern(context, decode)
    cfg = self.cfg
    _check_positional(cfg.positional, ("rope", "alibi", "none"))
    b, t, d_model = x.shape
    hd = self.head_dim_for(d_model)
    hkv = cfg.num_kv_heads or cfg.num_heads
    if cfg.num_heads % hkv:
      raise ValueError(f"num_heads ({cfg.num_heads}) must be a multiple of num_kv_heads ({hkv})")
    q = self.project_heads(x, cfg.num_heads, hd, "query")
    k = self.project_heads(x, hkv, hd, "key", "kv_heads")
    v = self.project_heads(x, hkv, hd, "value", "kv_heads")
    q, k, v, q_offset = self.rope_and_cache(
        q, k, v, context=None, positions=positions, decode=decode,
        rope_base=cfg.rope_base if cfg.positional == "rope" else None)
    streaming = (M.SlidingWindow(left=window_extents(cfg.window, True)[0], right=0)
                 | M.Sinks(cfg.num_sinks)) & M.Causal()

    def attend(structure, heads=None):  # softmax attention of query heads `heads` (all: None)
      qh, kh, vh = q, k, v
      if heads is not None:
        kv = heads // (cfg.num_heads // hkv)  # each query head's kv head
        qh, kh, vh = q[:, :, heads], k[:, :, kv], v[:, :, kv]
      bias = AlibiBias(cfg.num_heads, heads) if cfg.positional == "alibi" else None
      return softmax_attention(qh, kh, vh, mask=M.combine(structure, mask), bias=bias, impl=cfg.impl,
                               q_offset=q_offset)

    alpha = self.param("alpha", nn.with_logical_partitioning(nn.initializers.constant(cfg.alpha_init), ("heads",)),
                       (cfg.num_heads,), jnp.float32)
    if cfg.streaming_heads:
      stream_heads = self.static_split()
      full_heads = np.setdiff1d(np.arange(cfg.num_heads), stream_heads)
      parts = [attend(streaming, stream_heads)] + ([attend(M.Causal(), full_heads)] if len(full_heads) else [])
      y = jnp.concatenate(parts, axis=2)[:, :, np.argsort(np.concatenate([stream_heads, full_heads]))]
      return self.project_out(y, d_model)
    y_full, y_stream = attend(M.Causal()), attend(streaming)
    gate = self.gate(alpha)[:, None]  # [H, 1]
    y = gate * y_full.astype(jnp.float32) + (1.0 - gate) * y_stream.astype(jnp.float32)
    return self.project_out(y.astype(y_full.dtype), d_model)

  def static_split(self):
    """cfg.streaming_heads as a sorted int array, checked against num_heads."""
    heads = np.unique(np.asarray(self.cfg.streaming_heads, int))
    if heads.min() < 0 or heads.max() >= self.cfg.num_heads:
      raise ValueError(f"streaming_heads must be head indices in [0, {self.cfg.num_heads}), "
                       f"got {tuple(self.cfg.streaming_heads)}")
    return heads

  def gate(self, alpha):
    """alpha param [H] -> mixing weight in [0, 1] (clipped; a 0/1 step in inference mode)."""
    a = jnp.clip(alpha, 0.0, 1.0)
    if self.cfg.hard_assign_threshold >= 0:
      return (a >= self.cfg.hard_assign_threshold).astype(jnp.float32)
    return a


def duo_streaming_heads(alpha, threshold: float = 0.5) -> tuple:
  """Trained DuoAttention gates alpha [H] (the "alpha" param) -> the static `streaming_heads`
  tuple of the deployment mode: the heads with clip(alpha, 0, 1) < threshold."""
  return tuple(int(h) for h in np.flatnonzero(np.clip(np.asarray(alpha), 0.0, 1.0) < threshold))
