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
duo (variants/duo.py): Xiao et al., 2024, "DuoAttention"; knn: variants/knn.py.

The math is in `attnlab.attention.ops.sparse.routed` and `.block_select` (efficient
forms and materialised references).

Analysis hook (an `apply` with the "attention" collection mutable, not decoding): each
output is linear in the values, so the sown matrix is read off the reference op with the
identity as values (`ops.implied`): routing, the mean over the centroids that saw a key
of their masked softmax rows, and the local heads' windowed softmax; lsh, the per-round
softmax rows combined by softmax(lse) (eq. 6); moba and topk, the dense masked softmax.
All rows sum to 1 but routing's.
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
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnlab.attention import masks as M
from attnlab.attention.ops.sparse import block_select as BS
from attnlab.attention.ops.sparse import routed as R
from attnlab.attention.ops.softmax import softmax_attention
from attnlab.attention.registry import register
from attnlab.attention.variants.base import AttentionConfig, AttentionModule, window_extents
from attnlab.attention.variants.common import attend_or_capture

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
  weight_kind = "nonnegative"  # a query that no centroid takes has a zero row
  weights_unavailable = None

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
    if n_route:
      q_index, k_index = self.route(q[:, :, :n_route], k_route, hd, deterministic)
    left, right = window_extents(cfg.local_window, cfg.causal)

    def attend(vv, impl):  # values vv [B, Tk, H, Dv] -> heads [B, Tq, H, Dv] (linear in vv)
      parts = []
      if n_route:
        parts.append(R.routing_attention(q[:, :, :n_route], k_route, vv[:, :, :n_route], q_index, k_index,
                                         causal=cfg.causal, impl=impl))
      if n_local:
        parts.append(softmax_attention(q[:, :, n_route:], k_local, vv[:, :, n_route:],
                                       mask=M.SlidingWindow(left=left, right=right), impl=impl))
      return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=2)

    return self.project_out(attend_or_capture(self, attend, v), d_model)

  def route(self, q, k, hd, deterministic):
    """The routing decision: q [B, Tq, Hr, D], k [B, Tk, Hr, D] -> (query_index, key_index)
    [B, Hr, C, w] (and the centroids' EMA step when deterministic=False)."""
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
    return q_index, k_index


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
  weights_unavailable = None

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
    y = attend_or_capture(self, lambda vv, impl: R.lsh_attention(
        qk, vv, buckets, chunk_size=cfg.chunk_size, causal=cfg.causal, impl=impl), v)
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
  """Projections, RoPE and the KV cache shared by moba / topk / knn (variants/knn.py)."""
  weights_unavailable = None

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
    y = attend_or_capture(self, lambda vv, impl: BS.moba_attention(
        q, k, vv, block_size=cfg.block_size, top_k=cfg.top_k, q_offset=q_offset, q_chunk=cfg.q_chunk,
        impl=impl), v, decode=decode)
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
    y = attend_or_capture(self, lambda vv, impl: BS.topk_attention(
        q, k, vv, top_k=cfg.top_k, mask=M.combine(structure, mask), q_offset=q_offset, block_k=cfg.block_k,
        impl=impl), v, decode=decode)
    return self.project_out(y, x.shape[-1])


# DuoAttention lives in variants/duo.py; re-exported for existing callers.
from attnlab.attention.variants.duo import DuoAttention, DuoConfig, duo_streaming_heads  # noqa: E402

__all__ = ["DuoAttention", "DuoConfig", "LSHAttention", "LSHConfig", "MobaAttention", "MobaConfig", "RoutingAttention",
           "RoutingConfig", "TopkAttention", "TopkConfig", "duo_streaming_heads"]
