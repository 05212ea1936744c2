"""Static sparse attention patterns, computed as gathers (never as a dense mask).

block_local: attention inside fixed blocks (Parmar et al., 2018, "Image Transformer",
  local 1D attention; causal = causal inside the block).
dilated_window: a sliding window with a per-head dilation rate (Beltagy et al., 2020,
  "Longformer: The Long-Document Transformer", Sec. 3.1 dilated sliding window; the
  per-head rate schedule as in Ding et al., 2023, "LongNet").
longformer: sliding window plus global tokens (Beltagy et al., 2020, Sec. 3.1).
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

Every variant states its pattern twice, and the two must agree (the tests check both
against an independently written numpy oracle):
* `allowed(heads, tk)`: the exact predicate (query position, key position) per head,
  used in-tile, in decode steps (one query row against the whole KV cache) and by
  `impl="reference"` (the materialised [H, T, T] mask, for debugging);
* `key_plans(tq, tk)`: for groups of heads, a query tile size and a key table listing
  the key positions each query tile may need; `ops.sparse_static.gather_sparse_attention`
  gathers those keys, so cost is proportional to the table, never to T^2.
Queries that must see every key (Longformer/BigBird global tokens) are extra rows
(`global_rows`), computed against the full key set and written over the tiled result.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from attnlab.attention.ops.common import repeat_kv
from attnlab.attention.ops.sparse_static import (bigbird_random_blocks, gather_sparse_attention,
                                                 sparse_attention_reference)
from attnlab.attention.positional import alibi_slopes
from attnlab.attention.registry import register
from attnlab.attention.variants.base import AttentionConfig, AttentionModule

POSITIONAL = ("rope", "alibi", "none")
IMPLS = ("xla", "reference")
SELF_PATTERNS = ("causal-self", "noncausal-self", "decode")


@dataclasses.dataclass(frozen=True)
class SparseConfig(AttentionConfig):
  """Common to the static sparse variants.

  num_kv_heads: key/value heads (0 = num_heads; GQA when it divides num_heads).
  positional: "rope" | "alibi" | "none"; rope_base: RoPE's base.
  impl: "xla" (gathers; sub-quadratic) | "reference" (materialised mask; tests only).
  query_chunk: queries per step of the rematerialised loop (memory vs. speed).
  """
  num_kv_heads: int = 0
  positional: str = "rope"
  rope_base: float = 10000.0
  impl: str = "xla"
  query_chunk: int = 256


@dataclasses.dataclass(frozen=True)
class KeyPlan:
  """Efficient-path plan for a group of heads.

  heads: head indices; block_q: query tile size; kv_pos(q_block_ids int [n]) ->
  int [1|len(heads), n, K] key positions (out of range = unused; no duplicates per row).
  """
  heads: tuple
  block_q: int
  kv_pos: Callable


def _positive(**kw):
  for name, val in kw.items():
    if not isinstance(val, (int, np.integer)) or val <= 0:
      raise ValueError(f"{name} must be a positive integer, got {val!r}")


def _nonnegative(**kw):
  for name, val in kw.items():
    if not isinstance(val, (int, np.integer)) or val < 0:
      raise ValueError(f"{name} must be a non-negative integer, got {val!r}")


def _block_positions(blocks, block: int):
  """Key blocks int [..., nb] (-1 = none) -> their positions int [..., nb * block]."""
  pos = blocks[..., None] * block + jnp.arange(block)
  pos = jnp.where(blocks[..., None] >= 0, pos, -1)
  return pos.reshape(blocks.shape[:-1] + (blocks.shape[-1] * block,))


class StaticSparseAttention(AttentionModule):
  """Projections, RoPE/ALiBi, KV cache and dispatch shared by the static sparse variants.

  Subclasses define `check_hparams`, `allowed`, `key_plans` and optionally `global_rows`.
  """

  def check_hparams(self) -> None:
    """Raises ValueError for invalid hyperparameters."""

  def allowed(self, heads: np.ndarray, tk: int):
    """The pattern for `heads`: fn(q_pos [1, n, q, 1], k_pos [1|H, n, 1, K]) -> bool."""
    raise NotImplementedError

  def key_plans(self, tq: int, tk: int) -> list[KeyPlan]:
    """Head groups with their query tile and key table (see KeyPlan)."""
    raise NotImplementedError

  def global_rows(self, tq: int, tk: int):
    """Query positions (int numpy [R]) whose row is dense (they see every key), or None."""
    return None

  def num_kv_heads(self) -> int:
    cfg = self.cfg
    hkv = cfg.num_kv_heads or cfg.num_heads
    if cfg.num_heads % hkv:
      raise ValueError(f"num_heads ({cfg.num_heads}) must be a multiple of num_kv_heads ({hkv})")
    return hkv

  def _bias(self, heads):
    if self.cfg.positional != "alibi":
      return None
    slopes = alibi_slopes(self.cfg.num_heads)[np.asarray(heads)].reshape(-1, 1, 1, 1)
    # ALiBi (Press et al., 2022): -slope_h * |i - j|, evaluated on gathered positions only.
    return lambda qp, kp: -slopes * jnp.abs(qp - kp).astype(jnp.float32)

  def _dense_block(self, rows: int, tk: int) -> int:
    """Query tile for rows that see every key: one gathered copy of K per tile, and at
    most ~2^17 scores per head per tile (so memory stays O(T))."""
    return max(1, min(rows, self.cfg.query_chunk, (1 << 17) // tk))

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    """x [B, T, d_model] -> [B, T, d_model] (self-attention only; see the module docstring)."""
    cfg = self.cfg
    self.check_pattern(context, decode)
    self.check_hparams()
    if cfg.positional not in POSITIONAL:
      raise ValueError(f"positional must be one of {POSITIONAL}, got {cfg.positional!r}")
    if cfg.impl not in IMPLS:
      raise ValueError(f"impl must be one of {IMPLS} for variant {self.variant!r}, got {cfg.impl!r}")
    _positive(query_chunk=cfg.query_chunk)
    b, t, d_model = x.shape
    hd = self.head_dim_for(d_model)
    q = self.project_heads(x, cfg.num_heads, hd, "query")
    k = self.project_heads(x, self.num_kv_heads(), hd, "key", "kv_heads")
    v = self.project_heads(x, self.num_kv_heads(), hd, "value", "kv_heads")
    q, k, v, q_offset = self.rope_and_cache(
        q, k, v, context=None, positions=positions, decode=decode,
        rope_base=cfg.rope_base if cfg.positional == "rope" else None)
    tk = k.shape[1]
    heads = np.arange(cfg.num_heads)
    common = dict(mask=mask, bias=self._bias(heads))
    if cfg.impl == "reference":
      y = sparse_attention_reference(q, k, v, self.allowed(heads, tk), q_offset=q_offset, **common)
    elif decode:
      # A decode step: its few query rows against the whole cache (O(T) per token, as
      # any KV-cache attention); the predicate masks future slots and the pattern.
      y = gather_sparse_attention(
          q, k, v, lambda qb: jnp.arange(tk)[None, None], block_q=self._dense_block(t, tk),
          allowed=self.allowed(heads, tk), q_offset=q_offset, query_chunk=cfg.query_chunk, **common)
    else:
      y = self._sparse_forward(q, k, v, mask)
    return self.project_out(y, d_model)

  def _sparse_forward(self, q, k, v, mask):
    """The gather path: one gather_sparse_attention per head group, then global rows."""
    cfg = self.cfg
    tq, tk, h = q.shape[1], k.shape[1], cfg.num_heads
    kf, vf = repeat_kv(k, h), repeat_kv(v, h)
    parts, order = [], []
    for plan in self.key_plans(tq, tk):
      hs = np.asarray(plan.heads)
      whole = len(hs) == h and np.all(hs == np.arange(h))
      sel = (lambda a: a) if whole else (lambda a: a[:, :, hs])
      parts.append(gather_sparse_attention(
          sel(q), sel(kf), sel(vf), plan.kv_pos, block_q=plan.block_q,
          allowed=self.allowed(hs, tk), mask=mask, bias=self._bias(hs),
          query_chunk=cfg.query_chunk))
      order.extend(hs.tolist())
    y = parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=2)
    if order != list(range(h)):
      y = y[:, :, np.argsort(order)]
    rows = self.global_rows(tq, tk)
    if rows is not None and len(rows):
      heads = np.arange(h)
      yr = gather_sparse_attention(
          q[:, rows], kf, vf, lambda qb: jnp.arange(tk)[None, None],
          block_q=self._dense_block(len(rows), tk),
          q_positions=jnp.asarray(rows), allowed=self.allowed(heads, tk), mask=mask,
          bias=self._bias(heads), query_chunk=cfg.query_chunk)
      y = y.at[:, rows].set(yr)
    return y


# ---- block_local -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BlockLocalConfig(SparseConfig):
  """block_size: queries attend to keys of their own block of block_size positions."""
  block_size: int = 64


@register("block_local", family="local", config=BlockLocalConfig, patterns=SELF_PATTERNS,
          paper="Parmar et al., 2018 (Image Transformer, local 1D)", subquadratic=True)
class BlockLocalAttention(StaticSparseAttention):
  """Attention within non-overlapping blocks: floor(i / b) == floor(j / b) (and j <= i)."""

  def check_hparams(self):
    _positive(block_size=self.cfg.block_size)

  def allowed(self, heads, tk):
    bs, causal = self.cfg.block_size, self.cfg.causal

    def fn(qp, kp):
      ok = (qp // bs) == (kp // bs)
      return ok & (kp <= qp) if causal else ok
    return fn

  def key_plans(self, tq, tk):
    bs = self.cfg.block_size
    return [KeyPlan(tuple(range(self.cfg.num_heads)), bs,
                    lambda qb: (qb[:, None] * bs + jnp.arange(bs))[None])]


# ---- dilated_window ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DilatedConfig(SparseConfig):
  """window: keys per side, the query included: q, q - r, ..., q - (window - 1) r (and
  q + r, ..., q + (window - 1) r when not causal). dilations: the rate r per head,
  cycling over heads (head h uses dilations[h % len(dilations)])."""
  window: int = 16
  dilations: tuple = (1, 2, 4, 8)


@register("dilated_window", family="sparse", config=DilatedConfig, patterns=SELF_PATTERNS,
          paper="Beltagy et al., 2020 (Longformer dilated window); Ding et al., 2023 (LongNet)",
          subquadratic=True)
class DilatedWindowAttention(StaticSparseAttention):
  """Dilated sliding window: keys at distances multiple of r_h, up to (window - 1) r_h.

  Gathers window (or 2 window - 1) keys per query: O(T * window) per head.
  """

  def check_hparams(self):
    cfg = self.cfg
    _positive(window=cfg.window)
    if not cfg.dilations:
      raise ValueError("dilations must be a non-empty tuple of positive integers")
    for r in cfg.dilations:
      _positive(dilation=r)

  def rates(self, heads):
    d = self.cfg.dilations
    return np.asarray([d[h % len(d)] for h in range(self.cfg.num_heads)], np.int32)[np.asarray(heads)]

  def allowed(self, heads, tk):
    r = self.rates(heads).reshape(-1, 1, 1, 1)
    w, causal = self.cfg.window, self.cfg.causal

    def fn(qp, kp):
      dist = qp - kp
      ok = (dist % r == 0) & (jnp.abs(dist) <= (w - 1) * r)
      return ok & (dist >= 0) if causal else ok
    return fn

  def key_plans(self, tq, tk):
    w = self.cfg.window
    j = np.arange(w) if self.cfg.causal else np.arange(-(w - 1), w)
    heads = tuple(range(self.cfg.num_heads))
    steps = jnp.asarray(j[None, :] * self.rates(heads)[:, None])  # [H, K]: distances

    def kv_pos(qb):  # query tile of one position
      return qb[None, :, None] - steps[:, None, :]
    return [KeyPlan(heads, 1, kv_pos)]


# ---- longformer --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LongformerConfig(SparseConfig):
  """window: keys on each side of the query (causal: only before; the query included).
  num_global: the first num_global positions are global, unless global_indices (a tuple
  of positions) is given. block_size: query tile of the efficient path (no effect on
  the result)."""
  window: int = 64
  num_global: int = 1
  global_indices: tuple = ()
  block_size: int = 64


@register("longformer", family="sparse", config=LongformerConfig, patterns=SELF_PATTERNS,
          paper="Beltagy et al., 2020", subquadratic=True)
class LongformerAttention(StaticSparseAttention):
  """Sliding window plus global tokens that attend to all and are attended by all.

  Causal: j <= i always; a global token is then visible to every later query and a
  global query sees every earlier key.
  """

  def check_hparams(self):
    cfg = self.cfg
    _nonnegative(window=cfg.window, num_global=cfg.num_global)
    _positive(block_size=cfg.block_size)

  def globals_(self, tk):
    cfg = self.cfg
    g = sorted(set(cfg.global_indices)) if cfg.global_indices else list(range(min(cfg.num_global, tk)))
    bad = [i for i in g if not 0 <= i < tk]
    if bad:
      raise ValueError(f"global_indices {bad} are outside the sequence of length {tk}")
    return np.asarray(g, np.int32)

  def allowed(self, heads, tk):
    g = jnp.asarray(self.globals_(tk))
    w, causal = self.cfg.window, self.cfg.causal

    def is_global(p):
      return jnp.any(p[..., None] == g, axis=-1)

    def fn(qp, kp):
      dist = qp - kp
      local = ((dist >= 0) & (dist <= w)) if causal else (jnp.abs(dist) <= w)
      ok = local | is_global(kp) | is_global(qp)
      return ok & (dist >= 0) if causal else ok
    return fn

  def key_plans(self, tq, tk):
    bs, w = self.cfg.block_size, self.cfg.window
    left, right = w, (0 if self.cfg.causal else w)
    width = left + bs + right
    g = jnp.asarray(self.globals_(tk))

    def kv_pos(qb):
      start = qb[:, None] * bs - left  # tile's window: [start, start + width)
      win = start + jnp.arange(width)
      in_win = (g >= start) & (g < start + width)  # global keys already in the window
      return jnp.concatenate([win, jnp.where(in_win, -1, g)], axis=-1)[None]
    return [KeyPlan(tuple(range(self.cfg.num_heads)), bs, kv_pos)]

  def global_rows(self, tq, tk):
    g = self.globals_(tk)
    return g[g < tq]


# ---- bigbird -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BigBirdConfig(SparseConfig):
  """block_size: the block edge; window_blocks: neighbouring key blocks on each side
  (BigBird's window of 3 blocks = 1); num_global_blocks: the first blocks are global;
  num_random_blocks: random key blocks per query block and head; seed: their seed."""
  block_size: int = 64
  window_blocks: int = 1
  num_global_blocks: int = 1
  num_random_blocks: int = 3
  seed: int = 0


@register("bigbird", family="sparse", config=BigBirdConfig, patterns=SELF_PATTERNS,
          paper="Zaheer et al., 2020", subquadratic=True)
class BigBirdAttention(StaticSparseAttention):
  """Block-sparse window + global + random (BigBird-ITC), per-head random blocks.

  Query block i of head h sees key block j when |i - j| <= window_blocks, or j or i is
  a global block (< num_global_blocks), or j is one of i's random blocks
  (`ops.sparse_static.bigbird_random_blocks`: seeded, without replacement, disjoint from
  window and global). Causal: only j <= i blocks and, inside, key <= query.
  """

  def check_hparams(self):
    cfg = self.cfg
    _positive(block_size=cfg.block_size)
    _nonnegative(window_blocks=cfg.window_blocks, num_global_blocks=cfg.num_global_blocks,
                 num_random_blocks=cfg.num_random_blocks, seed=cfg.seed)

  def random_blocks(self, heads, tk):
    """int [len(heads), ceil(tk / block_size), num_random_blocks] (-1 = none)."""
    cfg = self.cfg
    nb = -(-tk // cfg.block_size)
    table = bigbird_random_blocks(cfg.seed, cfg.num_heads, nb, nb, cfg.num_random_blocks,
                                  cfg.window_blocks, cfg.num_global_blocks, cfg.causal)
    return table[np.asarray(heads)]

  def allowed(self, heads, tk):
    cfg = self.cfg
    bs, wb, g, causal = cfg.block_size, cfg.window_blocks, cfg.num_global_blocks, cfg.causal
    rand = jnp.asarray(self.random_blocks(heads, tk))  # [Hg, nb, r]
    hidx = jnp.arange(len(heads)).reshape(-1, 1, 1, 1)

    def fn(qp, kp):
      qb, kb = qp // bs, kp // bs
      dist = qb - kb
      local = ((dist >= 0) & (dist <= wb)) if causal else (jnp.abs(dist) <= wb)
      mine = rand[hidx, jnp.clip(qb, 0, rand.shape[1] - 1)]  # [Hg, n, q, 1, r]
      is_rand = jnp.any(kb[..., None] == mine, axis=-1)
      ok = local | (kb < g) | (qb < g) | is_rand
      return ok & (kp <= qp) if causal else ok
    return fn

  def key_plans(self, tq, tk):
    cfg = self.cfg
    bs, wb, g = cfg.block_size, cfg.window_blocks, cfg.num_global_blocks
    heads = tuple(range(cfg.num_heads))
    offs = jnp.arange(-wb, 1 if cfg.causal else wb + 1)
    rand = jnp.asarray(self.random_blocks(heads, tk))
    glob = jnp.arange(g)

    def kv_pos(qb):
      win = qb[:, None] + offs  # [n, nw]; blocks out of range give unused positions
      dist = qb[:, None] - glob
      covered = ((dist >= 0) & (dist <= wb)) if cfg.causal else (jnp.abs(dist) <= wb)
      gl = jnp.where(covered, -1, glob)  # global blocks the window already has
      n = qb.shape[0]
      blocks = jnp.concatenate([
          jnp.broadcast_to(win, (len(heads), n, win.shape[1])),
          jnp.broadcast_to(gl, (len(heads), n, g)),
          rand[:, jnp.clip(qb, 0, rand.shape[1] - 1)]], axis=-1)
      blocks = jnp.where(blocks * bs < tk, blocks, -1)
      return _block_positions(blocks, bs)
    return [KeyPlan(heads, bs, kv_pos)]

  def global_rows(self, tq, tk):
    return np.arange(min(self.cfg.num_global_blocks * self.cfg.block_size, tq))


# ---- strided (Sparse Transformer) --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StridedConfig(SparseConfig):
  """pattern: "strided" | "fixed" (Child et al., 2019, Sec. 4.2); stride: l; summary:
  c, the last c positions of every block are the "fixed" pattern's summary columns;
  head_split: "split" (the first ceil(H/2) heads use A(1), the rest A(2): the paper's
  multi-head integration) | "merged" (every head attends to A(1) | A(2))."""
  pattern: str = "strided"
  stride: int = 64
  summary: int = 1
  head_split: str = "split"


@register("strided", family="sparse", config=StridedConfig, patterns=SELF_PATTERNS,
          paper="Child et al., 2019", subquadratic=True)
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
    _positive(stride=cfg.stride, summary=cfg.summary)
    if cfg.summary > cfg.stride:
      raise ValueError(f"summary ({cfg.summary}) must be <= stride ({cfg.stride})")
    if cfg.head_split == "split" and cfg.num_heads < 2:
      raise ValueError("head_split='split' needs num_heads >= 2 (one head per sub-pattern)")

  def kinds(self, heads):
    """Sub-pattern per head: 1 = A(1), 2 = A(2), 3 = both (merged)."""
    h = self.cfg.num_heads
    if self.cfg.head_split == "merged":
      return np.full(len(heads), 3)
    return np.where(np.asarray(heads) < -(-h // 2), 1, 2)

  def allowed(self, heads, tk):
    cfg = self.cfg
    l, c, causal = cfg.stride, cfg.summary, cfg.causal
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
    l, c, causal, h = cfg.stride, cfg.summary, cfg.causal, cfg.num_heads
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
  """window: local distances 0..window-1 (the query included); block_size: granularity
  of distances (1 = tokens, as the method is stated; > 1 = blocks, as the paper's
  block-sparse kernels apply it)."""
  window: int = 16
  block_size: int = 1


@register("power_attention", family="sparse", config=PowerConfig, patterns=SELF_PATTERNS,
          paper="Chen et al., 2025", subquadratic=True)
class PowerAttention(StaticSparseAttention):
  """PowerAttention: query (block) i sees key (block) j when d = i - j satisfies
  0 <= d < window or d is a power of two (1, 2, 4, ...); |d| when not causal.

  Receptive field doubles per layer (any distance is a sum of distinct powers of two).
  O(T (window + log2 T)) keys, gathered.
  """

  def check_hparams(self):
    _positive(window=self.cfg.window, block_size=self.cfg.block_size)

  def allowed(self, heads, tk):
    bs, w, causal = self.cfg.block_size, self.cfg.window, self.cfg.causal

    def fn(qp, kp):
      dist = qp // bs - kp // bs
      a = dist if causal else jnp.abs(dist)
      pow2 = (a > 0) & ((a & (a - 1)) == 0)
      ok = ((a >= 0) & (a < w)) | pow2
      return ok & (kp <= qp) if causal else ok
    return fn

  def key_plans(self, tq, tk):
    bs, w = self.cfg.block_size, self.cfg.window
    nb = -(-tk // bs)
    dists = sorted(set(range(w)) | {2 ** e for e in range(max(1, nb).bit_length() + 1) if 2 ** e < nb})
    if not self.cfg.causal:
      dists = sorted(set(dists) | {-x for x in dists})
    dists = jnp.asarray(np.asarray(dists, np.int32))

    def kv_pos(qb):
      return _block_positions(qb[:, None] - dists, bs)[None]
    return [KeyPlan(tuple(range(self.cfg.num_heads)), bs, kv_pos)]


# ---- s2_attention ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class S2Config(SparseConfig):
  """block_size: key/query block edge; local_blocks: dense local blocks (the own block
  included); vert_stride: v, head h's shard is the key blocks j with
  (j + h * max(1, v // H) + 1) % v == 0 (0 = num_heads, so the heads' shards tile the
  context); homo_head: every head uses shard offset 0 (no sharding across heads)."""
  block_size: int = 64
  local_blocks: int = 4
  vert_stride: int = 0
  homo_head: bool = False


@register("s2_attention", family="sparse", config=S2Config, patterns=SELF_PATTERNS,
          paper="Lin et al., 2024", subquadratic=True)
class S2Attention(StaticSparseAttention):
  """S2-Attention: per-head strided shards of key blocks plus a dense local window.

  Causal (the paper's setting): block j <= block i, key <= query, and i - j <
  local_blocks or j in head h's shard. Non-causal: |i - j| < local_blocks or shard.
  Per query O(local_blocks * b + T / v) keys: the shard part is the paper's (T / v per
  head, all heads covering T); memory stays O(T * chunk) through chunked gathers.
  """

  def check_hparams(self):
    cfg = self.cfg
    _positive(block_size=cfg.block_size, local_blocks=cfg.local_blocks)
    _nonnegative(vert_stride=cfg.vert_stride)

  def stride_offsets(self, heads):
    """(v, per-head shard offsets int [len(heads)])."""
    cfg = self.cfg
    v = cfg.vert_stride or cfg.num_heads
    step = max(1, v // cfg.num_heads)
    off = np.zeros(len(heads), np.int32) if cfg.homo_head else np.asarray(heads) * step
    return v, off

  def allowed(self, heads, tk):
    cfg = self.cfg
    bs, nl, causal = cfg.block_size, cfg.local_blocks, cfg.causal
    v, off = self.stride_offsets(heads)
    off = off.reshape(-1, 1, 1, 1)

    def fn(qp, kp):
      qb, kb = qp // bs, kp // bs
      dist = qb - kb
      local = ((dist >= 0) & (dist < nl)) if causal else (jnp.abs(dist) < nl)
      ok = local | ((kb + off + 1) % v == 0)
      return ok & (kp <= qp) if causal else ok
    return fn

  def key_plans(self, tq, tk):
    cfg = self.cfg
    bs, nl, causal = cfg.block_size, cfg.local_blocks, cfg.causal
    heads = tuple(range(cfg.num_heads))
    v, off = self.stride_offsets(heads)
    nb = -(-tk // bs)
    first = (-1 - off) % v  # head h's first shard block
    shard = jnp.asarray(first[:, None] + v * np.arange(-(-nb // v)))  # [H, ns]
    offs = jnp.arange(nl) if causal else jnp.arange(-(nl - 1), nl)

    def kv_pos(qb):
      local = qb[:, None] - offs  # [n, nl']
      dist = qb[None, :, None] - shard[:, None, :]  # [H, n, ns] query block - shard block
      in_local = ((dist >= 0) & (dist < nl)) if causal else (jnp.abs(dist) < nl)
      if causal:
        in_local = in_local | (dist < 0)  # shard blocks after the query block: never needed
      sh = jnp.where(in_local, -1, shard[:, None, :])  # [H, n, ns]
      blocks = jnp.concatenate([jnp.broadcast_to(local, (len(heads),) + local.shape), sh], -1)
      blocks = jnp.where(blocks * bs < tk, blocks, -1)
      return _block_positions(blocks, bs)
    return [KeyPlan(heads, bs, kv_pos)]
