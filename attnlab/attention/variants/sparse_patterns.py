"""Static sparse patterns with global, random, strided and power-of-two keys, as gathers.

bigbird: block-sparse window + global + seeded random key blocks (Zaheer et al., 2020,
  "Big Bird: Transformers for Longer Sequences", Sec. 2 and App. D, ITC variant).
strided: the Sparse Transformer's factorised "strided" and "fixed" patterns (Child et
  al., 2019, "Generating Long Sequences with Sparse Transformers", Sec. 4.2-4.3).
power_attention: keys at power-of-two distances plus a local window (Chen et al., 2025,
  "PowerAttention: Exponentially Scaling of Receptive Fields for Effective Sparse
  Attention").
s2_attention: heads attend to strided shards of key blocks that together cover the
  context, plus a dense local window (Lin et al., 2024, "S2-Attention: Hardware-Aware
  Context Sharding Among Attention Heads"; the pattern of its DKernel / Phi-3-small
  block-sparse kernel: local_blocks, vert_stride, per-head shard offsets).

Shared machinery: sparse_base.py.
"""
from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np

from attnlab.attention.ops.sparse.static import bigbird_random_blocks
from attnlab.attention.registry import register
from attnlab.attention.variants.base import layer_seed, window_extents
from attnlab.attention.variants.sparse_base import (SELF_PATTERNS, KeyPlan, SparseConfig, StaticSparseAttention,
                                                    block_positions, check_nonnegative, check_positive)


@dataclasses.dataclass(frozen=True)
class BigBirdConfig(SparseConfig):
  """block_size: the block edge; window_blocks: w, the sliding window in blocks (the
  library's window convention, `variants.base.window_extents`): query block i sees key
  blocks i - w + 1 .. i when causal, i - floor(w/2) .. i + w - 1 - floor(w/2) otherwise
  (BigBird's window of 3 blocks, one on each side, is w = 3); num_global_blocks: the first blocks are global;
  num_random_blocks: random key blocks per query block and head; seed: their seed, mixed
  with layer_index (`variants.base.layer_seed`) so every layer draws its own blocks."""
  block_size: int = 64
  window_blocks: int = 3
  num_global_blocks: int = 1
  num_random_blocks: int = 3
  seed: int = 0


@register("bigbird", family="sparse", config=BigBirdConfig, patterns=SELF_PATTERNS,
          paper="Zaheer et al., 2020", cost=("T*b*(w+g+r)", "T"))
class BigBirdAttention(StaticSparseAttention):
  """Block-sparse window + global + random (BigBird-ITC), per-head random blocks.

  Query block i of head h sees key block j when j is in i's window of window_blocks
  blocks (BigBirdConfig), or j or i is a global block (< num_global_blocks), or j is one
  of i's random blocks (`ops.sparse.static.bigbird_random_blocks`: seeded per (layer,
  head), without replacement, drawn outside |i - j| <= floor(w/2) (causal: w - 1), so
  disjoint from window and global). Causal: only j <= i blocks and, inside, key <= query.
  """

  def check_hparams(self):
    cfg = self.cfg
    check_positive(block_size=cfg.block_size, window_blocks=cfg.window_blocks)
    check_nonnegative(num_global_blocks=cfg.num_global_blocks,
                      num_random_blocks=cfg.num_random_blocks, seed=cfg.seed)

  def random_blocks(self, heads, tk):
    """int [len(heads), ceil(tk / block_size), num_random_blocks] (-1 = none), drawn from
    this layer's seed (`layer_seed(seed, layer_index)`)."""
    cfg = self.cfg
    nb = -(-tk // cfg.block_size)
    table = bigbird_random_blocks(layer_seed(cfg.seed, cfg.layer_index), cfg.num_heads, nb, nb,
                                  cfg.num_random_blocks, self.window()[0], cfg.num_global_blocks,
                                  cfg.causal)
    return table[np.asarray(heads)]

  def allowed(self, heads, tk):
    cfg = self.cfg
    bs, g, causal = cfg.block_size, cfg.num_global_blocks, cfg.causal
    left, right = self.window()
    rand = jnp.asarray(self.random_blocks(heads, tk))  # [Hg, nb, r]
    hidx = jnp.arange(len(heads)).reshape(-1, 1, 1, 1)

    def fn(qp, kp):
      qb, kb = qp // bs, kp // bs
      dist = qb - kb
      local = (dist >= -right) & (dist <= left)
      mine = rand[hidx, jnp.clip(qb, 0, rand.shape[1] - 1)]  # [Hg, n, q, 1, r]
      is_rand = jnp.any(kb[..., None] == mine, axis=-1)
      ok = local | (kb < g) | (qb < g) | is_rand
      return ok & (kp <= qp) if causal else ok
    return fn

  def key_plans(self, tq, tk):
    cfg = self.cfg
    bs, g = cfg.block_size, cfg.num_global_blocks
    left, right = self.window()
    heads = tuple(range(cfg.num_heads))
    offs = jnp.arange(-left, right + 1)  # key block = query block + offset
    rand = jnp.asarray(self.random_blocks(heads, tk))
    glob = jnp.arange(g)

    def kv_pos(qb):
      win = qb[:, None] + offs  # [n, nw]; blocks out of range give unused positions
      dist = qb[:, None] - glob
      covered = (dist >= -right) & (dist <= left)
      gl = jnp.where(covered, -1, glob)  # global blocks the window already has
      n = qb.shape[0]
      blocks = jnp.concatenate([
          jnp.broadcast_to(win, (len(heads), n, win.shape[1])),
          jnp.broadcast_to(gl, (len(heads), n, g)),
          rand[:, jnp.clip(qb, 0, rand.shape[1] - 1)]], axis=-1)
      blocks = jnp.where(blocks * bs < tk, blocks, -1)
      return block_positions(blocks, bs)
    return [KeyPlan(heads, bs, kv_pos)]

  def window(self) -> tuple[int, int]:
    """(blocks before, blocks after) the query block in its window (window_extents)."""
    return window_extents(self.cfg.window_blocks, self.cfg.causal)

  def global_rows(self, tq, tk):
    return np.arange(min(self.cfg.num_global_blocks * self.cfg.block_size, tq))


# ---- strided (Sparse Transformer) --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StridedConfig(SparseConfig):
  """pattern: "strided" | "fixed" (Child et al., 2019, Sec. 4.2); stride: l, or 0 (the
  default) for the paper's l ~ sqrt(n): ceil(sqrt(key length)) at call time (the cache
  length when decoding), which makes the cost O(T sqrt T); summary:
  c, the last c positions of every block are the "fixed" pattern's summary columns;
  head_split: "split" (the first ceil(H/2) heads use A(1), the rest A(2): the paper's
  multi-head integration) | "merged" (every head attends to A(1) | A(2))."""
  pattern: str = "strided"
  stride: int = 0
  summary: int = 1
  head_split: str = "split"


@register("strided", family="sparse", config=StridedConfig, patterns=SELF_PATTERNS,
          paper="Child et al., 2019", cost=("T^1.5", "T"))
class StridedAttention(StaticSparseAttention):
  """Sparse Transformer factorised attention.

  strided: A(1)_i = {j : 0 <= i - j <= l}, A(2)_i = {j : (i - j) mod l = 0} (j <= i).
  fixed:   A(1)_i = {j : floor(j / l) = floor(i / l)}, A(2)_i = {j : j mod l >= l - c}.
  Non-causal: |i - j| for "strided"; "fixed" is already symmetric. Cost per query is
  O(l + T / l) -- O(T sqrt T) overall at the paper's l ~ sqrt(T); memory stays
  O(T * chunk) because the gathers run chunk by chunk.
  """

  def check_hparams(self):
    cfg = self.cfg
    if cfg.pattern not in ("strided", "fixed"):
      raise ValueError(f"pattern must be 'strided' or 'fixed', got {cfg.pattern!r}")
    if cfg.head_split not in ("split", "merged"):
      raise ValueError(f"head_split must be 'split' or 'merged', got {cfg.head_split!r}")
    check_nonnegative(stride=cfg.stride)
    check_positive(summary=cfg.summary)
    if cfg.stride and cfg.summary > cfg.stride:
      raise ValueError(f"summary ({cfg.summary}) must be <= stride ({cfg.stride})")
    if cfg.head_split == "split" and cfg.num_heads < 2:
      raise ValueError("head_split='split' needs num_heads >= 2 (one head per sub-pattern)")

  def stride_for(self, tk: int) -> int:
    """l: cfg.stride, or ceil(sqrt(tk)) when it is 0 (the paper's l ~ sqrt(n))."""
    l = self.cfg.stride or math.isqrt(max(tk, 1) - 1) + 1
    if self.cfg.summary > l:
      raise ValueError(f"summary ({self.cfg.summary}) must be <= stride ({l} for {tk} keys)")
    return l

  def kinds(self, heads):
    """Sub-pattern per head: 1 = A(1), 2 = A(2), 3 = both (merged)."""
    h = self.cfg.num_heads
    if self.cfg.head_split == "merged":
      return np.full(len(heads), 3)
    return np.where(np.asarray(heads) < -(-h // 2), 1, 2)

  def allowed(self, heads, tk):
    cfg = self.cfg
    l, c, causal = self.stride_for(tk), cfg.summary, cfg.causal
    kind = self.kinds(heads).reshape(-1, 1, 1, 1)

    def fn(qp, kp):
      dist = qp - kp
      if cfg.pattern == "strided":
        a1 = ((dist >= 0) & (dist <= l)) if causal else (jnp.abs(dist) <= l)
        a2 = dist % l == 0
      else:
        a1 = (qp // l) == (kp // l)
        a2 = (kp % l) >= l - c
      ok = jnp.where(kind == 1, a1, jnp.where(kind == 2, a2, a1 | a2))
      return ok & (dist >= 0) if causal else ok
    return fn

  def key_plans(self, tq, tk):
    cfg = self.cfg
    l, c, causal, h = self.stride_for(tk), cfg.summary, cfg.causal, cfg.num_heads
    kinds = self.kinds(np.arange(h))
    m_max = -(-tk // l) + 1
    if cfg.pattern == "strided":
      local_width = (2 if causal else 3) * l
      steps = np.arange(m_max) if causal else np.arange(-m_max, m_max + 1)

      def local(qb):  # query tile of l positions: keys [qb*l - l, qb*l + l (+ l))
        return (qb[:, None] * l - l + jnp.arange(local_width))[None]

      def strided(qb):  # one query per tile: keys q - m l
        return (qb[:, None] - jnp.asarray(steps) * l)[None]

      # merged: distances 0..l (both sides if non-causal) plus multiples of l beyond.
      near = np.arange(l + 1) if causal else np.arange(-l, l + 1)
      far = steps[np.abs(steps) >= 2] * l
      dists = jnp.asarray(np.concatenate([near, far]))

      def merged(qb):
        return (qb[:, None] - dists)[None]
      plans = {1: (l, local), 2: (1, strided), 3: (1, merged)}
    else:
      summ = np.arange(m_max - 1)[:, None] * l + (l - c) + np.arange(c)  # [nb, c]
      summ_blk = jnp.asarray(np.repeat(np.arange(m_max - 1), c))
      summ = jnp.asarray(summ.reshape(-1))

      def block(qb):
        return (qb[:, None] * l + jnp.arange(l))[None]

      def summary(qb):
        return jnp.broadcast_to(summ, (1, qb.shape[0], summ.shape[0]))

      def both(qb):  # the own block's summary columns are already in A(1)
        other = jnp.where(summ_blk[None, :] == qb[:, None], -1, summ[None, :])
        return jnp.concatenate([qb[:, None] * l + jnp.arange(l), other], axis=-1)[None]
      plans = {1: (l, block), 2: (l, summary), 3: (l, both)}
    out = []
    for kind in (1, 2, 3):
      hs = tuple(int(i) for i in np.nonzero(kinds == kind)[0])
      if hs:
        out.append(KeyPlan(hs, *plans[kind]))
    return out


# ---- power_attention ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PowerConfig(SparseConfig):
  """window: the local window of w (blocks of) keys, the query's own included (the
  library's convention, `variants.base.window_extents`: causal distances 0..w-1,
  non-causal centred); block_size: granularity
  of distances (1 = tokens, as the method is stated; > 1 = blocks, as the paper's
  block-sparse kernels apply it)."""
  window: int = 16
  block_size: int = 1


@register("power_attention", family="sparse", config=PowerConfig, patterns=SELF_PATTERNS,
          paper="Chen et al., 2025", cost=("T*(w+log T)", "T"))
class PowerAttention(StaticSparseAttention):
  """PowerAttention: query (block) i sees key (block) j when d = i - j is in the local
  window (0 <= d < window when causal; -(w - 1 - floor(w/2)) <= d <= floor(w/2) when not)
  or |d| is a power of two (1, 2, 4, ...; d > 0 when causal).

  Receptive field doubles per layer (any distance is a sum of distinct powers of two).
  O(T (window + log2 T)) keys, gathered.
  """

  def check_hparams(self):
    check_positive(window=self.cfg.window, block_size=self.cfg.block_size)

  def allowed(self, heads, tk):
    bs, causal = self.cfg.block_size, self.cfg.causal
    left, right = window_extents(self.cfg.window, causal)

    def fn(qp, kp):
      dist = qp // bs - kp // bs
      a = dist if causal else jnp.abs(dist)
      pow2 = (a > 0) & ((a & (a - 1)) == 0)
      ok = ((dist >= -right) & (dist <= left)) | pow2
      return ok & (kp <= qp) if causal else ok
    return fn

  def key_plans(self, tq, tk):
    bs = self.cfg.block_size
    left, right = window_extents(self.cfg.window, self.cfg.causal)
    nb = -(-tk // bs)
    pow2 = {2 ** e for e in range(max(1, nb).bit_length() + 1) if 2 ** e < nb}
    if not self.cfg.causal:
      pow2 |= {-x for x in pow2}
    dists = sorted(set(range(-right, left + 1)) | pow2)
    dists = jnp.asarray(np.asarray(dists, np.int32))

    def kv_pos(qb):
      return block_positions(qb[:, None] - dists, bs)[None]
    return [KeyPlan(tuple(range(self.cfg.num_heads)), bs, kv_pos)]


# ---- s2_attention ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class S2Config(SparseConfig):
  """block_size: key/query block edge; local_blocks: the dense local window in blocks, the
  own block included (the library's window convention, `variants.base.window_extents`:
  causal the last local_blocks blocks, non-causal centred); vert_stride: v, head h's shard is the key blocks j with
  (j + h * max(1, v // H) + 1) % v == 0 (0 = num_heads, so the heads' shards tile the
  context); homo_head: every head uses shard offset 0 (no sharding across heads)."""
  block_size: int = 64
  local_blocks: int = 4
  vert_stride: int = 0
  homo_head: bool = False


@register("s2_attention", family="sparse", config=S2Config, patterns=SELF_PATTERNS,
          paper="Lin et al., 2024", cost=("T^2/v + T*l*b", "T"))
class S2Attention(StaticSparseAttention):
  """S2-Attention: per-head strided shards of key blocks plus a dense local window.

  Causal (the paper's setting): block j <= block i, key <= query, and i - j <
  local_blocks or j in head h's shard. Non-causal: j in i's centred window of
  local_blocks blocks, or shard.
  Per query O(local_blocks * b + T / v) keys: the shard part is the paper's (T / v per
  head, all heads covering T), so with v fixed (num_heads here; 8 in Phi-3-small's kernel)
  compute is T^2 / v, quadratic with a constant-factor saving (declared cost class
  "T^2/v + T*l*b", not sub-quadratic); memory stays O(T * chunk) through chunked gathers.
  """

  def check_hparams(self):
    cfg = self.cfg
    check_positive(block_size=cfg.block_size, local_blocks=cfg.local_blocks)
    check_nonnegative(vert_stride=cfg.vert_stride)

  def stride_offsets(self, heads):
    """(v, per-head shard offsets int [len(heads)])."""
    cfg = self.cfg
    v = cfg.vert_stride or cfg.num_heads
    step = max(1, v // cfg.num_heads)
    off = np.zeros(len(heads), np.int32) if cfg.homo_head else np.asarray(heads) * step
    return v, off

  def allowed(self, heads, tk):
    cfg = self.cfg
    bs, causal = cfg.block_size, cfg.causal
    left, right = window_extents(cfg.local_blocks, causal)
    v, off = self.stride_offsets(heads)
    off = off.reshape(-1, 1, 1, 1)

    def fn(qp, kp):
      qb, kb = qp // bs, kp // bs
      dist = qb - kb
      local = (dist >= -right) & (dist <= left)
      ok = local | ((kb + off + 1) % v == 0)
      return ok & (kp <= qp) if causal else ok
    return fn

  def key_plans(self, tq, tk):
    cfg = self.cfg
    bs, causal = cfg.block_size, cfg.causal
    left, right = window_extents(cfg.local_blocks, causal)
    heads = tuple(range(cfg.num_heads))
    v, off = self.stride_offsets(heads)
    nb = -(-tk // bs)
    first = (-1 - off) % v  # head h's first shard block
    shard = jnp.asarray(first[:, None] + v * np.arange(-(-nb // v)))  # [H, ns]
    offs = jnp.arange(-right, left + 1)  # query block - key block

    def kv_pos(qb):
      local = qb[:, None] - offs  # [n, nl']
      dist = qb[None, :, None] - shard[:, None, :]  # [H, n, ns] query block - shard block
      in_local = (dist >= -right) & (dist <= left)
      if causal:
        in_local = in_local | (dist < 0)  # shard blocks after the query block: never needed
      sh = jnp.where(in_local, -1, shard[:, None, :])  # [H, n, ns]
      blocks = jnp.concatenate([jnp.broadcast_to(local, (len(heads),) + local.shape), sh], -1)
      blocks = jnp.where(blocks * bs < tk, blocks, -1)
      return block_positions(blocks, bs)
    return [KeyPlan(heads, bs, kv_pos)]
