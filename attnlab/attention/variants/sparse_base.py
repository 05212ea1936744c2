"""Shared machinery of the static sparse variants (sparse_static.py, sparse_patterns.py).

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
from attnlab.attention.ops.sparse_static import gather_sparse_attention, sparse_attention_reference
from attnlab.attention.positional import alibi_slopes
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


class StaticSparseAttention(AttentionModule):
  """Projections, RoPE/ALiBi, KV cache and dispatch shared by the static sparse variants.

  Subclasses define `check_hparams`, `allowed`, `key_plans` and optionally `global_rows`.
  """

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
