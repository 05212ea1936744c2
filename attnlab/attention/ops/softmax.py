"""softmax_attention: the one dispatch point over implementations (placeholder: reference only).

OWNED BY THE OPS HELPER: replaced with the full dispatch (xla blocked, cudnn, auto).
"""

from attnlab.attention.ops.softmax_reference import softmax_attention_reference


def softmax_attention(q, k, v, *, mask=None, bias=None, scale=None, impl="auto", q_offset=0):
  """Softmax attention. q [B, Tq, Hq, D], k/v [B, Tk, Hkv, D] -> [B, Tq, Hq, D]."""
  return softmax_attention_reference(q, k, v, mask=mask, bias=bias, scale=scale, q_offset=q_offset)
