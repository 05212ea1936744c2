"""Pure attention ops in the canonical layout q [B, Tq, Hq, D], k/v [B, Tk, Hkv, D]."""

from attnlab.attention.ops.softmax import softmax_attention
from attnlab.attention.ops.softmax_reference import softmax_attention_reference

__all__ = ["softmax_attention", "softmax_attention_reference"]
