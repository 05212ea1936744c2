"""The softmax family: softmax attention and the ops that change only its weight map.

  reference.py      the fp32 oracle (and `masked_softmax`, `dense_bias`)
  blocked.py        the "xla" implementation: blocked online softmax, skips masked tiles
  cudnn.py          the "cudnn" implementation and its unsupported-reason function
  pallas.py         the "pallas" implementation: attnlab masks -> kernels_pallas' block-sparse kernel
  api.py            `softmax_attention(..., impl=)`, the family's entry point
  weightings.py     score -> weight strategies of blocked.py (softmax, signed, sigmoid)
  common.py         shared pieces of the row-wise ops (scores, query tiling)
  sigmoid.py, signed.py, sink.py   row-wise ops (reference + blocked via their weighting)
  talking_heads.py                 heads mixed around the softmax (reference + blocked, two passes)
  scalable.py, differential.py                       ops built from softmax_attention calls

Importing this package registers every implementation in `ops.dispatch` (reference at
priority -1, xla at 0, cudnn at 1, pallas at 1 after cudnn, so "auto" prefers cudnn, then
the Pallas kernel where it can run (GPU), then xla).
"""

from attnlab.attention.ops import dispatch as D
from attnlab.attention.ops.softmax import differential, scalable, sigmoid, signed, sink, talking_heads
from attnlab.attention.ops.softmax.api import FAMILY, resolve_impl, softmax_attention
from attnlab.attention.ops.softmax.blocked import softmax_attention_blocked
from attnlab.attention.ops.softmax.common import rowwise_reference
from attnlab.attention.ops.softmax.cudnn import cudnn_unsupported_reason, softmax_attention_cudnn
from attnlab.attention.ops.softmax.differential import differential_attention, differential_attention_reference
from attnlab.attention.ops.softmax.reference import softmax_attention_reference
from attnlab.attention.ops.softmax.scalable import (scalable_softmax_attention,
                                                    scalable_softmax_attention_reference)
from attnlab.attention.ops.softmax.sigmoid import sigmoid_attention, sigmoid_attention_reference
from attnlab.attention.ops.softmax.signed import signed_softmax_attention, signed_softmax_attention_reference
from attnlab.attention.ops.softmax.sink import sink_softmax_attention, sink_softmax_attention_reference
from attnlab.attention.ops.softmax.talking_heads import (talking_heads_attention,
                                                         talking_heads_attention_reference)

REFERENCE, XLA, CUDNN = -1, 0, 1  # priorities


def _cudnn_reason_at(*positions):
  """cudnn_unsupported_reason on the op's arguments at `positions` (its q, k, v)."""

  def reason(*args, **kwargs):
    return cudnn_unsupported_reason(*(args[i] for i in positions), **kwargs)

  return reason


D.register_impl(FAMILY, "reference", softmax_attention_reference, priority=REFERENCE)
D.register_impl(FAMILY, "xla", softmax_attention_blocked, priority=XLA)
D.register_impl(FAMILY, "cudnn", softmax_attention_cudnn, unsupported=cudnn_unsupported_reason, priority=CUDNN)

# Row-wise weight maps: "reference" materialises, "xla" runs blocked.blocked_attention with
# the op's weighting (masked tiles skipped).
for _module, _reference, _xla in (
    (sigmoid, sigmoid_attention_reference, sigmoid.sigmoid_attention_blocked),
    (signed, signed_softmax_attention_reference, signed.signed_softmax_attention_blocked),
    (sink, sink_softmax_attention_reference, sink.sink_softmax_attention_blocked),
    (talking_heads, talking_heads_attention_reference, talking_heads.talking_heads_attention_blocked)):
  D.register_impl(_module.FAMILY, "reference", rowwise_reference(_reference, check_shapes=_module is not talking_heads),
                  priority=REFERENCE)
  D.register_impl(_module.FAMILY, "xla", _xla, priority=XLA)

for _module, _reference, _via, _qkv, _xla in (
    (scalable, scalable_softmax_attention_reference, scalable.scalable_softmax_via, (0, 1, 2), None),
    (differential, differential_attention_reference, differential.differential_via, (0, 2, 4),
     differential.differential_attention_blocked)):
  D.register_impl(_module.FAMILY, "reference", _reference, priority=REFERENCE)
  D.register_impl(_module.FAMILY, "xla", _xla or _via("xla"), priority=XLA)
  D.register_impl(_module.FAMILY, "cudnn", _via("cudnn"), unsupported=_cudnn_reason_at(*_qkv), priority=CUDNN)
del _module, _reference, _xla, _via, _qkv

# impl="pallas": the block-sparse flash kernel (kernels_pallas); on CPU only in interpret mode.
from attnlab.attention.ops.softmax.pallas import pallas_unsupported_reason, softmax_attention_pallas  # noqa: E402
D.register_impl(FAMILY, "pallas", softmax_attention_pallas, unsupported=pallas_unsupported_reason, priority=CUDNN)

__all__ = ["differential_attention", "resolve_impl", "scalable_softmax_attention", "sigmoid_attention",
           "signed_softmax_attention", "sink_softmax_attention", "softmax_attention",
           "softmax_attention_reference", "talking_heads_attention"]
