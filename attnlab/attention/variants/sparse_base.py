"""Shared machinery of the static sparse variants (sparse_static.py, sparse_patterns.py).

Every variant states its pattern twice, and the two must agree (the tests check both
against an independently written numpy oracle):
* `allowed(heads, tk)`: the exact predicate (query position, key position) per head,
  used in-tile and by `impl="reference"` (the materialised [H, T, T] mask, for debugging);
* `key_plans(tq, tk)`: for groups of heads, a query tile size and a key table listing
  the key positions each query tile may need; `ops.sparse.static.gather_sparse_attention`
  gathers those keys, so cost is proportional to the table, never to T^2. A decode step
  reads the table of the block its position falls in: O(K) per token, not O(cache).
Queries that must see every key (Longformer/BigBird global tokens) are extra rows
(`global_rows`), computed against the full key set and written over the tiled result.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from attnlab.attention.ops.common import repeat_kv
from attnlab.attention.ops.sparse.static import sparse_attention, sparse_attention_reference
from attnlab.attention.positional import alibi_slopes
from attnlab.attention.variants.base import AttentionConfig, AttentionModule

POSITIONAL = ("rope", "alibi", "none")
SELF_PATTERNS = ("causal-self", "noncausal-self", "decode")


@dataclasses.dataclass(frozen=True)
class SparseConfig(AttentionConfig):
  """Common to the static sparse variants.

  num_kv_heads: key/value heads (0 = num_heads; GQA when it divides num_heads).
  positional: "rope" | "alibi" | "none"; rope_base: RoPE's base.
  impl: "reference" (one materialised mask over all heads; tests only) or an implementation
    of the "sparse" op family in `ops.dispatch` for the gathers: "xla" (sub-quadratic),
    "auto", or what kernels_pallas registers.
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


def check_positive(**kw):
  """Raises ValueError unless every keyword value is a positive integer."""
  for name, val in kw.items():
    if not isinstance(val, (int, np.integer)) or val <= 0:
      raise ValueError(f"{name} must be a positive integer, got {val!r}")


def check_nonnegative(**kw):
  """Raises ValueError unless every keyword value is a non-negative integer."""
  for name, val in kw.items():
    if not isinstance(val, (int, np.integer)) or val < 0:
      raise ValueError(f"{name} must be a non-negative integer, got {val!r}")


def block_positions(blocks, block: int):
  """Key blocks int [..., nb] (-1 = none) -> their positions int [..., nb * block]."""
  pos = blocks[..., None] * block + jnp.arange(block)
  pos = jnp.where(blocks[..., None] >= 0, pos, -1)
  return pos.reshape(blocks.shape[:-1] + (blocks.shape[-1] * block,))


def window_key_table(block: int, left: int, right: int, extra=None):
  """A key table (KeyPlan.kv_pos) for a sliding window of `left` keys before and `right`
  after each query, in query tiles of `block`: tile i reads [i*block - left, i*block + block
  + right), plus the `extra` key positions (int [G], e.g. global tokens or sinks) that fall
  outside that range (inside it they would be duplicates). Returns kv_pos(qb) -> [1, n, K]."""
  width = left + block + right

  def kv_pos(qb):
    start = qb[:, None] * block - left  # tile's window: [start, start + width)
    win = start + jnp.arange(width)
    if extra is None:
      return win[None]
    in_win = (extra >= start) & (extra < start + width)
    return jnp.concatenate([win, jnp.where(in_win, -1, extra)], axis=-1)[None]
  return kv_pos


class StaticSparseAttention(AttentionModule):
  """Projections, RoPE/ALiBi, KV cache and dispatch shared by the static sparse variants.

  Subclasses define `check_hparams`, `allowed`, `key_plans` and optionally `global_rows`.
  An analysis call (`capturing`) runs the materialised reference and sows its masked matrix.
  """
  weights_unavailable = None

  def check_hparams(self) -> None:
    """Raises ValueError for invalid hyperparameters."""

  def allowed(self, heads: np.ndarray, tk: int):
    """The pattern for `heads`: fn(q_pos [1, n, q, 1], k_pos [1|H, n, 1, K]) -> bool.

    Abstract: every registered subclass defines it (this base is never registered)."""
    raise NotImplementedError(f"{type(self).__name__} must define allowed()")

  def key_plans(self, tq: int, tk: int) -> list[KeyPlan]:
    """Head groups with their query tile and key table (see KeyPlan). Abstract, as `allowed`."""
    raise NotImplementedError(f"{type(self).__name__} must define key_plans()")

  def global_rows(self, tq: int, tk: int):
    """Query positions (int numpy [R]) whose row is dense (they see every key), or None."""
    return None

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
    check_positive(query_chunk=cfg.query_chunk)
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
    if self.capturing() and not decode:  # analysis call: the masked matrix, sown (base.attend_captured)
      w = sparse_attention_reference(q, k, v, self.allowed(heads, tk), q_offset=q_offset, return_weights=True,
                                     **common)[1]
      y = self.attend_captured(w, v)
    elif cfg.impl == "reference":
      y = sparse_attention_reference(q, k, v, self.allowed(heads, tk), q_offset=q_offset, **common)
    elif decode:
      y = self._sparse_decode(q, k, v, mask, q_offset)
    else:
      y = self._sparse_forward(q, k, v, mask)
    return self.project_out(y, d_model)

  def _gathered(self, q, k, v, mask, plans, q_offset=None):
    """One gather_sparse_attention per head group of `plans`, heads put back in order.

    q_offset None: the queries are positions 0..Tq-1, tiled by each plan's block_q.
    q_offset given (decode): query i is at q_offset + i; each query is its own tile and
    reads the key table of the block its position falls in."""
    cfg = self.cfg
    h, tk = cfg.num_heads, k.shape[1]
    kf, vf = repeat_kv(k, h), repeat_kv(v, h)
    parts, order = [], []
    for plan in plans:
      hs = np.asarray(plan.heads)
      whole = len(hs) == h and np.all(hs == np.arange(h))
      sel = (lambda a: a) if whole else (lambda a: a[:, :, hs])
      if q_offset is None:
        kv_pos, block_q, offset = plan.kv_pos, plan.block_q, 0
      else:
        kv_pos = lambda ids, plan=plan: plan.kv_pos((q_offset + ids) // plan.block_q)  # noqa: E731
        block_q, offset = 1, q_offset
      parts.append(sparse_attention(
          sel(q), sel(kf), sel(vf), kv_pos, block_q=block_q, allowed=self.allowed(hs, tk),
          mask=mask, bias=self._bias(hs), q_offset=offset, query_chunk=cfg.query_chunk, impl=cfg.impl))
      order.extend(hs.tolist())
    y = parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=2)
    return y if order == list(range(h)) else y[:, :, np.argsort(order)]

  def _dense_rows(self, q, k, v, mask, pattern_len=None, **where):
    """Queries that see every key (global rows): all heads against the whole key set k.
    `where`: q_positions=[R] or q_offset (gather_sparse_attention's query placement);
    pattern_len: the sequence length the pattern is drawn for (default k's length; a
    decode step passes the cache's when k is only its prefix)."""
    h, tk = self.cfg.num_heads, k.shape[1]
    heads = np.arange(h)
    return sparse_attention(
        q, k, v, lambda qb: jnp.arange(tk)[None, None], block_q=self._dense_block(q.shape[1], tk),
        allowed=self.allowed(heads, pattern_len or tk), mask=mask, bias=self._bias(heads),
        query_chunk=self.cfg.query_chunk, impl=self.cfg.impl, **where)

  def _sparse_forward(self, q, k, v, mask):
    """The gather path: one gather_sparse_attention per head group, then global rows."""
    tq, tk = q.shape[1], k.shape[1]
    y = self._gathered(q, k, v, mask, self.key_plans(tq, tk))
    rows = self.global_rows(tq, tk)
    if rows is not None and len(rows):
      y = y.at[:, rows].set(self._dense_rows(q[:, rows], k, v, mask, q_positions=jnp.asarray(rows)))
    return y

  def _sparse_decode(self, q, k, v, mask, q_offset):
    """A decode step against the cache k, v [B, S, Hkv, D]: each new query gathers only its
    block's key table, O(K) per token for K table slots, not O(S). A query at a global-row
    position sees every cached key (lax.cond picks that branch at run time); a multi-token
    step of a pattern with global rows takes the whole cache for all its queries, unless
    causal: a step holding a global row then sits before max(rows) + t, so its queries'
    keys are the cache's first max(rows) + t slots and the step costs O(K + max(rows)),
    flat in the cache length (any step length: the branch is picked per step)."""
    t, tk = q.shape[1], k.shape[1]
    sparse = lambda: self._gathered(q, k, v, mask, self.key_plans(tk, tk), q_offset=q_offset)  # noqa: E731
    rows = self.global_rows(tk, tk)
    if rows is None or not len(rows):
      return sparse()
    if self.cfg.causal:
      n = min(tk, int(np.max(rows)) + t)
      dense = lambda: self._dense_rows(q, k[:, :n], v[:, :n], mask, pattern_len=tk, q_offset=q_offset)  # noqa: E731
      return jax.lax.cond(jnp.any(jnp.isin(q_offset + jnp.arange(t), jnp.asarray(rows))), dense, sparse)
    dense = lambda: self._dense_rows(q, k, v, mask, q_offset=q_offset)  # noqa: E731
    if t != 1:
      return dense()
    return jax.lax.cond(jnp.isin(q_offset, jnp.asarray(rows)), dense, sparse)


# ---- block_local -------------------------------------------------------------------------
