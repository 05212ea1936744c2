"""softmax_attention: the one dispatch point over softmax-attention implementations.

impl:
  "reference"  fp32, materialises the scores (the oracle; softmax_reference.py)
  "xla"        blocked online softmax in pure JAX, skips masked-out tiles (softmax_blocked.py)
  "cudnn"      cuDNN flash attention via jax.nn.dot_product_attention (GPU; softmax_cudnn.py)
  "pallas"     no Pallas softmax kernel is registered yet: ValueError
  "auto"       cudnn where it can run these arguments, else xla (the reason is logged once)
"""

from __future__ import annotations

import functools
import logging

from attnlab.attention.ops.softmax_blocked import softmax_attention_blocked
from attnlab.attention.ops.softmax_cudnn import cudnn_unsupported_reason, softmax_attention_cudnn
from attnlab.attention.ops.softmax_reference import softmax_attention_reference

IMPLS = ("auto", "reference", "xla", "cudnn", "pallas")

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def _log_fallback_once(reason: str) -> None:
  log.info("softmax_attention impl='auto' uses 'xla': %s", reason)


def _pallas_unavailable(*args, **kwargs):
  raise ValueError("impl='pallas': no Pallas softmax-attention kernel is registered yet; "
                   "use impl='xla', 'cudnn' or 'auto'")


def resolve_impl(q, k, v, *, mask=None, bias=None, q_offset=0, impl="auto") -> str:
  """The concrete implementation `softmax_attention` would run for these arguments."""
  if impl not in IMPLS:
    raise ValueError(f"unknown softmax attention impl {impl!r}; valid: {', '.join(IMPLS)}")
  if impl != "auto":
    return impl
  reason = cudnn_unsupported_reason(q, k, v, mask=mask, bias=bias, q_offset=q_offset)
  if reason is None:
    return "cudnn"
  _log_fallback_once(reason)
  return "xla"


_IMPL_FNS = {
    "reference": softmax_attention_reference,
    "xla": softmax_attention_blocked,
    "cudnn": softmax_attention_cudnn,
    "pallas": _pallas_unavailable,
}


def softmax_attention(q, k, v, *, mask=None, bias=None, scale=None, impl="auto", q_offset=0):
  """softmax(q k^T * scale + bias, masked) v with a selectable implementation.

  q [B, Tq, Hq, D], k [B, Tk, Hkv, D], v [B, Tk, Hkv, Dv] (GQA/MQA when Hq % Hkv == 0)
  -> [B, Tq, Hq, Dv]. mask: `masks.Mask` or None (query i sits at absolute position
  q_offset + i; q_offset may be traced in decode steps). bias: None, an array
  broadcastable to [B, Hq, Tq, Tk], or a callable `bias(q_pos, k_pos)` (positional.AlibiBias).
  scale defaults to D ** -0.5. A fully masked query row outputs zeros. See the module
  docstring for `impl`; an unknown impl or a combination an impl cannot do is a ValueError.
  """
  chosen = resolve_impl(q, k, v, mask=mask, bias=bias, q_offset=q_offset, impl=impl)
  return _IMPL_FNS[chosen](q, k, v, mask=mask, bias=bias, scale=scale, q_offset=q_offset)
