"""The softmax family's "pallas" implementation: attnlab masks -> the block-sparse kernel.

`kernels_pallas.block_sparse_flash` depends on jax only, so the translation of an attnlab
`Mask` lives here: the mask's `&`-conjuncts are split into static ones (combined, lowered
to block-sparse metadata on the host through `block_map`/`allowed`) and data-dependent
ones the kernel applies per position (one `SegmentIds`, any number of `KeyPadding`).
Anything else (a data-dependent `PrefixLM`, `AtPositions`, an `|` over data-dependent
masks, several `SegmentIds`, a bias, a traced q_offset) is named by
`pallas_unsupported_reason`, and "auto" moves on.

Backend: compiled for GPU (Triton); on CPU only in interpret mode, switched on by
ATTNLAB_PALLAS_INTERPRET=1 or `kernels_pallas.runtime.interpret_mode()` (tests). Without
that switch `pallas_unsupported_reason` names the backend, so "auto" never picks the
kernel on CPU.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from attnlab.attention import masks as M
from attnlab.attention.ops.softmax.cudnn import _conjuncts  # flattens an And tree
from kernels_pallas import block_sparse_flash as K
from kernels_pallas import runtime


def split_mask(mask):
  """(static Mask or None, SegmentIds or None, [KeyPadding], reason or None) for `mask`."""
  static, segments, paddings = None, None, []
  for m in ([] if mask is None else _conjuncts(mask)):
    if m.static:
      static = m if static is None else static & m
    elif isinstance(m, M.SegmentIds):
      if segments is not None:
        return None, None, [], "the pallas kernel takes one SegmentIds mask (and-combine the ids first)"
      segments = m
    elif isinstance(m, M.KeyPadding):
      paddings.append(m)
    else:
      return None, None, [], (f"the pallas kernel cannot apply the data-dependent mask {type(m).__name__} "
                              "(static masks, SegmentIds and KeyPadding only); use impl='xla'")
  return static, segments, paddings, None


def default_block(length: int, head_dim: int = 64) -> int:
  """Tile edge: DEFAULT_BLOCK (128; 64 for head_dim > 64, where the dk/dv kernel's two
  [block, head_dim] fp32 accumulators would spill at 128), or the next power of two >= length
  (at least 16) when shorter."""
  target = K.DEFAULT_BLOCK if head_dim <= 64 else K.DEFAULT_BLOCK // 2
  return min(target, max(16, 1 << max(0, length - 1).bit_length()))


def pallas_unsupported_reason(q, k, v, *, mask=None, bias=None, q_offset=0, block_q=None, block_k=None,
                              **_) -> str | None:
  """None if `softmax_attention_pallas` can run these arguments, else a one-line reason."""
  reason = runtime.unsupported_backend()
  if reason:
    return reason
  if bias is not None:
    return "the pallas kernel takes no bias; use impl='xla'"
  if not isinstance(q_offset, (int, np.integer)):
    return "the pallas kernel's block lists are built on the host: q_offset must be a python int (not traced)"
  reason = split_mask(mask)[3]
  if reason:
    return reason
  return K.unsupported_reason(q, k, v, block_q=block_q or default_block(q.shape[1], q.shape[-1]),
                              block_k=block_k or default_block(k.shape[1], q.shape[-1]),
                              interpret=runtime.interpret_enabled())


def softmax_attention_pallas(q, k, v, *, mask=None, bias=None, scale=None, q_offset=0, block_q=None,
                             block_k=None, block_indices=None):
  """Softmax attention through the Pallas block-sparse flash kernel.

  q [B, Tq, Hq, D], k [B, Tk, Hkv, D], v [B, Tk, Hkv, Dv] -> [B, Tq, Hq, Dv]. mask: an
  attnlab Mask (see the module docstring for which); q_offset: python int. block_q,
  block_k: tile edges (default `default_block`). block_indices: optional selected key
  blocks [B|1, Hq|1, nq, K] (MoBA-style routing), intersected with the mask. Raises
  ValueError where `pallas_unsupported_reason` names a reason.
  """
  reason = pallas_unsupported_reason(q, k, v, mask=mask, bias=bias, q_offset=q_offset, block_q=block_q,
                                     block_k=block_k)
  if reason:
    raise ValueError(reason)
  tq, tk = q.shape[1], k.shape[1]
  static, segments, paddings, _ = split_mask(mask)
  d = q.shape[-1]
  meta = K.build_block_metadata(static, tq, tk, block_q or default_block(tq, d), block_k or default_block(tk, d),
                                int(q_offset))
  q_seg = kv_seg = kv_valid = None
  if segments is not None:
    q_ids = jnp.asarray(segments.q_segments)
    kv_ids = q_ids if segments.kv_segments is None else jnp.asarray(segments.kv_segments)
    q_seg, kv_seg = q_ids[:, q_offset:q_offset + tq], kv_ids[:, :tk]  # absolute positions index the ids
  for p in paddings:
    valid = jnp.asarray(p.kv_valid, bool)[:, :tk]
    kv_valid = valid if kv_valid is None else kv_valid & valid
  return K.block_sparse_flash_attention(q, k, v, meta, scale=scale, q_segment_ids=q_seg, kv_segment_ids=kv_seg,
                                        kv_valid=kv_valid, block_indices=block_indices)
