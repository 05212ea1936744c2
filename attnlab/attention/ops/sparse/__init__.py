"""The sparse family: softmax attention over a subset of keys, never a dense mask in disguise.

  static.py        static patterns as gathers over per-block key tables (family "sparse")
  routed.py        content-routed: Routing Transformer clusters ("sparse.routing"), Reformer
                   LSH ("sparse.lsh")
  block_select.py  score-selected: MoBA blocks ("sparse.moba"), exact top-k ("sparse.topk")
  common.py        shared pieces (head checks, gathers, masked softmax)

Importing this package registers each op's "xla" form (gathers / sorts / chunks) and its
materialised "reference" (priority -1) in `ops.dispatch`. Tiling arguments (block_q,
query_chunk, q_chunk, block_k) and the static key table do not apply to a reference.
"""

import functools

from attnlab.attention.ops import dispatch as D
from attnlab.attention.ops.sparse import block_select, routed, static
from attnlab.attention.ops.sparse.block_select import (moba_attention, moba_attention_reference, topk_attention,
                                                       topk_attention_reference)
from attnlab.attention.ops.sparse.routed import (lsh_attention, lsh_attention_reference, routing_attention,
                                                 routing_attention_reference)
from attnlab.attention.ops.sparse.static import (bigbird_random_blocks, gather_sparse_attention, sparse_attention,
                                                 sparse_attention_reference)


def _without(fn, *names):
  """fn called without the keyword arguments `names` (tiling knobs a reference has no use for)."""

  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    for name in names:
      kwargs.pop(name, None)
    return fn(*args, **kwargs)

  return wrapped


def _static_reference(q, k, v, kv_pos_fn, *, block_q=None, allowed=None, query_chunk=None,
                      max_chunk_scores=None, **kwargs):
  """`sparse_attention_reference` with the arguments of `gather_sparse_attention`."""
  del kv_pos_fn, block_q, query_chunk, max_chunk_scores
  return sparse_attention_reference(q, k, v, allowed, **kwargs)


def _static_reference_unsupported(*args, allowed=None, **kwargs):
  return None if allowed is not None else "the reference needs the exact predicate `allowed`"


D.register_impl(static.FAMILY, "reference", _static_reference, unsupported=_static_reference_unsupported,
                priority=-1)
D.register_impl(static.FAMILY, "xla", gather_sparse_attention)
for _family, _reference, _xla in (
    (routed.ROUTING, routing_attention_reference, routed.routing_attention_xla),
    (routed.LSH, lsh_attention_reference, routed.lsh_attention_xla),
    (block_select.MOBA, _without(moba_attention_reference, "q_chunk"), block_select.moba_attention_xla),
    (block_select.TOPK, _without(topk_attention_reference, "block_k"), block_select.topk_attention_xla)):
  D.register_impl(_family, "reference", _reference, priority=-1)
  D.register_impl(_family, "xla", _xla)
del _family, _reference, _xla

__all__ = ["bigbird_random_blocks", "gather_sparse_attention", "lsh_attention", "moba_attention",
           "routing_attention", "sparse_attention", "sparse_attention_reference", "topk_attention"]
